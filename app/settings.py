"""Every setting of Jobfleet, read once from the environment (and `.env`) at an entry point.

Nothing here runs at import time: entry points call `load_settings()` and pass the object down;
a spawned child process receives the object (it pickles) and builds its own connections.

Any setting may also be given as a file, the way Docker secrets are mounted: `<NAME>_FILE`
names a file whose content (trailing newlines removed) is the value of `<NAME>`, as the
official postgres and grafana images read theirs. Giving both `<NAME>` and `<NAME>_FILE` is an
error, and so is a file that cannot be read.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any, Self

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    EnvSettingsSource,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from app.domain.destinations import DestinationPolicy


class Environment(StrEnum):
    DEVELOPMENT = "development"
    TEST = "test"
    PRODUCTION = "production"


class SettingsError(Exception):
    """The settings are invalid: the message names each setting and what is wrong with it."""


FILE_SUFFIX = "_file"
# A production API key secret shorter than this is refused where keys are hashed.
MIN_SECRET_LENGTH = 16


class FileVariables(PydanticBaseSettingsSource):
    """`<NAME>_FILE` variables: each names a file holding the value of `<NAME>`.

    The environment wins over `.env` for the pair as for any setting: whichever of `<NAME>` or
    `<NAME>_FILE` the environment gives is used, and `.env` is read only when it gives neither.
    One source giving both is an error. Empty variables count as not given, as in the
    official images' `file_env`."""

    def __init__(
        self,
        settings_cls: type[BaseSettings],
        init: InitSettingsSource,
        env: EnvSettingsSource,
        dotenv: DotEnvSettingsSource,
    ) -> None:
        super().__init__(settings_cls)
        self._given = init.init_kwargs
        # Both keep every variable they read, lower-cased (names are case-insensitive).
        self._sources: list[tuple[str, Mapping[str, str | None]]] = [
            ("the environment", env.env_vars),
            (".env", dotenv.env_vars),
        ]

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        # Unused: __call__ reads every field at once.
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name in self.settings_cls.model_fields:
            if name in self._given:  # a value given in code wins; its file is not read
                continue
            setting = name.upper()
            for where, variables in self._sources:
                value, path = variables.get(name), variables.get(name + FILE_SUFFIX)
                if value and path:
                    raise SettingsError(
                        f"invalid settings: {setting} and {setting}_FILE are both given in "
                        f"{where}: keep one (the file, for a secret)"
                    )
                if path:
                    values[name] = _read_value_file(setting, path)
                if value or path:
                    break
        return values


