"""monitor-until-caught-up end to end on the real stack: a Debezium connector, the real CDC
applier (slowed, paused or stopped the way a real one falls behind), the Prefect flow under a
real Prefect API, notifications to a local webhook receiver and a local SMTP server.

Scenarios that only measure (idle source, injected pause) run `migwatch.watch.watch`, the loop
the flow wraps, because the flow adds nothing to what they check.
"""

from __future__ import annotations

import json
import re
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterKey,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.client.schemas.sorting import ArtifactSort

from flows.monitor import monitor_until_caught_up
from migwatch import metrics, workload
from migwatch.config import MonitorSpec, StackSettings
from migwatch.errors import GateFailed
from migwatch.stack import Stack
from migwatch.watch import samples_path
from tests.conftest import PgDatabase, _make_db
from tests.integration.monitor_helpers import (
    Monitored,
    lag_status,
    monitored_migration,
    wait_for,
    write_spec,
)
from tests.receivers import Mailbox, Webhook, plain_text, smtp_server, webhook_receiver

pytestmark = pytest.mark.usefixtures("prefect_harness")


@pytest.fixture(autouse=True)
def _samples(migration_id: str) -> Iterator[None]:
    """The samples file a monitor run leaves in the state folder; removed afterwards."""
    yield
    shutil.rmtree(samples_path(migration_id, StackSettings()).parent, ignore_errors=True)


@pytest.fixture
def monitored(stack: Stack, source_db: PgDatabase, target_db: PgDatabase, migration_id: str,
              tmp_path: Path) -> Iterator[Monitored]:
    yield from monitored_migration(stack, source_db, target_db, migration_id, tmp_path)


def artifact(key: str) -> Any:
    """The latest version of the artifact `key`."""
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=[key])), sort=ArtifactSort.CREATED_DESC, limit=1)
    assert found, f"no artifact {key}"
    return found[0]


def run_logs(flow_run_id: UUID, until: str, timeout: float = 20) -> list[str]:
    """The flow run's log lines as the API holds them, once one contains `until` (logs are
    shipped to the API in the background)."""
    deadline = time.monotonic() + timeout
    messages: list[str] = []
    while True:
        messages = []
        with get_client(sync_client=True) as client:
            while True:
                page = client.read_logs(log_filter=LogFilter(
                    flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])), limit=200,
                    offset=len(messages))
                messages += [entry.message for entry in page]
                if len(page) < 200:
                    break
        if any(until in m for m in messages) or time.monotonic() > deadline:
            return messages
        time.sleep(1)


