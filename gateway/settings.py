"""One ``Settings`` object, built from the settings file, ``GATEWAY_*`` and flags.

Precedence, lowest first: defaults < the YAML settings file (``--config``) <
environment variables ``GATEWAY_*`` (nested with ``__``, e.g.
``GATEWAY_PROXY__PORT=9090``) < ``gateway serve`` flags. Nothing happens at
import; ``load_settings`` does the reading.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import re
import secrets
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from gateway.core.note import CosignatureVerifier
from gateway.core.redact import is_secret_name
from gateway.core.tripwire_spec import SettingsTripwire
from gateway.errors import NoteError, SettingsError

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
    def _hex(cls, value: str, info: ValidationInfo) -> str:
        value = value.lower()
        if not _HEX64.match(value):
            raise ValueError(f"{info.field_name} must be 64 hex digits, the sha256 of the "
                             "secret (gateway hash SECRET)")
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


class AnchorSpec(BaseModel):
    """Where each signed checkpoint of the audit log is handed (``services.anchors``):
    ``file`` appends the note to ``path``; ``witness`` asks a C2SP tlog-witness at ``url``
    to cosign it; ``rfc3161`` gets a timestamp token for it from the authority at ``url``."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["file", "witness", "rfc3161"]
    path: Path | None = None
    url: str | None = Field(default=None, pattern=r"^https?://\S+$")
    name: str | None = None  # shown in /v1/health; default: kind and path or URL
    timeout: float = Field(default=10.0, gt=0)
    key: str | None = None  # witness: its cosignature key; a cosignature must verify with it

    @model_validator(mode="after")
    def _where(self) -> AnchorSpec:
        if self.kind == "file" and self.path is None:
            raise ValueError("a file anchor needs a path")
        if self.kind != "file" and self.url is None:
            raise ValueError(f"a {self.kind} anchor needs a url")
        if self.key is not None:
            if self.kind != "witness":
                raise ValueError("only a witness anchor takes a key")
            try:
                CosignatureVerifier.parse(self.key)
            except NoteError as exc:
                raise ValueError(f"key: {exc}") from None
        return self

    def label(self) -> str:
        """Its name in /v1/health (no credentials: a URL's user, password and query go)."""
        if self.name:
            return self.name
        if self.kind == "file":
            return f"file:{self.path}"
        parts = urlsplit(str(self.url))
        return f"{self.kind}:{parts.scheme}://{parts.hostname}" + (
            f":{parts.port}" if parts.port else "") + parts.path


class TelemetrySettings(BaseModel):
    """OpenTelemetry tracing (``gateway.observe.tracing``); the ``OTEL_*`` variables also apply.

    ``tracing`` unset means: on when the environment configures an OTLP
    exporter (``OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT``, or
    ``OTEL_TRACES_EXPORTER=otlp``) or ``endpoint`` is set here, else off.
    """

    model_config = ConfigDict(extra="forbid")
    tracing: bool | None = None
    endpoint: str | None = None  # OTLP/HTTP collector, e.g. http://127.0.0.1:4318
    headers: dict[str, str] = {}  # sent with every export (e.g. an API key)
    service_name: str | None = None  # default: OTEL_SERVICE_NAME, else agent-gateway
    sample_ratio: float | None = Field(default=None, ge=0, le=1)  # default: OTEL_TRACES_SAMPLER


_DATABASES = frozenset({"sqlite", "postgresql", "postgres"})


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
    # seconds a process's heartbeat and a rollback plan's claim hold without renewal: a
    # dead process's plans and intents are taken over this long after it stopped
    executor_lease: float = Field(default=15.0, gt=0)
    journal_body_limit: int = Field(default=65536, ge=0)
    # SQLite: fdatasync the journal before a write is sent (off only to measure its cost)
    journal_fsync: bool = True
    # AES-256-GCM key (base64 of 32 bytes) sealing what rollback and approvals need of
    # secrets and binary priors (gateway.core.seal); GATEWAY_JOURNAL_KEY. Unset on SQLite:
    # a key file <database>.key (0600) beside the database; unset on PostgreSQL: none kept.
    journal_key: str | None = Field(default=None, repr=False)
    max_write_body: int = Field(default=16 * 1024 * 1024, gt=0)
    # seconds a client may take to send a request's headers (from connecting, or from the
    # request's first byte), and between two pieces of its body; then it is cut off
    client_timeout: float = Field(default=20.0, gt=0)
    log_level: str = "info"
    approval_max_wait: float = Field(default=300.0, ge=0)  # cap on Prefer: wait=N
    approval_webhook: WebhookSettings | None = None
    tripwires: list[SettingsTripwire] = []  # every upstream's, unless one names upstreams
    access_log: bool = False  # one JSON line per agent call on stderr (gateway.access)
    # the proxy's URL as agents reach it: policies with rewrite_urls point upstream URLs here
    public_url: str | None = Field(default=None, pattern=r"^https?://[^\s?#]+$")
    telemetry: TelemetrySettings = TelemetrySettings()
    # The audit log's signed checkpoints (services.checkpoints): an Ed25519 seed (base64 of
    # 32 bytes; GATEWAY_AUDIT_SIGNING_KEY). Unset on SQLite: a key file <database>.audit.key
    # (0600) beside the database; unset on PostgreSQL: no checkpoints are signed (warned).
    audit_signing_key: str | None = Field(default=None, repr=False)
    audit_anchors: list[AnchorSpec] = []
    audit_checkpoint_interval: float = Field(default=5.0, gt=0)  # seconds after growth
    audit_origin: str = Field(default="agent-gateway/audit", pattern=r"^[^\s+]+$")

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        scheme, sep, _ = value.partition("://")
        if not sep or scheme.partition("+")[0].lower() not in _DATABASES:
            raise ValueError("not a database URL: sqlite+aiosqlite:///PATH or "
                             "postgresql+asyncpg://USER@HOST/DB")
        return value

    @field_validator("operators")
    @classmethod
    def _no_shared_secret(cls, value: list[OperatorSpec], info: ValidationInfo) -> list[OperatorSpec]:
        """An operator token that is also an agent key would let that agent approve its
        own held calls (and its key reach the admin API)."""
        agents = {a.key_sha256: a.name for a in info.data.get("agents") or []}
        for operator in value:
            if operator.token_sha256 in agents:
                raise ValueError(f"the token of operator {operator.name!r} is the key of agent "
                                 f"{agents[operator.token_sha256]!r}: give each its own secret")
        return value

    @field_validator("tripwires")
    @classmethod
    def _unique_tripwires(cls, value: list[SettingsTripwire]) -> list[SettingsTripwire]:
        ids = [t.id for t in value]
        if len(ids) != len(set(ids)):
            raise ValueError(f"duplicate tripwire id {next(i for i in ids if ids.count(i) > 1)!r}")
        return value


