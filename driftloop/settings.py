"""One settings object per process, built and validated at the entry point and passed down.

Values come from ``DRIFTLOOP_*`` environment variables, then files in the directory named by
``DRIFTLOOP_SECRETS_DIR`` (if set), then an optional YAML file named by ``DRIFTLOOP_CONFIG``;
defaults run everything on one machine with no cluster. S3 credentials also accept the
``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` names, so the one Secret that KServe's
storage initializer reads serves driftloop's pods too.

In the cluster that Secret is mounted as a read-only volume and ``DRIFTLOOP_SECRETS_DIR``
points at it: each file is named after a setting's environment name (``AWS_ACCESS_KEY_ID``,
``DRIFTLOOP_S3_SECRET_KEY``, ...; case-insensitive) and holds its value, so credentials
never sit in the process environment. On a laptop, environment variables keep working.

``COLLECTOR_TOKEN`` is the bearer token the payload collector requires on event and label
posts and the predictor's emitter sends; in a pod it is a file mounted from a Secret,
named by ``COLLECTOR_TOKEN_FILE`` (or the ``--token-file`` / ``--logger-token-file`` flags).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SecretsSettingsSource,
    SettingsConfigDict,
)

from driftloop.config import field_error, read_yaml_mapping
from driftloop.errors import ConfigError
from driftloop.image import IMAGE


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="DRIFTLOOP_", extra="forbid", populate_by_name=True
    )

    # A local directory by default: the embedded loop needs no server. In the cluster
    # this is s3://bucket/prefix on MinIO or any S3.
    store_uri: str = ".driftloop"
    s3_endpoint: str | None = None  # host[:port]; None means AWS S3
    s3_access_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("DRIFTLOOP_S3_ACCESS_KEY", "AWS_ACCESS_KEY_ID")
    )
    s3_secret_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("DRIFTLOOP_S3_SECRET_KEY", "AWS_SECRET_ACCESS_KEY"),
    )
    s3_secure: bool = True  # TLS on by default; the dev overlay's in-cluster MinIO turns it off
    s3_region: str | None = None
    # Seconds a single S3 read may stall before the call fails (one retry follows): a hung
    # store fails a job in about half a minute, not minutes. Objects are read whole, so
    # this bounds waiting for the server, not the transfer of a large object.
    s3_timeout_s: float = Field(10.0, gt=0, le=600)
    image: str = IMAGE  # override only to run a fork's image
    kfp_host: str | None = None  # e.g. http://ml-pipeline-ui.kubeflow or a KFP endpoint URL
    # The KFP user namespace runs are created in. driftloop's manifests put serving,
    # monitoring and the pipeline pods in one namespace, "driftloop" (docs/cluster.md).
    kfp_namespace: str = "driftloop"
    # The collector's bearer token (POST / and /labels; the predictor's emitter sends it).
    # None: the collector accepts anyone who can reach it, with a warning (local use).
    collector_token: SecretStr | None = None
    collector_token_file: str | None = None  # a file holding it, e.g. a mounted Secret key

    @model_validator(mode="after")
    def _token_from_file(self) -> Settings:
        if self.collector_token_file:
            if self.collector_token is not None:
                raise ValueError("set collector_token or collector_token_file, not both")
            self.collector_token = read_token(self.collector_token_file)
        elif self.collector_token is not None and not self.collector_token.get_secret_value():
            raise ValueError("collector_token is empty")
        return self

    @field_validator("store_uri")
    @classmethod
    def _known_scheme(cls, v: str) -> str:
        if "://" in v and not v.startswith(("s3://", "file://")):
            raise ValueError(f"store URI {v!r} must be a path, file://path or s3://bucket/prefix")
        return v

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (
            init_settings,
            env_settings,
            _secret_files(settings_cls),
            _YamlFileSource(settings_cls),
        )


def _secret_files(settings_cls: type[BaseSettings]) -> PydanticBaseSettingsSource:
    """Files in DRIFTLOOP_SECRETS_DIR (a mounted Secret), one per setting; none if unset."""
    path = os.environ.get("DRIFTLOOP_SECRETS_DIR") or None
    if path is not None and not Path(path).is_dir():
        raise ConfigError(
            f"DRIFTLOOP_SECRETS_DIR {path!r} is not a directory: mount the Secret there or unset it"
        )
    return SecretsSettingsSource(settings_cls, secrets_dir=path)


class _YamlFileSource(PydanticBaseSettingsSource):
    """Reads the YAML file named by DRIFTLOOP_CONFIG, if any (lowest precedence)."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = os.environ.get("DRIFTLOOP_CONFIG")
        if not path:
            return {}
        return read_yaml_mapping(path, "config file")


def read_token(path: str | Path) -> SecretStr:
    """A bearer token from a file (surrounding whitespace stripped); ValueError if the
    file is missing or holds none."""
    try:
        token = Path(path).read_text().strip()
    except OSError as e:
        raise ValueError(f"cannot read the token file {path}: {e.strerror or e}") from None
    if not token:
        raise ValueError(f"the token file {path} is empty")
    return SecretStr(token)


def load_settings(**overrides: Any) -> Settings:
    """Build the process's settings; a bad value becomes one ConfigError naming it."""
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as e:
        loc, msg = field_error(e, show_input=False)  # never echo a credential
        name = ".".join(map(str, loc))
        raise ConfigError(
            f"invalid setting {name}: {msg}" if name else f"invalid settings: {msg}"
        ) from e
