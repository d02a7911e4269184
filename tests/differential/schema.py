"""The classes under test and their tables.

A class is what passes or fails on its own: one PostgreSQL type (table `t_<type>`), one key
shape, one naming hazard, or one limit of Debezium (tables `l_<limit>…`: values outside the
domain Debezium carries, checked against their own written contract — types.LimitCase).
Classes run together in a *run group* — one connector and one applier — except those that can
take the whole applier down (table names outside Kafka's topic charset, names whose topics
collide): each of those groups gets its own run, so a crash there hides nothing else.

Every table has the columns its class is about plus `n integer`, the small column an update may
change alone (leaving a TOASTed neighbour untouched).
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import psycopg
from psycopg import sql

from tests.differential.types import LIMITS, PREREQUISITES, TYPES, Gen, LimitCase

MAIN = "main"          # every class that cannot crash the applier for the others
NAMES = "names"        # table/schema names outside Kafka's topic charset
COLLISION = "collision"  # two tables whose Debezium topic names are the same
GROUPS = (MAIN, NAMES, COLLISION)
FENCE = "dw_fence"     # written last: when it lands, the stream before it was produced


@dataclass(frozen=True)
class ColumnDef:
    name: str
    sql_type: str
    gen: Gen
    not_null: bool = False
    collation: str | None = None
    #: values every run must carry: the snapshot holds each, the stream draws them often
    edges: tuple[str, ...] = ()
    #: values only the stream draws (often), never the initial rows
    stream_edges: tuple[str, ...] = ()


@dataclass(frozen=True)
class TableDef:
    """One source table; `key` is the comparator's key (empty: compared as a multiset)."""

    schema: str
    name: str
    columns: tuple[ColumnDef, ...]
    key: tuple[str, ...]
    #: how the key is declared: "primary" (PRIMARY KEY), "index" (UNIQUE index used as the
    #: replica identity, no primary key), or "" (none: REPLICA IDENTITY FULL)
    key_kind: str = "primary"
    small: str | None = "n"
    #: keyless tables: inserts sometimes repeat an existing row exactly
    duplicates: bool = False
    #: generator of fresh key values (text input forms, one per key column)
    new_key: Callable[[random.Random], tuple[str, ...]] | None = None
    #: share of the workload's operations (TOAST and key-shape tables need more to hit their
    #: cases: an update of `n` alone on a TOASTed row, duplicates, primary-key changes)
    weight: int = 1
    #: whether the workload may truncate it (a limit table keeps the rows its contract is
    #: about: a rare truncate would leave a snapshot-only limit nothing to show)
    truncate: bool = True

    @property
    def qualified(self) -> str:
        """`schema.table` as is: the harness's own name for the table (reports, keys)."""
        return f"{self.schema}.{self.name}"

    @property
    def spec_name(self) -> str:
        """The name as a migration spec writes it: a part holding a dot or a double quote in
        double quotes (inner quotes doubled), PostgreSQL's way."""
        def part(p: str) -> str:
            return '"' + p.replace('"', '""') + '"' if "." in p or '"' in p else p
        return f"{part(self.schema)}.{part(self.name)}"

    @property
    def ident(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.name)

    def column(self, name: str) -> ColumnDef:
        return next(c for c in self.columns if c.name == name)

    @property
    def payload(self) -> list[ColumnDef]:
        return [c for c in self.columns if c.name not in self.key]


@dataclass(frozen=True)
class DiffClass:
    id: str
    kind: str  # type, key, name or limit
    group: str
    about: str
    tables: tuple[TableDef, ...] = field(default=())
    #: a limit class: the contract its test checks instead of "lands exactly"
    limit: LimitCase | None = None
    #: a key-shape or naming class: its MongoDB contract (docs/types.md); a type's or limit's
    #: is in types.py
    mongo: str = ""


# ----------------------------------------------------------------------------- key generators
def _int_key(lo: int = 1, hi: int = 2**31 - 1) -> Callable[[random.Random], tuple[str, ...]]:
    return lambda rng: (str(rng.randint(lo, hi)),)


BIGINT_EDGES = ("-9223372036854775808", "9223372036854775807", "0", "-1")


def _bigint_key(rng: random.Random) -> tuple[str, ...]:
    if rng.random() < 0.1:
        return (rng.choice(BIGINT_EDGES),)
    return (str(rng.randint(-2**63, 2**63 - 1)),)


