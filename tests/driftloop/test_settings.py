import pytest

from driftloop.errors import ConfigError
from driftloop.settings import load_settings


def test_defaults_run_everything_locally(monkeypatch):
    for k in ("DRIFTLOOP_STORE_URI", "DRIFTLOOP_CONFIG", "AWS_ACCESS_KEY_ID"):
        monkeypatch.delenv(k, raising=False)
    s = load_settings()
    assert s.store_uri == ".driftloop" and s.s3_secure is True and s.s3_access_key is None


def test_env_prefix_aws_names_and_config_file(monkeypatch, tmp_path):
    cfg = tmp_path / "driftloop.yaml"
    cfg.write_text("store_uri: s3://from-file/x\ns3_region: eu-west-1\n")
    monkeypatch.setenv("DRIFTLOOP_CONFIG", str(cfg))
    monkeypatch.setenv("DRIFTLOOP_S3_SECURE", "false")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "minio")  # the Secret KServe also reads
    s = load_settings()
    assert s.store_uri == "s3://from-file/x" and s.s3_region == "eu-west-1"
    assert s.s3_secure is False and s.s3_access_key.get_secret_value() == "minio"
    monkeypatch.setenv("DRIFTLOOP_STORE_URI", "s3://from-env/y")  # env beats the file
    assert load_settings().store_uri == "s3://from-env/y"
    assert load_settings(store_uri="/tmp/flag").store_uri == "/tmp/flag"  # flags beat both


def test_bad_values_are_one_config_error(monkeypatch, tmp_path):
    monkeypatch.setenv("DRIFTLOOP_S3_SECURE", "maybe")
    with pytest.raises(ConfigError, match="invalid setting s3_secure"):
        load_settings()
    monkeypatch.delenv("DRIFTLOOP_S3_SECURE")
    monkeypatch.setenv("DRIFTLOOP_CONFIG", str(tmp_path / "missing.yaml"))
    with pytest.raises(ConfigError, match="config file .*missing.yaml does not exist"):
        load_settings()


CREDENTIAL_ENV = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "DRIFTLOOP_S3_ACCESS_KEY",
    "DRIFTLOOP_S3_SECRET_KEY",
    "DRIFTLOOP_CONFIG",
)


def _mounted_secret(root, files):
    """The layout the kubelet gives a Secret volume: each key a symlink into ..data/."""
    stamp = root / "..2026_01_01_00_00_00.000000001"
    stamp.mkdir(parents=True)
    for name, value in files.items():
        (stamp / name).write_text(value)
        (root / name).symlink_to(f"..data/{name}")
    (root / "..data").symlink_to(stamp.name)
    return root


def test_credentials_from_a_mounted_secret(monkeypatch, tmp_path):
    for k in CREDENTIAL_ENV:
        monkeypatch.delenv(k, raising=False)
    secret = _mounted_secret(
        tmp_path / "s3", {"AWS_ACCESS_KEY_ID": "driftloop\n", "AWS_SECRET_ACCESS_KEY": "s3cr3t\n"}
    )
    monkeypatch.setenv("DRIFTLOOP_SECRETS_DIR", str(secret))
    s = load_settings()
    assert s.s3_access_key.get_secret_value() == "driftloop"  # trailing newline dropped
    assert s.s3_secret_key.get_secret_value() == "s3cr3t"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "from-env")  # env still beats the files
    assert load_settings().s3_access_key.get_secret_value() == "from-env"


def test_secrets_dir_is_off_by_default_and_must_exist_when_set(monkeypatch, tmp_path):
    for k in CREDENTIAL_ENV:
        monkeypatch.delenv(k, raising=False)
    monkeypatch.delenv("DRIFTLOOP_SECRETS_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "AWS_ACCESS_KEY_ID").write_text("not-read")  # no directory is read unasked
    assert load_settings().s3_access_key is None
    monkeypatch.setenv("DRIFTLOOP_SECRETS_DIR", str(tmp_path / "not-mounted"))
    with pytest.raises(ConfigError, match="DRIFTLOOP_SECRETS_DIR .*not-mounted.* not a directory"):
        load_settings()


def test_collector_token_from_env_or_a_file(monkeypatch, tmp_path):
    for k in ("DRIFTLOOP_COLLECTOR_TOKEN", "DRIFTLOOP_COLLECTOR_TOKEN_FILE", "DRIFTLOOP_CONFIG"):
        monkeypatch.delenv(k, raising=False)
    assert load_settings().collector_token is None  # no token: the collector runs open
    monkeypatch.setenv("DRIFTLOOP_COLLECTOR_TOKEN", "from-env")
    s = load_settings()
    assert s.collector_token.get_secret_value() == "from-env" and "from-env" not in repr(s)
    secret = tmp_path / "token"
    secret.write_text("from-file\n")  # a mounted Secret key, trailing newline and all
    monkeypatch.setenv("DRIFTLOOP_COLLECTOR_TOKEN_FILE", str(secret))
    with pytest.raises(ConfigError, match="not both"):
        load_settings()
    monkeypatch.delenv("DRIFTLOOP_COLLECTOR_TOKEN")
    assert load_settings().collector_token.get_secret_value() == "from-file"
    secret.write_text("  \n")
    with pytest.raises(ConfigError, match="is empty"):
        load_settings()
