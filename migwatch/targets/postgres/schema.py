"""A faithful target schema, by PostgreSQL's own tools: the source's schema is dumped once with
`pg_dump --schema-only`, and what the spec's tables need is restored on the target — exactly the
closure of those tables in the dump's own dependency graph (`pg_restore -l -v`): the types,
enums, domains, collations, extensions, functions and sequences they use, their defaults and
identity, and what belongs to them (constraints, indexes, triggers, comments).

Why not hand-written DDL: a table is more than its columns — an enum column cannot even be
created without its type, and an application's first INSERT after a switch needs the defaults,
sequences and constraints. pg_dump knows every object kind and its dependencies; we only choose
which of its entries to restore.

Two phases: `pre_data` before the initial load (everything a row needs, plus primary keys: the
applier writes by key) and `post_data` once the load is applied (secondary and unique indexes,
unique constraints, foreign keys — `NOT VALID`, so rows replicated in per-table order never fail
them — and triggers). The restored SQL is `pg_restore -f -` output run on the target in one
transaction; a table the spec renames (`tables[].target`) gets its target name in it.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from migwatch.config import Endpoint, TableSpec
from migwatch.connectors import postgres as pg
from migwatch.errors import ConfigError, PermanentError

#: TOC descriptions of more than one word, longest first (the rest is the first word)
_DESCS = ("SEQUENCE OWNED BY", "FK CONSTRAINT", "CHECK CONSTRAINT", "MATERIALIZED VIEW",
          "DEFAULT ACL", "TABLE DATA", "INDEX ATTACH", "ROW SECURITY", "EVENT TRIGGER",
          "FOREIGN TABLE", "PUBLICATION TABLE", "SEQUENCE SET", "LARGE OBJECT",
          "SHELL TYPE", "TABLE ATTACH", "USER MAPPING", "SERVER", "PROCEDURAL LANGUAGE",
          "FOREIGN DATA WRAPPER", "OPERATOR CLASS", "OPERATOR FAMILY", "TEXT SEARCH")

#: what belongs to a table: restored with it when it depends on one of the spec's tables
_BELONGS = {"DEFAULT", "CONSTRAINT", "FK CONSTRAINT", "CHECK CONSTRAINT", "INDEX", "TRIGGER",
            "SEQUENCE", "SEQUENCE OWNED BY", "COMMENT", "STATISTICS", "RULE", "INDEX ATTACH",
            "TABLE ATTACH"}
#: built after the load
_POST = {"INDEX", "FK CONSTRAINT", "TRIGGER", "RULE", "STATISTICS"}
#: never restored: the database itself, its settings, data, grants (--no-acl) and ownership
_NEVER = {"ENCODING", "STDSTRINGS", "SEARCHPATH", "DATABASE", "TABLE DATA", "SEQUENCE SET",
          "ACL", "DEFAULT ACL", "DATABASE PROPERTIES", "PUBLICATION", "PUBLICATION TABLE",
          "SUBSCRIPTION", "LARGE OBJECT", "BLOBS"}

_LINE = re.compile(r"^(\d+); (\d+) (\d+) (.*)$")


@dataclass
class Entry:
    """One entry of the dump's table of contents."""

    dump_id: int
    classid: int
    oid: int
    desc: str
    line: str
    #: place in the archive's order, which pg_dump sorted by dependencies: restored in it
    position: int = 0
    depends: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class Plan:
    """Which dump entries to restore in each phase, and what was left out and why."""

    pre: tuple[Entry, ...]
    post: tuple[Entry, ...]
    left_out: tuple[str, ...]


def parse_toc(text: str) -> dict[int, Entry]:
    """`pg_restore -l -v` output: entries by dump id, each with the ids it depends on."""
    entries: dict[int, Entry] = {}
    last: Entry | None = None
    for line in text.splitlines():
        if line.startswith(";\tdepends on:") and last is not None:
            last.depends += [int(x) for x in line.split(":", 1)[1].split()]
            continue
        m = _LINE.match(line)
        if not m:
            continue
        rest = m.group(4)
        desc = next((d for d in _DESCS if rest.startswith(d + " ")), rest.split(" ", 1)[0])
        last = Entry(int(m.group(1)), int(m.group(2)), int(m.group(3)), desc, line,
                     position=len(entries))
        entries[last.dump_id] = last
    return entries


