"""The schema check on a PostgreSQL target: each side's definitions, read the same way on both.

The tables come from plain `pg_dump --schema-only --no-owner --no-privileges` with one quoted
`--table` pattern per table and partition (`--strict-names`): columns with their types,
defaults, identity and collations, constraints, indexes, triggers, owned sequences, comments.
What the tables depend on is found by walking `pg_depend` from the tables and what belongs to
them (defaults, constraints, indexes, triggers) to user objects — types (enums, domains with
their checks, composites, ranges), functions, collations, sequences not owned by the tables —
and each is compared by its catalog definition; an object an extension owns stands for its
extension. Nothing here is shared with the restore that built the target.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from migwatch.config import Endpoint, MigrationSpec
from migwatch.connectors import postgres as pg
from migwatch.errors import PermanentError
from migwatch.validation.model import SchemaCheck
from migwatch.validation.schema_check import Objects, Rename, compare, split_dump

APPLICATION = "migwatch-schema-check"
FIRST_USER_OID = 16384  # PostgreSQL's FirstNormalObjectId: below it, the system's own objects
METHOD = ("tables by pg_dump --schema-only on each side, object by object; what they depend on "
          "(types, functions, collations, sequences, extensions) by catalog definition")


def check(spec: MigrationSpec, declared: Mapping[str, Iterable[str]]) -> SchemaCheck:
    """Compare the spec's tables and their dependencies, source against target."""
    started = time.monotonic()
    with pg.connect_endpoint(spec.source, "source", autocommit=True,
                             application=APPLICATION) as src, \
            pg.connect_endpoint(spec.target, "target", autocommit=True,
                                application=APPLICATION) as tgt, \
            pg.translated("schema check"):
        src_oids = _tables(src, [(t.schema_name, t.name) for t in spec.tables])
        tgt_oids = _tables(tgt, [t.target_parts for t in spec.tables])
        renames = []
        for t in spec.tables:
            if (t.schema_name, t.name) != tuple(t.target_parts):
                renames.append(_rename(src, tgt, (t.schema_name, t.name), t.target_parts))
                renames += _owned_sequence_renames(src, tgt, (t.schema_name, t.name),
                                                   t.target_parts)
        source = split_dump(_dump(spec.source, "source", _patterns(src, src_oids)))
        target = split_dump(_dump(spec.target, "target", _patterns(tgt, tgt_oids)), renames)
        needed = dependencies(src, src_oids)
        _add(source, needed)
        # the target's objects of those names, used by its tables or not, and what its tables
        # use besides (extra)
        _add(target, by_name(tgt, needed))
        _add(target, dependencies(tgt, tgt_oids))
        outside = _foreign_keys_outside(src, src_oids)
    result = compare(source, target, declared, outside=outside)
    result.method = METHOD
    result.seconds = round(time.monotonic() - started, 3)
    return result


def _add(objects: Objects, definitions: Mapping[str, str]) -> None:
    for name, text in definitions.items():
        objects.definitions.setdefault(name, text)


def _tables(conn: Any, names: Sequence[Sequence[str]]) -> list[int]:
    """The oids of the tables that exist (a missing one shows as missing objects), with every
    partition under a partitioned one."""
    oids = []
    for schema, name in names:
        row = conn.execute(
            "SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p')",
            [schema, name]).fetchone()
        if row is not None:
            oids.append(int(row[0]))
    if not oids:
        return []
    rows = conn.execute("SELECT DISTINCT t.relid::oid FROM unnest(%s::oid[]) r(oid), "
                        "pg_partition_tree(r.oid) t", [oids]).fetchall()
    return sorted({*oids, *(int(r[0]) for r in rows)})


def _patterns(conn: Any, oids: Sequence[int]) -> list[str]:
    """Exact pg_dump patterns of the tables (`dump_pattern`)."""
    rows = conn.execute(
        "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = "
        "c.relnamespace WHERE c.oid = ANY(%s) ORDER BY 1, 2", [list(oids)]).fetchall()
    return [pg.dump_pattern(r[0], r[1]) for r in rows]


