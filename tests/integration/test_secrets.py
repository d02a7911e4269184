"""Secrets stay secret: source and target roles with distinctive passwords (separators, a
backslash, a space, non-ASCII), a notification webhook whose URL holds a token, then the whole
pipeline through `migwatch run` — a GO run and a failing one (a wrong target password) — while
`ps` is sampled. Afterwards every place a secret could leak to is searched: the command output,
the Prefect API (flow-run parameters, logs, artifacts), the run folder, the reports, the
Pushgateway, Prometheus's series, the stack's logs, the Connect REST API and Connect's
config-storage topic. Zero hits — and the run did authenticate with those passwords, so the
secret went where it had to (the Connect host's password file, mode 0600)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import requests
import yaml
from kafka import KafkaConsumer, TopicPartition
from psycopg import sql

from migwatch import capture, connector_config, names, processes, runs, workload
from migwatch.stack import Stack
from tests.conftest import PgDatabase, make_spec
from tests.receivers import webhook_receiver

MIGWATCH = str(Path(sys.executable).parent / "migwatch")
SHOP = list(workload.SHOP_TABLES)
FAST = {"connect": {"heartbeat_interval_ms": 1000},
        "monitor": {"poll_interval_seconds": 1, "consecutive_polls": 3, "window_size": 6,
                    "timeout_seconds": 300},
        "snapshot": {"poll_interval_seconds": 1}}


@pytest.fixture
def roles(stack: Stack, source_db: PgDatabase, target_db: PgDatabase
          ) -> Iterator[dict[str, str]]:
    """A role per cluster with a distinctive password; the marker every search looks for."""
    marker = f"MWsecret{uuid.uuid4().hex[:8]}"
    made = {}
    for db in (source_db, target_db):
        role = f"mw_{db.which}_{uuid.uuid4().hex[:6]}"
        password = f"{marker}-{db.which}#p:w=rd!\\ é😀"
        with db.connect() as conn:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN SUPERUSER REPLICATION PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(password)))
        made[db.which] = (role, password)
    yield {"marker": marker, **{f"{k}_role": v[0] for k, v in made.items()},
           **{f"{k}_password": v[1] for k, v in made.items()}}
    for db in (source_db, target_db):
        role = made[db.which][0]
        with psycopg.connect(stack.pg_dsn(db.which, db.name), autocommit=True) as conn:
            conn.execute(sql.SQL("REASSIGN OWNED BY {} TO migwatch").format(
                sql.Identifier(role)))
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        with psycopg.connect(stack.pg_dsn(db.which, "postgres"), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def sample_ps(stop: threading.Event, seen: list[str]) -> None:
    while not stop.is_set():
        seen.append(subprocess.run(["ps", "-eo", "args"], capture_output=True,
                                   text=True).stdout)
        stop.wait(0.5)


def prefect_texts(api: str, migration_id: str) -> list[str]:
    """Parameters, logs and artifacts of every flow run of this migration on `api`."""
    runs_ = requests.post(f"{api}/flow_runs/filter", json={
        "limit": 200, "sort": "START_TIME_DESC"}, timeout=30).json()
    ours = [r for r in runs_ if json.dumps(r.get("parameters")).find(migration_id) >= 0]
    assert ours, "no flow run of this migration on the Prefect API"
    ids = [r["id"] for r in ours]
    out = [json.dumps(r) for r in ours]
    logs = requests.post(f"{api}/logs/filter", json={
        "logs": {"flow_run_id": {"any_": ids}}, "limit": 200}, timeout=30).json()
    offset = 200
    while logs:
        out += [json.dumps(entry) for entry in logs]
        logs = requests.post(f"{api}/logs/filter", json={
            "logs": {"flow_run_id": {"any_": ids}}, "limit": 200, "offset": offset},
            timeout=30).json()
        offset += 200
    arts = requests.post(f"{api}/artifacts/filter", json={
        "artifacts": {"flow_run_id": {"any_": ids}}, "limit": 200}, timeout=30).json()
    assert arts, "the runs made no artifacts"
    out += [json.dumps(a) for a in arts]
    return out


def connect_texts(stack: Stack, migration_id: str) -> list[str]:
    url = stack.address("kafka-connect")
    name = names.connector_name(migration_id)
    out = [requests.get(f"{url}/connectors/{name}/{what}", timeout=10).text
           for what in ("config", "status", "tasks")]
    out.append(requests.get(f"{url}/connectors?expand=info&expand=status", timeout=10).text)
    consumer = KafkaConsumer(bootstrap_servers=stack.address("kafka"), group_id=None,
                             enable_auto_commit=False, consumer_timeout_ms=3000)
    try:
        tp = TopicPartition("migwatch-connect-configs", 0)
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        records = list(consumer)
    finally:
        consumer.close()
    assert any(name.encode() in (r.key or b"") for r in records), "config topic not read"
    out += [(r.value or b"").decode("utf-8", "replace") for r in records]
    return out


def files_under(*folders: Path) -> list[str]:
    out = []
    for folder in folders:
        for path in folder.rglob("*"):
            if path.is_file():
                out.append(path.read_bytes().decode("utf-8", "replace"))
    return out


def test_no_secret_leaks_anywhere(stack: Stack, source_db: PgDatabase, target_db: PgDatabase,
                                  roles: dict[str, str], migration_id: str,
                                  tmp_path: Path) -> None:
    marker = roles["marker"]
    workload.init(source_db.dsn, 500)
    with webhook_receiver() as hook:
        from prefect.blocks.notifications import CustomWebhookNotificationBlock
        from prefect.settings import PREFECT_API_URL, temporary_settings

        api = stack.address("prefect-server")
        block = f"t-{uuid.uuid4().hex[:8]}"
        with temporary_settings({PREFECT_API_URL: api}):
            CustomWebhookNotificationBlock(
                name="migwatch", url=f"{hook.url}/hooks/{marker}-token",
                json_data={"subject": "{{subject}}", "body": "{{body}}"}).save(block)
        spec = make_spec(source_db, target_db, SHOP, stack, **FAST,
                         notifications={"warning": [block], "critical": [block]})
        doc = spec.model_dump(mode="json", exclude_none=True)
        doc["source"].update(user=roles["source_role"], password={"env": "MW_SOURCE_PW"})
        doc["target"].update(user=roles["target_role"], password={"env": "MW_TARGET_PW"})
        good = tmp_path / "spec.yaml"
        good.write_text(yaml.safe_dump(doc))
        env = {**os.environ, "PREFECT_API_URL": api, "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
               "MW_SOURCE_PW": roles["source_password"],
               "MW_TARGET_PW": roles["target_password"]}
        stop, ps_seen = threading.Event(), []
        sampler = threading.Thread(target=sample_ps, args=(stop, ps_seen), daemon=True)
        sampler.start()
        try:
            go = subprocess.run([MIGWATCH, "run", str(good), "--migration-id", migration_id],
                                capture_output=True, text=True, env=env, timeout=600)
            assert go.returncode == 0, go.stdout[-3000:] + go.stderr[-3000:]
            bad_id = f"{migration_id}-bad"
            wrong = {**env, "MW_TARGET_PW": f"{marker}-wrong"}
            failed = subprocess.run([MIGWATCH, "run", str(good), "--migration-id", bad_id],
                                    capture_output=True, text=True, env=wrong, timeout=600)
            assert failed.returncode == 2, failed.stdout[-3000:] + failed.stderr[-3000:]
        finally:
            stop.set()
            sampler.join(5)
        # the secret went where it had to: the Connect host's password file, owner only
        secret = connector_config.secret_file(spec, migration_id)
        assert oct(secret.stat().st_mode & 0o777) == "0o600"
        assert marker in secret.read_text()

        texts = {
            "command output": [go.stdout, go.stderr, failed.stdout, failed.stderr],
            "ps": ps_seen,
            "prefect": prefect_texts(api, migration_id) + prefect_texts(api, bad_id),
            "run folders": files_under(runs.run_dir(migration_id), runs.run_dir(bad_id)),
            "pushgateway": [requests.get(stack.address("pushgateway") + "/metrics",
                                         timeout=10).text],
            "prometheus": [requests.get(stack.address("prometheus") + "/api/v1/series",
                                        params={"match[]": f'{{migration_id=~"{migration_id}.*"}}'},
                                        timeout=10).text],
            "stack logs": files_under(stack.s.state_dir / "logs"),
            "connect": connect_texts(stack, migration_id),
            "webhook bodies": [r["body"] for r in hook.requests],
        }
        processes.stop_applier(migration_id)
        deadline = time.monotonic() + 60
        while processes.applier_members(spec, migration_id) and time.monotonic() < deadline:
            time.sleep(1)
        capture.teardown(spec, migration_id, delete_topics=True)
        assert not secret.exists()  # teardown takes the password file away
    # (a URL-quoted or escaped password keeps the marker's letters: one search finds every form)
    leaks = {where: sum(marker in t for t in found) for where, found in texts.items()}
    assert all(n == 0 for n in leaks.values()), leaks
    searched = {k: len(v) for k, v in texts.items() if k != "webhook bodies"}
    assert all(searched.values()), searched
