"""Great Expectations on PostgreSQL targets: one suite per table, derived from the source schema.

Each suite holds: the row count equals the source's, the primary key is unique, every NOT NULL
source column is not null, the column set matches the source's — plus the spec's own
expectations for that table (`validation.expectations`). All suites run through one GX
checkpoint; each table's outcome is stored on its `TableResult.expectations` as plain data.

GX is imported here, lazily (it takes seconds), with its analytics off (no network). A MongoDB
target is not checked: the result says GX does not apply, it does not fail. Unexpected values
that GX samples are kept only when the spec allows showing values.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from psycopg import sql
from sqlalchemy.sql.elements import quoted_name

from migwatch.config import MigrationSpec, TableSpec
from migwatch.connectors import postgres as pg
from migwatch.errors import ConfigError, PermanentError
from migwatch.targets import engine_for
from migwatch.validation.model import DIFFERENT, PENDING, REDACTED, TableResult, ValidationResult

NOT_APPLICABLE = ("Great Expectations does not apply to a MongoDB target: its suites run on "
                  "PostgreSQL targets only")
ROW_COUNT = "expect_table_row_count_to_equal"
GX_APPLICATION = "migwatch-expectations"
_SCRUB = re.compile(r"(postgresql(?:\+\w+)?://[^:/@\s]*:)[^@\s]*@")


@dataclass
class TableFacts:
    """What the generated suite asserts about one target table, read from the source."""

    table: str  # source schema.table (the key of the outcome)
    schema: str  # target schema and table the suite runs on
    name: str
    columns: list[str]
    primary_key: list[str]
    not_null: list[str]
    row_count: int
    user: list[dict[str, Any]] = field(default_factory=list)


# ----------------------------------------------------------------------------- the spec's part
def user_expectations(spec: MigrationSpec, table: TableSpec) -> list[dict[str, Any]]:
    """The spec's expectations for `table`, keyed by `schema.table` or the bare table name."""
    exp = spec.validation.expectations
    return list(exp.get(table.source, ())) + (
        list(exp.get(table.name, ())) if table.schema_name == "public" else [])


def check_expectation_keys(spec: MigrationSpec) -> None:
    """Every key of `validation.expectations` names a table of the spec (else a ConfigError)."""
    known = {t.source for t in spec.tables} | {t.name for t in spec.tables
                                                if t.schema_name == "public"}
    for key in spec.validation.expectations:
        if key not in known:
            raise ConfigError(f"{key!r} is not one of the spec's tables",
                              field=f"validation.expectations.{key}")


def _expectation(gxe: Any, registry: Any, item: dict[str, Any], where: str) -> Any:
    """One GX expectation from `{type: <snake_case or CamelCase>, <its arguments>...}`."""
    item = dict(item)
    name = item.pop("type", None) or item.pop("expectation", None)
    if not isinstance(name, str) or not name:
        raise ConfigError("needs `type`, e.g. expect_column_values_to_be_between", field=where)
    cls = getattr(gxe, name, None) if name[:1].isupper() else None
    if cls is None:
        try:
            cls = registry.get_expectation_impl(name)
        except Exception as exc:  # GX raises its own error class for an unknown name
            raise ConfigError(f"unknown expectation {name!r}", field=where) from exc
    try:
        return cls(**item)
    except Exception as exc:  # pydantic's error names the bad argument
        first = str(exc).strip().splitlines()
        raise ConfigError(f"{name}: {' '.join(first[:3])}", field=where) from exc


# ----------------------------------------------------------------------------- facts
def gather_facts(spec: MigrationSpec, results: dict[str, TableResult],
                 application: str = "migwatch-validate") -> list[TableFacts]:
    """The source's columns, key, NOT NULL columns and row count for each table.

    The row count is the one the comparison saw (same snapshot) when it has one."""
    facts = []
    with pg.connect_endpoint(spec.source, "source", autocommit=True,
                             application=application) as conn:
        for t in spec.tables:
            r = results.get(t.source)
            if r is None or r.error is not None:
                continue  # not compared, or could not be: the result already says why
            with pg.translated(f"source {t.source}"):
                info = pg.describe_table(conn, t.schema_name, t.name)
                if info is None:
                    raise PermanentError(f"source: table {t.source} does not exist")
                if r.error is None and r.source_rows:
                    count = r.source_rows
                else:
                    row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(
                        info.ident)).fetchone()
                    count = int(row[0]) if row else 0
                # generated columns: not replicated (each side computes them), yet columns
                generated = [r[0] for r in conn.execute(
                    "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND "
                    "attnum > 0 AND NOT attisdropped AND attgenerated <> '' ORDER BY attnum",
                    [info.ident.as_string(conn)]).fetchall()]
            schema, name = t.target_parts
            facts.append(TableFacts(
                table=t.source, schema=schema, name=name,
                columns=[c.name for c in info.columns] + generated,
                primary_key=list(info.primary_key),
                not_null=[c.name for c in info.columns if c.not_null],
                row_count=count, user=user_expectations(spec, t)))
    return facts