def _rename(src: Any, tgt: Any, source: Sequence[str], target: Sequence[str]) -> Rename:
    q = "SELECT quote_ident(%s) || '.' || quote_ident(%s)"
    return Rename(source_schema=source[0], source_name=source[1], target_schema=target[0],
                  target_name=target[1], source_qualified=src.execute(q, list(source))
                  .fetchone()[0], target_qualified=tgt.execute(q, list(target)).fetchone()[0])


def _owned(conn: Any, table: Sequence[str]) -> dict[str, tuple[str, str]]:
    """Column → (schema, name) of the sequence it owns (serial, identity)."""
    rows = conn.execute(
        "SELECT a.attname, n.nspname, s.relname FROM pg_class t JOIN pg_namespace tn ON tn.oid "
        "= t.relnamespace JOIN pg_depend d ON d.refclassid = 'pg_class'::regclass AND "
        "d.refobjid = t.oid AND d.classid = 'pg_class'::regclass AND d.deptype IN ('a', 'i') "
        "JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S' JOIN pg_namespace n ON n.oid "
        "= s.relnamespace JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = "
        "d.refobjsubid WHERE tn.nspname = %s AND t.relname = %s", list(table)).fetchall()
    return {str(r[0]): (str(r[1]), str(r[2])) for r in rows}


def _owned_sequence_renames(src: Any, tgt: Any, source: Sequence[str],
                            target: Sequence[str]) -> list[Rename]:
    """A renamed table's owned sequences, paired by the column that owns them on each side
    (a table moved to another schema takes its sequences along), named as the source's."""
    theirs = _owned(tgt, target)
    out = []
    for column, seq in _owned(src, source).items():
        other = theirs.get(column)
        if other is not None and other != seq:
            r = _rename(src, tgt, seq, other)
            out.append(r)
            if "'" in r.source_qualified + r.target_qualified:  # as in nextval('…') text
                out.append(Rename(r.source_schema, r.source_name, r.target_schema,
                                  r.target_name, r.source_qualified.replace("'", "''"),
                                  r.target_qualified.replace("'", "''")))
    return out


def _dump(endpoint: Endpoint, side: str, patterns: Sequence[str]) -> str:
    """Plain schema-only pg_dump of exactly these tables ('' for none: no pattern would dump
    the whole database)."""
    if not patterns:
        return ""
    done = subprocess.run(
        [pg.client_tool("pg_dump"), "--schema-only", "--no-owner", "--no-privileges",
         "--no-password", "--strict-names", *(f"--table={p}" for p in patterns)],
        capture_output=True, text=True, env=pg.tool_env(endpoint, f"{side}.password"))
    if done.returncode != 0:
        raise PermanentError(f"schema check: pg_dump of the {side}'s tables failed: "
                             f"{done.stderr.strip()[:400]}")
    return done.stdout


def _foreign_keys_outside(conn: Any, oids: Sequence[int]) -> dict[str, str]:
    """Foreign keys of the tables to a table the migration does not carry: the target cannot
    have them (named as a warning, not a difference)."""
    rows = conn.execute(
        "SELECT n.nspname, c.relname, con.conname, format('%%I.%%I', rn.nspname, r.relname) "
        "FROM pg_constraint con JOIN pg_class c ON c.oid = con.conrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_class r ON r.oid = "
        "con.confrelid JOIN pg_namespace rn ON rn.oid = r.relnamespace "
        "WHERE con.contype = 'f' AND con.conrelid = ANY(%s) AND NOT con.confrelid = ANY(%s)",
        [list(oids), list(oids)]).fetchall()
    return {f"FK CONSTRAINT {r[0]}.{r[1]}.{r[2]}":
            f"it references {r[3]}, which the migration does not carry" for r in rows}


