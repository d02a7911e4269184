"""The migration spec and the local settings — the only module that reads the environment.

A spec is YAML validated on load; every error names the field that is wrong (`tables[2]`,
`thresholds.event_time_lag_seconds.warn`). Credentials are `SecretStr` resolved from a reference
(`{env: VAR}`, `{file: PATH}` or `{secret: <Prefect Secret block>}`) and never written inline.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from migwatch.errors import ConfigError

MIGRATION_ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")


def check_migration_id(migration_id: str) -> str:
    """Return `migration_id` if it is valid (`[a-z0-9][a-z0-9-]{0,39}`), else raise ConfigError."""
    if not isinstance(migration_id, str) or not MIGRATION_ID_RE.match(migration_id):
        raise ConfigError(
            f"{migration_id!r} must match [a-z0-9][a-z0-9-]{{0,39}} (a commit SHA fits)",
            field="migration_id",
        )
    return migration_id


def pg_name(migration_id: str) -> str:
    """The PostgreSQL-safe name (slot, publication) derived from a migration id."""
    return "migwatch_" + check_migration_id(migration_id).replace("-", "_")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SecretRef(_Model):
    """Where a credential lives: exactly one of an env var, a file, or a Prefect Secret block."""

    env: str | None = None
    file: str | None = None
    secret: str | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> SecretRef:
        given = [k for k in ("env", "file", "secret") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError("give exactly one of {env: VAR}, {file: PATH}, {secret: BLOCK}")
        return self

    def describe(self) -> str:
        if self.env:
            return f"env:{self.env}"
        if self.file:
            return f"file:{self.file}"
        return f"secret:{self.secret}"

    def resolve(self, field: str) -> SecretStr:
        """Read the credential now; a missing one is a ConfigError naming `field`."""
        if self.env:
            value = os.environ.get(self.env)
            if value is None:
                raise ConfigError(f"environment variable {self.env} is not set", field=field)
            return SecretStr(value)
        if self.file:
            path = Path(self.file).expanduser()
            try:
                return SecretStr(path.read_text().strip())
            except OSError as exc:
                raise ConfigError(f"cannot read secret file {path}: {exc.strerror}", field) from exc
        from migwatch.prefect_adapter import load_secret  # Prefect only when a block is named

        return SecretStr(load_secret(str(self.secret), field))


class Endpoint(_Model):
    """A database the migration reads from or writes to."""

    kind: Literal["postgres", "mongodb"]
    host: str = "127.0.0.1"
    port: int = Field(ge=1, le=65535)
    database: str = Field(min_length=1)
    user: str | None = None
    password: SecretRef | None = None

    @field_validator("password", mode="before")
    @classmethod
    def _no_inline_password(cls, value: Any) -> Any:
        if isinstance(value, str):
            raise ValueError(
                "inline passwords are refused; use {env: VAR}, {file: PATH} or {secret: BLOCK}"
            )
        return value

    def secret(self, field: str) -> SecretStr | None:
        return self.password.resolve(f"{field}.password") if self.password else None

    def redacted(self) -> str:
        """A display form with no secret in it — safe for logs and reports."""
        who = f"{self.user}@" if self.user else ""
        return f"{self.kind}://{who}{self.host}:{self.port}/{self.database}"


def split_qualified(text: str) -> tuple[str, str]:
    """(schema, table) of `schema.table` or `table` (schema `public`). A part holding a dot or
    a double quote is written in double quotes, PostgreSQL's way (`"a.b".orders`, a quote
    inside doubled);
    anything else PostgreSQL accepts — spaces, mixed case, non-ASCII — needs none."""
    parts: list[str] = []
    i, n = 0, len(text)
    while True:
        if i < n and text[i] == '"':
            j, part = i + 1, []
            while True:
                k = text.find('"', j)
                if k < 0:
                    raise ValueError(f"{text!r}: a double quote is not closed")
                part.append(text[j:k])
                if k + 1 < n and text[k + 1] == '"':
                    part.append('"')
                    j = k + 2
                    continue
                i = k + 1
                break
            parts.append("".join(part))
        else:
            k = text.find(".", i)
            k = n if k < 0 else k
            piece = text[i:k]
            if '"' in piece:
                raise ValueError(f"{text!r}: quote the whole name that holds a double quote")
            parts.append(piece)
            i = k
        if i == n:
            break
        if text[i] != ".":
            raise ValueError(f"{text!r}: a quoted name must be followed by '.' or end")
        i += 1
    if len(parts) > 2 or not all(parts):
        raise ValueError(f"{text!r} must be 'table' or 'schema.table' (quote a name that "
                         "holds a dot: '\"my.schema\".orders')")
    return (parts[0], parts[1]) if len(parts) == 2 else ("public", parts[0])


def qualified(schema: str, table: str) -> str:
    """The one text form of a table everywhere (positions, metrics, reports): `schema.table`,
    each part double-quoted only when it holds a dot or a double quote."""

    def part(p: str) -> str:
        return '"' + p.replace('"', '""') + '"' if "." in p or '"' in p else p

    return f"{part(schema)}.{part(table)}"


class TableSpec(_Model):
    """One table to move; `source` is `schema.table` (case kept), `target` defaults to the same."""

    source: str
    target: str | None = None
    #: columns a MongoDB target stores as a JSON string instead of a native value
    json_string_columns: tuple[str, ...] = ()

    @field_validator("source", "target")
    @classmethod
    def _qualified(cls, value: str | None) -> str | None:
        if value is None:
            return value
        return qualified(*split_qualified(value))

    @property
    def schema_name(self) -> str:
        return split_qualified(self.source)[0]

    @property
    def name(self) -> str:
        return split_qualified(self.source)[1]

    @property
    def target_name(self) -> str:
        return self.target or self.source

    @property
    def target_parts(self) -> tuple[str, str]:
        """(schema, table) on the target."""
        return split_qualified(self.target_name)

    @property
    def target_table(self) -> str:
        """The table's name on the target without schema (a MongoDB collection name)."""
        return self.target_parts[1]


