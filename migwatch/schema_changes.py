"""Schema changes on the source while CDC runs: how a table's definition on the source differs
from what its target holds, and which of those differences a target follows by itself.

Every event carries its row's definition as of the change (`event_schema`: each column's source
type, length and scale), so a change shows in the first event written under it: a column the
target does not have, a type it does not hold, a column it has that the event leaves out and the
source no longer has. The event's definition is compared with the target (never with what the
applier believed: a change the user already made on the target is no difference), and the
target is brought to the definition *of that event* — not to the catalog as it is when the event
is read, which may be several changes further (an applier behind, a table that waited for the
user). An event older than the target's definition of a column (read again after the target
moved on, `ColumnChange.since`) neither moves the target back nor writes that column's older
value; a column the target has that an older event leaves out keeps the row's value. Nothing is
taken from Debezium's defaults (its reading of the catalog *now*): a column's value in the rows
that existed when it was added is the one PostgreSQL kept for them, else the rows' current one.
The choices, as the Debezium JDBC sink's `schema.evolution=basic`:

    additive (followed)    a new column (its type; existing rows take the value the source gave
                           them; NOT NULL when the source's has it and every row the target
                           holds has a value by then; no default: target tables carry none,
                           their rows come from the source), a widened type
                           (varchar(n) → varchar(m ≥ n) or text, smallint → integer → bigint,
                           numeric(p, s) → numeric(p' ≥ p, s) or numeric, real → double
                           precision, timestamp(p) → timestamp(p' ≥ p), bit(n) → bit varying),
                           a dropped NOT NULL; a NOT NULL added leaves the target as it is (it
                           accepts every value the source does)
    destructive (stops)    a dropped or renamed column, a narrowed or otherwise changed type:
                           the table's events before the change land, the rest wait at the
                           first one that needs it (`TableStopped`), the other tables keep
                           going, and it continues by itself once the target has the same
                           change (a versioned migration) — or once the user accepts the
                           source's definition (`migwatch resume-table --accept`,
                           `migwatch.resuming`)

(Events without a definition — a connector configured by hand without
`column.propagate.source.type` — are read by the catalog instead: a changed type then shows as a
value its column's known type cannot read.) Every change seen and what was done is a
`SchemaChange` in the migration's history on the target (beside the applier's positions): the
monitor reads the stopped tables from it (ERROR), the report lists it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from migwatch.errors import PermanentError

ADDED = "added"
WIDENED = "widened"
NULLABLE = "nullable"
DROPPED = "dropped"
CHANGED = "changed"
NOT_NULL = "not null"

_INT_RANK = {"smallint": 1, "integer": 2, "bigint": 3}


@dataclass(frozen=True)
class ColumnChange:
    """One column's difference: `kind` is one of the constants above."""

    column: str
    kind: str
    source_type: str | None = None
    target_type: str | None = None
    #: the position (LSN) of the event the target followed it at (None: not recorded)
    since: int | None = None

    @property
    def additive(self) -> bool:
        return self.kind in (ADDED, WIDENED, NULLABLE, NOT_NULL)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"column": self.column, "kind": self.kind,
                               "source_type": self.source_type, "target_type": self.target_type}
        if self.since is not None:
            out["since"] = self.since
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ColumnChange:
        since = d.get("since")
        return cls(str(d["column"]), str(d["kind"]), d.get("source_type"), d.get("target_type"),
                   int(since) if since is not None else None)

    def describe(self) -> str:
        if self.kind == ADDED:
            return f"column {self.column!r} added ({self.source_type})"
        if self.kind == DROPPED:
            return f"column {self.column!r} dropped on the source"
        if self.kind == NULLABLE:
            return f"column {self.column!r} no longer NOT NULL"
        if self.kind == NOT_NULL:
            return f"column {self.column!r} made NOT NULL"
        verb = "widened" if self.kind == WIDENED else "changed"
        return f"column {self.column!r} {verb} from {self.target_type} to {self.source_type}"


class TableStopped(PermanentError):
    """A table's source changed in a way its target does not follow by itself: its events stop
    before the first one that needs the change, until the target has it too."""

    def __init__(self, table: str, changes: list[ColumnChange], why: str | None = None) -> None:
        self.table = table
        self.changes = changes
        self.why = why
        what = "; ".join(c.describe() for c in changes)
        super().__init__(f"table {table}: {what}"
                         + (f": the target refused it ({why})" if why else "")
                         + " — apply the same change to the target (a versioned migration), or "
                         f"let migwatch do it: `migwatch resume-table <spec> {table} "
                         "--migration-id <id> --accept`; the table then continues where it "
                         "stopped")


