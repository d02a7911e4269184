"""The schema check, its pure part: definitions split into named objects, normalised, compared.

The check is independent of the restore that built the target's schema
(`migwatch.targets.postgres.schema` chooses and rewrites TOC entries of a custom-format archive;
this module reads neither): each side's tables are read back as plain `pg_dump --schema-only -t`
text and split at pg_dump's own object headers, a CREATE TABLE column by column; what the tables
depend on (types, functions, collations, sequences, extensions) arrives as catalog definitions
from `migwatch.validation.pg_schema`. Both become `{object name: definition}` per side, and
`compare` lists what is missing, extra or different.

A difference the target has on purpose is declared by a versioned migration applied on it, one
object per line anywhere in the file (`*` and `?` match as in shell patterns):

    -- migwatch: schema-difference INDEX app.orders_total_idx
    -- migwatch: schema-difference COLUMN app.orders.*

(`#` instead of `--` in a MongoDB migration module).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from migwatch.validation.model import SchemaCheck, SchemaDifference

#: pg_dump's header of one object in plain output (Name may itself hold "; ": the last match wins)
_HEADER = re.compile(r"^-- Name: (?P<name>.*); Type: (?P<type>[A-Z][A-Z ]*); "
                     r"Schema: (?P<schema>.*?); Owner: .*$")
_DECLARATION = re.compile(r"^\s*(?:--|#)\s*migwatch:\s*schema-difference\s+(?P<what>.+?)\s*$",
                          re.MULTILINE)
_NOT_VALID = re.compile(r"\s+NOT VALID(?=;\s*$)")
#: a line of a CREATE TABLE's column list: a column, or a table constraint
_CONSTRAINT_LINE = re.compile(r'^CONSTRAINT\s+(?P<name>"(?:[^"]|"")+"|\S+)\s')


@dataclass(frozen=True)
class Rename:
    """A table the spec renames: its pg_dump-formatted names on each side."""

    source_schema: str  # as in pg_dump's headers (unquoted)
    source_name: str
    target_schema: str
    target_name: str
    source_qualified: str  # as in pg_dump's SQL (quoted where needed)
    target_qualified: str


@dataclass
class Objects:
    """One side's definitions, `{object name: normalised text}`, and what was seen on the way."""

    definitions: dict[str, str] = field(default_factory=dict)
    #: foreign keys found NOT VALID (by object name)
    not_valid: set[str] = field(default_factory=set)


def declarations(text: str) -> list[str]:
    """The object patterns a migration file declares as deliberate schema differences."""
    return [m["what"] for m in _DECLARATION.finditer(text)]


def split_dump(text: str, renames: Iterable[Rename] = ()) -> Objects:
    """pg_dump plain `--schema-only` output as named objects: `TYPE schema.name` (a CREATE
    TABLE also as `COLUMN schema.table.column` and `CONSTRAINT schema.table.name` per line of
    its list). Settings, comments and `\\restrict` lines are dropped; names of renamed tables
    are written as the source's, so both sides name an object alike."""
    renames = list(renames)
    out = Objects()
    header: re.Match[str] | None = None
    body: list[str] = []

    def flush() -> None:
        if header is None:
            return
        kind, schema, name = header["type"], header["schema"], header["name"]
        raw = "\n".join(body).strip()
        schema, name = _renamed_header(renames, kind, schema, name, raw)
        sql_text = _renamed_sql(renames, raw)
        key = _object_name(kind, schema, name)
        if kind == "FK CONSTRAINT" and _NOT_VALID.search(sql_text):
            out.not_valid.add(key)
            sql_text = _NOT_VALID.sub("", sql_text)
        if kind == "TABLE" and sql_text.startswith("CREATE"):
            out.definitions.update(_table_parts(schema, name, sql_text))
        else:
            out.definitions[key] = sql_text

    for line in text.splitlines():
        m = _HEADER.match(line)
        if m is not None:
            flush()
            header, body = m, []
            continue
        if line.startswith("--") or not line.strip() or line.startswith(("\\restrict",
                                                                          "\\unrestrict")):
            continue
        if header is None:  # the settings before the first object
            continue
        body.append(line.rstrip())
    flush()
    return out


def _object_name(kind: str, schema: str, name: str) -> str:
    if kind == "COMMENT":  # "TABLE accounts", "COLUMN accounts.email"
        what, _, rest = name.partition(" ")
        return f"COMMENT ON {what} {schema}.{rest}" if schema != "-" else f"COMMENT ON {name}"
    parts = name.split(" ", 1)  # "table constraint", "table column", "table trigger"
    return f"{kind} {schema}." + ".".join(parts) if schema != "-" else f"{kind} {name}"