#: values whose order differs between collations (case, accents, ß/ss, dotted/dotless i,
#: ligatures, digits, leading/trailing spaces, CJK, emoji) — and the empty string
COLLATION_WORDS = ("a", "A", "b", "B", "ä", "Ä", "z", "Z", "é", "e", "E", "f", "ß", "ss", "SS",
                   "Straße", "strasse", "ı", "İ", "i", "I", "ﬁ", "fi", "1", "10", "2", "-1",
                   " a", "a ", "", "日本", "本日", "😀", "a-b", "ab", "a_b", "Ab", "aB", "ǆ", "Ǆ")


def _collation_key(rng: random.Random) -> tuple[str, ...]:
    if rng.random() < 0.4:
        return (rng.choice(COLLATION_WORDS),)
    pool = "aAbBäÄßsSéeEıİiI1 -_日本😀"
    return ("".join(rng.choice(pool) for _ in range(rng.randint(1, 6))),)


def _uuid_key(rng: random.Random) -> tuple[str, ...]:
    h = f"{rng.getrandbits(128):032x}"
    return (f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}",)


def _composite_key(rng: random.Random) -> tuple[str, ...]:
    return (str(rng.randint(1, 50)), rng.choice(COLLATION_WORDS[:20]) + str(rng.randint(0, 30)))


def _text_payload(rng: random.Random) -> str | None:
    if rng.random() < 0.1:
        return None
    pool = string.ascii_letters + " é表😀'\""
    return "".join(rng.choice(pool) for _ in range(rng.randint(0, 20)))


def _n(rng: random.Random) -> str | None:
    return None if rng.random() < 0.05 else str(rng.randint(-1000, 1000))


def _nullable(gen: Gen, p_null: float = 0.08) -> Gen:
    return lambda rng: None if rng.random() < p_null else gen(rng)


# ----------------------------------------------------------------------------- the classes
def _type_classes() -> list[DiffClass]:
    out = []
    for t in TYPES:
        table = TableDef("public", t.table, (
            ColumnDef("id", "integer", _n, not_null=True),
            ColumnDef("n", "integer", _n),
            ColumnDef("v", t.sql_type, _nullable(t.gen), edges=t.edges,
                      stream_edges=t.stream_edges),
        ), key=("id",), new_key=_int_key(), weight=4 if t.toast else 1)
        out.append(DiffClass(t.class_id, "type", MAIN, f"{t.family}: {t.sql_type}", (table,)))
    return out


def _limit_classes() -> list[DiffClass]:
    """One class per limit of Debezium, one table per column type it covers; in the main group
    (a limit never takes the applier down: its events land altered or are dead-lettered)."""
    out = []
    for lim in LIMITS:
        tables = tuple(TableDef("public", lim.table(c), (
            ColumnDef("id", "integer", _n, not_null=True),
            ColumnDef("n", "integer", _n),
            ColumnDef("v", c.sql_type, _nullable(c.gen), edges=c.edges),
        ), key=("id",), new_key=_int_key(), truncate=False) for c in lim.columns)
        out.append(DiffClass(lim.class_id, "limit", MAIN, f"{lim.types}: {lim.about}", tables,
                             lim))
    return out


def _payload(*extra: ColumnDef) -> tuple[ColumnDef, ...]:
    return (*extra, ColumnDef("n", "integer", _n), ColumnDef("note", "text", _text_payload))