class MigrationsSpec(_Model):
    folder: str  # relative to the spec file (load_spec resolves it)
    kind: Literal["sql", "mongodb"] | None = None
    lock_timeout_seconds: float = Field(default=60, gt=0)


class KafkaSpec(_Model):
    bootstrap_servers: str = "127.0.0.1:9092"
    dlq_topic: str | None = None  # default: migwatch.<migration_id>.dlq
    batch_size: int = Field(default=2000, ge=1, le=100_000)

    @field_validator("dlq_topic")
    @classmethod
    def _topic_name(cls, value: str | None) -> str | None:
        """Kafka's own rule, checked here: a bad name would stop the applier at its first
        dead letter, not at the start."""
        if value is not None and not re.fullmatch(r"[A-Za-z0-9._-]{1,249}", value):
            raise ValueError(f"{value!r} is not a Kafka topic name: 1 to 249 of A-Z a-z 0-9 . _ -")
        return value


class ConnectSpec(_Model):
    """Kafka Connect, and how its connector gets the source's password without holding it:
    through a config provider, so neither Connect's REST API nor its config topic has it.

    `secrets_dir`: a folder on the Connect host that its FileConfigProvider may read; migwatch
    writes the connector's password file there (mode 0600) and gives the connector a
    `${file:...}` reference to it. Default: the local stack's folder. `password_reference`: for a
    Connect whose host migwatch cannot write to, the reference its own provider resolves to the
    source password (e.g. `${vault:secret/shop:password}`); migwatch then writes nothing."""

    url: str = "http://127.0.0.1:8083"
    heartbeat_interval_ms: int = Field(default=1000, ge=100)
    overrides: dict[str, str] = Field(default_factory=dict)
    ready_timeout_seconds: float = Field(default=120, gt=0)
    secrets_dir: str | None = None
    password_reference: str | None = None

    @field_validator("secrets_dir")
    @classmethod
    def _usable_in_a_reference(cls, value: str | None) -> str | None:
        if value is not None and (not value.startswith("/") or any(c in value for c in ":}$")):
            raise ValueError("must be an absolute path without ':', '}' or '$' (it is written "
                             "into a ${file:<path>:<key>} reference)")
        return value

    @field_validator("password_reference")
    @classmethod
    def _a_reference(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"\$\{[^}:]+:[^}]*\}", value):
            raise ValueError("must be a config-provider reference such as "
                             "${vault:secret/shop:password}, never the password itself")
        return value

    @field_validator("overrides")
    @classmethod
    def _no_password_override(cls, value: dict[str, str]) -> dict[str, str]:
        if "database.password" in value:
            raise ValueError("database.password cannot be overridden: use source.password "
                             "(and connect.password_reference for a remote Connect)")
        return value


