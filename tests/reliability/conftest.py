"""Shared by the fault tests: the applier started under its supervisor as an operator runs it, a
real webhook receiver behind a saved notification block, a writer that keeps writing through a
source restart, and the independent comparison every fault is judged by — PostgreSQL's own row
text on both sides (or, for a MongoDB target, the raw documents read with pymongo), sharing no
code with the applier or the validator."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
import yaml
from prometheus_client.exposition import delete_from_gateway
from psycopg import sql

from migwatch import capture, processes, workload
from migwatch.config import MigrationSpec
from migwatch.errors import TransientError
from migwatch.stack import Stack
from migwatch.supervision import PUSH_JOB
from tests.conftest import PgDatabase, make_spec

SHOP = list(workload.SHOP_TABLES)


def table_text(dsn: str, table: str) -> list[str]:
    schema, name = table.split(".")
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(sql.SQL("SELECT t::text FROM {} t").format(
            sql.Identifier(schema, name))).fetchall()
    return sorted(r[0] for r in rows)


def differing(source: PgDatabase, target: PgDatabase) -> list[str]:
    return [t for t in SHOP if table_text(source.dsn, t) != table_text(target.dsn, t)]


@dataclass
class Tally:
    """Rows of the source the target lacks or holds stale (lost), and target rows the source
    does not have (extra: duplicated or not deleted)."""

    lost: int = 0
    extra: int = 0
    per_table: dict[str, tuple[int, int]] = field(default_factory=dict)


def tally(source: PgDatabase, target: PgDatabase) -> Tally:
    out = Tally()
    for t in SHOP:
        src, dst = table_text(source.dsn, t), table_text(target.dsn, t)
        missing, extra = len(set(src) - set(dst)), len(dst) - len(set(src) & set(dst))
        out.lost += missing
        out.extra += extra
        out.per_table[t] = (missing, extra)
    return out


def wait_until(check: Callable[[], list[str]], timeout: float, what: str) -> float:
    start = time.monotonic()
    left = check()
    while left and time.monotonic() - start < timeout:
        time.sleep(1)
        left = check()
    assert not left, f"{what}: still different after {timeout:.0f}s: {left}"
    return time.monotonic() - start


def write_through(dsn: str, rate: float, operations: int, timeout: float = 300) -> int:
    """The shop workload until `operations` are done, carrying on after a lost connection (a
    source restart) the way an application does; returns the operations done."""
    done, seed = 0, 7
    deadline = time.monotonic() + timeout
    while done < operations and time.monotonic() < deadline:
        progress = [0]  # what a call a restart ends did (counted every 100 operations)
        try:
            progress[0] = workload.run(
                dsn, rate=rate, duration=deadline - time.monotonic(), seed=seed,
                max_operations=operations - done,
                on_progress=lambda r, p=progress: p.__setitem__(0, r.total)).total
        except TransientError:
            time.sleep(0.5)
        done += progress[0]
        seed += 1
    return done


@pytest.fixture
def supervised(stack: Stack, source_db: PgDatabase, migration_id: str,
               tmp_path: Path) -> Iterator[Callable[..., MigrationSpec]]:
    """A connector for the shop workload and the applier started under its supervisor (as
    `ensure_applier` starts it outside Prefect); everything torn down afterwards."""
    made: list[MigrationSpec] = []

    def start(target: PgDatabase | dict[str, Any], size: int = 1000,
              **extra: Any) -> MigrationSpec:
        from prefect.settings import PREFECT_API_URL

        workload.init(source_db.dsn, size)
        spec = make_spec(source_db, target, SHOP, stack, **extra)
        made.append(spec)
        capture.prepare_source(spec, migration_id)
        capture.prepare_target_schema(spec)
        capture.ensure_connector(spec, migration_id, timeout=120)
        spec_file = tmp_path / "spec.yaml"
        spec_file.write_text(yaml.safe_dump(orjson.loads(
            spec.model_dump_json(exclude_none=True))))
        # the supervisor loads notification blocks from the Prefect API this test uses
        env = {"PREFECT_API_URL": str(PREFECT_API_URL.value())} if PREFECT_API_URL.value() \
            else {}
        processes.start_applier(spec_file, migration_id, extra_env=env)
        processes.wait_applier_running(spec, migration_id, timeout=90)
        return spec

    yield start
    processes.stop_applier(migration_id)
    stack.up()  # whatever a fault left down
    delete_from_gateway(stack.address("pushgateway").removeprefix("http://"), job=PUSH_JOB,
                        grouping_key={"migration_id": migration_id})
    for spec in made:
        # a SIGKILLed worker stays in the group until its session times out (10 s)
        deadline = time.monotonic() + 30
        while processes.applier_members(spec, migration_id) and time.monotonic() < deadline:
            time.sleep(1)
        capture.teardown(spec, migration_id, delete_topics=True)
