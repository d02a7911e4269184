"""The sequences a migration's tables use, and how far each one got on the source and the target.

Logical decoding does not carry sequence values: rows arrive with the values the source's
sequences gave them, while the target's sequences stay where the schema restore left them — the
cutover sets them. Until then the monitor and the report show, per sequence, its last value on
both sides and how far the target's is behind (a warning, never a reason for no-go).

    uses(conn, tables)        the sequences of the spec's tables, read from the source's catalog:
                              owned ones (serial/bigserial and OWNED BY: pg_depend deptype 'a';
                              identity columns: 'i') and any a column default calls
                              (pg_depend from the pg_attrdef row to a relkind 'S' relation)
    sides(conn, wanted)       last_value, start and increment of each sequence (`pg_sequences`)
    read(spec)                both together: one `SequenceState` per sequence
    rows(states)              the plain rows a table artifact shows

A sequence keeps its schema and name on the target — but one a table owns moves with it when
the spec moves the table to another schema (`target_name`); a sequence the target lacks is
`missing`, and an engine that keeps no sequences (MongoDB) makes every state `not_applicable`.
Names travel as bound parameters only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from migwatch.config import MigrationSpec, TableSpec, qualified
from migwatch.connectors import postgres as pg
from migwatch.targets import engine_for

#: how a column takes its values from a sequence (`SequenceUse.how`)
IDENTITY = "identity"  # GENERATED … AS IDENTITY (pg_depend deptype 'i')
OWNED = "owned"  # serial / bigserial, or ALTER SEQUENCE … OWNED BY (deptype 'a')
DEFAULT = "default"  # a default calls nextval() of a sequence the column does not own

#: what the two values say together (`SequenceState.state`)
OK = "ok"  # the target's sequence is at or past the source's
BEHIND = "behind"  # the target's would hand out values the source already has
MISSING = "missing"  # the target has no sequence of that name
NOT_READABLE = "not_readable"  # the user may not read it on one side (no SELECT or USAGE)
NOT_APPLICABLE = "not_applicable"  # the target engine keeps no sequences

_STRENGTH = {IDENTITY: 0, OWNED: 1, DEFAULT: 2}

_USES = """
WITH wanted(schema_name, table_name) AS (SELECT * FROM unnest(%s::text[], %s::text[])),
rel AS (
    SELECT w.schema_name, w.table_name, c.oid
    FROM wanted w
    JOIN pg_namespace n ON n.nspname = w.schema_name
    JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = w.table_name
     AND c.relkind IN ('r', 'p'))
SELECT rel.schema_name, rel.table_name, a.attname, sn.nspname, s.relname, x.how
FROM rel
CROSS JOIN LATERAL (
    SELECT d.objid AS seq, d.refobjsubid AS attnum,
           CASE d.deptype WHEN 'i' THEN 'identity' ELSE 'owned' END AS how
    FROM pg_depend d
    WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass
      AND d.refobjid = rel.oid AND d.refobjsubid > 0 AND d.deptype IN ('a', 'i')
    UNION ALL
    SELECT d.refobjid, ad.adnum, 'default'
    FROM pg_attrdef ad
    JOIN pg_depend d ON d.classid = 'pg_attrdef'::regclass AND d.objid = ad.oid
     AND d.refclassid = 'pg_class'::regclass
    WHERE ad.adrelid = rel.oid) x
JOIN pg_class s ON s.oid = x.seq AND s.relkind = 'S'
JOIN pg_namespace sn ON sn.oid = s.relnamespace
JOIN pg_attribute a ON a.attrelid = rel.oid AND a.attnum = x.attnum AND NOT a.attisdropped
ORDER BY sn.nspname, s.relname, rel.schema_name, rel.table_name, a.attnum
"""

_SIDES = """
SELECT w.schema_name, w.sequence_name, s.last_value, s.start_value, s.increment_by,
       has_sequence_privilege(c.oid, 'SELECT,USAGE')