class Threshold(_Model):
    """Thresholds of one lag measure. Warn/critical use hysteresis: clear below `clear_ratio`×."""

    warn: float = Field(ge=0)
    critical: float = Field(ge=0)
    caught_up: float = Field(ge=0)
    hard_max: float | None = Field(default=None, ge=0)
    clear_ratio: float = Field(default=0.8, gt=0, le=1)

    @model_validator(mode="after")
    def _ordered(self) -> Threshold:
        if not self.caught_up <= self.warn <= self.critical:
            raise ValueError("need caught_up <= warn <= critical")
        if self.hard_max is not None and self.hard_max < self.critical:
            raise ValueError("hard_max must be >= critical")
        return self


def _default_thresholds() -> dict[str, Threshold]:
    return {
        "consumer_lag_messages": Threshold(warn=10_000, critical=100_000, caught_up=100),
        "event_time_lag_seconds": Threshold(warn=60, critical=300, caught_up=5),
        "end_to_end_lag_seconds": Threshold(warn=60, critical=300, caught_up=10),
        "slot_wal_bytes": Threshold(warn=1 << 30, critical=4 << 30, caught_up=64 << 20),
    }


LAG_MEASURES = tuple(_default_thresholds())


class MonitorSpec(_Model):
    thresholds: dict[str, Threshold] = Field(default_factory=_default_thresholds)
    window_size: int = Field(default=10, ge=2)
    consecutive_polls: int = Field(default=3, ge=1)
    poll_interval_seconds: float = Field(default=5, gt=0)
    timeout_seconds: float = Field(default=1800, gt=0)
    throughput_drop_fraction: float = Field(default=0.5, gt=0, lt=1)
    error_rate_threshold: float = Field(default=0.01, ge=0, le=1)
    slot_wal_limit_bytes: int | None = Field(default=None, ge=0)
    heartbeat_table: str = "public.migwatch_heartbeat"

    @field_validator("thresholds")
    @classmethod
    def _known_measures(cls, value: dict[str, Threshold]) -> dict[str, Threshold]:
        unknown = sorted(set(value) - set(LAG_MEASURES))
        if unknown:
            raise ValueError(f"unknown lag measure(s) {unknown}; known: {list(LAG_MEASURES)}")
        return {**_default_thresholds(), **value}


class ValidationSpec(_Model):
    workers: int = Field(default=2, ge=1, le=64)
    sample_cap: int = Field(default=20, ge=0)
    show_values: bool = False
    chunk_rows: int = Field(default=10_000, ge=1)
    #: the server cancels one comparison query running longer than this
    statement_timeout_seconds: float = Field(default=3600, gt=0)
    expectations: dict[str, list[dict[str, Any]]] = Field(default_factory=dict)


class NotificationsSpec(_Model):
    """Names of Prefect blocks to notify per severity."""

    warning: tuple[str, ...] = ()
    critical: tuple[str, ...] = ()
    resolved: tuple[str, ...] = ()  # empty: resolved goes to the warning and critical blocks
    #: recipients and sender of messages sent through an EmailServerCredentials block
    email_to: tuple[str, ...] = ()
    email_from: str = "migwatch@localhost"