def _key_classes() -> list[DiffClass]:
    def one(cid: str, about: str, table: TableDef, mongo: str) -> DiffClass:
        return DiffClass(cid, "key", MAIN, about, (replace(table, weight=3),), mongo=mongo)

    return [
        one("key-int", "integer primary key", TableDef("public", "k_int", _payload(
            ColumnDef("id", "integer", _n, not_null=True)), key=("id",), new_key=_int_key()),
            "`_id` = the key, an int; the key column lives only in `_id`"),
        one("key-bigint", "bigint primary key with its extremes", TableDef(
            "public", "k_bigint", _payload(ColumnDef("id", "bigint", _n, not_null=True,
                                                     edges=BIGINT_EDGES)),
            key=("id",), new_key=_bigint_key), "`_id` = the key, an int (int64 extremes "
            "included)"),
        one("key-text-collation", 'text primary key COLLATE "en-x-icu" with collation-sensitive '
            "values (the database's default is C)", TableDef(
                "public", "k_text", _payload(ColumnDef("id", "text", _n, not_null=True,
                                                       collation="en-x-icu",
                                                       edges=COLLATION_WORDS)),
                key=("id",), new_key=_collation_key), "`_id` = the key, a string"),
        one("key-uuid", "uuid primary key", TableDef(
            "public", "k_uuid", _payload(ColumnDef("id", "uuid", _n, not_null=True)),
            key=("id",), new_key=_uuid_key), "`_id` = the key, Binary subtype 4"),
        one("key-composite", "composite primary key (integer, text)", TableDef(
            "public", "k_composite", _payload(ColumnDef("a", "integer", _n, not_null=True),
                                              ColumnDef("b", "text", _n, not_null=True)),
            key=("a", "b"), new_key=_composite_key), "`_id` = embedded document {a, b} in key "
            "order; key columns live only in `_id`"),
        one("key-replica-index", "no primary key; REPLICA IDENTITY USING INDEX on a unique "
            "index (integer, text)", TableDef(
                "public", "k_replica_index", _payload(
                    ColumnDef("a", "integer", _n, not_null=True),
                    ColumnDef("b", "text", _n, not_null=True)),
                key=("a", "b"), key_kind="index", new_key=_composite_key),
            "`_id` = the replica-identity index's columns, embedded document {a, b} in index "
            "order; they live only in `_id`"),
        one("key-none-full", "no key at all, REPLICA IDENTITY FULL, duplicate rows and NULLs",
            TableDef("public", "k_none", _payload(
                ColumnDef("v", "numeric(10,2)", _nullable(lambda r: f"{r.randint(0, 99)}.5"))),
                key=(), key_kind="", duplicates=True),
            "refused at pre-flight, naming the table: no key for `_id`; the validator never "
            "says equal"),
    ]


def _named(schema: str, name: str, key: str = "id", cols: tuple[str, ...] = ("n",),
           ) -> TableDef:
    columns = [ColumnDef(key, "integer", _n, not_null=True)]
    columns += [ColumnDef(c, "integer" if c == "n" else "text",
                          _n if c == "n" else _text_payload) for c in cols]
    return TableDef(schema, name, tuple(columns), key=(key,), new_key=_int_key())


#: a naming class's MongoDB contract: its collection and fields
M_NAMES = "collection named as the table (no schema), fields named as the columns"
M_DOT_COLUMN = ("refused at pre-flight, naming the column \"dot.col\" (a field name cannot "
                "hold '.'); the validator never says equal")


def _name_classes() -> list[DiffClass]:
    return [
        # names Kafka topics can carry: in the main run
        DiffClass("name-reserved-words", "name", MAIN,
                  'reserved words as table and column names: "select", "order", "from"',
                  (_named("public", "select", key="order", cols=("n", "from", "user")),),
                  mongo=M_NAMES),
        DiffClass("name-mixed-case", "name", MAIN, 'mixed case: "MixedCase"."CamelCol"',
                  (_named("public", "MixedCase", key="Id", cols=("n", "CamelCol")),),
                  mongo=M_NAMES),
        DiffClass("name-odd-columns", "name", MAIN,
                  "columns with spaces, double quotes, a dot, non-ASCII, reserved words",
                  (_named("public", "odd_columns", key="key col", cols=(
                      "n", "col with space", 'quote"col', "dot.col", "Größe", "表", "select")),),
                  mongo=M_DOT_COLUMN),
        # names outside [a-zA-Z0-9._-]: Debezium sanitises them into the topic name
        DiffClass("name-schema-space", "name", NAMES,
                  'a schema and a table with spaces: "My Schema"."orders 2024"',
                  (_named("My Schema", "orders 2024", key="order id", cols=("n", "line item")),),
                  mongo=M_NAMES + ': "orders 2024"'),
        DiffClass("name-double-quote", "name", NAMES, 'a table named we"ird',
                  (_named("public", 'we"ird', cols=("n", 'quote"col')),),
                  mongo="refused at pre-flight on FerretDB 1.x, which cannot create a "
                        "collection whose name holds a double quote (MongoDB: " + M_NAMES + ")"),
        DiffClass("name-non-ascii", "name", NAMES, 'non-ASCII table names: "Größe", "表"',
                  (_named("public", "Größe", cols=("n", "Maß")),
                   _named("public", "表", cols=("n", "列"))), mongo=M_NAMES),
        DiffClass("name-dots", "name", NAMES,
                  'dots inside names: "my.schema"."dot.table" (its topic reads like '
                  "four parts)", (_named("my.schema", "dot.table", cols=("n", "dot.col")),),
                  mongo=M_DOT_COLUMN),
        DiffClass("name-topic-collision", "name", COLLISION,
                  'tables "a b" and "a_b": Debezium sanitises both to the topic …public.a_b',
                  (_named("public", "a b"), _named("public", "a_b")),
                  mongo=M_NAMES + ': two collections, "a b" and "a_b"'),
    ]


