"""One ``Settings`` object, built from the settings file, ``GATEWAY_*`` and flags.

Precedence, lowest first: defaults < the YAML settings file (``--config``) <
environment variables ``GATEWAY_*`` (nested with ``__``, e.g.
``GATEWAY_PROXY__PORT=9090``) < ``gateway serve`` flags. Nothing happens at
import; ``load_settings`` does the reading.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from gateway.core.tripwires import SettingsTripwire

_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def sha256_hex(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class Listener(BaseModel):
    model_config = ConfigDict(extra="forbid")
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)


class AdminListener(Listener):
    """Its own class so that setting only ``admin.host`` keeps port 8081."""

    port: int = Field(default=8081, ge=0, le=65535)


class AgentSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    key_sha256: str

    @field_validator("key_sha256")
    @classmethod
    def _hex(cls, value: str) -> str:
        value = value.lower()
        if not _HEX64.match(value):
            raise ValueError("key_sha256 must be 64 hex digits (printf %s KEY | sha256sum)")
        return value


class OperatorSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    role: Literal["viewer", "approver", "admin"]
    token_sha256: str

    _hex = field_validator("token_sha256")(AgentSpec._hex.__func__)  # type: ignore[attr-defined]


class WebhookSettings(BaseModel):
    """Where held-call notifications go (``gateway.services.notify``)."""

    model_config = ConfigDict(extra="forbid")
    url: str
    secret: str | None = None
    format: Literal["json", "slack"] = "json"
    retries: int = 3
    timeout: float = 5.0


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GATEWAY_", env_nested_delimiter="__",
                                      extra="forbid")

    database_url: str = "sqlite+aiosqlite:///./gateway.db"
    policies_dir: Path = Path("./policies")
    proxy: Listener = Listener()
    admin: AdminListener = AdminListener()
    allow_anonymous_agents: bool = False
    agents: list[AgentSpec] = []
    operators: list[OperatorSpec] = []
    # Not in the contract's example file, but settable the same ways:
    dev: bool = False  # local development: allow start with no operator, print a token
    upstream_timeout: float = Field(default=30.0, gt=0)
    engage_wait: float = Field(default=2.0, gt=0)  # then writes still in flight are cut off
    workers: int = Field(default=1, ge=1, le=64)  # processes serving the same ports
    capture_timeout: float = Field(default=10.0, gt=0)
    journal_body_limit: int = Field(default=65536, ge=0)
    max_write_body: int = Field(default=16 * 1024 * 1024, gt=0)
    log_level: str = "info"
    approval_max_wait: float = Field(default=300.0, ge=0)  # cap on Prefer: wait=N
    approval_webhook: WebhookSettings | None = None
    tripwires: list[SettingsTripwire] = []  # every upstream's, unless one names upstreams

    @field_validator("tripwires")
    @classmethod
    def _unique_tripwires(cls, value: list[SettingsTripwire]) -> list[SettingsTripwire]:
        ids = [t.id for t in value]
        if len(ids) != len(set(ids)):
            raise ValueError(f"duplicate tripwire id {next(i for i in ids if ids.count(i) > 1)!r}")
        return value


class SettingsError(Exception):
    pass


def read_settings_file(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise SettingsError(f"{path}: cannot read settings file: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise SettingsError(f"{path}: invalid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise SettingsError(f"{path}: a settings file is a mapping")
    return data


def load_settings(config: Path | None = None, **flags: Any) -> Settings:
    """Defaults < file < GATEWAY_* env < flags (None flags are ignored).

    Flags name nested fields with ``__`` (``proxy__port=9090``), as env vars do.
    """
    file_data = read_settings_file(config) if config else {}

    class Layered(Settings):
        @classmethod
        def settings_customise_sources(cls, settings_cls: type[BaseSettings],
                                       init_settings: PydanticBaseSettingsSource,
                                       env_settings: PydanticBaseSettingsSource,
                                       dotenv_settings: PydanticBaseSettingsSource,
                                       file_secret_settings: PydanticBaseSettingsSource,
                                       ) -> tuple[PydanticBaseSettingsSource, ...]:
            return (init_settings, env_settings, InitSettingsSource(settings_cls, file_data))

    overrides: dict[str, Any] = {}
    for key, value in flags.items():
        if value is None:
            continue
        outer, _, inner = key.partition("__")
        if inner:
            overrides.setdefault(outer, {})[inner] = value
        else:
            overrides[key] = value
    try:
        return Settings.model_validate(Layered(**overrides).model_dump())
    except Exception as exc:
        raise SettingsError(str(exc)) from None


def dev_operator_token() -> tuple[str, OperatorSpec]:
    """A one-time admin token for local development (printed, never stored)."""
    token = secrets.token_urlsafe(24)
    return token, OperatorSpec(name="dev", role="admin", token_sha256=sha256_hex(token))