class SnapshotSpec(_Model):
    """How the migrate stage follows the initial snapshot: poll interval and its bound."""

    timeout_seconds: float = Field(default=3600, gt=0)
    poll_interval_seconds: float = Field(default=2, gt=0)
    #: secondary indexes built at once after the load (one target connection each)
    index_workers: int = Field(default=2, ge=1, le=32)
    #: how the initial load runs: `copy` (the default) — every table read straight from a
    #: slot's exported snapshot (COPY into a PostgreSQL target, batched inserts into MongoDB),
    #: then Debezium streams from that slot without a snapshot of its own (`migwatch.load`,
    #: docs/initial-load.md); `debezium` — Debezium's snapshot, every row an event through
    #: Kafka and the applier
    method: Literal["debezium", "copy"] = "copy"
    #: tables copied at once (one source and one target connection each)
    copy_workers: int = Field(default=2, ge=1, le=32)
    #: a table estimated above this many rows is copied as key ranges (one per this many
    #: rows, on the first key column) side by side, each recorded as it lands so a cut-off
    #: load resumes with the ranges left (`migwatch.load.ranges`)
    split_rows: int = Field(default=1_000_000, ge=1000)
    #: the copy rate per worker the pre-flight estimate of the load's time assumes (this
    #: machine's bench: ~35 MiB/s into PostgreSQL; MongoDB is slower)
    estimate_mib_per_second: float = Field(default=30, gt=0)
    #: how long creating the slot may wait for transactions open on the source
    slot_timeout_seconds: float = Field(default=60, gt=0)


class SupervisionSpec(_Model):
    """How the local supervisor keeps the applier and the connector's tasks running: a process
    that dies is started again after a backoff (doubling from `backoff_initial_seconds` to
    `backoff_max_seconds`, with jitter); more than `max_restarts` restarts of one component
    within `window_seconds` means a permanent fault — it stops restarting and notifies critical."""

    max_restarts: int = Field(default=5, ge=0)
    window_seconds: float = Field(default=600, gt=0)
    backoff_initial_seconds: float = Field(default=1, gt=0)
    backoff_max_seconds: float = Field(default=60, gt=0)
    #: how often the connector's tasks are checked for a FAILED one
    check_interval_seconds: float = Field(default=15, gt=0)

    @model_validator(mode="after")
    def _backoff_order(self) -> SupervisionSpec:
        if self.backoff_initial_seconds > self.backoff_max_seconds:
            raise ValueError("backoff_initial_seconds must not exceed backoff_max_seconds")
        return self


class Hook(_Model):
    """A user step of the cutover: a command (argv, no shell) or an HTTP webhook (POST of a
    JSON body naming the migration and the step), bounded by `timeout_seconds`. A webhook URL
    may carry a token: give it as a reference (`{env: VAR}`) and only its host is ever shown."""

    command: list[str] | None = Field(default=None, min_length=1)
    url: str | SecretRef | None = None
    timeout_seconds: float = Field(default=30, gt=0)

    @model_validator(mode="after")
    def _exactly_one(self) -> Hook:
        if (self.command is None) == (self.url is None):
            raise ValueError("give exactly one of command: [argv…] or url: …")
        return self


class FreezeHook(Hook):
    """A freeze step of the user's own (a proxy, a feature flag, DNS) with the hook that undoes
    it; `undo` runs when the cutover aborts after this step ran."""

    name: str = Field(min_length=1, max_length=60)
    undo: Hook | None = None