CLASSES: list[DiffClass] = [*_type_classes(), *_key_classes(), *_name_classes(),
                            *_limit_classes()]
BY_ID: dict[str, DiffClass] = {c.id: c for c in CLASSES}
#: total weight of every table of every class: a run's `operations` are shared by it
CATALOGUE_WEIGHT: int = sum(t.weight for c in CLASSES for t in c.tables)
#: the classes the MongoDB target runs (compare_mongo.py encodes their contract): every class,
#: in the same run groups as on PostgreSQL
MONGO_CLASSES: tuple[str, ...] = tuple(c.id for c in CLASSES)


def fence_table() -> TableDef:
    """The harness's own table: one row written after the workload (see run.py)."""
    return TableDef("public", FENCE, (ColumnDef("id", "integer", _n, not_null=True),
                                      ColumnDef("n", "integer", _n)), key=("id",))


def select(patterns: str | None) -> list[DiffClass]:
    """Classes whose id starts with one of the comma-separated patterns (all when empty); a
    pattern ending in `$` names one class exactly (`type-toast_text$`)."""
    wanted = [p.strip() for p in (patterns or "").split(",") if p.strip()]
    if not wanted:
        return list(CLASSES)
    return [c for c in CLASSES if any(c.id == p[:-1] if p.endswith("$") else c.id.startswith(p)
                                      for p in wanted)]


# ----------------------------------------------------------------------------- DDL
def create_prerequisites(conn: psycopg.Connection) -> None:
    """Extension, enum and domains the type tables use (source and target alike)."""
    for stmt in PREREQUISITES:
        conn.execute(stmt)  # constant DDL of this module: nothing user-given in it


def create_table(conn: psycopg.Connection, table: TableDef) -> None:
    conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(table.schema)))
    cols = []
    for c in table.columns:
        cols.append(sql.SQL("{} {}{}{}").format(
            sql.Identifier(c.name), sql.SQL(c.sql_type),  # a type name from the catalogue
            sql.SQL(" COLLATE {}").format(sql.Identifier(c.collation)) if c.collation
            else sql.SQL(""),
            sql.SQL(" NOT NULL") if c.not_null else sql.SQL("")))
    if table.key_kind == "primary":
        cols.append(sql.SQL("PRIMARY KEY ({})").format(
            sql.SQL(", ").join(sql.Identifier(k) for k in table.key)))
    conn.execute(sql.SQL("CREATE TABLE {} ({})").format(table.ident, sql.SQL(", ").join(cols)))
    if table.key_kind == "index":
        index = sql.Identifier(f"{table.name}_key_idx")
        conn.execute(sql.SQL("CREATE UNIQUE INDEX {} ON {} ({})").format(
            index, table.ident, sql.SQL(", ").join(sql.Identifier(k) for k in table.key)))
        conn.execute(sql.SQL("ALTER TABLE {} REPLICA IDENTITY USING INDEX {}").format(
            table.ident, index))
    elif table.key_kind == "":
        conn.execute(sql.SQL("ALTER TABLE {} REPLICA IDENTITY FULL").format(table.ident))


# ----------------------------------------------------------------------------- status today
#: key-shape and naming classes that failed at types.PG_OBSERVED_AT (MongoDB: at
#: types.MONGO_OBSERVED_AT), per target (the type and limit classes' statuses live in types.py);
#: not listed: PASS (MongoDB: "not run yet" while MONGO_OBSERVED_AT is empty)
CLASS_FAILS: dict[str, str] = {}
CLASS_MONGO_FAILS: dict[str, str] = {}