def plan(entries: dict[int, Entry], tables: Iterable[int], keys: set[int]) -> Plan:
    """The closure of the tables (pg_class oids; a partitioned table's partitions among them) in
    the dump's dependency graph.

    Upward, everything an included entry depends on (types, functions, sequences, schemas,
    extensions...), except another table: an entry that needs a table outside the spec (a
    foreign key to it, say) is left out and listed. Downward, what belongs to an included entry
    (`_BELONGS`: defaults, constraints, indexes, triggers, owned sequences, partition attaches,
    comments). `keys` — oids of the primary-key constraints, and of the replica-identity index
    of a table without one — go with the first phase: the applier writes by them."""
    roots = {e.dump_id for e in entries.values() if e.desc == "TABLE" and e.oid in set(tables)}
    dependents: dict[int, list[int]] = {}
    for e in entries.values():
        for d in e.depends:
            dependents.setdefault(d, []).append(e.dump_id)
    chosen: set[int] = set()
    left_out: list[str] = []

    relations = ("TABLE", "VIEW", "MATERIALIZED VIEW", "FOREIGN TABLE")

    def needs_outside_table(e: Entry, seen: set[int]) -> Entry | None:
        if e.desc == "SEQUENCE OWNED BY":  # the owner is its sequence's table
            return next((o for d in e.depends if (seq := entries.get(d)) is not None
                         for o in (entries.get(x) for x in seq.depends)
                         if o is not None and o.desc in relations and o.dump_id not in roots),
                        None)
        for d in e.depends:
            dep = entries.get(d)
            if dep is None or d in seen:
                continue
            if dep.desc in relations and d not in roots:
                if e.desc == "SEQUENCE":
                    continue  # a sequence depends on the table owning it: it stands alone
                return dep
            seen.add(d)
            if (found := needs_outside_table(dep, seen)) is not None:
                return found
        return None

    todo = list(roots)
    while todo:
        i = todo.pop()
        if i in chosen:
            continue
        e = entries[i]
        if e.desc in _NEVER:
            continue
        if i not in roots and (outside := needs_outside_table(e, set())) is not None:
            left_out.append(f"{_tag(e)} (needs {_tag(outside)}, which the spec does not "
                            "migrate)")
            continue
        chosen.add(i)
        todo += [d for d in e.depends if d not in chosen and not (
            e.desc == "SEQUENCE" and entries[d].desc in relations)]
        todo += [d for d in dependents.get(i, ()) if entries[d].desc in _BELONGS
                 and d not in chosen]
    ordered = sorted((entries[i] for i in chosen), key=lambda e: e.position)
    later: set[int] = set()
    for e in ordered:  # in dependency order: whatever needs something built later waits too
        if e.desc in _POST and e.oid not in keys or (e.desc == "CONSTRAINT" and e.oid not in keys) \
                or any(d in later for d in e.depends):
            later.add(e.dump_id)
    pre = tuple(e for e in ordered if e.dump_id not in later)
    post = tuple(e for e in ordered if e.dump_id in later)
    return Plan(pre=pre, post=post, left_out=tuple(dict.fromkeys(left_out)))


def _tag(e: Entry) -> str:
    return e.line.split(" ", 3)[3].rsplit(" ", 1)[0] if e.line.count(" ") >= 4 else e.line


# ------------------------------------------------------------------------ the tools
def check_client(server_version_num: int) -> None:
    """pg_dump must be at least as new as the source's major version (it refuses to dump a
    newer server; say so before trying)."""
    out = subprocess.run([pg.client_tool("pg_dump"), "--version"], capture_output=True, text=True,
                         check=True).stdout
    m = re.search(r"(\d+)(?:\.(\d+))?", out)
    client = int(m.group(1)) if m else 0
    server = server_version_num // 10000
    if client < server:
        raise ConfigError(f"pg_dump {client} cannot dump a PostgreSQL {server} source; install "
                          f"postgresql-client-{server} (or newer) and set MIGWATCH_PG_BIN",
                          field="source")