def _table_parts(schema: str, name: str, text: str) -> dict[str, str]:
    """A CREATE TABLE as one object per column and per table constraint, plus the rest (the
    statement without its list: partitioning, storage options)."""
    lines = text.splitlines()
    try:
        close = max(i for i, ln in enumerate(lines) if ln.startswith(")"))
    except ValueError:
        return {f"TABLE {schema}.{name}": text}
    parts = {f"TABLE {schema}.{name}": "\n".join([lines[0], *lines[close:]])}
    for line in lines[1:close]:
        item = line.strip().rstrip(",")
        m = _CONSTRAINT_LINE.match(item)
        if m is not None:
            parts[f"CONSTRAINT {schema}.{name}.{_unquote(m['name'])}"] = item
        else:
            column = _first_identifier(item)
            parts[f"COLUMN {schema}.{name}.{column}"] = item
    return parts


def _first_identifier(text: str) -> str:
    if text.startswith('"'):
        m = re.match(r'"((?:[^"]|"")*)"', text)
        return m.group(1).replace('""', '"') if m else text
    return text.split(" ", 1)[0]


def _unquote(ident: str) -> str:
    return ident[1:-1].replace('""', '"') if ident.startswith('"') else ident


def _renamed_header(renames: list[Rename], kind: str, schema: str, name: str,
                    sql_text: str) -> tuple[str, str]:
    for r in renames:
        if schema != r.target_schema:
            continue
        if kind == "INDEX" and re.search(r"\sON (?:ONLY )?" + re.escape(r.target_qualified)
                                         + r"(?![\w$\"])", sql_text):
            return r.source_schema, name  # an index lives in its table's schema
        if kind == "COMMENT":
            what, _, rest = name.partition(" ")
            if rest == r.target_name or rest.startswith(r.target_name + "."):
                return r.source_schema, f"{what} {r.source_name}{rest[len(r.target_name):]}"
        elif name == r.target_name or name.startswith(r.target_name + " "):
            return r.source_schema, r.source_name + name[len(r.target_name):]
    return schema, name


def _renamed_sql(renames: list[Rename], text: str) -> str:
    for r in renames:
        pattern = re.compile(r'(?<![\w$."])' + re.escape(r.target_qualified) + r'(?![\w$"])')
        text = pattern.sub(r.source_qualified.replace("\\", "\\\\"), text)
    return text


def compare(source: Objects, target: Objects, declared: Mapping[str, Iterable[str]],
            *, outside: Mapping[str, str] | None = None) -> SchemaCheck:
    """Every object of either side: equal, or a difference — declared when a migration's
    pattern names it (`declared`: migration → patterns). `outside`: source objects the target
    cannot have (a foreign key to a table not migrated) → warnings, not differences."""
    check = SchemaCheck()
    outside = outside or {}
    names = sorted(set(source.definitions) | set(target.definitions))
    for name in names:
        s, t = source.definitions.get(name), target.definitions.get(name)
        if s is not None and t is None and name in outside:
            check.warnings.append(f"{name} is not on the target: {outside[name]}")
            continue
        check.objects += 1
        if s == t:
            if name in target.not_valid and name not in source.not_valid:
                check.warnings.append(f"{name} is NOT VALID on the target (created so, for "
                                      "rows replicated in per-table order; not validated yet)")
            continue
        kind = "missing" if t is None else "extra" if s is None else "differs"
        diff = SchemaDifference(object=name, kind=kind, source=s or "", target=t or "")
        by = next((mig for mig, patterns in declared.items()
                   if any(fnmatch.fnmatchcase(name, p) for p in patterns)), "")
        if by:
            diff.declared_by = by
            check.declared.append(diff)
        else:
            check.differences.append(diff)
    check.settle()
    return check


def short(text: str, limit: int = 160) -> str:
    """A definition on one line, cut at `limit` characters ("—" for none)."""
    one = " ".join(text.split())
    return (one if len(one) <= limit else one[:limit - 1] + "…") or "—"


def difference_rows(check: Mapping[str, Any]) -> list[dict[str, str]]:
    """One plain row per difference, undeclared first (a check in its dict form): what the
    validate stage's artifact, the CLI and the report show."""
    return [{"object": d["object"], "difference": d["kind"], "source": short(d["source"]),
             "target": short(d["target"]), "declared by": d.get("declared_by") or ""}
            for d in [*check.get("differences", []), *check.get("declared", [])]]


def markdown_lines(check: SchemaCheck) -> list[str]:
    """The check as markdown (the validate stage's artifact): a line of figures, the
    differences as a table, then the check's notes."""
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("`", "'")

    lines = [f"Schema check: **{check.status}** — {check.objects} object(s) compared, "
             f"{len(check.differences)} differ, {len(check.declared)} declared by migrations"
             + (f" ({check.method})" if check.method else "")]
    if check.error:
        lines.append(f"Could not check: {cell(short(check.error, 400))}")
    rows = difference_rows(asdict(check))
    if rows:
        lines += ["", "| object | difference | source | target | declared by |",
                  "|---|---|---|---|---|"]
        lines += ["| " + " | ".join(cell(r[k]) for k in ("object", "difference", "source",
                                                         "target", "declared by")) + " |"
                  for r in rows]
    lines += [f"- {cell(short(w, 400))}" for w in check.warnings]
    return lines