def _read_value_file(setting: str, path: str) -> str:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise SettingsError(
            f"invalid settings: {setting}_FILE: cannot read {path}: {reason}"
        ) from None
    # As a shell's "$(< file)" reads it: a file written by `echo` or an editor ends in a newline.
    return text.rstrip("\r\n")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)

    environment: Environment = Environment.DEVELOPMENT
    database_url: str = "postgresql+psycopg2://postgres@127.0.0.1:5432/jobfleet"
    # `migrate` connects with this one when it is set (the role that owns the tables), then
    # grants the role of DATABASE_URL what the API and the fleet need.
    migration_database_url: str = ""
    redis_url: str = "redis://127.0.0.1:6379/0"
    key_prefix: str = Field("jf", min_length=1, pattern=r"^[A-Za-z0-9_.:-]+$")
    api_key_secret: SecretStr = SecretStr("")

    api_host: str = "127.0.0.1"
    api_port: int = Field(8000, ge=1, le=65535)
    api_workers: int = Field(1, ge=1)
    max_body_bytes: int = Field(1_048_576, ge=1024)
    metrics_public: bool = False
    api_metrics_port: int = Field(9101, ge=0, le=65535)
    api_metrics_host: str = "127.0.0.1"
    metrics_max_queues: int = Field(100, ge=1)
    metrics_max_tasks: int = Field(200, ge=1)
    metrics_dir: str = ""
    fleet_metrics_port: int = Field(9100, ge=0, le=65535)
    fleet_metrics_host: str = "127.0.0.1"
    # Each API worker process's pool; the fleet's processes size theirs from their job loops.
    db_pool_size: int = Field(10, ge=1)
    db_max_overflow: int = Field(5, ge=0)
    api_statement_timeout_ms: int = Field(5000, ge=0, le=3_600_000)
    log_level: str = "INFO"

    rate_limit_enabled: bool = True
    rate_limit_submit: str = "6000/minute"
    rate_limit_read: str = "12000/minute"
    rate_limit_batch: str = "600/minute"
    rate_limit_write: str = "3000/minute"
    rate_limit_admin: str = "600/minute"

    retry_base: float = Field(2.0, gt=1.0)
    retry_cap: float = Field(60.0, gt=0)
    default_max_retries: int = Field(3, ge=0, le=100)
    default_timeout_seconds: int = Field(300, ge=1)
    max_timeout_seconds: int = Field(86_400, ge=1)

    worker_queues: str = "default"
    worker_processes: int = Field(2, ge=0)
    worker_threads: int = Field(2, ge=1)
    worker_prefetch: int = Field(32, ge=1, le=1000)
    task_modules: str = ""
    heartbeat_interval_seconds: float = Field(2.0, gt=0)
    heartbeat_ttl_seconds: int = Field(10, ge=2)
    shutdown_grace_seconds: float = Field(30.0, ge=0)
    hard_timeout_grace_seconds: float = Field(5.0, ge=0)
    # The API addresses a host by this name (PUT /fleet/{host}/size): the same characters.
    fleet_host: str = Field("", pattern=r"^[A-Za-z0-9_.-]{0,253}$")

    # The built-in http task: destinations beyond public addresses, and its limits.
    http_task_allow: str = ""
    http_task_max_reply_bytes: int = Field(1_048_576, ge=1)
    http_task_max_timeout_seconds: float = Field(30.0, gt=0)

    run_duties: bool = True
    promote_interval_seconds: float = Field(0.25, gt=0)
    recovery_interval_seconds: float = Field(1.0, gt=0)
    reconcile_interval_seconds: float = Field(1.0, gt=0)
    sweep_after_seconds: float = Field(30.0, gt=0)
    retention_interval_seconds: float = Field(60.0, gt=0)
    retention_seconds: float = Field(7 * 86_400, gt=0)
    dlq_retention_seconds: float = Field(30 * 86_400, gt=0)
    stats_interval_seconds: float = Field(15.0, gt=0)
    stats_retention_seconds: float = Field(86_400, gt=0)
    # At least a day: the audit table refuses to delete younger rows (migration 0005).
    audit_retention_seconds: float = Field(365 * 86_400, ge=86_400)
    bulk_interval_seconds: float = Field(1.0, gt=0)
    bulk_batch_size: int = Field(500, ge=1, le=10_000)
    # Schedules: how often the duty looks for due fire times; how late a fire time may be and
    # still fire (later, it is missed and its schedule's misfire policy decides); whether cron
    # expressions may have a sixth field, seconds (tests and demos: a job a second is a lot).
    schedule_interval_seconds: float = Field(1.0, gt=0, le=60)
    schedule_misfire_grace_seconds: float = Field(30.0, ge=1, le=86_400)
    schedule_seconds_field: bool = False

    # How long a dashboard sign-in lasts (its cookie's lifetime); the key is re-checked on
    # every page, so a revoked key ends every session at once.
    ui_session_seconds: int = Field(28_800, ge=60, le=30 * 86_400)

    @field_validator("http_task_allow")
    @classmethod
    def _parse_allow_list(cls, value: str) -> str:
        DestinationPolicy.parse(value)  # a ValueError names the bad entry
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        assert isinstance(init_settings, InitSettingsSource)
        assert isinstance(env_settings, EnvSettingsSource)
        assert isinstance(dotenv_settings, DotEnvSettingsSource)
        files = FileVariables(settings_cls, init_settings, env_settings, dotenv_settings)
        return init_settings, files, env_settings, dotenv_settings, file_secret_settings

    @model_validator(mode="after")
    def _refuse_unsafe_values(self) -> Self:
        if self.heartbeat_ttl_seconds <= self.heartbeat_interval_seconds:
            raise ValueError("HEARTBEAT_TTL_SECONDS must be longer than HEARTBEAT_INTERVAL_SECONDS")
        return self

    def require_api_key_secret(self) -> None:
        """Refuse to hash API keys with an unsafe secret: production needs a real one. Only the
        processes that verify or create keys call this (api, keys, dev); the fleet, the duties
        and the migrations never hash a key and start without a secret."""
        if self.environment is Environment.PRODUCTION and len(self.api_key_secret) < (
            MIN_SECRET_LENGTH
        ):
            raise SettingsError(
                f"invalid settings: API_KEY_SECRET: must be set to at least {MIN_SECRET_LENGTH} "
                "characters in production (or given as a file with API_KEY_SECRET_FILE)"
            )

    @property
    def hashing_secret(self) -> bytes:
        """The HMAC key for API keys; outside production an empty secret falls back to a fixed,
        public value."""
        self.require_api_key_secret()
        secret = self.api_key_secret.get_secret_value()
        return (secret or "jobfleet-development-secret").encode()

    @property
    def migration_url(self) -> str:
        """Where `migrate` connects: MIGRATION_DATABASE_URL, or DATABASE_URL when it is unset."""
        return self.migration_database_url or self.database_url

    @property
    def queues(self) -> list[str]:
        return [q.strip() for q in self.worker_queues.split(",") if q.strip()]

    @property
    def task_module_names(self) -> list[str]:
        return [m.strip() for m in self.task_modules.split(",") if m.strip()]

    @property
    def http_task_policy(self) -> DestinationPolicy:
        return DestinationPolicy.parse(self.http_task_allow)


def load_settings(**overrides: object) -> Settings:
    """Build the settings (from `overrides`, `<NAME>_FILE` files, the environment, `.env`), turning
    pydantic's report into one message naming each bad setting."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            name = "_".join(str(part) for part in error["loc"]).upper() or "SETTINGS"
            problems.append(f"{name}: {error['msg']}")
        raise SettingsError("invalid settings: " + "; ".join(problems)) from None