def unreadable(conn: Any) -> list[str]:
    """pg_dump patterns (exact, quoted) of the relations the user may not read: pg_dump locks
    every table it dumps and reads every sequence, and a least-privileged user may read only the
    migrated ones — the others are left out of the dump (a dependency on one is left out of the
    closure, and named)."""
    rows = conn.execute(
        "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = "
        "c.relnamespace WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S') AND n.nspname NOT IN "
        "('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%' AND NOT "
        "has_table_privilege(c.oid, 'SELECT') AND NOT pg_has_role(c.relowner, 'USAGE')"
    ).fetchall()
    return [pg.dump_pattern(r[0], r[1]) for r in rows]


def dump(source: Endpoint, into: Path, exclude: Sequence[str] = ()) -> Path:
    """`pg_dump -Fc --schema-only` of the source database into `into`, without the relations
    `exclude` names (patterns, given as --opt=value, never through a shell)."""
    path = into / "schema.dump"
    done = subprocess.run([pg.client_tool("pg_dump"), "--schema-only", "--format=custom",
                           f"--file={path}", "--no-password",
                           *(f"--exclude-table={p}" for p in exclude)],
                          capture_output=True, text=True,
                          env=pg.tool_env(source, "source.password"))
    if done.returncode != 0:
        raise PermanentError(f"pg_dump of the source's schema failed: "
                             f"{_first_error(done.stderr)}")
    return path


