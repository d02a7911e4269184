"""migwatch runs with the least privileges docs/privileges.md lists — no superuser anywhere — and
pre-flight names each missing one before anything is created.

Source: a LOGIN REPLICATION role that belongs to the group role owning the captured tables
(Debezium's own advice: only a table's owner may add it to a publication), with CREATE on the
database (the publication) and on the heartbeat's schema — and a table and a sequence beside them
that it may not read. Target: a LOGIN role with CREATE on
the database (its `migwatch` schema) and on the target schema."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
import yaml
from psycopg import sql

from migwatch import capture, processes, workload
from migwatch.config import parse_spec
from migwatch.errors import PreflightError
from migwatch.preflight import preflight
from migwatch.stack import Stack
from tests.conftest import PgDatabase, make_spec

MIGWATCH = str(Path(sys.executable).parent / "migwatch")
SHOP = list(workload.SHOP_TABLES)
FAST = {"monitor": {"poll_interval_seconds": 1, "consecutive_polls": 3, "window_size": 6,
                    "timeout_seconds": 300},
        "snapshot": {"poll_interval_seconds": 1, "method": "copy"}}  # the default load
PASSWORD = "least-privilege-pw"


def execute(dsn: str, *statements: sql.Composable) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


@pytest.fixture
def least(stack: Stack, source_db: PgDatabase, target_db: PgDatabase) -> Iterator[dict[str, str]]:
    """Roles `cdc` (source), `apply` (target), `outsider` (source, owns nothing), `owners`."""
    tag = uuid.uuid4().hex[:6]
    roles = {k: f"mw_{k}_{tag}" for k in ("owners", "cdc", "apply", "outsider")}
    r = {k: sql.Identifier(v) for k, v in roles.items()}
    pw = sql.Literal(PASSWORD)
    workload.init(source_db.dsn, 300)
    execute(source_db.dsn,
            sql.SQL("CREATE ROLE {} NOLOGIN").format(r["owners"]),
            sql.SQL("CREATE ROLE {} LOGIN REPLICATION PASSWORD {}").format(r["cdc"], pw),
            sql.SQL("CREATE ROLE {} LOGIN REPLICATION PASSWORD {}").format(r["outsider"], pw),
            sql.SQL("GRANT {} TO {}").format(r["owners"], r["cdc"]),
            sql.SQL("GRANT CREATE ON DATABASE {} TO {}, {}").format(
                sql.Identifier(source_db.name), r["cdc"], r["outsider"]),
            sql.SQL("GRANT CREATE ON SCHEMA public TO {}, {}").format(r["cdc"], r["outsider"]),
            sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {}").format(r["outsider"]),
            *[sql.SQL("ALTER TABLE {} OWNER TO {}").format(
                sql.Identifier(*t.split(".")), r["owners"]) for t in SHOP],
            # a table of someone else's that migwatch may not read (nor pg_dump lock)
            sql.SQL("CREATE TABLE public.payroll (id int PRIMARY KEY, salary numeric)"),
            sql.SQL("CREATE SEQUENCE public.payroll_seq"))
    execute(target_db.dsn,
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(r["apply"], pw),
            sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(
                sql.Identifier(target_db.name), r["apply"]),
            sql.SQL("GRANT CREATE ON SCHEMA public TO {}").format(r["apply"]))
    yield roles
    for db, names_ in ((source_db, ("owners", "cdc", "outsider")), (target_db, ("apply",))):
        for k in names_:
            execute(stack.pg_dsn(db.which, db.name),
                    sql.SQL("REASSIGN OWNED BY {} TO migwatch").format(r[k]),
                    sql.SQL("DROP OWNED BY {}").format(r[k]))
        for k in names_:
            execute(stack.pg_dsn(db.which, "postgres"),
                    sql.SQL("DROP ROLE IF EXISTS {}").format(r[k]))


def spec_doc(stack: Stack, source_db: PgDatabase, target_db: PgDatabase, source_user: str,
             target_user: str) -> dict:
    doc = make_spec(source_db, target_db, SHOP, stack, **FAST).model_dump(
        mode="json", exclude_none=True)
    doc["source"].update(user=source_user, password={"env": "MW_LEAST_PW"})
    doc["target"].update(user=target_user, password={"env": "MW_LEAST_PW"})
    return doc


@contextmanager
def run_least(stack: Stack, source_db: PgDatabase, target_db: PgDatabase,
              least: dict[str, str], migration_id: str,
              tmp_path: Path) -> Iterator[subprocess.CompletedProcess[str]]:
    """`migwatch run` as a user runs it, with the least-privileged roles; torn down after."""
    doc = spec_doc(stack, source_db, target_db, least["cdc"], least["apply"])
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(doc))
    os.environ["MW_LEAST_PW"] = PASSWORD
    env = {**os.environ, "PREFECT_API_URL": stack.address("prefect-server"),
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    try:
        yield subprocess.run([MIGWATCH, "run", str(path), "--migration-id", migration_id],
                             capture_output=True, text=True, env=env, timeout=600)
    finally:
        processes.stop_applier(migration_id)
        capture.teardown(parse_spec(doc), migration_id, delete_topics=True)


def test_the_pipeline_runs_go_without_a_superuser(
        stack: Stack, source_db: PgDatabase, target_db: PgDatabase, least: dict[str, str],
        migration_id: str, tmp_path: Path) -> None:
    with run_least(stack, source_db, target_db, least, migration_id, tmp_path) as done:
        assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-3000:]
        assert "GO" in done.stdout


def test_preflight_names_each_missing_privilege(
        stack: Stack, source_db: PgDatabase, target_db: PgDatabase, least: dict[str, str],
        migration_id: str) -> None:
    os.environ["MW_LEAST_PW"] = PASSWORD
    execute(target_db.dsn, sql.SQL("REVOKE CREATE ON SCHEMA public FROM {}").format(
        sql.Identifier(least["apply"])))
    execute(source_db.dsn, sql.SQL("REVOKE SELECT ON public.customers FROM {}").format(
        sql.Identifier(least["outsider"])))
    spec = parse_spec(spec_doc(stack, source_db, target_db, least["outsider"], least["apply"]))
    with pytest.raises(PreflightError) as err:
        preflight(spec, migration_id)
    failures = err.value.failures
    outsider = least["outsider"]
    for t in SHOP:  # owns none of them
        assert any(f.startswith(f"table {t}: user {outsider!r} is not its owner")
                   for f in failures), (t, failures)
    assert f"table public.customers: user {outsider!r} lacks SELECT on it" in failures
    for t in SHOP:
        assert any(f.startswith(f"target table {t}: user {least['apply']!r} lacks CREATE")
                   for f in failures), (t, failures)
    with target_db.connect() as conn:  # nothing was created
        assert conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname = 'migwatch'"
                            ).fetchone() == (0,)


def test_a_dependency_the_target_cannot_create_is_a_typed_error_naming_it(
        stack: Stack, source_db: PgDatabase, target_db: PgDatabase, least: dict[str, str],
        migration_id: str, tmp_path: Path) -> None:
    """An index using bloom, an extension only a superuser may create: the target's role
    cannot, so the run stops with one error line naming the object and PostgreSQL's reason —
    exit 2, no traceback, no password."""
    execute(source_db.dsn, sql.SQL("CREATE EXTENSION bloom"),
            sql.SQL("CREATE INDEX customers_email_bloom ON public.customers USING bloom "
                    "(email)"))
    with run_least(stack, source_db, target_db, least, migration_id, tmp_path) as done:
        out = done.stdout + done.stderr
        assert done.returncode == 2, out[-4000:]
        errors = [ln for ln in out.splitlines() if ln.startswith("error:")]
        assert len(errors) == 1, out[-4000:]
        assert "cannot create EXTENSION bloom" in errors[0], errors
        assert "permission denied" in errors[0], errors
        assert "Traceback" not in out and PASSWORD not in out
