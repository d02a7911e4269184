"""Shared fixtures: the real local stack (started once per session, reused when healthy) and
per-test databases, names and migration ids, so tests never see each other's data.

A test that needs the stack fails loudly when it cannot be started; nothing is skipped.
"""

from __future__ import annotations

import os
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families
from psycopg import sql

from migwatch.config import MigrationSpec, StackSettings, parse_spec
from migwatch.stack import Stack
from tests.receivers import Webhook, webhook_receiver

PASSWORD_ENV = "MIGWATCH_PG_PASSWORD"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        path = str(item.fspath)
        if "/tests/integration/" in path:
            item.add_marker(pytest.mark.integration)
        if "/tests/flows/" in path:
            item.add_marker(pytest.mark.flows)


@pytest.fixture(scope="session")
def stack_settings() -> StackSettings:
    return StackSettings()


@pytest.fixture(scope="session")
def stack(stack_settings: StackSettings) -> Stack:
    """The running local stack; `up` is idempotent and reuses healthy components."""
    s = Stack(stack_settings, echo=lambda m: print(f"[stack] {m}"))
    s.up()
    os.environ[PASSWORD_ENV] = stack_settings.pg_password.get_secret_value()
    return s


def short_id(prefix: str = "t") -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


@dataclass(frozen=True)
class PgDatabase:
    """A throw-away database on one of the stack's clusters."""

    which: str  # "source" or "target"
    name: str
    port: int
    dsn: str  # holds the password: tests only

    def connect(self, autocommit: bool = True) -> psycopg.Connection:
        return psycopg.connect(self.dsn, autocommit=autocommit)

    def endpoint(self) -> dict[str, Any]:
        return {"kind": "postgres", "host": "127.0.0.1", "port": self.port, "database": self.name,
                "user": "migwatch", "password": {"env": PASSWORD_ENV}}


def _make_db(stack: Stack, which: str) -> Iterator[PgDatabase]:
    name = short_id("db")
    admin = stack.pg_dsn(which, "postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    port = stack.s.pg_source_port if which == "source" else stack.s.pg_target_port
    yield PgDatabase(which, name, port, stack.pg_dsn(which, name))
    with psycopg.connect(admin, autocommit=True) as conn:
        if which == "source":  # slots pin a database: drop any a test left behind
            conn.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                         "WHERE database = %s AND NOT active", [name])
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(name)))


@pytest.fixture
def source_db(stack: Stack) -> Iterator[PgDatabase]:
    yield from _make_db(stack, "source")


@pytest.fixture
def target_db(stack: Stack) -> Iterator[PgDatabase]:
    yield from _make_db(stack, "target")


@pytest.fixture
def mongo_db(stack: Stack) -> Iterator[str]:
    from pymongo import MongoClient

    name = short_id("mdb")
    yield name
    client: MongoClient = MongoClient(stack.address("ferretdb"))
    client.drop_database(name)
    client.close()


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """A throw-away Prefect API (SQLite) shared by every test that runs flows or tasks."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture
def migration_id() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


def make_spec(source: PgDatabase, target: PgDatabase | dict[str, Any], tables: list[Any],
              stack: Stack, **extra: Any) -> MigrationSpec:
    """A spec pointing at the stack for the given databases. Its initial load is Debezium's
    snapshot unless `snapshot={"method": "copy"}`: most tests drive the connector directly
    (`ensure_connector`), which only Debezium's snapshot loads; the COPY load has its own."""
    s = stack.s
    data: dict[str, Any] = {
        "source": source.endpoint(),
        "target": target.endpoint() if isinstance(target, PgDatabase) else target,
        "tables": tables,
        "kafka": {"bootstrap_servers": f"{s.host}:{s.kafka_port}"},
        "connect": {"url": s.url(s.connect_port)},
        "metrics": {"pushgateway_url": s.url(s.pushgateway_port),
                    "prometheus_url": s.url(s.prometheus_port)},
        "snapshot": {"method": "debezium"},
    }
    for key, value in extra.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    return parse_spec(data)


def mongo_endpoint(stack: Stack, database: str) -> dict[str, Any]:
    return {"kind": "mongodb", "host": stack.s.host, "port": stack.s.ferretdb_port,
            "database": database}


@pytest.fixture
def hook() -> Iterator[tuple[Webhook, str]]:
    """A real local webhook receiver behind a saved CustomWebhookNotificationBlock."""
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    with webhook_receiver() as receiver:
        name = f"t-{uuid.uuid4().hex[:10]}"
        CustomWebhookNotificationBlock(
            name="migwatch", url=receiver.url,
            json_data={"subject": "{{subject}}", "body": "{{body}}"}).save(name)
        yield receiver, name
        CustomWebhookNotificationBlock.delete(name)


def pushed(stack: Stack, migration_id: str,
           job: str = "migwatch-supervisor") -> dict[tuple[str, str], float]:
    """(metric, component) -> value for this migration and Pushgateway job, as exposed."""
    with urllib.request.urlopen(stack.address("pushgateway") + "/metrics", timeout=10) as r:
        text = r.read().decode()
    return {(s.name, s.labels.get("component", "")): s.value
            for family in text_string_to_metric_families(text) for s in family.samples
            if s.labels.get("migration_id") == migration_id and s.labels.get("job") == job}