def toc(dump_file: Path) -> dict[int, Entry]:
    done = subprocess.run([pg.client_tool("pg_restore"), "--list", "--verbose", str(dump_file)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise PermanentError(f"pg_restore --list failed: {_first_error(done.stderr)}")
    return parse_toc(done.stdout)


def script(dump_file: Path, entries: Sequence[Entry], workdir: Path) -> str:
    """The SQL `pg_restore` writes for exactly these entries (no owners, no grants)."""
    if not entries:
        return ""
    listing = workdir / f"list-{entries[0].dump_id}-{len(entries)}.txt"
    listing.write_text("".join(e.line + "\n" for e in entries))
    done = subprocess.run([pg.client_tool("pg_restore"), "--no-owner", "--no-acl",
                           f"--use-list={listing}", "--file=-", str(dump_file)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise PermanentError(f"pg_restore failed: {_first_error(done.stderr)}")
    return done.stdout


def _first_error(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    return next((ln for ln in lines if "error" in ln.lower()), lines[-1] if lines else "")


# ------------------------------------------------------------------------ SQL rewriting
_FK = re.compile(r"(ADD CONSTRAINT\s.+?\sFOREIGN KEY\s.+?);", re.S)


def not_valid_foreign_keys(text: str) -> str:
    """Each `ADD CONSTRAINT … FOREIGN KEY …;` made `NOT VALID`: the rows already there are not
    checked when it is created (they arrive in per-table order) — validated later."""
    return _FK.sub(lambda m: m.group(1) + (" NOT VALID;" if "NOT VALID" not in m.group(1)
                                            else ";"), text)


def renamed(text: str, names: dict[str, str]) -> str:
    """`text` with each qualified table name as pg_dump prints it (`names` keys) replaced by
    the target's (values), wherever it stands as a whole name."""
    for old, new in names.items():
        text = re.sub(rf"(?<![\w\"$.]){re.escape(old)}(?![\w\"$])", new.replace("\\", r"\\"),
                      text)
    return text


def owned_sequences(conn: Any, schema: str, table: str) -> list[tuple[str, str]]:
    """(schema, name) of the sequences a table's columns own (serial, identity)."""
    rows = conn.execute(
        "SELECT n.nspname, s.relname FROM pg_depend d JOIN pg_class s ON s.oid = d.objid "
        "AND s.relkind = 'S' JOIN pg_namespace n ON n.oid = s.relnamespace "
        "WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass "
        "AND d.refobjid = %s::regclass AND d.deptype IN ('a', 'i') ORDER BY 1, 2",
        [sql.Identifier(schema, table).as_string(conn)]).fetchall()
    return [(str(r[0]), str(r[1])) for r in rows]


def moved_names(src: Any, tgt: Any, tables: Sequence[TableSpec]) -> dict[str, str]:
    """How the restored SQL names what the spec renames: each renamed table by its target
    name, and — as PostgreSQL keeps an owned sequence in its table's schema — each sequence
    a table moved to another schema owns, in that schema under its own name; in SQL and in
    the string literal of a `nextval('…'::regclass)` default."""
    out: dict[str, str] = {}
    for t in tables:
        if t.target_name == t.source:
            continue
        out[dump_name(src, t.schema_name, t.name)] = sql.Identifier(*t.target_parts) \
            .as_string(tgt)
        if t.target_parts[0] == t.schema_name:
            continue
        for seq_schema, seq in owned_sequences(src, t.schema_name, t.name):
            old = dump_name(src, seq_schema, seq)
            new = sql.Identifier(t.target_parts[0], seq).as_string(tgt)
            out[old] = new
            if "'" in old or "'" in new:
                out[old.replace("'", "''")] = new.replace("'", "''")
    return out


def dump_name(conn: Any, schema: str, table: str) -> str:
    """How pg_dump prints a qualified name (quoted only where needed)."""
    row = conn.execute("SELECT quote_ident(%s) || '.' || quote_ident(%s)",
                       [schema, table]).fetchone()
    return str(row[0])


def workdir() -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix="migwatch-schema-")


def table_oids(conn: Any, tables: Sequence[TableSpec]) -> dict[str, int]:
    out = {}
    for t in tables:
        row = conn.execute("SELECT %s::regclass::oid", [
            sql.Identifier(t.schema_name, t.name).as_string(conn)]).fetchone()
        out[t.source] = int(row[0])
    return out


def with_partitions(conn: Any, oids: Iterable[int]) -> list[int]:
    """The tables and, for a partitioned one, every partition under it (the applier writes to
    the root; the target keeps the same partitions)."""
    rows = conn.execute("SELECT DISTINCT t.relid::oid FROM unnest(%s::oid[]) r(oid), "
                        "pg_partition_tree(r.oid) t", [list(oids)]).fetchall()
    return sorted({*map(int, oids), *(int(r[0]) for r in rows)})


def key_oids(conn: Any, oids: Iterable[int]) -> set[int]:
    """Primary-key constraints of these tables, and the replica-identity index of a table that
    has no primary key (the applier writes by it: ON CONFLICT needs it from the start)."""
    rows = conn.execute(
        "SELECT oid FROM pg_constraint WHERE contype = 'p' AND conrelid = ANY(%s) "
        "UNION ALL SELECT i.indexrelid FROM pg_index i WHERE i.indrelid = ANY(%s) AND "
        "i.indisreplident AND NOT EXISTS (SELECT 1 FROM pg_index p WHERE p.indrelid = "
        "i.indrelid AND p.indisprimary)", [list(oids), list(oids)]).fetchall()
    return {int(r[0]) for r in rows}


# ------------------------------------------------------------------------ on the target
def _mapped(src: Any, relid: int, tables: Sequence[TableSpec]) -> tuple[str, str]:
    """(schema, name) on the target of the source relation `relid` (renamed when the spec
    renames it)."""
    row = src.execute("SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n "
                      "ON n.oid = c.relnamespace WHERE c.oid = %s", [relid]).fetchone()
    if row is None:
        return ("", "")
    for t in tables:
        if (t.schema_name, t.name) == (row[0], row[1]):
            return t.target_parts
    return (str(row[0]), str(row[1]))


def schema_name(src: Any, oid: int) -> str:
    row = src.execute("SELECT nspname FROM pg_namespace WHERE oid = %s", [oid]).fetchone()
    return str(row[0]) if row else "public"


def _one(conn: Any, query: str, params: Sequence[Any]) -> Any:
    row = conn.execute(query, list(params)).fetchone()
    return row if row is not None else None


def exists_on_target(src: Any, tgt: Any, e: Entry, tables: Sequence[TableSpec]) -> bool:
    """Whether the target already has the object of entry `e` (found by its names on the
    source): shared types, functions and sequences made for another table, or a step of an
    earlier run, are not made twice."""
    oid = e.oid
    if e.classid == 1247:  # type, domain
        row = _one(src, "SELECT n.nspname, t.typname FROM pg_type t JOIN pg_namespace n "
                        "ON n.oid = t.typnamespace WHERE t.oid = %s", [oid])
        return row is not None and bool(_one(tgt, (
            "SELECT 1 FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace "
            "WHERE n.nspname = %s AND t.typname = %s"), row))
    if e.classid == 1255:  # function, procedure
        row = _one(src, "SELECT n.nspname, p.proname, pg_get_function_identity_arguments(p.oid)"
                        " FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
                        "WHERE p.oid = %s", [oid])
        return row is not None and bool(_one(tgt, (
            "SELECT 1 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
            "WHERE n.nspname = %s AND p.proname = %s AND "
            "pg_get_function_identity_arguments(p.oid) = %s"), row))
    if e.classid == 1259:  # table, sequence, index
        row = _one(src, "SELECT c.relkind, i.indrelid, n.nspname, c.relname FROM pg_class c "
                        "JOIN pg_namespace n ON n.oid = c.relnamespace LEFT JOIN pg_index i "
                        "ON i.indexrelid = c.oid WHERE c.oid = %s", [oid])
        if row is None:
            return False
        kind, table, nsp, name = row
        if kind == "r" or kind == "p":
            nsp, name = _mapped(src, oid, tables)
        elif table is not None:  # an index lives in its table's schema
            nsp = _mapped(src, table, tables)[0]
        return bool(_one(tgt, "SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = "
                              "c.relnamespace WHERE n.nspname = %s AND c.relname = %s",
                         [nsp, name]))
    if e.classid in (2606, 2620):  # constraint, trigger: by name on its (mapped) table
        q = ("SELECT conrelid, conname FROM pg_constraint WHERE oid = %s" if e.classid == 2606
             else "SELECT tgrelid, tgname FROM pg_trigger WHERE oid = %s")
        row = _one(src, q, [oid])
        if row is None or not row[0]:
            return False
        nsp, table = _mapped(src, row[0], tables)
        q = ("SELECT 1 FROM pg_constraint x JOIN pg_class c ON c.oid = x.conrelid "
             "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND "
             "c.relname = %s AND x.conname = %s") if e.classid == 2606 else (
            "SELECT 1 FROM pg_trigger x JOIN pg_class c ON c.oid = x.tgrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND "
            "c.relname = %s AND x.tgname = %s")
        return bool(_one(tgt, q, [nsp, table, row[1]]))
    if e.classid == 2604:  # a column default
        row = _one(src, "SELECT d.adrelid, a.attname FROM pg_attrdef d JOIN pg_attribute a "
                        "ON a.attrelid = d.adrelid AND a.attnum = d.adnum WHERE d.oid = %s",
                   [oid])
        if row is None:
            return False
        nsp, table = _mapped(src, row[0], tables)
        return bool(_one(tgt, "SELECT 1 FROM pg_attribute a JOIN pg_class c ON c.oid = "
                              "a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace WHERE "
                              "n.nspname = %s AND c.relname = %s AND a.attname = %s AND "
                              "a.atthasdef", [nsp, table, row[1]]))
    if e.classid == 2615:  # schema
        row = _one(src, "SELECT nspname FROM pg_namespace WHERE oid = %s", [oid])
        return row is not None and bool(_one(
            tgt, "SELECT 1 FROM pg_namespace WHERE nspname = %s", row))
    if e.classid == 3079:  # extension
        row = _one(src, "SELECT extname FROM pg_extension WHERE oid = %s", [oid])
        return row is not None and bool(_one(
            tgt, "SELECT 1 FROM pg_extension WHERE extname = %s", row))
    if e.classid == 3456:  # collation
        row = _one(src, "SELECT n.nspname, c.collname FROM pg_collation c JOIN pg_namespace n "
                        "ON n.oid = c.collnamespace WHERE c.oid = %s", [oid])
        return row is not None and bool(_one(tgt, (
            "SELECT 1 FROM pg_collation c JOIN pg_namespace n ON n.oid = c.collnamespace "
            "WHERE n.nspname = %s AND c.collname = %s"), row))
    return False


_HEADER = re.compile(r"^-- Name: (.*?); Type: (.*?); Schema: (.*?); Owner: .*$", re.M)


def pieces(text: str) -> list[tuple[str, str]]:
    """pg_restore's SQL as ("<type> <schema>.<name>", statements) per object, the settings it
    starts with first as ("preamble", …)."""
    text = "\n".join(ln for ln in text.splitlines() if not ln.startswith("\\"))
    heads = list(_HEADER.finditer(text))
    out = [("preamble", text[:heads[0].start()] if heads else text)]
    for i, m in enumerate(heads):
        end = heads[i + 1].start() if i + 1 < len(heads) else len(text)
        what = f"{m.group(2)} {m.group(3)}.{m.group(1)}" if m.group(3) != "-" else \
            f"{m.group(2)} {m.group(1)}"
        out.append((what, text[m.end():end]))
    return [(what, body) for what, body in out if body.strip(" \n-")]


def run_pieces(tgt: Any, objects: Sequence[tuple[str, str]],
               seconds: dict[str, float] | None = None,
               on_done: Callable[[str], None] | None = None) -> list[str]:
    """Run objects of `pieces` in order (in the caller's transaction), so a failure names the
    object: PermanentError "cannot create <type> <schema>.<name>". Returns what was made; each
    object's time goes into `seconds`."""
    made = []
    for what, body in objects:
        started = time.monotonic()
        try:
            tgt.execute(body)
        except psycopg.Error as exc:
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else \
                type(exc).__name__
            raise PermanentError(f"target: cannot create {what}: {detail}") from exc
        if what != "preamble":
            made.append(what)
            if seconds is not None:
                seconds[what] = round(time.monotonic() - started, 3)
            if on_done is not None:
                on_done(what)
    return made


def run_script(tgt: Any, text: str) -> list[str]:
    """Run pg_restore's SQL on the target one object at a time (`run_pieces`). Session
    settings the script makes (search_path and the like) are reset afterwards."""
    made = run_pieces(tgt, pieces(text))
    tgt.execute("RESET ALL")  # the script's search_path and timeouts end with it
    return made


def granted_roles(src: Any, oids: Sequence[int]) -> dict[str, list[str]]:
    """Per role, what the source's tables grant it or own it by (`owner of app.t`,
    `SELECT on app.t`): the restore runs with --no-owner --no-acl, so none of it reaches the
    target; the migration names the roles the target lacks."""
    rows = src.execute(
        "SELECT r.rolname, 'owner of ' || c.oid::regclass::text FROM pg_class c "
        "JOIN pg_roles r ON r.oid = c.relowner WHERE c.oid = ANY(%s) "
        "UNION ALL SELECT coalesce(r.rolname, 'PUBLIC'), a.privilege_type || ' on ' || "
        "c.oid::regclass::text FROM pg_class c, aclexplode(c.relacl) a "
        "LEFT JOIN pg_roles r ON r.oid = a.grantee WHERE c.oid = ANY(%s) "
        "AND a.grantee <> c.relowner ORDER BY 1, 2", [list(oids), list(oids)]).fetchall()
    out: dict[str, list[str]] = {}
    for role, what in rows:
        out.setdefault(str(role), []).append(str(what))
    return out
