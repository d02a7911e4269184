"""The validation result as plain data: what was compared, what differs, what is still pending.

Everything here converts to and from JSON-able dicts (`to_dict`/`from_dict`), so a Prefect task
can return it, the report stage can read it from a file, and `revalidate` can pick it up later.
Primary-key values keep their type through a small tagged encoding (`encode_value`).
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

# table status
EQUAL = "equal"
DIFFERENT = "different"
PENDING = "pending"
ERROR = "error"

# range state (DMS's pending revalidation)
RANGE_PENDING = "pending"
RANGE_RESOLVED = "resolved"
RANGE_MISMATCHED = "mismatched"

REDACTED = "<redacted>"
NOT_APPLICABLE = "not applicable"  # a schema check on a target without one


# ----------------------------------------------------------------------------- key codec
def encode_value(value: Any) -> Any:
    """A JSON-able form of a key value that `decode_value` turns back into the same type."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return {"$float": repr(value)}
    if isinstance(value, Decimal):
        return {"$numeric": str(value)}
    if isinstance(value, dt.datetime):
        return {"$timestamp": value.isoformat()}
    if isinstance(value, dt.date):
        return {"$date": value.isoformat()}
    if isinstance(value, dt.time):
        return {"$time": value.isoformat()}
    if isinstance(value, dt.timedelta):
        return {"$interval_us": (value.days * 86_400 + value.seconds) * 1_000_000
                + value.microseconds}
    if isinstance(value, uuid.UUID):
        return {"$uuid": str(value)}
    if isinstance(value, bytes | bytearray | memoryview):
        return {"$bytes": bytes(value).hex()}
    return {"$text": str(value)}


def decode_value(value: Any) -> Any:
    if not isinstance(value, dict):
        return value
    (tag, raw), = value.items()
    if tag == "$float":
        return float(raw)
    if tag == "$numeric":
        return Decimal(raw)
    if tag == "$timestamp":
        return dt.datetime.fromisoformat(raw)
    if tag == "$date":
        return dt.date.fromisoformat(raw)
    if tag == "$time":
        return dt.time.fromisoformat(raw)
    if tag == "$interval_us":
        return dt.timedelta(microseconds=raw)
    if tag == "$uuid":
        return uuid.UUID(raw)
    if tag == "$bytes":
        return bytes.fromhex(raw)
    return raw


def encode_key(key: tuple[Any, ...] | None) -> list[Any] | None:
    return None if key is None else [encode_value(v) for v in key]


def decode_key(key: list[Any] | None) -> tuple[Any, ...] | None:
    return None if key is None else tuple(decode_value(v) for v in key)


def display_key(key: tuple[Any, ...], primary_key: tuple[str, ...]) -> dict[str, Any]:
    """`{column: value}` of a key for people: keys locate rows, so they are always shown."""
    out: dict[str, Any] = {}
    for name, v in zip(primary_key, key, strict=False):
        out[name] = v if v is None or isinstance(v, bool | int | str | float) else str(v)
    return out


# ----------------------------------------------------------------------------- results
@dataclass
class RowDiff:
    """One differing row: `missing` on target, `extra` on target, or `changed` columns."""

    kind: str
    key: dict[str, Any]
    columns: list[str] = field(default_factory=list)
    source: dict[str, Any] | None = None  # column → canonical text, only with show_values
    target: dict[str, Any] | None = None


@dataclass
class RangeCheck:
    """Differing rows and where they stand on revalidation: the rows' keys when the comparison
    located them (`row_keys`, at most `CompareOptions.pending_keys` per table), else only the
    primary-key range [lo, hi) holding them.

    `lsn` is the source's WAL position when the difference was (last) seen. A key check keeps
    the leaf range it was found in as lo/hi, for people; `row_keys` is what is re-checked.
    `source_digest` is a range check's (count, hash) on the source then. `note` says why a
    check is where it is (e.g. a row still changing on the source after every attempt).
    """

    lo: list[Any] | None
    hi: list[Any] | None
    lsn: str
    lsn_num: int
    state: str = RANGE_PENDING
    attempts: int = 1
    missing: int = 0
    extra: int = 0
    changed: int = 0
    keys: list[dict[str, Any]] = field(default_factory=list)
    source_digest: list[int] = field(default_factory=list)
    checked_at: str = ""
    row_keys: list[list[Any]] | None = None
    note: str = ""

    @property
    def rows(self) -> int:
        return self.missing + self.extra + self.changed

    def decoded_keys(self) -> list[tuple[Any, ...]]:
        return [decode_key(k) or () for k in self.row_keys or []]