# ----------------------------------------------------------------------------- dependencies
def dependencies(conn: Any, oids: Sequence[int]) -> dict[str, str]:
    """`{object name: definition}` of every user object the tables depend on."""
    if not oids:
        return {}
    tables = list(oids)
    frontier = {("pg_class", o) for o in tables}
    for cls, query in (("pg_attrdef", "SELECT oid FROM pg_attrdef WHERE adrelid = ANY(%s)"),
                       ("pg_constraint", "SELECT oid FROM pg_constraint WHERE conrelid = "
                                         "ANY(%s)"),
                       ("pg_class", "SELECT indexrelid FROM pg_index WHERE indrelid = ANY(%s)"),
                       ("pg_trigger", "SELECT oid FROM pg_trigger WHERE tgrelid = ANY(%s) AND "
                                      "NOT tgisinternal")):
        frontier |= {(cls, int(r[0])) for r in conn.execute(query, [tables]).fetchall()}
    owned = {int(r[0]) for r in conn.execute(
        "SELECT objid FROM pg_depend WHERE classid = 'pg_class'::regclass AND refclassid = "
        "'pg_class'::regclass AND refobjid = ANY(%s) AND deptype IN ('a', 'i')",
        [tables]).fetchall()}
    seen = set(frontier)
    found: set[tuple[str, int]] = set()
    extensions: set[int] = set()
    while frontier:
        members = _extension_members(conn, frontier)
        extensions |= set(members.values())
        walk = [o for o in frontier if o not in members]
        found |= {o for o in walk if o[0] in ("pg_type", "pg_proc", "pg_collation")
                  or (o[0] == "pg_class" and o[1] not in tables and o[1] not in owned
                      and _relkind(conn, o[1]) == "S")}
        nxt = _references(conn, walk) | _parts(conn, walk)
        nxt = {o for o in nxt if _worth_walking(conn, o, tables)} - seen
        seen |= nxt
        frontier = nxt
    out = {}
    for cls, oid in sorted(found):
        named = _definition(conn, cls, oid)
        if named is not None:
            out[named[0]] = named[1]
    for oid in sorted(extensions):
        name, schema = conn.execute("SELECT e.extname, n.nspname FROM pg_extension e JOIN "
                                    "pg_namespace n ON n.oid = e.extnamespace WHERE e.oid = %s",
                                    [oid]).fetchone()
        out[f"EXTENSION {name}"] = _extension_text(name, schema)
    return out


#: (catalog, the oids whose object name — built as `_definition` builds it — is in %s)
_BY_NAME = (
    ("pg_proc", "SELECT p.oid FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
                "WHERE 'FUNCTION ' || n.nspname || '.' || p.proname || '(' || "
                "pg_get_function_identity_arguments(p.oid) || ')' = ANY(%s)"),
    ("pg_type", "SELECT t.oid FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace "
                "WHERE CASE t.typtype WHEN 'd' THEN 'DOMAIN ' ELSE 'TYPE ' END || n.nspname "
                "|| '.' || t.typname = ANY(%s)"),
    ("pg_collation", "SELECT c.oid FROM pg_collation c JOIN pg_namespace n ON n.oid = "
                     "c.collnamespace WHERE 'COLLATION ' || n.nspname || '.' || c.collname "
                     "= ANY(%s)"),
    ("pg_class", "SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                 "WHERE c.relkind = 'S' AND 'SEQUENCE ' || n.nspname || '.' || c.relname "
                 "= ANY(%s)"),
)


def by_name(conn: Any, wanted: Mapping[str, str]) -> dict[str, str]:
    """The definitions of the objects named `wanted` that this database has (the other side's
    dependencies looked up here, whether or not this side's tables use them)."""
    names = list(wanted)
    out = {}
    for cls, query in _BY_NAME:
        for (oid,) in conn.execute(query, [names]).fetchall():
            named = _definition(conn, cls, int(oid))
            if named is not None:
                out[named[0]] = named[1]
    for name, schema in conn.execute(
            "SELECT e.extname, n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = "
            "e.extnamespace WHERE 'EXTENSION ' || e.extname = ANY(%s)", [names]).fetchall():
        out[f"EXTENSION {name}"] = _extension_text(name, schema)
    return out