FROM unnest(%s::text[], %s::text[]) AS w(schema_name, sequence_name)
JOIN pg_namespace n ON n.nspname = w.schema_name
JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = w.sequence_name AND c.relkind = 'S'
JOIN pg_sequences s ON s.schemaname = n.nspname AND s.sequencename = c.relname
"""


@dataclass(frozen=True)
class SequenceUse:
    """One column of one of the spec's tables that takes its values from a sequence."""

    table: str  # the source table, `schema.table`
    target_table: str
    column: str
    how: str  # IDENTITY, OWNED or DEFAULT

    def describe(self) -> str:
        """`public.orders (id)`, or `public.orders → archive.orders (id)` when renamed."""
        where = self.table if self.target_table == self.table else \
            f"{self.table} → {self.target_table}"
        return f"{where} ({self.column})"


@dataclass(frozen=True)
class SequenceSide:
    """A sequence as one server has it: `last_value` is `pg_sequences.last_value` — None when
    nextval was never called on it (or the user may not read it: `readable`)."""

    last_value: int | None
    start_value: int = 1
    increment_by: int = 1
    readable: bool = True

    @property
    def continues_after(self) -> int:
        """The value the next nextval() follows: the last one handed out, or one step before
        the start when none was."""
        return self.last_value if self.last_value is not None else \
            self.start_value - self.increment_by


@dataclass(frozen=True)
class SequenceState:
    """One sequence with the columns that use it and its values on both sides. `target` is None
    when the target lacks it, or keeps no sequences at all (`applicable` False)."""

    schema: str
    name: str
    uses: tuple[SequenceUse, ...]
    source: SequenceSide
    target: SequenceSide | None
    applicable: bool = True

    @property
    def sequence(self) -> str:
        return qualified(self.schema, self.name)

    @property
    def behind_by(self) -> int | None:
        """How far the target's value trails the source's, in the sequence's own units (0 when
        at or past it, or when the source never handed one out); None when not known."""
        if not self.applicable or self.target is None:
            return None
        if not (self.source.readable and self.target.readable):
            return None
        if self.source.last_value is None:
            return 0
        gap = self.source.last_value - self.target.continues_after
        return max(0, gap if self.source.increment_by > 0 else -gap)

    @property
    def state(self) -> str:
        if not self.applicable:
            return NOT_APPLICABLE
        if self.target is None:
            return MISSING
        behind = self.behind_by
        if behind is None:
            return NOT_READABLE
        return BEHIND if behind > 0 else OK

    def to_dict(self) -> dict[str, Any]:
        """The plain form the tasks pass on and the report's `SequenceFigures` reads."""
        return {
            "sequence": self.sequence,
            "used_by": [u.describe() for u in self.uses],
            "source_value": self.source.last_value,
            "target_value": None if self.target is None else self.target.last_value,
            "state": self.state,
            "behind_by": self.behind_by,
            "not_readable_on": [side for side, v in (("source", self.source),
                                                     ("target", self.target))
                                if v is not None and not v.readable],
        }


def _pairs(names: Iterable[tuple[str, str]]) -> list[list[str]]:
    listed = list(dict.fromkeys(names))
    return [[s for s, _ in listed], [n for _, n in listed]]


def uses(conn: Any, tables: Sequence[TableSpec]) -> dict[tuple[str, str], list[SequenceUse]]:
    """(schema, name) of each sequence the `tables` use on the source → the columns that use
    it, in the catalog's order; a column counted once, by its strongest tie (identity, owned,
    default)."""
    by_source = {(t.schema_name, t.name): t for t in tables}
    found: dict[tuple[str, str], dict[tuple[str, str, str], SequenceUse]] = {}
    for schema, table, column, seq_schema, seq_name, how in conn.execute(
            _USES, _pairs(by_source)).fetchall():
        spec_table = by_source[(schema, table)]
        use = SequenceUse(spec_table.source, spec_table.target_name, column, how)
        columns = found.setdefault((seq_schema, seq_name), {})
        held = columns.get((schema, table, column))
        if held is None or _STRENGTH[how] < _STRENGTH[held.how]:
            columns[(schema, table, column)] = use
    return {seq: list(columns.values()) for seq, columns in found.items()}