def _target_url(spec: MigrationSpec) -> str:
    """A SQLAlchemy URL of the target — holds the password: never logged, scrubbed from errors."""
    t = spec.target
    secret = t.secret("target")
    auth = quote(t.user or "", safe="")
    if secret is not None:
        auth += ":" + quote(secret.get_secret_value(), safe="")
    at = f"{auth}@" if auth else ""
    return (f"postgresql+psycopg://{at}{t.host}:{t.port}/{quote(t.database, safe='')}"
            f"?application_name={GX_APPLICATION}")


def scrub(text: str) -> str:
    return _SCRUB.sub(r"\1***@", text)


_SNAPSHOT_ID = re.compile(r"^[0-9A-F]+-[0-9A-F]+-[0-9]+$")


@contextmanager
def one_snapshot(spec: MigrationSpec) -> Iterator[str]:
    """Every query GX sends to the target in this block sees the same snapshot.

    GX computes each metric in its own transaction; on a target the applier keeps writing to,
    a row count and a uniqueness check would describe different moments (a key renumbered
    between two queries looks duplicated). A holding transaction exports its snapshot and each
    GX transaction adopts it (`SET TRANSACTION SNAPSHOT`) as it begins."""
    from psycopg import IsolationLevel
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    with pg.connect_endpoint(spec.target, "target",
                             application="migwatch-expectations-snapshot") as holder, \
            pg.translated("target: export a snapshot for the expectations"):
        holder.isolation_level = IsolationLevel.REPEATABLE_READ
        row = holder.execute("SELECT pg_export_snapshot()").fetchone()
        snapshot = str(row[0]) if row else ""
        if not _SNAPSHOT_ID.match(snapshot):
            raise PermanentError(f"target: unexpected snapshot id {snapshot!r}")

        def adopt(conn: Any) -> None:
            if conn.engine.url.query.get("application_name") != GX_APPLICATION:
                return  # another engine of this process: not ours to pin
            conn.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            conn.exec_driver_sql(f"SET TRANSACTION SNAPSHOT '{snapshot}'")

        event.listen(Engine, "begin", adopt)
        try:
            yield snapshot
        finally:
            event.remove(Engine, "begin", adopt)


# ----------------------------------------------------------------------------- running
def run_expectations(spec: MigrationSpec, result: ValidationResult) -> dict[str, dict[str, Any]]:
    """Run every table's suite on the target through one checkpoint; store each outcome on its
    `TableResult` (a failed expectation makes the table `different`) and return them by table.
    """
    results = {t.table: t for t in result.tables}
    if not engine_for(spec).runs_expectations:
        outcome = {"applies": False, "note": NOT_APPLICABLE}
        for t in result.tables:
            t.expectations = dict(outcome)
        if NOT_APPLICABLE not in result.notes:
            result.notes.append(NOT_APPLICABLE)
        return {t.table: dict(outcome) for t in result.tables}
    check_expectation_keys(spec)
    facts = gather_facts(spec, results)
    outcomes = run_suites(spec, facts, show_values=spec.validation.show_values)
    for table, outcome in outcomes.items():
        r = results[table]
        r.expectations = outcome
        apply_outcome(r, outcome)
    return outcomes


def apply_outcome(result: TableResult, outcome: dict[str, Any]) -> None:
    """A failed expectation makes the table `different` — except a row count that differs while
    the table's ranges are pending (the source is moving; revalidation decides)."""
    failed = [f["expectation"] for f in outcome.get("failed", [])]
    if outcome.get("error") and result.error is None:
        result.status = DIFFERENT
    if not failed:
        return
    if result.status == PENDING and set(failed) == {ROW_COUNT}:
        result.warnings.append("row count expectation failed while the source is moving; the "
                               "pending ranges decide")
        return
    if result.error is None:
        result.status = DIFFERENT