def _extension_text(name: str, schema: str) -> str:
    return f"CREATE EXTENSION {name} WITH SCHEMA {schema}"


def _pairs(objects: Iterable[tuple[str, int]]) -> tuple[list[str], list[int]]:
    objs = sorted(objects)
    return [o[0] for o in objs], [o[1] for o in objs]


def _extension_members(conn: Any, objects: Iterable[tuple[str, int]]) -> dict[tuple[str, int],
                                                                               int]:
    classes, oids = _pairs(objects)
    rows = conn.execute(
        "SELECT f.cls, f.oid, d.refobjid FROM unnest(%s::text[], %s::oid[]) f(cls, oid) "
        "JOIN pg_depend d ON d.classid = f.cls::regclass AND d.objid = f.oid "
        "WHERE d.deptype = 'e' AND d.refclassid = 'pg_extension'::regclass",
        [classes, oids]).fetchall()
    return {(r[0], int(r[1])): int(r[2]) for r in rows}


def _references(conn: Any, objects: Iterable[tuple[str, int]]) -> set[tuple[str, int]]:
    """User objects the objects refer to (pg_depend, normal, automatic and internal)."""
    classes, oids = _pairs(objects)
    if not oids:
        return set()
    rows = conn.execute(
        "SELECT d.refclassid::regclass::text, d.refobjid FROM unnest(%s::text[], %s::oid[]) "
        "f(cls, oid) JOIN pg_depend d ON d.classid = f.cls::regclass AND d.objid = f.oid "
        "WHERE d.deptype IN ('n', 'a', 'i') AND d.refobjid >= %s",
        [classes, oids, FIRST_USER_OID]).fetchall()
    return {(r[0], int(r[1])) for r in rows}


def _parts(conn: Any, objects: Iterable[tuple[str, int]]) -> set[tuple[str, int]]:
    """What a type's definition is made of beyond pg_depend: a domain's check constraints, a
    composite type's relation (its attributes' types)."""
    types = [o[1] for o in objects if o[0] == "pg_type"]
    if not types:
        return set()
    out = {("pg_constraint", int(r[0])) for r in conn.execute(
        "SELECT oid FROM pg_constraint WHERE contypid = ANY(%s)", [types]).fetchall()}
    out |= {("pg_class", int(r[0])) for r in conn.execute(
        "SELECT typrelid FROM pg_type WHERE oid = ANY(%s) AND typtype = 'c'",
        [types]).fetchall()}
    return out


def _relkind(conn: Any, oid: int) -> str:
    row = conn.execute("SELECT relkind FROM pg_class WHERE oid = %s", [oid]).fetchone()
    return str(row[0]) if row else ""


def _worth_walking(conn: Any, obj: tuple[str, int], tables: Sequence[int]) -> bool:
    """Types, functions, collations, constraints, operators, classes and sequences lead on;
    another table (a foreign key's), an index or a table's row type does not."""
    cls, oid = obj
    if cls == "pg_class":
        return oid not in tables and _relkind(conn, oid) in ("S", "c")
    if cls == "pg_type":
        row = conn.execute("SELECT c.relkind FROM pg_type t LEFT JOIN pg_class c ON c.oid = "
                           "t.typrelid WHERE t.oid = %s", [oid]).fetchone()
        return row is None or row[0] in (None, "c")
    return cls in ("pg_proc", "pg_collation", "pg_constraint", "pg_opclass", "pg_operator",
                   "pg_opfamily", "pg_extension")