def in_background(fn: Any) -> tuple[threading.Thread, list[BaseException]]:
    """Run the scenario's actions beside the flow; errors are kept for the test to raise."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            fn()
        except BaseException as exc:
            errors.append(exc)

    th = threading.Thread(target=run, name="scenario", daemon=True)
    th.start()
    return th, errors


def test_a_workload_faster_than_the_applier_falls_behind_then_catches_up(
        monitored: Monitored, migration_id: str) -> None:
    """The backlog is made by slowing the applier: one batch of at most 20 events, then 0.2 s of
    sleep (under 100 events/s), while the workload writes about 120 operations/s (each 1–3
    events) for 8 s. Then the workload stops and the slowed applier works the backlog off."""
    m = monitored
    m.applier.batch_size = 20
    m.applier.start()
    m.wait_caught_up()
    m.applier.throttle = 0.2
    written: list[Any] = []
    live: list[str] = []  # the progress artifact's text, read while the flow runs
    done = threading.Event()

    def scenario() -> None:
        wait_for(lambda: lag_status(migration_id) == "OK", 60, "the monitor's first OK")
        written.append(workload.run(m.source.dsn, rate=120, duration=8))
        while not done.is_set():
            live.append(artifact(f"monitor-{migration_id}").description)
            time.sleep(0.3)

    th, errors = in_background(scenario)
    try:
        state = monitor_until_caught_up(str(m.spec_path), migration_id, return_state=True)
    finally:
        done.set()
    th.join(30)
    assert not errors, errors
    assert state.is_completed(), state.message
    out = state.result()

    verdicts = out["verdicts"]
    assert "FALLING_BEHIND" in verdicts
    behind = verdicts.index("FALLING_BEHIND")
    assert verdicts[-1] == "OK" and out["passed"]
    assert written and written[0].total > 500
    # while it fell behind, the lag's rise across the window was reported as an anomaly
    saved = json.loads(Path(out["samples_path"]).read_text())
    behind_anomalies = {a for e in saved["evaluations"] if e["verdict"] == "FALLING_BEHIND"
                        for a in e["anomalies"]}
    assert "lag_slope" in behind_anomalies, behind_anomalies
    # the ETA was estimated while the backlog shrank, and shown in the run's live log lines
    etas = [e for e in out["eta_seconds"][behind:] if e]
    assert etas, out["eta_seconds"]
    logs = run_logs(state.state_details.flow_run_id, until="caught up after")
    shown = [line for line in logs if line.startswith("poll ") and " · ETA " in line
             and "ETA ?" not in line and "ETA now" not in line]
    assert shown, logs[-5:]
    progress = artifact(f"monitor-{migration_id}")
    assert progress.type == "progress" and progress.data == 100.0
    assert "gate passed" in progress.description
    # the live artifact showed the lags and an ETA while the backlog shrank
    assert any(re.search(r"consumer_lag_messages [\d,]+ msgs · .* · ETA \d", d) for d in live), \
        live
    print(f"verdicts: {verdicts}\nETA shown: {shown[:3]} … ({len(shown)} polls)\n"
          f"workload: {written[0].total} operations in {written[0].seconds:.1f} s")


# ----------------------------------------------------------------------- a stall, notified
def webhook_block(url: str) -> Any:
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    return CustomWebhookNotificationBlock(
        name="migwatch", url=url,
        json_data={"subject": "{{subject}}", "body": "{{body}}", "name": "{{name}}"})


@dataclass
class StallRun:
    """One flow run through a stall: what the receivers got and what the monitor saw."""

    migration_id: str
    state: Any
    hook: Webhook
    broken: Webhook
    mailbox: Mailbox
    stopped_at: float
    restarted_at: float


@pytest.fixture(scope="module")
def stall_run(stack: Stack, prefect_harness: None,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[StallRun]:
    """The applier is stopped while the flow watches (8 caught-up polls in a row are needed, so
    the healthy start does not end the run), and started again once the critical message has
    arrived and four more polls have passed. Blocks: a webhook to a local receiver, email to a
    local SMTP server, and a webhook whose receiver answers HTTP 500."""
    from prefect_email import EmailServerCredentials

    mid = f"t-{uuid.uuid4().hex[:12]}"
    source_gen, target_gen = _make_db(stack, "source"), _make_db(stack, "target")
    source, target = next(source_gen), next(target_gen)
    saved: list[tuple[Any, str]] = []

    def save(block: Any) -> str:
        name = f"t-{uuid.uuid4().hex[:10]}"
        block.save(name)
        saved.append((type(block), name))
        return name

    try:
        with webhook_receiver() as hook, webhook_receiver(status=500) as broken, \
                smtp_server() as box:
            channels = (save(webhook_block(hook.url)),
                        save(EmailServerCredentials(smtp_server="127.0.0.1",
                                                    smtp_type="INSECURE", smtp_port=box.port)),
                        save(webhook_block(broken.url)))
            notifications = {"warning": list(channels), "critical": list(channels),
                             "email_to": ["oncall@example.com"],
                             "email_from": "migwatch@example.com"}
            setup = monitored_migration(stack, source, target, mid,
                                        tmp_path_factory.mktemp("stall"),
                                        notifications=notifications,
                                        monitor={"consecutive_polls": 8})
            m = next(setup)
            try:
                m.applier.start()
                m.wait_caught_up()
                times: dict[str, float] = {}

                def scenario() -> None:
                    wait_for(lambda: lag_status(mid) == "OK", 60, "the monitor's first OK")
                    time.sleep(2)
                    m.applier.stop()
                    times["stopped"] = time.time()
                    wait_for(lambda: len(hook.requests) >= 1, 60, "the critical message")
                    time.sleep(4 * m.spec.monitor.poll_interval_seconds)  # still stopped
                    m.applier.start()
                    times["restarted"] = time.time()

                th, errors = in_background(scenario)
                state = monitor_until_caught_up(str(m.spec_path), mid, return_state=True)
                th.join(60)
                assert not errors, errors
            finally:
                next(setup, None)
            yield StallRun(mid, state, hook, broken, box, times["stopped"], times["restarted"])
    finally:
        for cls, name in saved:
            cls.delete(name)
        shutil.rmtree(samples_path(mid, StackSettings()).parent, ignore_errors=True)
        for gen in (source_gen, target_gen):
            next(gen, None)


def test_b_stopped_applier_is_stalled_one_critical_then_one_resolved(
        stall_run: StallRun) -> None:
    r = stall_run
    assert r.state.is_completed(), r.state.message
    out = r.state.result()
    assert out["passed"]
    verdicts = out["verdicts"]
    assert verdicts[-1] == "OK"
    stalled = [v for v in verdicts if v in ("STALLED", "ERROR")]
    assert "STALLED" in stalled and len(stalled) >= 4  # a stall of many polls, announced once
    subjects = [b["subject"] for b in r.hook.json_bodies()]
    assert [s.split()[1] for s in subjects] == ["CRITICAL", "RESOLVED"], subjects
    critical, resolved = r.hook.json_bodies()
    assert critical["subject"].startswith(
        f"[migwatch] CRITICAL {r.migration_id}: STALLED — no applier in the consumer group")
    body = critical["body"]
    assert f"migration: {r.migration_id}" in body
    assert "no applier in the consumer group" in body
    assert "lag: consumer_lag_messages = " in body and "(threshold " in body
    assert "ETA to catch up: " in body
    run_id = str(r.state.state_details.flow_run_id)
    assert f"/runs/flow-run/{run_id}" in body  # the run's page in the Prefect UI
    assert f"RESOLVED {r.migration_id}: OK" in resolved["subject"]
    print(f"\nverdicts: {verdicts}\ncritical: {critical['subject']}\n{body}\n"
          f"resolved: {resolved['subject']}\nstopped for {r.restarted_at - r.stopped_at:.1f} s")


def test_e_email_arrives_at_a_local_smtp_server(stall_run: StallRun) -> None:
    messages = stall_run.mailbox.messages
    assert [m["Subject"].split()[1] for m in messages] == ["CRITICAL", "RESOLVED"]
    first = messages[0]
    assert first["To"] == "oncall@example.com" and first["From"] == "migwatch@example.com"
    text = plain_text(first)
    assert f"migration: {stall_run.migration_id}" in text and "STALLED" in text


def test_a_failing_channel_is_counted_and_never_breaks_the_gate(stall_run: StallRun) -> None:
    r = stall_run
    assert r.state.is_completed() and r.state.result()["passed"]
    assert len(r.broken.requests) == 2  # it was called for critical and resolved, answered 500
    logs = run_logs(r.state.state_details.flow_run_id, until="resolved notice through")
    failed = [line for line in logs if "notice through" in line and "failed" in line]
    assert len(failed) == 2 and all("HTTPStatusError (HTTP 500)" in line for line in failed)
    assert not any(r.broken.url in line for line in logs)  # a webhook URL may hold a token
    for kind in ("critical", "resolved"):
        assert metrics.REGISTRY.get_sample_value(
            "migwatch_notifications_total",
            {"migration_id": r.migration_id, "severity": kind, "outcome": "failed"}) == 1
        assert metrics.REGISTRY.get_sample_value(
            "migwatch_notifications_total",
            {"migration_id": r.migration_id, "severity": kind, "outcome": "sent"}) == 2


# ----------------------------------------------------------------------- the gate fails
@pytest.mark.parametrize(("case", "monitor", "reason"), [
    pytest.param("timeout", {"timeout_seconds": 6},
                 r"not caught up after \d+\.\d s \(timeout 6\.0 s\): verdict (STALLED \(no "
                 r"applier|ERROR \(applier down)", id="timeout"),
    pytest.param("hard maximum", {"thresholds": {"consumer_lag_messages": {
        "warn": 10, "critical": 50, "caught_up": 5, "hard_max": 100}}},
        r"consumer_lag_messages [\d,]+ msgs crossed its hard maximum 100 msgs", id="hard-max"),
])
def test_c_the_flow_fails_with_the_gates_reason(monitored: Monitored, migration_id: str,
                                                case: str, monitor: dict[str, Any],
                                                reason: str, tmp_path: Path) -> None:
    """No applier runs, so the snapshot's events (over 300) wait in Kafka: the gate cannot pass,
    and the consumer lag is above the hard maximum from the first poll. The sequences are still
    shown: one a default calls on the source, that the target lacks."""
    m = monitored
    with m.source.connect() as conn:
        conn.execute("CREATE SEQUENCE public.note_seq; ALTER TABLE public.orders ALTER COLUMN "
                     "note SET DEFAULT 'n' || nextval('public.note_seq')")
        conn.execute("SELECT nextval('public.note_seq'), nextval('public.note_seq')")
    settings = m.spec.monitor.model_dump()
    settings["thresholds"] = {**settings["thresholds"], **monitor.pop("thresholds", {})}
    spec = m.spec.model_copy(update={"monitor": MonitorSpec.model_validate(
        {**settings, **monitor})})
    path = write_spec(spec, tmp_path / f"{case.replace(' ', '-')}.yaml")

    state = monitor_until_caught_up(str(path), migration_id, return_state=True)

    assert state.is_failed()
    with pytest.raises(GateFailed) as failed:
        state.result()
    assert re.search(reason, failed.value.reason), failed.value.reason
    assert re.search(reason, state.message or ""), state.message
    status = artifact(f"monitor-{migration_id}-status")
    assert f"**Gate failed:** {failed.value.reason}" in status.data
    seqs = artifact(f"monitor-{migration_id}-sequences")
    assert json.loads(seqs.data) == [{
        "sequence": "public.note_seq", "table": "public.orders (note)", "source value": "2",
        "target value": "missing", "behind by": "–"}]
    assert seqs.description.startswith("1 sequence(s), 0 behind on the target")
    print(f"\n{case}: {failed.value.reason}")