def sides(conn: Any, wanted: Iterable[tuple[str, str]]) -> dict[tuple[str, str], SequenceSide]:
    """The sequences of `wanted` (schema, name) this server has, each as a `SequenceSide`."""
    pairs = _pairs(wanted)
    if not pairs[0]:
        return {}
    return {(schema, name): SequenceSide(
                None if last is None else int(last), int(start), int(step), bool(readable))
            for schema, name, last, start, step, readable
            in conn.execute(_SIDES, pairs).fetchall()}


def read(spec: MigrationSpec, application: str = "migwatch-sequences") -> list[SequenceState]:
    """Every sequence the spec's tables use on the source, with its value there and on the
    target (same schema and name), sorted by name. One short session on each side."""
    with pg.connect_endpoint(spec.source, "source", autocommit=True,
                             application=application) as conn, \
            pg.translated("source: sequences of the tables"):
        used = uses(conn, spec.tables)
        on_source = sides(conn, used)
    found = [seq for seq in sorted(used) if seq in on_source]  # one dropped meanwhile: gone
    there = {seq: target_name(seq, used[seq], spec.tables) for seq in found}
    on_target = engine_for(spec).sequence_values(list(there.values()),
                                                 application=application) if found else {}
    return [SequenceState(schema, name, tuple(used[(schema, name)]), on_source[(schema, name)],
                          None if on_target is None else on_target.get(there[(schema, name)]),
                          applicable=on_target is not None)
            for schema, name in found]


def cutover_values(spec: MigrationSpec, margin: int = 0,
                   application: str = "migwatch-cutover") -> dict[tuple[str, str], int]:
    """What the cutover sets each target sequence to (by its target name): the source's last
    value, `margin` steps further in the sequence's direction; a sequence never called on the
    source is left where it is (rows carry no value of it)."""
    with pg.connect_endpoint(spec.source, "source", autocommit=True,
                             application=application) as conn, \
            pg.translated("source: sequences of the tables"):
        used = uses(conn, spec.tables)
        on_source = sides(conn, used)
    out: dict[tuple[str, str], int] = {}
    for seq, side in on_source.items():
        if side.last_value is None or not side.readable:
            continue
        step = side.increment_by * margin
        out[target_name(seq, used[seq], spec.tables)] = side.last_value + step
    return out


def target_name(seq: tuple[str, str], used_by: Sequence[SequenceUse],
                tables: Sequence[TableSpec]) -> tuple[str, str]:
    """Where the target keeps a source sequence: under its own name, in the schema of the
    table owning it when the spec moves that table to another schema (PostgreSQL keeps an
    owned sequence in its table's schema, and the restore does so)."""
    by_source = {t.source: t for t in tables}
    for use in used_by:
        spec_table = by_source.get(use.table)
        if use.how in (IDENTITY, OWNED) and spec_table is not None \
                and spec_table.target_parts[0] != spec_table.schema_name:
            return spec_table.target_parts[0], seq[1]
    return seq


#: how a value the report or an artifact cannot give as a number reads
NEVER_CALLED = "never called"


def value_text(value: int | None, side: str, state: str,
               not_readable_on: Iterable[str] = ()) -> str:
    """A side's (`source`, `target`) value as people read it: the number, or why there is
    none."""
    if side == "target" and state == NOT_APPLICABLE:
        return "n/a"
    if side == "target" and state == MISSING:
        return "missing"
    if side in not_readable_on:
        return "not readable"
    return NEVER_CALLED if value is None else f"{value:,}"


def behind_text(behind_by: int | None, state: str) -> str:
    if state == NOT_APPLICABLE:
        return "n/a"
    return "–" if behind_by is None else f"{behind_by:,}"


def rows(states: Iterable[Mapping[str, Any]]) -> list[dict[str, str]]:
    """One plain row per sequence (its `to_dict` form): sequence, table, source value, target
    value, behind by — what the monitor's table artifact shows."""
    return [{
        "sequence": str(s["sequence"]),
        "table": ", ".join(s["used_by"]),
        "source value": value_text(s["source_value"], "source", s["state"],
                                   s.get("not_readable_on") or ()),
        "target value": value_text(s["target_value"], "target", s["state"],
                                   s.get("not_readable_on") or ()),
        "behind by": behind_text(s["behind_by"], s["state"]),
    } for s in states]
