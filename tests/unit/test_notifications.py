"""The message a state change sends — what Slack, Teams, PagerDuty and Opsgenie would receive."""

from __future__ import annotations

import subprocess
import sys

from migwatch.config import NotificationsSpec
from migwatch.lag import EVENT_TIME_LAG, SLOT_WAL, Notice, Verdict
from migwatch.notifications import blocks_for, build_message


def notice(kind: str = "critical", **kw: object) -> Notice:
    base: dict[str, object] = dict(
        kind=kind, migration_id="shop-42", verdict=Verdict.STALLED, measure=EVENT_TIME_LAG,
        value=130.0, threshold=120.0, eta_seconds=None,
        reasons=("no applier in the consumer group; 57 messages wait",), at=1_700_000_000.0)
    base.update(kw)
    return Notice(**base)  # type: ignore[arg-type]


def test_critical_message_names_migration_lag_threshold_eta_and_link() -> None:
    msg = build_message(notice(), "http://127.0.0.1:4200/runs/flow-run/abc")
    assert msg.subject == ("[migwatch] CRITICAL shop-42: STALLED — event_time_lag_seconds "
                           "2 min 10 s above 2 min 0 s")
    assert msg.body.splitlines() == [
        "migration: shop-42",
        "state: CRITICAL (verdict STALLED)",
        "lag: event_time_lag_seconds = 2 min 10 s (threshold 2 min 0 s)",
        "ETA to catch up: unknown (lag is not falling)",
        "why:",
        "  - no applier in the consumer group; 57 messages wait",
        "flow run: http://127.0.0.1:4200/runs/flow-run/abc",
        "at: 2023-11-14T22:13:20+00:00",
    ]


def test_warning_with_eta_and_bytes() -> None:
    msg = build_message(notice("warning", verdict=Verdict.WARNING, measure=SLOT_WAL,
                               value=900 * 2**20, threshold=800 * 2**20, eta_seconds=75.0))
    assert "slot_wal_bytes 900.0 MiB above 800.0 MiB" in msg.subject
    assert "ETA to catch up: 1 min 15 s" in msg.body
    assert "flow run: not running under a Prefect flow" in msg.body


def test_resolved_message_says_below() -> None:
    msg = build_message(notice("resolved", verdict=Verdict.OK, value=0.8, threshold=48.0,
                               eta_seconds=0.0, reasons=()))
    assert msg.subject == ("[migwatch] RESOLVED shop-42: OK — event_time_lag_seconds 0.8 s "
                           "below 48.0 s")
    assert "ETA to catch up: caught up" in msg.body and "why:" not in msg.body


def test_blocks_per_severity_and_resolved_fallback() -> None:
    spec = NotificationsSpec(warning=("slack",), critical=("pager", "slack"))
    assert blocks_for(notice("warning"), spec) == ("slack",)
    assert blocks_for(notice("critical"), spec) == ("pager", "slack")
    assert blocks_for(notice("resolved"), spec) == ("slack", "pager")
    assert blocks_for(notice("resolved"), NotificationsSpec(resolved=("mail",))) == ("mail",)


def test_a_resolved_goes_where_its_episode_was_announced() -> None:
    """An episode that stayed a warning never reached the critical-only channel (a pager):
    its end does not either; one that got critical ends on both."""
    spec = NotificationsSpec(warning=("slack",), critical=("pager",))
    assert blocks_for(notice("resolved", peak="warning"), spec) == ("slack",)
    assert blocks_for(notice("resolved", peak="critical"), spec) == ("slack", "pager")
    assert blocks_for(notice("resolved", peak="warning"),
                      NotificationsSpec(critical=("pager",))) == ()


def test_importing_notifications_does_not_import_prefect() -> None:
    code = "import sys, migwatch.notifications; print('prefect' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
