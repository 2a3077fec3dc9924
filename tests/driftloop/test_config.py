"""Config files: one ConfigError for every way a YAML file can be wrong."""

import pytest

from driftloop.config import MAX_YAML_DEPTH, load_yaml, read_yaml_mapping
from driftloop.errors import ConfigError
from driftloop.policy import load_policy
from driftloop.spec import load_spec


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"name: caf\xe9\n", "is not UTF-8 text"),
        (b"[" * 5000 + b"]" * 5000, "levels deep"),
        (b"a:\n" + b"".join(b" " * i + b"b:\n" for i in range(1, 200)), "levels deep"),
        (b"x: [1, 2", "is not valid YAML"),
        (b"x: " + b"1" * 2_000_000, "larger than"),
        (b"- just\n- a list\n", "must be a YAML mapping"),
        (b"!!python/object/apply:os.system ['echo hi']", "is not valid YAML"),
    ],
)
def test_bad_yaml_is_one_config_error(tmp_path, content, message):
    path = tmp_path / "bad.yaml"
    path.write_bytes(content)
    for load in (
        lambda: read_yaml_mapping(path, "config"),
        lambda: load_spec(path),
        lambda: load_policy(path),
    ):
        with pytest.raises(ConfigError, match=message):
            load()


def test_nesting_up_to_the_limit_is_fine():
    assert load_yaml("x: " + "[" * (MAX_YAML_DEPTH - 2) + "]" * (MAX_YAML_DEPTH - 2), "t")