def _parts(type_name: str) -> tuple[str, list[int], str]:
    """(base, modifiers, the rest): 'timestamp(3) without time zone' → ('timestamp', [3],
    'without time zone'); 'timestamp without time zone' → ('timestamp', [], 'without time
    zone'); 'character varying' → ('character varying', [], '')."""
    t = type_name.strip().lower()
    if "(" in t:
        base, _, tail = t.partition("(")
        args, _, rest = tail.partition(")")
        return base.strip(), [int(a) for a in args.replace(" ", "").split(",") if a], \
            rest.strip()
    for word in ("timestamp", "time", "interval"):
        if t.startswith(word + " "):
            return word, [], t[len(word):].strip()
    return t, [], ""


def widens(target_type: str, source_type: str) -> bool:
    """Whether every value of `target_type` is a value of `source_type`, unchanged."""
    if target_type == source_type:
        return True
    if target_type.endswith("[]") != source_type.endswith("[]"):
        return False
    if target_type.endswith("[]"):
        return widens(target_type[:-2], source_type[:-2])
    (tb, ta, tr), (sb, sa, sr) = _parts(target_type), _parts(source_type)
    if tr != sr:
        return False
    if tb in _INT_RANK and sb in _INT_RANK:
        return _INT_RANK[sb] >= _INT_RANK[tb]
    if tb == "character varying" and sb == "text":
        return True
    if tb == sb == "character varying":
        return not sa or (bool(ta) and sa[0] >= ta[0])
    if tb == sb == "numeric":
        return not sa or (len(ta) == 2 and len(sa) == 2 and sa[1] == ta[1] and sa[0] >= ta[0])
    if (tb, sb) == ("real", "double precision"):
        return True
    if tb == sb and tb.startswith(("timestamp", "time")):
        return (sa[0] if sa else 6) >= (ta[0] if ta else 6)
    return (tb, sb) == ("bit", "bit varying") and (not sa or (bool(ta) and sa[0] >= ta[0]))


def differences(source: dict[str, tuple[str, bool]],
                target: dict[str, tuple[str, bool]]) -> list[ColumnChange]:
    """How the source's columns ({name: (type, NOT NULL)}) differ from the target's."""
    out = []
    for name, (stype, snn) in source.items():
        if name not in target:
            out.append(ColumnChange(name, ADDED, stype))
            continue
        ttype, tnn = target[name]
        if stype != ttype:
            out.append(ColumnChange(name, WIDENED if widens(ttype, stype) else CHANGED,
                                    stype, ttype))
        if tnn and not snn:
            out.append(ColumnChange(name, NULLABLE, stype, ttype))
        elif snn and not tnn:
            out.append(ColumnChange(name, NOT_NULL, stype, ttype))
    out += [ColumnChange(name, DROPPED, None, ttype) for name, (ttype, _) in target.items()
            if name not in source]
    return out


# ---------------------------------------------------------------------------- the record
#: what migwatch did about a schema change, as recorded on the target (`SchemaChange.outcome`)
FOLLOWED = "followed"    # the target was brought along (additive)
STOPPED = "stopped"      # the table's apply stopped before the event that needs the change
CONTINUED = "continued"  # a stopped table continued: its target has the change now
ACCEPTED = "accepted"    # `migwatch resume-table --accept` let the target follow a stopped change


@dataclass(frozen=True)
class SchemaChange:
    """One schema change seen (or resolved) on one table, as the applier (or `resume-table`)
    records it on the target beside its positions: the run's history of its source's schema,
    read by the monitor (a stopped table is an ERROR), the report and `resume-table`."""

    at: float                          # epoch seconds, the target's clock
    table: str                         # the source table, `schema.table`
    outcome: str                       # FOLLOWED, STOPPED, CONTINUED or ACCEPTED
    changes: tuple[ColumnChange, ...] = ()
    note: str | None = None            # e.g. why the target refused it

    def describe(self) -> str:
        what = "; ".join(c.describe() for c in self.changes) or "no column differs"
        return f"{self.table}: {what}" + (f" ({self.note})" if self.note else "")


def stopped_tables(records: Sequence[SchemaChange]) -> dict[str, SchemaChange]:
    """The tables stopped and not continued since (`records` oldest first): accepting a change
    does not end a stop — the applier continuing the table does."""
    latest: dict[str, SchemaChange] = {}
    for r in records:
        if r.outcome in (STOPPED, CONTINUED):
            latest[r.table] = r
    return {t: r for t, r in latest.items() if r.outcome == STOPPED}


def changed_at(records: Sequence[SchemaChange]) -> dict[tuple[str, str], int]:
    """Per (table, column): the latest position the target's definition of it changed at, from
    the followed and continued records that carry one."""
    out: dict[tuple[str, str], int] = {}
    for r in records:
        if r.outcome not in (FOLLOWED, CONTINUED):
            continue
        for c in r.changes:
            if c.since is not None and c.since > out.get((r.table, c.column), -1):
                out[(r.table, c.column)] = c.since
    return out