class FreezeSpec(_Model):
    """How writes on the source stop for the cutover. `read_only`: new sessions of the
    application's roles start read-only (`default_transaction_read_only` on the database,
    migwatch's own role exempt by `ALTER ROLE … IN DATABASE`, plus `exempt_roles`);
    `terminate_sessions`: the application's open sessions are ended so they reconnect read-only
    (needs `pg_signal_backend`; an ended session has no undo). `hooks` run after those."""

    read_only: bool = True
    terminate_sessions: bool = True
    exempt_roles: tuple[str, ...] = ()
    hooks: tuple[FreezeHook, ...] = ()


class CutoverSpec(_Model):
    """The cutover's settings: what a GO must be, how long each wait may take, the freeze, the
    switch hook that points the application at the target, and whether CDC stays up after."""

    max_report_age_seconds: float = Field(default=3600, gt=0)
    approval_timeout_seconds: float = Field(default=3600, gt=0)
    terminate_timeout_seconds: float = Field(default=10, gt=0)
    drain_timeout_seconds: float = Field(default=120, gt=0)
    sequence_margin: int = Field(default=0, ge=0)
    #: inside the freeze, the tables that changed since the full pass are compared again
    #: (`changed_tables`; a whole-table compare, about 0.4 s per million rows on PostgreSQL),
    #: or not at all (`none`: the drain alone vouches for them)
    final_check: Literal["changed_tables", "none"] = "changed_tables"
    freeze: FreezeSpec = Field(default_factory=FreezeSpec)
    switch: Hook | None = None
    keep_cdc: bool = False


class MetricsSpec(_Model):
    port: int = Field(default=0, ge=0, le=65535)  # 0: pick a free port
    pushgateway_url: str = "http://127.0.0.1:9091"
    prometheus_url: str = "http://127.0.0.1:9090"
    grafana_url: str | None = None
    grafana_token: SecretRef | None = None


class MigrationSpec(_Model):
    """A whole migration: what moves where, and how it is watched."""

    source: Endpoint
    target: Endpoint
    tables: tuple[TableSpec, ...] = Field(min_length=1)
    migrations: MigrationsSpec | None = None
    kafka: KafkaSpec = Field(default_factory=KafkaSpec)
    connect: ConnectSpec = Field(default_factory=ConnectSpec)
    monitor: MonitorSpec = Field(default_factory=MonitorSpec)
    validation: ValidationSpec = Field(default_factory=ValidationSpec)
    notifications: NotificationsSpec = Field(default_factory=NotificationsSpec)
    metrics: MetricsSpec = Field(default_factory=MetricsSpec)
    snapshot: SnapshotSpec = Field(default_factory=SnapshotSpec)
    supervision: SupervisionSpec = Field(default_factory=SupervisionSpec)
    cutover: CutoverSpec = Field(default_factory=CutoverSpec)

    @field_validator("tables", mode="before")
    @classmethod
    def _tables_as_strings(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"source": v} if isinstance(v, str) else v for v in value]
        return value

    @model_validator(mode="after")
    def _checks(self) -> MigrationSpec:
        if self.source.kind != "postgres":
            raise ValueError("source.kind: only 'postgres' sources are supported")
        seen: set[str] = set()
        for t in self.tables:
            if t.source in seen:
                raise ValueError(f"tables: {t.source!r} is listed twice")
            seen.add(t.source)
        return self

    def dlq_topic(self, migration_id: str) -> str:
        return self.kafka.dlq_topic or f"migwatch.{check_migration_id(migration_id)}.dlq"


def _field_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def parse_spec(data: Mapping[str, Any], origin: str = "spec") -> MigrationSpec:
    """Validate a spec mapping; the ConfigError names the first bad field and lists the rest."""
    try:
        return MigrationSpec.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        lines = [f"{_field_path(e['loc']) or '(top)'}: {e['msg']}" for e in errors]
        first = _field_path(errors[0]["loc"]) or "(top)"
        raise ConfigError(f"{origin} is invalid:\n  " + "\n  ".join(lines), field=first) from None


