"""Notifications end to end: saved Prefect blocks, a real local webhook receiver and SMTP server.

A run of polls sends exactly one critical and one resolved message; email arrives; failing
channels (HTTP 500, a closed port, a vendor host out of reach, a missing block) are counted and
never raised, and the gate still passes.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from migwatch import metrics
from migwatch.config import MonitorSpec, NotificationsSpec
from migwatch.lag import CONSUMER_LAG, END_TO_END_LAG, EVENT_TIME_LAG, SLOT_WAL, Gate, Monitor
from migwatch.lag import Sample as LagSample
from migwatch.notifications import send
from tests.receivers import free_port, plain_text, smtp_server, webhook_receiver

pytestmark = pytest.mark.usefixtures("prefect_harness")


@pytest.fixture
def blocks() -> Iterator[Any]:
    """Save blocks under unique names; delete them afterwards."""
    saved: list[Any] = []

    def save(block: Any) -> str:
        name = f"t-{uuid.uuid4().hex[:10]}"
        block.save(name)
        saved.append((type(block), name))
        return name

    yield save
    for cls, name in saved:
        cls.delete(name)


def webhook_block(url: str) -> Any:
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    return CustomWebhookNotificationBlock(
        name="migwatch", url=url,
        json_data={"subject": "{{subject}}", "body": "{{body}}", "name": "{{name}}"})


def sample(at: float, lag: float, committed: int, alive: bool = True) -> LagSample:
    return LagSample(at=at, values={CONSUMER_LAG: lag, EVENT_TIME_LAG: 1.0, END_TO_END_LAG: 1.5,
                                    SLOT_WAL: 1000.0},
                     committed_offsets=committed, applier_alive=alive,
                     connector_state="RUNNING")


def stall_then_recover() -> list[LagSample]:
    """20 polls: healthy, applier gone for 8 polls, back and caught up."""
    healthy = [sample(t, 2, 10 * t) for t in range(1, 5)]
    stopped = [sample(t, 10 * t, 40, alive=False) for t in range(5, 13)]
    back = [sample(t, 1, 100 * t) for t in range(13, 21)]
    return healthy + stopped + back


def counted(mid: str, kind: str, outcome: str) -> float:
    return metrics.REGISTRY.get_sample_value(
        "migwatch_notifications_total",
        {"migration_id": mid, "severity": kind, "outcome": outcome}) or 0.0


def test_webhook_gets_one_critical_then_one_resolved(blocks: Any, migration_id: str) -> None:
    monitor_spec = MonitorSpec(window_size=4, consecutive_polls=3)
    with webhook_receiver() as hook:
        name = blocks(webhook_block(hook.url))
        spec = NotificationsSpec(critical=(name,))
        mon = Monitor(monitor_spec, migration_id)
        deliveries = []
        for s in stall_then_recover():
            for n in mon.evaluate(s).notices:
                deliveries += send(n, spec, flow_run_url="http://127.0.0.1:4200/runs/flow-run/x")
    bodies = hook.json_bodies()
    assert [b["subject"].split()[1] for b in bodies] == ["CRITICAL", "RESOLVED"]
    assert all(d.ok and d.block_type == "CustomWebhookNotificationBlock" for d in deliveries)
    critical, resolved = bodies
    assert f"CRITICAL {migration_id}: STALLED" in critical["subject"]
    assert "no applier in the consumer group" in critical["body"]
    assert "consumer_lag_messages" in critical["body"]
    assert "flow run: http://127.0.0.1:4200/runs/flow-run/x" in critical["body"]
    assert f"RESOLVED {migration_id}: OK" in resolved["subject"]
    assert counted(migration_id, "critical", "sent") == 1
    assert counted(migration_id, "resolved", "sent") == 1


def test_email_arrives_at_a_local_smtp_server(blocks: Any, migration_id: str) -> None:
    from prefect_email import EmailServerCredentials

    with smtp_server() as box:
        name = blocks(EmailServerCredentials(smtp_server="127.0.0.1", smtp_type="INSECURE",
                                             smtp_port=box.port))
        spec = NotificationsSpec(critical=(name,), email_to=("oncall@example.com",),
                                 email_from="migwatch@example.com")
        mon = Monitor(MonitorSpec(window_size=4), migration_id)
        deliveries = [d for s in stall_then_recover() for n in mon.evaluate(s).notices
                      for d in send(n, spec)]
    assert [d.ok for d in deliveries] == [True, True]
    assert [m["Subject"].split()[1] for m in box.messages] == ["CRITICAL", "RESOLVED"]
    first = box.messages[0]
    assert first["To"] == "oncall@example.com" and first["From"] == "migwatch@example.com"
    assert f"migration: {migration_id}" in plain_text(first)


def test_failing_channels_are_counted_and_never_break_the_gate(blocks: Any,
                                                               migration_id: str) -> None:
    from prefect.blocks.notifications import SlackWebhook
    from prefect_email import EmailServerCredentials

    with webhook_receiver(status=500) as broken:
        names = (
            blocks(webhook_block(broken.url)),
            blocks(webhook_block(f"http://127.0.0.1:{free_port()}/closed")),
            blocks(SlackWebhook(url="https://hooks.slack.com/services/T0/B0/XXXXXXXX")),
            blocks(EmailServerCredentials(smtp_server="127.0.0.1", smtp_type="INSECURE",
                                          smtp_port=free_port())),
            "no-such-block",
        )
        spec = NotificationsSpec(critical=names, email_to=("oncall@example.com",))
        monitor_spec = MonitorSpec(window_size=4, consecutive_polls=3, timeout_seconds=600)
        mon, gate = Monitor(monitor_spec, migration_id), Gate(monitor_spec, started_at=0)
        results = []
        for s in stall_then_recover():
            ev = mon.evaluate(s)
            for n in ev.notices:
                results.append(send(n, spec))
            status = gate.observe(ev)
    assert status.state == "passed"
    assert len(broken.requests) == 2  # it was called (critical, resolved) and answered 500
    assert len(results) == 2
    for deliveries in results:
        assert [d.ok for d in deliveries] == [False] * 5
        assert [d.error for d in deliveries] == [
            "HTTPStatusError (HTTP 500)", "ConnectError", "NotificationError",
            "ConnectionRefusedError", "cannot load block: ValueError"]
    assert counted(migration_id, "critical", "failed") == 5
    assert counted(migration_id, "resolved", "failed") == 5
    assert counted(migration_id, "critical", "sent") == 0