def _key(loc: tuple[int | str, ...]) -> str:
    """``("agents", 0, "key_sha256")`` -> ``agents[0].key_sha256``."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _source(loc: tuple[int | str, ...], config: Path | None, file_data: dict[str, Any],
            overrides: dict[str, Any], flag_names: dict[str, str]) -> str:
    """Which layer gave the value at ``loc`` (the one that won): a flag, an environment
    variable, the settings file."""
    top = str(loc[0]) if loc else ""
    inner = str(loc[1]) if len(loc) > 1 else None
    given = overrides.get(top)
    if isinstance(given, dict) and inner in given:
        return "flag " + flag_names.get(f"{top}__{inner}", f"{top}__{inner}")
    if top in overrides and not isinstance(given, dict):
        return "flag " + flag_names.get(top, top)
    environment = {name.upper() for name in os.environ}
    for name in ([f"GATEWAY_{top}__{inner}"] if inner else []) + [f"GATEWAY_{top}"]:
        if name.upper() in environment:
            return name.upper()
    if config is not None and top in file_data:
        return str(config)
    return "settings"


# URLs that may carry credentials (a user's password, a token in the query): a problem
# with one is named without its value
_URLS = frozenset({"database_url", "url", "endpoint", "public_url"})


def _problems(error: ValidationError, config: Path | None, file_data: dict[str, Any],
              overrides: dict[str, Any], flag_names: dict[str, str]) -> list[str]:
    """One ``WHERE: KEY: what is wrong`` line per error."""
    lines = []
    for item in error.errors(include_url=False):
        loc = tuple(item["loc"])
        message = str(item["msg"]).removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            known = difflib.get_close_matches(str(loc[-1]), _known(loc), n=1)
            message = "unknown setting" + (f" (did you mean {known[0]!r}?)" if known else "")
        elif item["type"] == "missing":
            message = "required"
        elif not is_secret_name(str(loc[-1])) and str(loc[-1]) not in _URLS \
                and isinstance(item.get("input"), str | int | float) \
                and len(repr(item["input"])) <= 80 and "must be" not in message:
            message += f" (got {item['input']!r})"
        lines.append(f"{_source(loc, config, file_data, overrides, flag_names)}: "
                     f"{_key(loc)}: {message}")
    return lines


def _known(loc: tuple[int | str, ...]) -> list[str]:
    """The keys a settings object at ``loc`` (without its last part) has."""
    model: Any = Settings
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part) if hasattr(model, "model_fields") else None
        if field is None:
            return []
        annotation = field.annotation
        args = [a for a in getattr(annotation, "__args__", ()) if hasattr(a, "model_fields")]
        model = args[0] if args else annotation
    return list(getattr(model, "model_fields", {}))


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


def load_settings(config: Path | None = None, flag_names: dict[str, str] | None = None,
                  **flags: Any) -> Settings:
    """Defaults < file < GATEWAY_* env < flags (None flags are ignored).

    Flags name nested fields with ``__`` (``proxy__port=9090``), as env vars do;
    ``flag_names`` maps them to what the user typed (``{"proxy__port": "--port"}``),
    for error messages. A relative ``policies_dir`` in the settings file is taken
    from the file's directory, not the current one.
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
        settings = Settings.model_validate(Layered(**overrides).model_dump())
    except ValidationError as exc:
        raise SettingsError(*_problems(exc, config, file_data, overrides,
                                       flag_names or {})) from None
    if config is not None and "policies_dir" in file_data and "policies_dir" not in overrides \
            and "GATEWAY_POLICIES_DIR" not in {k.upper() for k in os.environ} \
            and not settings.policies_dir.is_absolute():
        settings = settings.model_copy(
            update={"policies_dir": config.parent / settings.policies_dir})
    return settings


def dev_operator_token() -> tuple[str, OperatorSpec]:
    """A one-time admin token for local development (printed, never stored)."""
    token = secrets.token_urlsafe(24)
    return token, OperatorSpec(name="dev", role="admin", token_sha256=sha256_hex(token))