def load_spec(path: str | os.PathLike[str]) -> MigrationSpec:
    """Read and validate a spec file."""
    p = Path(path)
    try:
        raw = yaml.safe_load(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"spec file {p} does not exist", field="spec") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p} is not valid YAML: {exc}", field="spec") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{p} must hold a mapping", field="spec")
    spec = parse_spec(raw, origin=str(p))
    if spec.migrations is not None and not Path(spec.migrations.folder).expanduser().is_absolute():
        # a spec names its migrations folder relative to itself, wherever it is run from
        folder = str((p.parent / spec.migrations.folder).resolve())
        spec = spec.model_copy(update={
            "migrations": spec.migrations.model_copy(update={"folder": folder})})
    return spec


def postgres_conninfo(endpoint: Endpoint, field: str, application: str = "migwatch") -> str:
    """A libpq URI for `endpoint` — contains the password: never log it."""
    if endpoint.kind != "postgres":
        raise ConfigError("expected a postgres endpoint", field=f"{field}.kind")
    secret = endpoint.secret(field)
    auth = quote(endpoint.user or "", safe="")
    if secret is not None:
        auth += ":" + quote(secret.get_secret_value(), safe="")
    host = f"{auth}@{endpoint.host}" if auth else endpoint.host
    return (
        f"postgresql://{host}:{endpoint.port}/{quote(endpoint.database, safe='')}"
        f"?application_name={application}&connect_timeout=10"
    )


def mongodb_uri(endpoint: Endpoint, field: str) -> str:
    """A MongoDB URI for `endpoint` — contains the password: never log it."""
    secret = endpoint.secret(field)
    auth = ""
    if endpoint.user:
        auth = quote(endpoint.user, safe="")
        if secret is not None:
            auth += ":" + quote(secret.get_secret_value(), safe="")
        auth += "@"
    return f"mongodb://{auth}{endpoint.host}:{endpoint.port}/"


def _default_state_dir() -> Path:
    # PostgreSQL must run as an unprivileged user; under root that user cannot enter /root, so the
    # state lives where it can (and survives reboots).
    if os.geteuid() == 0:
        return Path("/var/tmp/migwatch")
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "migwatch"


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "migwatch"


class StackSettings(BaseSettings):
    """Where the local stack lives and listens; every field is `MIGWATCH_<NAME>` in the env."""

    model_config = SettingsConfigDict(env_prefix="MIGWATCH_", extra="ignore")

    state_dir: Path = Field(default_factory=_default_state_dir)
    cache_dir: Path = Field(default_factory=_default_cache_dir)
    host: str = "127.0.0.1"
    pg_source_port: int = 15432
    pg_target_port: int = 15433
    pg_user: str = "migwatch"
    pg_password: SecretStr = SecretStr("migwatch-local")
    pg_max_slots: int = 40
    kafka_port: int = 9092
    kafka_controller_port: int = 9093
    kafka_heap: str = "384m"
    connect_port: int = 8083
    connect_heap: str = "512m"
    ferretdb_port: int = 27017
    prometheus_port: int = 9090
    pushgateway_port: int = 9091
    alertmanager_port: int = 9095
    prefect_port: int = 4200
    scrape_interval: str = "2s"
    kafka_version: str = "4.3.0"
    debezium_version: str = "3.6.1.Final"
    ferretdb_version: str = "v1.24.2"
    log4j_version: str = "2.25.2"

    @field_validator("state_dir", "cache_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        """Absolute, so a folder passed to a command (pg_ctl -D, initdb) never reads as an
        option, whatever name the user gave it."""
        return value.expanduser().absolute()

    @property
    def file_sd_dir(self) -> Path:
        return self.state_dir / "prometheus" / "targets"

    @property
    def connect_secrets_dir(self) -> Path:
        """Where the local Connect's FileConfigProvider may read connector secrets from."""
        return self.state_dir / "connect-secrets"

    def url(self, port: int, scheme: str = "http") -> str:
        return f"{scheme}://{self.host}:{port}"


def stack_settings() -> StackSettings:
    return StackSettings()
