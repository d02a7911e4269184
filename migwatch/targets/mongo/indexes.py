"""The source's unique keys as unique indexes of a MongoDB target, and what else of the source's
schema a collection cannot hold — each named with why (docs/types.md, "Schema on a MongoDB
target").

The primary key is `_id` (unique by nature; a composite key an embedded document always built
in key order). Every other unique constraint and unique index of a table becomes a unique index
of its collection, named as on the source, on the fields the writer stores its columns in — when
MongoDB's index means the same:

    same values    the column's document form must keep PostgreSQL's equality: distinct values
                   never become one (timestamps truncated to milliseconds, timetz at UTC, json's
                   doubles would collide) and no array (MongoDB indexes each element apart)
    NULL           PostgreSQL lets any number of rows hold NULL in a unique column (unless NULLS
                   NOT DISTINCT); MongoDB's unique index counts null as a value, so a nullable
                   column needs a partialFilterExpression indexing only documents whose fields
                   hold a value — a server without it (FerretDB 1.x) gets no index there
    when checked   a DEFERRABLE constraint is checked at commit, MongoDB checks every write
    what           a partial index's SQL predicate and an expression index have no MongoDB form

Reading the source's catalog is here (`read_uniques`), the decision pure (`plan`), the creation
on the target at the end (`create`)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg

from migwatch.connectors import postgres as pg
from migwatch.targets.mongo.values import DocumentForm, ValueForm

#: a column form's BSON type (a `$type` alias) when it holds a value, by kind
_TYPE_ALIAS = {"int": "number", "float": "number", "bool": "bool", "text": "string",
               "time": "string", "interval": "string", "date": "date", "timestamp": "date",
               "timestamptz": "date", "bytea": "binData", "uuid": "binData"}
#: kinds whose document form tells apart every two values PostgreSQL tells apart
_EXACT_KINDS = {"int", "numeric", "float", "bool", "text", "time", "interval", "date", "bytea",
                "uuid"}
_PRECISION = re.compile(r"\((\d+)\)")

#: server answers meaning the collection holds documents the new unique index refuses
DUPLICATE_CODES = {11000, 11001}
#: a server's answer for an option it does not implement (FerretDB 1.x: partialFilterExpression)
NOT_IMPLEMENTED = 238


@dataclass(frozen=True)
class SourceUnique:
    """A unique index of a source table that is not its primary key (a UNIQUE constraint's
    index too), as the catalog says."""

    name: str
    #: key columns in index order (INCLUDE columns left out); None for an expression
    columns: tuple[str | None, ...]
    descending: tuple[bool, ...] = ()
    constraint: bool = False
    expression: bool = False
    partial: bool = False
    deferrable: bool = False
    nulls_not_distinct: bool = False
    valid: bool = True

    @property
    def what(self) -> str:
        return f"unique {'constraint' if self.constraint else 'index'} {self.name}"


@dataclass(frozen=True)
class UniqueIndex:
    """A unique index to create on a collection: `keys` are (field path, 1 or -1)."""

    name: str
    keys: tuple[tuple[str, int], ...]
    #: documents it holds: those whose nullable fields hold a value (None: every document)
    partial_filter: dict[str, Any] | None = None
    #: the source columns that filter is for
    nullable: tuple[str, ...] = ()
    #: what it is on the source: "unique constraint NAME" or "unique index NAME"
    what: str = ""

    def spec(self) -> dict[str, Any]:
        """The `createIndexes` entry."""
        out: dict[str, Any] = {"key": dict(self.keys), "name": self.name, "unique": True}
        if self.partial_filter is not None:
            out["partialFilterExpression"] = self.partial_filter
        return out

    def matches(self, info: dict[str, Any]) -> bool:
        """Whether an existing index (an `index_information()` entry) is this one."""
        return (list(info.get("key") or []) == [tuple(k) for k in self.keys]
                and bool(info.get("unique"))
                and (info.get("partialFilterExpression") or None) == self.partial_filter)


@dataclass
class Plan:
    """What one table's unique keys become on its collection."""

    create: list[UniqueIndex] = field(default_factory=list)
    #: held by `_id` already: its columns include every key column
    covered: list[str] = field(default_factory=list)
    #: not carried, each naming the index and why
    left_out: list[str] = field(default_factory=list)