@dataclass
class TableResult:
    """The comparison of one table (source) with its target table or collection."""

    table: str
    target: str
    status: str = EQUAL
    method: str = ""
    precision: str = ""
    primary_key: list[str] = field(default_factory=list)
    source_rows: int = 0
    target_rows: int = 0
    rows_compared: int = 0
    ranges_checked: int = 0
    missing: int = 0
    extra: int = 0
    changed: int = 0
    sample: list[RowDiff] = field(default_factory=list)
    sample_truncated: bool = False
    ranges: list[RangeCheck] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    schema_differences: list[str] = field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None
    expectations: dict[str, Any] | None = None
    #: wall seconds per phase (open, digest, locate, sample): where the time went
    timings: dict[str, float] = field(default_factory=dict)
    #: source WAL position of `source_rows` when revalidation re-counted them (the target's
    #: count was taken once its applier had passed it); empty: counted during the comparison
    counts_lsn: str = ""
    counted_at: str = ""

    @property
    def mismatched_rows(self) -> int:
        return self.missing + self.extra + self.changed

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TableResult:
        t = dict(data)
        t["sample"] = [RowDiff(**d) for d in t.get("sample", [])]
        t["ranges"] = [RangeCheck(**r) for r in t.get("ranges", [])]
        return cls(**t)

    def pending_ranges(self) -> list[RangeCheck]:
        return [r for r in self.ranges if r.state == RANGE_PENDING]

    def settle_status(self) -> None:
        """Status from what was found: error, then different, then pending, else equal."""
        if self.error is not None:
            self.status = ERROR
        elif self.schema_differences or any(r.state == RANGE_MISMATCHED for r in self.ranges):
            self.status = DIFFERENT
        elif self.pending_ranges():
            self.status = PENDING
        elif self.mismatched_rows and not self.ranges:
            self.status = DIFFERENT
        else:
            self.status = EQUAL

    def recount(self, sample_cap: int) -> None:
        """Counts and sample from the ranges not resolved (after revalidation)."""
        live = [r for r in self.ranges if r.state != RANGE_RESOLVED]
        self.missing = sum(r.missing for r in live)
        self.extra = sum(r.extra for r in live)
        self.changed = sum(r.changed for r in live)
        self.sample = [RowDiff(**d) for r in live for d in r.keys][:sample_cap]
        self.sample_truncated = self.mismatched_rows > len(self.sample)
        self.settle_status()


@dataclass
class SchemaDifference:
    """One object whose definition differs: `missing` on the target, `extra` on it, or
    `differs`; `declared_by` names the migration that declares it deliberate."""

    object: str
    kind: str
    source: str = ""
    target: str = ""
    declared_by: str = ""


@dataclass
class SchemaCheck:
    """The target's definitions of the spec's tables and what they depend on, against the
    source's: `differences` block a go, `declared` ones do not."""

    status: str = EQUAL
    objects: int = 0
    differences: list[SchemaDifference] = field(default_factory=list)
    declared: list[SchemaDifference] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    method: str = ""
    seconds: float = 0.0
    error: str | None = None

    def settle(self) -> None:
        self.status = (ERROR if self.error is not None else DIFFERENT if self.differences
                       else self.status if self.status == NOT_APPLICABLE else EQUAL)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SchemaCheck:
        d = dict(data)
        d["differences"] = [SchemaDifference(**x) for x in d.get("differences", [])]
        d["declared"] = [SchemaDifference(**x) for x in d.get("declared", [])]
        return cls(**d)


@dataclass
class ValidationResult:
    """Every table's comparison; `status` and `exit_code` summarise them."""

    migration_id: str
    source: str
    target: str
    started_at: str
    finished_at: str = ""
    tables: list[TableResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: the schema check (None: not run — an older result, or a run limited to some tables)
    schema: SchemaCheck | None = None

    @property
    def status(self) -> str:
        states = {t.status for t in self.tables}
        if self.schema is not None and self.schema.status in (ERROR, DIFFERENT):
            states.add(self.schema.status)
        for s in (ERROR, DIFFERENT, PENDING):
            if s in states:
                return s
        return EQUAL

    @property
    def exit_code(self) -> int:
        """0 equal, 1 differences (or still pending), 2 could not compare."""
        return {EQUAL: 0, DIFFERENT: 1, PENDING: 1, ERROR: 2}[self.status]

    def table(self, name: str) -> TableResult:
        return next(t for t in self.tables if t.table == name or t.table == f"public.{name}")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["status"] = self.status
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ValidationResult:
        tables = [TableResult.from_dict(t) for t in data.get("tables", [])]
        schema = SchemaCheck.from_dict(data["schema"]) if data.get("schema") else None
        fields = {k: v for k, v in data.items() if k not in ("tables", "status", "schema")}
        return cls(**fields, tables=tables, schema=schema)

    def save(self, path: str | Path) -> Path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False))
        tmp.rename(p)
        return p

    @classmethod
    def load(cls, path: str | Path) -> ValidationResult:
        return cls.from_dict(json.loads(Path(path).read_text()))


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
