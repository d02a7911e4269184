"""One real round trip per stack component."""

from __future__ import annotations

import os
import tempfile
import uuid
from pathlib import Path

import psycopg
import pytest
import requests
from kafka import KafkaConsumer, KafkaProducer
from pymongo import MongoClient

from migwatch.config import StackSettings
from migwatch.errors import StackError
from migwatch.stack import COMPONENTS, Stack


def test_status_reports_every_component_healthy(stack: Stack) -> None:
    rows = {r.name: r for r in stack.status()}
    assert set(rows) == set(COMPONENTS)
    unhealthy = [n for n, r in rows.items() if not r.healthy or r.pid is None]
    assert unhealthy == []


def test_up_twice_is_harmless(stack: Stack) -> None:
    before = {r.name: r.pid for r in stack.status()}
    after = {r.name: r.pid for r in stack.up()}
    assert before == after


def test_postgres_source_is_logical_and_target_is_separate(stack: Stack) -> None:
    with psycopg.connect(stack.pg_dsn("source")) as src, \
            psycopg.connect(stack.pg_dsn("target")) as tgt:
        assert src.execute("SHOW wal_level").fetchone()[0] == "logical"
        src_id = src.execute("SELECT system_identifier FROM pg_control_system()").fetchone()[0]
        tgt_id = tgt.execute("SELECT system_identifier FROM pg_control_system()").fetchone()[0]
        assert src_id != tgt_id
        slots = int(src.execute("SHOW max_replication_slots").fetchone()[0])
        assert slots >= 20
        assert src.execute("SELECT 'Zoë ' || 41 + 1").fetchone()[0] == "Zoë 42"


def test_kafka_produce_and_consume(stack: Stack) -> None:
    topic = f"test-roundtrip-{uuid.uuid4().hex[:8]}"
    value = uuid.uuid4().bytes
    producer = KafkaProducer(bootstrap_servers=stack.address("kafka"))
    producer.send(topic, value, key=b"k").get(timeout=30)
    producer.close()
    consumer = KafkaConsumer(topic, bootstrap_servers=stack.address("kafka"),
                             auto_offset_reset="earliest", consumer_timeout_ms=20000)
    got = [(m.key, m.value) for m in consumer]
    consumer.close()
    assert got == [(b"k", value)]


def test_connect_lists_the_debezium_postgres_plugin(stack: Stack) -> None:
    plugins = requests.get(stack.address("kafka-connect") + "/connector-plugins", timeout=10).json()
    classes = {p["class"]: p.get("version") for p in plugins}
    assert classes["io.debezium.connector.postgresql.PostgresConnector"].startswith("3.6.1")


def test_ferretdb_ping_insert_find(stack: Stack, mongo_db: str) -> None:
    client: MongoClient = MongoClient(stack.address("ferretdb"), serverSelectionTimeoutMS=5000)
    assert client.admin.command("ping")["ok"] == 1.0
    client[mongo_db]["c"].insert_one({"_id": 1, "name": "Zoë"})
    assert client[mongo_db]["c"].find_one({"_id": 1})["name"] == "Zoë"
    client.close()


def test_prometheus_pushgateway_alertmanager_ready(stack: Stack) -> None:
    for name in ("prometheus", "pushgateway", "alertmanager"):
        assert requests.get(stack.address(name) + "/-/ready", timeout=5).status_code == 200
    targets = requests.get(stack.address("prometheus") + "/api/v1/targets", timeout=5).json()
    jobs = {t["labels"]["job"] for t in targets["data"]["activeTargets"]}
    assert "pushgateway" in jobs


def test_prefect_server_health(stack: Stack) -> None:
    r = requests.get(stack.address("prefect-server") + "/health", timeout=5)
    assert r.status_code == 200 and r.json() is True


def test_kafka_storage_format_takes_a_cluster_id_that_begins_with_a_dash(
        stack: Stack, tmp_path) -> None:
    """URL-safe base64 ids begin with `-` about once in 64; Kafka's own StorageTool must take it."""
    import base64

    from migwatch.stack import templates

    cluster_id = base64.urlsafe_b64encode(b"\xf8" + uuid.uuid4().bytes[1:]).decode().rstrip("=")
    assert cluster_id.startswith("-")
    data = tmp_path / "data"
    props = tmp_path / "server.properties"
    props.write_text(templates.kafka_server_properties(stack.s, data))
    log4j = tmp_path / "log4j2.properties"
    log4j.write_text(templates.LOG4J2)
    stack.format_kafka_storage(props, log4j, cluster_id)
    meta = (data / "meta.properties").read_text()
    assert f"cluster.id={cluster_id}" in meta


def test_a_state_folder_the_postgres_user_cannot_reach_is_named() -> None:
    """The clusters run as the postgres OS user: a state folder under a private directory is
    refused naming the folder it cannot enter and the fix, before initdb fails on a file."""
    if os.geteuid() != 0:
        pytest.fail("this test needs root (the stack runs its clusters as postgres through "
                    "runuser only then)")
    with tempfile.TemporaryDirectory(dir="/var/tmp") as base:
        Path(base).chmod(0o755)
        private = Path(base) / "private"
        (private / "state" / "pg").mkdir(parents=True)
        private.chmod(0o700)
        stack = Stack(StackSettings(state_dir=private / "state"))
        with pytest.raises(StackError) as refused:
            stack._check_reachable_by_pg(private / "state" / "pg")
        assert f"cannot enter {private}," in str(refused.value)
        assert f"chmod o+x {private}" in str(refused.value)
        private.chmod(0o755)
        stack._check_reachable_by_pg(private / "state" / "pg")


def test_a_pid_file_held_by_a_silent_process_is_waited_for_then_named(tmp_path: Path) -> None:
    """A component whose pid file names a live process that does not answer (a previous `up`
    still starting it, or a pid taken by another program) is not taken as running: it is
    waited for, then refused naming the process — never a raw connection error, never a second
    server on its port; once that process has gone it counts as not running (to start)."""
    import socket
    import subprocess

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    stack = Stack(StackSettings(state_dir=tmp_path, pushgateway_port=port), echo=lambda _m: None)
    stack.pids.mkdir(parents=True)
    stack.logs.mkdir(parents=True)
    (stack.logs / "pushgateway.log").write_text("starting...\n")
    silent = subprocess.Popen(["sleep", "60"])
    try:
        (stack.pids / "pushgateway.pid").write_text(str(silent.pid))
        with pytest.raises(StackError, match=f"process {silent.pid} holds") as err:
            stack._running("pushgateway", grace=2)
        assert "starting..." in str(err.value)  # its log's tail
    finally:
        silent.kill()
        silent.wait()
    assert stack._running("pushgateway", grace=2) is False