def read_uniques(conn: psycopg.Connection, schema: str, name: str) -> list[SourceUnique]:
    """The table's unique indexes but its primary key, by name (a partitioned table's own, which
    hold across its partitions; a partition's alone do not)."""
    version = conn.info.server_version
    nulls = "i.indnullsnotdistinct" if version >= 150000 else "false"
    rows = conn.execute(
        "SELECT ci.relname, i.indexprs IS NOT NULL, i.indpred IS NOT NULL, i.indisvalid, "
        "con.oid IS NOT NULL, coalesce(con.condeferrable, false), " + nulls + ", "
        "ARRAY(SELECT a.attname::text FROM unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) "
        "  LEFT JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
        "  WHERE k.ord <= i.indnkeyatts ORDER BY k.ord), "
        "ARRAY(SELECT (o.opt::int & 1) = 1 FROM unnest(i.indoption) WITH ORDINALITY AS "
        "  o(opt, ord) ORDER BY o.ord) "
        "FROM pg_index i "
        "JOIN pg_class ci ON ci.oid = i.indexrelid "
        "JOIN pg_class c ON c.oid = i.indrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "LEFT JOIN pg_constraint con ON con.conindid = i.indexrelid "
        "  AND con.conrelid = i.indrelid AND con.contype = 'u' "
        "WHERE n.nspname = %s AND c.relname = %s AND i.indisunique AND NOT i.indisprimary "
        "ORDER BY ci.relname", [schema, name]).fetchall()
    return [SourceUnique(name=r[0], columns=tuple(r[7]), descending=tuple(r[8]),
                         constraint=bool(r[4]), expression=bool(r[1]), partial=bool(r[2]),
                         deferrable=bool(r[5]), nulls_not_distinct=bool(r[6]),
                         valid=bool(r[3]))
            for r in rows]


def read_not_carried(conn: psycopg.Connection, schema: str, name: str,
                     table: str) -> list[str]:
    """The table's check, foreign-key and exclusion constraints and its triggers: a collection
    holds none of them (each named, with `table` and why)."""
    kinds = {"c": "check constraint", "f": "foreign key", "x": "exclusion constraint"}
    rows = conn.execute(
        "SELECT con.contype::text, con.conname::text FROM pg_constraint con "
        "JOIN pg_class c ON c.oid = con.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = %s AND con.contype IN ('c', 'f', 'x') "
        "UNION ALL SELECT 't', t.tgname::text FROM pg_trigger t "
        "JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = %s AND NOT t.tgisinternal ORDER BY 1, 2",
        [schema, name, schema, name]).fetchall()
    why = {"c": "MongoDB checks no SQL expression (the source checked every row the applier "
                "writes)",
           "f": "MongoDB has no foreign keys",
           "x": "MongoDB has no exclusion constraints",
           "t": "MongoDB runs no SQL triggers (the rows arrive as the source's triggers left "
                "them)"}
    return [f"{kinds.get(kind, 'trigger')} {n} of {table}: not carried — {why[kind]}"
            for kind, n in rows]