def run_suites(spec: MigrationSpec, facts: Sequence[TableFacts],
               show_values: bool = False) -> dict[str, dict[str, Any]]:
    """Build one suite per table and run them all through one GX checkpoint."""
    os.environ["GX_ANALYTICS_ENABLED"] = "false"  # before the import: GX reads it then
    # GX's own INFO lines (temporary docs folders) say nothing about the data
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    import great_expectations as gx
    import great_expectations.expectations as gxe
    from great_expectations.data_context.types.base import ProgressBarsConfig
    from great_expectations.expectations import registry

    if not facts:
        return {}
    try:
        context = gx.get_context(mode="ephemeral")
        # no tqdm bars on stderr (the CLI and Prefect show progress their own way)
        context.variables.progress_bars = ProgressBarsConfig(globally=False,
                                                             metric_calculations=False)
        source = context.data_sources.add_postgres("target", connection_string=_target_url(spec))
    except Exception as exc:
        raise PermanentError(f"great expectations: cannot set up the target: "
                             f"{scrub(str(exc))[:300]}") from None
    definitions = []
    suites: dict[str, tuple[TableFacts, str]] = {}
    out: dict[str, dict[str, Any]] = {}
    for i, f in enumerate(facts):
        suite = gx.ExpectationSuite(name=f"migwatch-{i}-{f.name}")
        for e in generated(gxe, f):
            suite.add_expectation(e)
        for j, item in enumerate(f.user):
            suite.add_expectation(_expectation(gxe, registry, item,
                                               f"validation.expectations.{f.table}[{j}]"))
        try:
            # quoted: GX lower-cases an unquoted name ("ProductReviews" would not be found);
            # a schema is kept as it is only as SQLAlchemy's quoted_name ("Archive")
            asset = source.add_table_asset(name=f"t{i}", table_name=f'"{f.name}"',
                                           schema_name=quoted_name(f.schema, quote=True))
        except Exception as exc:  # GX tests the table on adding it: missing, no access
            out[f.table] = {"applies": True, "suite": suite.name,
                            "target": f"{f.schema}.{f.name}", "success": False,
                            "evaluated": 0, "passed": 0, "failed": [],
                            "error": f"table not readable: {scrub(str(exc))[:300]}"}
            continue
        suite = context.suites.add(suite)
        batch = asset.add_batch_definition_whole_table(f"t{i}-all")
        definitions.append(context.validation_definitions.add(gx.ValidationDefinition(
            name=f"v{i}", data=batch, suite=suite)))
        suites[suite.name] = (f, f"{f.schema}.{f.name}")
    if not definitions:
        return out
    checkpoint = context.checkpoints.add(gx.Checkpoint(
        name="migwatch", validation_definitions=definitions, actions=[],
        result_format="SUMMARY"))
    try:
        with one_snapshot(spec):
            run = checkpoint.run()
    except Exception as exc:
        raise PermanentError(f"great expectations checkpoint failed: "
                             f"{type(exc).__name__}: {scrub(str(exc))[:300]}") from None
    for suite_result in run.run_results.values():
        f, target = suites[suite_result.suite_name]
        out[f.table] = summarise(suite_result, f, target, show_values)
    return out


def generated(gxe: Any, f: TableFacts) -> list[Any]:
    """The suite derived from the source schema."""
    exps: list[Any] = [gxe.ExpectTableRowCountToEqual(value=f.row_count),
                       gxe.ExpectTableColumnsToMatchSet(column_set=list(f.columns),
                                                        exact_match=True)]
    if len(f.primary_key) == 1:
        exps.append(gxe.ExpectColumnValuesToBeUnique(column=f.primary_key[0]))
    elif f.primary_key:
        exps.append(gxe.ExpectCompoundColumnsToBeUnique(column_list=list(f.primary_key)))
    exps += [gxe.ExpectColumnValuesToNotBeNull(column=c) for c in f.not_null]
    return exps


_DESCRIBE_KWARGS = ("column", "column_list", "column_set", "value", "min_value", "max_value",
                    "value_set", "regex")


def summarise(suite_result: Any, f: TableFacts, target: str,
              show_values: bool) -> dict[str, Any]:
    """Plain data for one suite's run: counts and, per failed expectation, what and where."""
    failed = []
    for r in suite_result.results:
        if r.success:
            continue
        cfg = r.expectation_config
        kwargs = {k: v for k, v in cfg.kwargs.items() if k in _DESCRIBE_KWARGS}
        if not show_values:
            for k in ("value_set", "min_value", "max_value", "regex"):
                if k in kwargs:
                    kwargs[k] = REDACTED
        res = r.result or {}
        item: dict[str, Any] = {"expectation": cfg.type, "kwargs": kwargs}
        if cfg.type in (ROW_COUNT, "expect_table_columns_to_match_set"):
            item["observed"] = res.get("observed_value")  # counts and column names, not values
            item["details"] = res.get("details")
        for k in ("element_count", "unexpected_count", "unexpected_percent"):
            if k in res:
                item[k] = res[k]
        if show_values and res.get("partial_unexpected_list"):
            item["unexpected_sample"] = [str(v) for v in res["partial_unexpected_list"][:10]]
        info = r.exception_info or {}
        if info.get("raised_exception"):
            item["error"] = scrub(str(info.get("exception_message", "")))[:300]
        failed.append(item)
    return {
        "applies": True,
        "suite": suite_result.suite_name,
        "target": target,
        "success": bool(suite_result.success),
        "evaluated": len(suite_result.results),
        "passed": len(suite_result.results) - len(failed),
        "failed": _jsonable(failed),
    }


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def only_moving_count(table: TableResult) -> bool:
    """The table's one failed expectation is its row count, taken while the source moved."""
    failed = {f["expectation"] for f in (table.expectations or {}).get("failed", [])}
    return table.status == PENDING and failed == {ROW_COUNT}


def failed_names(result: ValidationResult, moving_counts: bool = True) -> list[str]:
    """`table: expectation(column)` for every failed expectation, for messages; without the
    row counts of tables whose source was moving when `moving_counts` is false."""
    out = []
    for t in result.tables:
        if not moving_counts and only_moving_count(t):
            continue
        if (t.expectations or {}).get("error"):
            out.append(f"{t.table}: {t.expectations['error']}")  # type: ignore[index]
        for f in (t.expectations or {}).get("failed", []):
            kw = f.get("kwargs", {})
            where = kw.get("column") or kw.get("column_list")
            out.append(f"{t.table}: {f['expectation']}" + (f"({where})" if where else ""))
    return out

