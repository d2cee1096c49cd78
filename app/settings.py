"""Every setting of Jobfleet, read once from the environment (and `.env`) at an entry point.

Nothing here runs at import time: entry points call `load_settings()` and pass the object down;
a spawned child process receives the object (it pickles) and builds its own connections.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Self

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.domain.destinations import DestinationPolicy


class Environment(StrEnum):
    DEVELOPMENT = "development"
    TEST = "test"
    PRODUCTION = "production"


class SettingsError(Exception):
    """The settings are invalid: the message names each setting and what is wrong with it."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)

    environment: Environment = Environment.DEVELOPMENT
    database_url: str = "postgresql+psycopg2://postgres@127.0.0.1:5432/jobfleet"
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
    db_pool_size: int = Field(10, ge=1)
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

    @field_validator("http_task_allow")
    @classmethod
    def _parse_allow_list(cls, value: str) -> str:
        DestinationPolicy.parse(value)  # a ValueError names the bad entry
        return value

    @model_validator(mode="after")
    def _refuse_unsafe_defaults(self) -> Self:
        if self.environment is Environment.PRODUCTION and len(self.api_key_secret) < 16:
            raise ValueError("API_KEY_SECRET must be set to at least 16 characters in production")
        if self.heartbeat_ttl_seconds <= self.heartbeat_interval_seconds:
            raise ValueError("HEARTBEAT_TTL_SECONDS must be longer than HEARTBEAT_INTERVAL_SECONDS")
        return self

    @property
    def hashing_secret(self) -> bytes:
        """The HMAC key for API keys; development falls back to a fixed, public value."""
        secret = self.api_key_secret.get_secret_value()
        return (secret or "jobfleet-development-secret").encode()

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
    """Build the settings, turning pydantic's report into one message naming each bad setting."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            name = "_".join(str(part) for part in error["loc"]).upper() or "SETTINGS"
            problems.append(f"{name}: {error['msg']}")
        raise SettingsError("invalid settings: " + "; ".join(problems)) from None
