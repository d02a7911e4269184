"""`migwatch reload` on a running migration, with the source written to meanwhile: the rows
the condition selects are repaired (missing ones back, changed ones right, extra ones gone),
a row outside it is left as it was — compared by each row's text on both sides, plain SQL —
and bad input exits 2 naming what is wrong."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from flows.migrate import migrate
from migwatch.cli import app
from migwatch.config import MigrationSpec
from migwatch.stack import Stack
from tests.conftest import PgDatabase, make_spec
from tests.flows.test_cdc_apply_flow import write_spec
from tests.flows.test_migrate_flow import cleanup  # noqa: F401  (the fixture)

pytestmark = pytest.mark.usefixtures("prefect_harness")
#: mixed case and an underscore: quoted for Debezium, escaped in its filter's regex
TABLE = '"public"."Re_load"'


def rows(dsn: str) -> dict[int, str]:
    with psycopg.connect(dsn) as conn:
        return {r[0]: r[1] for r in conn.execute("SELECT id, v FROM public.\"Re_load\"")}


def streaming(stack: Stack, source_db: PgDatabase, target_db: PgDatabase, migration_id: str,
              specs: list[MigrationSpec], tmp_path: Path, count: int) -> str:
    """A table of `count` rows, migrated (COPY load) and streaming; returns the spec's path."""
    with source_db.connect() as conn:
        conn.execute('CREATE TABLE public."Re_load" (id int PRIMARY KEY, v text)')
        conn.execute('INSERT INTO public."Re_load" SELECT g, md5(g::text) '
                     "FROM generate_series(1, %s) g", [count])
    spec = make_spec(source_db, target_db, [TABLE], stack,
                     snapshot={"method": "copy", "poll_interval_seconds": 1})
    specs.append(spec)  # torn down by the test's cleanup
    path = write_spec(spec, tmp_path / "spec.yaml")
    migrate(path, migration_id)
    return path


def test_a_reload_repairs_the_rows_its_condition_selects_while_changes_stream(
        stack: Stack, source_db: PgDatabase, target_db: PgDatabase, migration_id: str,
        cleanup: list[MigrationSpec], tmp_path: Path) -> None:  # noqa: F811
    path = streaming(stack, source_db, target_db, migration_id, cleanup, tmp_path, 3000)
    deadline = time.monotonic() + 60
    while rows(target_db.dsn) != rows(source_db.dsn) and time.monotonic() < deadline:
        time.sleep(0.5)
    # the target goes wrong behind the applier's back: missing, changed and extra rows
    with psycopg.connect(target_db.dsn) as conn:
        conn.execute('DELETE FROM public."Re_load" WHERE id BETWEEN 100 AND 199')
        conn.execute('UPDATE public."Re_load" SET v = \'bad\' WHERE id BETWEEN 200 AND 249')
        conn.execute('INSERT INTO public."Re_load" SELECT g, \'extra\' '
                     "FROM generate_series(5000, 5009) g")
        conn.execute('UPDATE public."Re_load" SET v = \'outside\' WHERE id = 50')
    stop = threading.Event()

    def writes() -> None:  # changes inside the reloaded rows keep coming
        i = 0
        with psycopg.connect(source_db.dsn, autocommit=True) as conn:
            while not stop.is_set():
                i += 1
                conn.execute('UPDATE public."Re_load" SET v = %s WHERE id = %s',
                             [f"w{i}", 100 + i % 900])
                conn.execute('INSERT INTO public."Re_load" VALUES (%s, \'new\')', [10_000 + i])
                time.sleep(0.02)

    writer = threading.Thread(target=writes, daemon=True)
    writer.start()
    runner = CliRunner()
    try:
        done = runner.invoke(app, ["reload", path, "--migration-id", migration_id, "--table",
                                   TABLE, "--where", "id >= 100 AND id < 6000"])
    finally:
        stop.set()
        writer.join(10)
    assert done.exit_code == 0, done.output
    assert "10 extra row(s) deleted" in done.output, done.output
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        source, target = rows(source_db.dsn), rows(target_db.dsn)
        if {k: v for k, v in source.items() if k != 50} == \
                {k: v for k, v in target.items() if k != 50}:
            break
        time.sleep(0.5)
    assert {k: v for k, v in target.items() if k != 50} == \
        {k: v for k, v in source.items() if k != 50}
    assert target[50] == "outside"  # outside the condition: not read again

    # bad input: named, exit 2, nothing changed
    for argv, named in (
            (["--table", TABLE, "--where", "id >>> 3"], "--where"),
            (["--table", "public.nope"], "public.nope"),
            (["--table", TABLE, "--where", "nope_column = 1"], "nope_column")):
        bad = runner.invoke(app, ["reload", path, "--migration-id", migration_id, *argv])
        assert bad.exit_code == 2 and named in bad.output, bad.output
    absent = runner.invoke(app, ["reload", path, "--migration-id", "no-such-run",
                                 "--table", TABLE])
    assert absent.exit_code == 2 and "no connector" in absent.output, absent.output
    assert rows(target_db.dsn)[50] == "outside"


def test_the_rows_of_dead_lettered_events_are_reloaded_by_their_keys(
        stack: Stack, source_db: PgDatabase, target_db: PgDatabase, migration_id: str,
        cleanup: list[MigrationSpec], tmp_path: Path) -> None:  # noqa: F811
    """A malformed event reaches the table's topic (a real record through Kafka and the real
    applier, which dead-letters it); once "fixed", `reload --dead-lettered` reloads the row of
    that key — and only that one: another damaged row stays as it is."""
    from kafka import KafkaProducer

    from migwatch import names

    path = streaming(stack, source_db, target_db, migration_id, cleanup, tmp_path, 500)
    runner = CliRunner()
    none = runner.invoke(app, ["reload", path, "--migration-id", migration_id, "--table", TABLE,
                               "--dead-lettered"])
    assert none.exit_code == 0 and "nothing to reload" in none.output, none.output
    with psycopg.connect(target_db.dsn) as conn:
        conn.execute('UPDATE public."Re_load" SET v = \'bad\' WHERE id IN (42, 43)')
    producer = KafkaProducer(bootstrap_servers=stack.address("kafka"))
    producer.send(names.table_topic(migration_id, "public.Re_load"), key=b'{"id": 42}',
                  value=b"{not json").get(timeout=30)
    producer.close()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # the applier dead-letters it
        done = runner.invoke(app, ["reload", path, "--migration-id", migration_id,
                                   "--table", TABLE, "--dead-lettered"])
        if "nothing to reload" not in done.output:
            break
        time.sleep(1)
    assert done.exit_code == 0 and "1 key(s) of dead-lettered events" in done.output, \
        done.output
    source, target = rows(source_db.dsn), rows(target_db.dsn)
    assert target[42] == source[42]  # reloaded
    assert target[43] == "bad"  # not dead-lettered: not selected