def _definition(conn: Any, cls: str, oid: int) -> tuple[str, str] | None:
    """(object name, definition) from the catalog; None for what is not compared by itself
    (an array type: its element is)."""
    if cls == "pg_proc":
        row = conn.execute(
            "SELECT n.nspname, p.proname, pg_get_function_identity_arguments(p.oid), p.prokind, "
            "CASE WHEN p.prokind <> 'a' THEN pg_get_functiondef(p.oid) END FROM pg_proc p "
            "JOIN pg_namespace n ON n.oid = p.pronamespace WHERE p.oid = %s", [oid]).fetchone()
        name = f"FUNCTION {row[0]}.{row[1]}({row[2]})"
        return name, (row[4] or f"AGGREGATE {row[1]}({row[2]})").strip()
    if cls == "pg_collation":
        row = conn.execute(
            "SELECT n.nspname, c.collname, (to_jsonb(c) - ARRAY['oid', 'collname', "
            "'collnamespace', 'collowner', 'collversion'])::text FROM pg_collation c "
            "JOIN pg_namespace n ON n.oid = c.collnamespace WHERE c.oid = %s", [oid]).fetchone()
        return f"COLLATION {row[0]}.{row[1]}", row[2]
    if cls == "pg_class":
        row = conn.execute(
            "SELECT n.nspname, c.relname, format('%%s START %%s INCREMENT %%s MIN %%s MAX %%s "
            "CACHE %%s%%s', format_type(s.seqtypid, NULL), s.seqstart, s.seqincrement, "
            "s.seqmin, s.seqmax, s.seqcache, CASE WHEN s.seqcycle THEN ' CYCLE' ELSE '' END) "
            "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "JOIN pg_sequence s ON s.seqrelid = c.oid WHERE c.oid = %s", [oid]).fetchone()
        return (f"SEQUENCE {row[0]}.{row[1]}", row[2]) if row else None
    return _type_definition(conn, oid)


def _type_definition(conn: Any, oid: int) -> tuple[str, str] | None:
    row = conn.execute(
        "SELECT n.nspname, t.typname, t.typtype, t.typelem, t.typsubscript::text, "
        "format_type(t.typbasetype, t.typtypmod), t.typnotnull, t.typdefault, "
        "CASE WHEN t.typcollation <> 0 AND t.typcollation <> b.typcollation "
        "THEN t.typcollation::regcollation::text END, t.typrelid "
        "FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace "
        "LEFT JOIN pg_type b ON b.oid = t.typbasetype WHERE t.oid = %s", [oid]).fetchone()
    schema, name, kind, elem, subscript, base, notnull, default, collation, relid = row
    if elem and subscript == "array_subscript_handler":
        return None
    if kind == "e":
        labels = [r[0] for r in conn.execute(
            "SELECT enumlabel FROM pg_enum WHERE enumtypid = %s ORDER BY enumsortorder",
            [oid]).fetchall()]
        return f"TYPE {schema}.{name}", "ENUM (" + ", ".join(map(repr, labels)) + ")"
    if kind == "d":
        checks = [f"CONSTRAINT {r[0]} {r[1]}" for r in conn.execute(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint WHERE contypid = %s "
            "ORDER BY conname", [oid]).fetchall()]
        parts = [f"AS {base}", f"COLLATE {collation}" if collation else "",
                 f"DEFAULT {default}" if default is not None else "",
                 "NOT NULL" if notnull else "", *checks]
        return f"DOMAIN {schema}.{name}", " ".join(p for p in parts if p)
    if kind == "c":
        attrs = [f"{r[0]} {r[1]}" for r in conn.execute(
            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid "
            "= %s AND attnum > 0 AND NOT attisdropped ORDER BY attnum", [relid]).fetchall()]
        return f"TYPE {schema}.{name}", "COMPOSITE (" + ", ".join(attrs) + ")"
    if kind == "r":
        r = conn.execute(
            "SELECT format_type(r.rngsubtype, NULL), coalesce(c.collname, ''), o.opcname, "
            "r.rngcanonical::text, r.rngsubdiff::text FROM pg_range r "
            "JOIN pg_opclass o ON o.oid = r.rngsubopc LEFT JOIN pg_collation c "
            "ON c.oid = r.rngcollation WHERE r.rngtypid = %s", [oid]).fetchone()
        return f"TYPE {schema}.{name}", "RANGE (" + ", ".join(map(str, r)) + ")"
    if kind == "m":  # a range's multirange: made with the range
        return None
    return f"TYPE {schema}.{name}", f"{kind} type"
