"""Bad input, one case per row, through the command a user types (`migwatch run`, a real
process): each gets exit code 2 (the CLI's "bad input / could not tell"), one error line naming
the field, table or server that is wrong — never a traceback, never the password — and nothing
written on the target: no table, no migwatch schema, no connector, no replication slot."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from migwatch import names, workload
from migwatch.connectors.connect import ConnectClient
from migwatch.stack import Stack
from tests.conftest import PgDatabase, make_spec

MIGWATCH = str(Path(sys.executable).parent / "migwatch")
TABLES = ["public.customers", "public.orders"]
SECRET = "migwatch-local"  # the stack's password: must never be printed

Patch = Callable[[dict[str, Any]], None]


def setting(path: str, value: Any) -> Patch:
    """Set `a.b.c` in the spec document (creating levels); `value` None removes the key."""
    def patch(doc: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = doc
        for p in parents:
            node = node.setdefault(p, {})
        if value is None:
            node.pop(last, None)
        else:
            node[last] = value
    return patch


#: (case, patch to the spec, argument overrides, what the error line must name)
CASES: list[tuple[str, Patch | None, dict[str, str], str]] = [
    ("port not a number", setting("source.port", "five"), {}, "source.port"),
    ("port out of range", setting("target.port", 70000), {}, "target.port"),
    ("missing target", setting("target", None), {}, "target"),
    ("unknown key", setting("tabels", ["public.customers"]), {}, "tabels"),
    ("unknown nested key", setting("kafka.bootstrap", "x:1"), {}, "kafka.bootstrap"),
    ("engine not supported", setting("target.kind", "mysql"), {}, "target.kind"),
    ("no tables", setting("tables", []), {}, "tables"),
    ("malformed table name", setting("tables", ['public."open']), {}, "tables[0]"),
    ("inline password", setting("source.password", SECRET), {}, "source.password"),
    ("password reference unset", setting("source.password", {"env": "MIGWATCH_NO_SUCH_VAR"}),
     {}, "MIGWATCH_NO_SUCH_VAR"),
    ("warn above critical", setting("monitor.thresholds.event_time_lag_seconds",
                                    {"warn": 100, "critical": 10, "caught_up": 1}), {},
     "monitor.thresholds.event_time_lag_seconds"),
    ("negative threshold", setting("monitor.thresholds.consumer_lag_messages",
                                   {"warn": -1, "critical": 10, "caught_up": 0}), {},
     "monitor.thresholds.consumer_lag_messages"),
    ("batch size zero", setting("kafka.batch_size", 0), {}, "kafka.batch_size"),
    ("dead-letter topic Kafka refuses", setting("kafka.dlq_topic", "has space"), {},
     "kafka.dlq_topic"),
    ("backoff bounds reversed", setting("supervision", {"backoff_initial_seconds": 90,
                                                        "backoff_max_seconds": 10}), {},
     "supervision"),
    ("validation workers zero", setting("validation.workers", 0), {}, "validation.workers"),
    ("migration id invalid", None, {"--migration-id": "Bad_ID"}, "migration_id"),
    ("migration id injection", None, {"--migration-id": "x'; DROP TABLE orders; --"},
     "migration_id"),
    ("unreachable host", setting("source.host", "127.0.0.1"), {}, "source"),  # port set below
    ("host that does not resolve", setting("source.host", "no-such-host.invalid"), {},
     "source"),
    ("wrong password", setting("source.password", {"env": "MIGWATCH_WRONG_PW"}), {}, "source"),
    ("missing table", setting("tables", ["public.customers", "public.nope"]), {},
     "public.nope"),
    ("injection in a table name",
     setting("tables", ['public."customers; DROP TABLE public.orders; --"']), {},
     "customers; DROP TABLE public.orders; --"),
    ("Kafka Connect unreachable", setting("connect.url", "http://127.0.0.1:1"), {}, "connect"),
]


@pytest.mark.parametrize(("case", "patch", "args", "named"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused_naming_it_and_writes_nothing(
        case: str, patch: Patch | None, args: dict[str, str], named: str, stack: Stack,
        source_db: PgDatabase, target_db: PgDatabase, migration_id: str,
        tmp_path: Path) -> None:
    workload.init(source_db.dsn, 50)
    doc = make_spec(source_db, target_db, TABLES, stack).model_dump(mode="json",
                                                                   exclude_none=True)
    if patch is not None:
        patch(doc)
    if case == "unreachable host":
        doc["source"]["port"] = 1
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(doc))
    argv = {"--migration-id": migration_id, **args}
    env = {**os.environ, "PREFECT_API_URL": stack.address("prefect-server"),
           "MIGWATCH_WRONG_PW": "not-the-password", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("MIGWATCH_NO_SUCH_VAR", None)
    done = subprocess.run([MIGWATCH, "run", str(spec_path), *[x for kv in argv.items()
                                                              for x in kv]],
                          capture_output=True, text=True, env=env, timeout=300)
    said = done.stdout + done.stderr
    assert done.returncode == 2, f"{case}: exit {done.returncode}\n{said[-3000:]}"
    errors = [ln for ln in said.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, said[-3000:]
    assert named in errors[0], errors[0]
    assert "Traceback" not in said, said[-3000:]
    assert SECRET not in said and "not-the-password" not in said
    # nothing was written: no table or schema on the target, nothing held on the source
    with target_db.connect() as conn:
        made = conn.execute("SELECT count(*) FROM pg_class c JOIN pg_namespace n "
                            "ON n.oid = c.relnamespace WHERE n.nspname NOT IN "
                            "('pg_catalog', 'information_schema', 'pg_toast')").fetchone()
        schema = conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname = 'migwatch'"
                              ).fetchone()
    assert made == (0,) and schema == (0,)
    with source_db.connect() as conn:
        slots = conn.execute("SELECT count(*) FROM pg_replication_slots WHERE slot_name = %s",
                             [names.slot_name(migration_id)]).fetchone()
        orders = conn.execute("SELECT to_regclass('public.orders') IS NOT NULL").fetchone()
    assert slots == (0,) and orders == (True,)
    with ConnectClient(stack.address("kafka-connect")) as client:
        assert names.connector_name(migration_id) not in client.connectors()