def plan(table: str, info: pg.TableInfo, form: DocumentForm,
         uniques: Sequence[SourceUnique]) -> Plan:
    """What each of the table's unique keys becomes (see the module doc); `table` names the
    table in the reasons. Pure."""
    out = Plan()
    key = list(info.primary_key)
    for u in uniques:
        where = f"{u.what} of {table}"
        if u.expression or any(c is None for c in u.columns):
            out.left_out.append(f"{where}: not carried — an index on an expression (a MongoDB "
                                "index holds fields, not SQL expressions)")
            continue
        columns = [c for c in u.columns if c is not None]
        if u.partial:
            out.left_out.append(f"{where}: not carried — a partial index (its WHERE is an SQL "
                                "predicate MongoDB's partialFilterExpression cannot express)")
            continue
        if not u.valid:
            out.left_out.append(f"{where}: not carried — not valid on the source (a build "
                                "that failed)")
            continue
        if key and set(key) <= set(columns):
            out.covered.append(f"{where}: held by _id (its columns include the key "
                               f"{', '.join(key)})")
            continue
        if u.deferrable:
            out.left_out.append(f"{where}: not carried — DEFERRABLE: the source checks it at "
                                "commit, MongoDB at every write, and a transaction's rows "
                                "may repeat a value until its commit")
            continue
        missing = [c for c in columns if c not in form.forms]
        if missing:
            out.left_out.append(f"{where}: not carried — column(s) {', '.join(missing)} are "
                                "not written to the target (a generated column)")
            continue
        inexact = [f"{c} ({why})" for c in columns
                   if (why := inexact_reason(form.forms[c])) is not None]
        if inexact:
            out.left_out.append(f"{where}: not carried — its document form would make values "
                                f"the source tells apart collide: {'; '.join(inexact)}")
            continue
        nullable = [c for c in columns if c not in key and not info.column(c).not_null]
        paths = {c: field_path(c, key) for c in columns}
        filt = None
        if nullable and not u.nulls_not_distinct:
            # PostgreSQL leaves a row holding NULL in any of the columns out of the index:
            # so do these documents (a null or missing field fails `$type`)
            filt = {paths[c]: {"$type": type_alias(form.forms[c])} for c in nullable}
        descending = list(u.descending) + [False] * len(columns)
        out.create.append(UniqueIndex(
            u.name, tuple((paths[c], -1 if descending[i] else 1)
                          for i, c in enumerate(columns)), filt,
            tuple(nullable) if filt is not None else (), u.what))
    return out


def field_path(column: str, key: Sequence[str]) -> str:
    """Where the document holds a column: a field named as it, a key column inside `_id`."""
    if column in key:
        return "_id" if len(key) == 1 else f"_id.{column}"
    return column


def inexact_reason(form: ValueForm) -> str | None:
    """Why the column's document form would let two values PostgreSQL tells apart become one
    (or index an array element by element); None when it keeps them apart."""
    if form.array:
        return "an array: MongoDB's unique index holds each element apart"
    if form.as_json_string:
        return None  # PostgreSQL's own text of the value
    if form.kind in _EXACT_KINDS:
        return None
    if form.kind in ("timestamp", "timestamptz"):
        precision = _PRECISION.search(form.type)
        if precision is not None and int(precision.group(1)) <= 3:
            return None  # milliseconds or fewer: a BSON date holds every value
        return "a BSON date holds milliseconds, the source microseconds"
    if form.kind == "timetz":
        return "lands at UTC: times the source tells apart by their offset"
    if form.kind == "json":
        return "a JSON value: numbers land as doubles, an array is indexed element by element"
    return f"no unique form for {form.type}"


def type_alias(form: ValueForm) -> str:
    """The `$type` of the column's values as the document holds them."""
    if form.as_json_string:
        return "string"
    if form.kind == "numeric":
        return "decimal" if form.decimal128 else "string"
    return _TYPE_ALIAS[form.kind]


def create(coll: Any, index: UniqueIndex) -> tuple[bool, str | None]:
    """Create `index` on the collection unless it is there already: (made now, why it cannot
    be made — the server's answer — or None)."""
    from pymongo.errors import OperationFailure

    from migwatch.connectors.mongo import is_transient

    existing = coll.index_information().get(index.name)
    if existing is not None:
        if index.matches(existing):
            return False, None
        return False, (f"an index named {index.name} with another definition is on the "
                       f"collection already ({dict(existing.get('key') or [])}): left as it is")
    try:
        coll.database.command("createIndexes", coll.name, indexes=[index.spec()])
    except OperationFailure as exc:
        if is_transient(exc):
            raise
        text = (str(exc).split(", full error")[0].strip().splitlines() or [""])[0][:200]
        if exc.code in DUPLICATE_CODES or "UNIQUE constraint failed" in text:
            return False, ("the collection holds documents repeating a value of it (the "
                           "validator compares them with the source)")
        if exc.code == NOT_IMPLEMENTED and index.partial_filter is not None:
            return False, (f"column(s) {', '.join(index.nullable)} may hold NULL: PostgreSQL "
                           "lets any number of rows hold NULL there, this server's unique "
                           "index counts null as a value and it cannot leave those documents "
                           f"out (partialFilterExpression: {text})")
        code = (exc.details or {}).get("codeName") or f"code {exc.code}"
        return False, f"the server refused it ({code}): {text}"
    return True, None
