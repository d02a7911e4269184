"""Lag verdicts, hysteresis, anomalies, ETA, notices and the gate — on made-up series."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from migwatch.config import MonitorSpec, Threshold
from migwatch.errors import GateFailed
from migwatch.lag import (
    CONSUMER_LAG,
    END_TO_END_LAG,
    EVENT_TIME_LAG,
    SLOT_WAL,
    Evaluation,
    Gate,
    Level,
    Monitor,
    PartitionLag,
    Sample,
    Severity,
    StoppedTable,
    TableLag,
    Verdict,
    effective_threshold,
    eta_seconds,
    format_value,
    next_level,
    progress_percent,
    slope,
    status_rows,
    summarize,
    update_peaks,
)

T = Threshold(warn=10, critical=20, caught_up=2, hard_max=100, clear_ratio=0.8)


def spec(**kw: Any) -> MonitorSpec:
    base: dict[str, Any] = {
        "window_size": 4, "consecutive_polls": 3, "timeout_seconds": 100,
        "thresholds": {
            CONSUMER_LAG: {"warn": 1000, "critical": 5000, "caught_up": 10, "hard_max": 50_000},
            EVENT_TIME_LAG: {"warn": 30, "critical": 120, "caught_up": 5},
            END_TO_END_LAG: {"warn": 30, "critical": 120, "caught_up": 5},
            SLOT_WAL: {"warn": 1e9, "critical": 4e9, "caught_up": 1e8},
        },
    }
    base.update(kw)
    return MonitorSpec.model_validate(base)


def s(at: float, lag: float | None = 0, committed: int | None = 0, event: float | None = 1,
      e2e: float | None = 1, slot: float | None = 1000, alive: bool | None = True,
      connector: str | None = "RUNNING", dlq: int | None = 0, limit: int | None = None,
      problems: tuple[str, ...] = (), stopped: tuple[StoppedTable, ...] = ()) -> Sample:
    return Sample(at=at, values={CONSUMER_LAG: lag, EVENT_TIME_LAG: event, END_TO_END_LAG: e2e,
                                 SLOT_WAL: slot},
                  committed_offsets=committed, dlq_messages=dlq, applier_alive=alive,
                  connector_state=connector, slot_limit_bytes=limit, problems=problems,
                  stopped_tables=stopped)


def run(mon: Monitor, samples: list[Sample]) -> list[Evaluation]:
    return [mon.evaluate(x) for x in samples]


# ------------------------------------------------------------------ thresholds
def test_hysteresis_enters_above_and_leaves_below_clear_ratio() -> None:
    levels = []
    level = Level.OK
    for v in [9, 10, 11, 9, 8.5, 7.9, 21, 17, 16.5, 15.9, 8.1, 7.0]:
        level = next_level(level, v, T)
        levels.append(level.value)
    assert levels == ["ok", "ok", "warn", "warn", "warn", "ok", "critical", "critical",
                      "critical", "warn", "warn", "ok"]


def test_unknown_value_keeps_level() -> None:
    assert next_level(Level.CRITICAL, None, T) is Level.CRITICAL
    assert next_level(Level.OK, None, T) is Level.OK


def test_slot_thresholds_tighten_near_limit() -> None:
    t = Threshold(warn=1000, critical=4000, caught_up=100)
    near = effective_threshold(SLOT_WAL, t, limit=1000)
    assert near.warn == 800 and near.critical == 950 and near.caught_up == 100
    assert effective_threshold(SLOT_WAL, t, limit=None) is t
    assert effective_threshold(CONSUMER_LAG, t, limit=10) is t


def test_slot_near_limit_warns_then_critical() -> None:
    mon = Monitor(spec(), "m")
    ev = mon.evaluate(s(1, slot=850, limit=1000))
    assert ev.measures[SLOT_WAL].level is Level.WARN and ev.verdict is Verdict.WARNING
    ev = mon.evaluate(s(2, slot=960, limit=1000))
    assert ev.measures[SLOT_WAL].level is Level.CRITICAL and ev.severity is Severity.CRITICAL


# ------------------------------------------------------------------ verdicts
def test_healthy_is_ok_and_caught_up() -> None:
    evs = run(Monitor(spec(), "m"), [s(t, lag=3, committed=100 + t) for t in range(1, 6)])
    assert all(e.verdict is Verdict.OK and e.severity is Severity.OK for e in evs)
    assert all(e.caught_up for e in evs)
    assert not any(e.notices for e in evs)


def test_warning_above_warn_threshold_names_the_measure() -> None:
    ev = Monitor(spec(), "m").evaluate(s(1, event=45))
    assert ev.verdict is Verdict.WARNING and ev.severity is Severity.WARNING
    assert any("event_time_lag_seconds 45.0 s above warn 30.0 s" in r for r in ev.reasons)
    assert not ev.caught_up


def test_critical_threshold_is_critical_severity() -> None:
    ev = Monitor(spec(), "m").evaluate(s(1, lag=6000, committed=5))
    assert ev.severity is Severity.CRITICAL
    assert ev.measures[CONSUMER_LAG].level is Level.CRITICAL
    assert ev.measures[CONSUMER_LAG].threshold == 5000


def test_falling_behind_needs_full_window_of_growing_lag() -> None:
    mon = Monitor(spec(), "m")
    evs = run(mon, [s(t, lag=50 * t, committed=1000 * t) for t in range(1, 6)])
    assert [e.verdict for e in evs[:3]] == [Verdict.OK, Verdict.OK, Verdict.OK]
    assert evs[3].verdict is Verdict.FALLING_BEHIND
    assert "grew from 50 to 200 messages" in evs[3].reasons[0]
    assert evs[3].severity is Severity.WARNING


def test_zero_lag_anywhere_in_window_is_not_falling_behind() -> None:
    lags = [0, 20, 40, 60, 80]
    evs = run(Monitor(spec(), "m"), [s(i + 1, lag=v, committed=100 * i) for i, v in
                                     enumerate(lags)])
    assert evs[3].verdict is Verdict.OK  # window [0, 20, 40, 60] has a zero
    assert evs[4].verdict is Verdict.FALLING_BEHIND


def test_a_jump_then_a_steady_fall_is_catching_up_not_falling_behind() -> None:
    # seen on the stack: the applier joined, met the backlog, then worked it off
    lags = [72, 948, 871, 796, 701]
    evs = run(Monitor(spec(window_size=5), "m"),
              [s(i + 1, lag=v, committed=100 * i) for i, v in enumerate(lags)])
    assert evs[-1].verdict is Verdict.OK
    noisy_rise = [100, 180, 170, 260, 350]  # one dip does not hide a rising lag
    evs = run(Monitor(spec(window_size=5), "m"),
              [s(i + 1, lag=v, committed=100 * i) for i, v in enumerate(noisy_rise)])
    assert evs[-1].verdict is Verdict.FALLING_BEHIND


def test_a_caught_up_lag_wobbling_upwards_is_not_falling_behind() -> None:
    # seen on the stack during an idle minute: heartbeats in flight, 1 → 3 messages
    evs = run(Monitor(spec(window_size=5), "m"),
              [s(i + 1, lag=v, committed=100 * i) for i, v in enumerate([1, 2, 2, 3, 3])])
    assert evs[-1].verdict is Verdict.OK and evs[-1].caught_up


def test_stalled_when_lag_and_offsets_do_not_move_for_a_window() -> None:
    evs = run(Monitor(spec(), "m"), [s(t, lag=40, committed=777) for t in range(1, 6)])
    assert evs[2].verdict is Verdict.OK
    assert evs[3].verdict is Verdict.STALLED
    assert "committed offsets did not move" in evs[3].reasons[0]
    assert evs[3].severity is Severity.CRITICAL


def test_idle_and_caught_up_is_not_stalled() -> None:
    evs = run(Monitor(spec(), "m"), [s(t, lag=0, committed=777) for t in range(1, 6)])
    assert all(e.verdict is Verdict.OK for e in evs)


def test_absent_applier_is_stalled_at_once_then_error_after_a_window() -> None:
    evs = run(Monitor(spec(), "m"), [s(t, lag=5 * t, committed=10, alive=False)
                                     for t in range(1, 6)])
    assert [e.verdict for e in evs[:3]] == [Verdict.STALLED] * 3
    assert "no applier in the consumer group" in evs[0].reasons[0]
    assert evs[3].verdict is Verdict.ERROR
    assert "applier down" in evs[3].reasons[0]
    assert not any(e.caught_up for e in evs)  # a dead applier never passes the gate
    # every lag under caught_up, yet nothing is applied: no time to catch up is promised
    assert all(e.eta_seconds is None for e in evs)


@pytest.mark.parametrize("state", ["FAILED", "MISSING", "failed"])
def test_connector_down_is_error(state: str) -> None:
    ev = Monitor(spec(), "m").evaluate(s(1, connector=state))
    assert ev.verdict is Verdict.ERROR and ev.severity is Severity.CRITICAL
    assert ev.reasons == (f"connector is {state.upper()}",)


def test_paused_connector_is_a_warning() -> None:
    ev = Monitor(spec(), "m").evaluate(s(1, connector="PAUSED"))
    assert ev.verdict is Verdict.WARNING and "connector is PAUSED" in ev.reasons


def test_measurement_problem_is_error_only_when_it_persists() -> None:
    mon = Monitor(spec(), "m")
    p = ("kafka: TransientError",)
    evs = run(mon, [s(1, lag=None, problems=p), s(2, lag=None, problems=p),
                    s(3, lag=None, problems=p), s(4, lag=0)])
    assert [e.verdict for e in evs] == [Verdict.WARNING, Verdict.WARNING, Verdict.ERROR,
                                        Verdict.OK]
    assert "cannot measure for 3 polls: kafka: TransientError" in evs[2].reasons[0]


GONE = StoppedTable("public.t", "column 'gone' dropped on the source")


def test_a_table_stopped_by_a_schema_change_is_error_at_once_naming_table_and_change() -> None:
    ev = Monitor(spec(), "m").evaluate(s(1, stopped=(GONE,)))
    assert ev.verdict is Verdict.ERROR and ev.severity is Severity.CRITICAL
    assert ev.reasons == ("table public.t stopped: column 'gone' dropped on the source — "
                          "`migwatch resume-table <spec> public.t --migration-id m --accept` or a "
                          "versioned migration",)
    assert not ev.caught_up and ev.eta_seconds is None
    (notice,) = ev.notices
    assert notice.kind == "critical" and notice.reasons == ev.reasons


def test_every_stopped_table_is_a_reason_beside_the_other_errors() -> None:
    other = StoppedTable("public.u", "column 'n' changed from integer to text")
    ev = Monitor(spec(), "m").evaluate(s(1, connector="FAILED", stopped=(GONE, other)))
    assert ev.verdict is Verdict.ERROR
    assert ev.reasons[0] == "connector is FAILED"
    assert [r.split(":")[0] for r in ev.reasons[1:]] == ["table public.t stopped",
                                                        "table public.u stopped"]


def test_a_stopped_table_resolves_once_the_samples_have_none() -> None:
    evs = run(Monitor(spec(), "m"), [s(1), s(2, stopped=(GONE,)), s(3, stopped=(GONE,)),
                                     s(4, stopped=(GONE,)), s(5), s(6)])
    assert [e.verdict for e in evs] == [Verdict.OK, Verdict.ERROR, Verdict.ERROR,
                                        Verdict.ERROR, Verdict.OK, Verdict.OK]
    assert kinds(evs) == ["critical", "resolved"]  # one episode, announced once
    assert evs[4].notices[0].kind == "resolved" and evs[4].caught_up


def test_samples_out_of_order_are_refused() -> None:
    mon = Monitor(spec(), "m")
    mon.evaluate(s(5))
    with pytest.raises(ValueError):
        mon.evaluate(s(5))


# ------------------------------------------------------------------ notices
def kinds(evs: list[Evaluation]) -> list[str]:
    return [n.kind for e in evs for n in e.notices]


def test_warning_critical_resolved_each_once_across_many_polls() -> None:
    events = [1, 40, 45, 50, 130, 140, 125, 100, 130, 90, 50, 20, 10, 2, 1, 1, 1]
    evs = run(Monitor(spec(), "mig-1"), [s(i + 1, event=v) for i, v in enumerate(events)])
    assert kinds(evs) == ["warning", "critical", "resolved"]
    crit = next(n for e in evs for n in e.notices if n.kind == "critical")
    assert (crit.migration_id, crit.measure, crit.value, crit.threshold) == (
        "mig-1", EVENT_TIME_LAG, 130, 120)
    resolved = next(n for e in evs for n in e.notices if n.kind == "resolved")
    assert resolved.measure == EVENT_TIME_LAG and resolved.value == 20  # first poll under 24
    assert resolved.threshold == pytest.approx(24)


def test_flapping_around_threshold_does_not_renotify() -> None:
    events = [31, 29, 31, 28, 31, 25, 33]  # stays above warn × clear_ratio (24)
    evs = run(Monitor(spec(), "m"), [s(i + 1, event=v) for i, v in enumerate(events)])
    assert kinds(evs) == ["warning"]


def test_new_episode_notifies_again() -> None:
    events = [50, 1, 50, 1]
    evs = run(Monitor(spec(), "m"), [s(i + 1, event=v) for i, v in enumerate(events)])
    assert kinds(evs) == ["warning", "resolved", "warning", "resolved"]


def test_a_resolved_notice_carries_how_far_its_episode_went() -> None:
    evs = run(Monitor(spec(), "m"), [s(i + 1, event=v) for i, v in enumerate(
        [50, 1, 50, 130, 1])])
    assert [(n.kind, n.peak) for e in evs for n in e.notices] == [
        ("warning", None), ("resolved", "warning"), ("warning", None), ("critical", None),
        ("resolved", "critical")]


def test_stall_gives_one_critical_and_one_resolved() -> None:
    mon = Monitor(spec(), "m")
    healthy = [s(t, lag=2, committed=10 * t) for t in range(1, 4)]
    stopped = [s(t, lag=10 * t, committed=30, alive=False) for t in range(4, 12)]
    back = [s(t, lag=1, committed=100 * t) for t in range(12, 16)]
    evs = run(mon, healthy + stopped + back)
    assert kinds(evs) == ["critical", "resolved"]
    assert evs[3].verdict is Verdict.STALLED and evs[3].notices[0].verdict is Verdict.STALLED
    assert evs[3].notices[0].measure == CONSUMER_LAG  # the offsets explain a stall
    assert evs[3].notices[0].value == 40


# ------------------------------------------------------------------ anomalies
def test_throughput_drop_below_baseline_while_work_waits() -> None:
    committed = [0, 1000, 2000, 3000, 3100]  # 1000/s, then 100/s
    evs = run(Monitor(spec(window_size=5), "m"),
              [s(i + 1, lag=500, committed=c) for i, c in enumerate(committed)])
    drop = [a for a in evs[-1].anomalies if a.kind == "throughput_drop"]
    assert drop and drop[0].value == pytest.approx(100) and drop[0].reference == pytest.approx(1000)
    assert evs[-1].throughput == pytest.approx(100)


def test_no_throughput_anomaly_when_nothing_waits() -> None:
    committed = [0, 1000, 2000, 3000, 3001]
    evs = run(Monitor(spec(window_size=5), "m"),
              [s(i + 1, lag=0, committed=c) for i, c in enumerate(committed)])
    assert not [a for a in evs[-1].anomalies if a.kind == "throughput_drop"]


def test_error_rate_above_threshold_is_an_anomaly_and_a_warning() -> None:
    mon = Monitor(spec(error_rate_threshold=0.01), "m")
    evs = run(mon, [s(1, committed=0, dlq=0), s(2, committed=1000, dlq=5),
                    s(3, committed=2000, dlq=30)])
    assert not [a for a in evs[1].anomalies if a.kind == "error_rate"]  # 0.5 %
    rate = [a for a in evs[2].anomalies if a.kind == "error_rate"]
    assert rate and rate[0].value == pytest.approx(0.015)
    assert evs[2].verdict is Verdict.WARNING


def test_positive_lag_slope_over_window_is_an_anomaly() -> None:
    evs = run(Monitor(spec(), "m"), [s(t, event=6 + 2 * t) for t in range(1, 5)])
    slope_anomalies = [a for a in evs[-1].anomalies if a.kind == "lag_slope"]
    assert [a.measure for a in slope_anomalies] == [EVENT_TIME_LAG]
    assert slope_anomalies[0].value == pytest.approx(2.0)
    assert not [a for a in evs[2].anomalies if a.kind == "lag_slope"]  # window not full yet


# ------------------------------------------------------------------ ETA
def test_slope_and_eta() -> None:
    assert slope([(0, 100), (1, 90), (2, 80)]) == pytest.approx(-10)
    assert slope([(0, 1)]) is None
    assert eta_seconds(100, 10, -10) == pytest.approx(9)
    assert eta_seconds(100, 10, 5) is None
    assert eta_seconds(100, 10, None) is None
    assert eta_seconds(5, 10, None) == 0


def test_eta_from_falling_lag_and_none_when_rising() -> None:
    mon = Monitor(spec(), "m")
    evs = run(mon, [s(t, lag=1000 - 100 * t, committed=100 * t, event=60 - 10 * t)
                    for t in range(1, 5)])
    # consumer lag 600 falls 100/s to 10 → 5.9 s; event lag 20 falls 10/s to 5 → 1.5 s
    assert evs[-1].measures[CONSUMER_LAG].eta_seconds == pytest.approx(5.9)
    assert evs[-1].eta_seconds == pytest.approx(5.9)
    rising = run(Monitor(spec(), "m"), [s(t, lag=100 * t, committed=100 * t)
                                        for t in range(1, 4)])
    assert rising[-1].eta_seconds is None


def test_eta_uses_the_fall_since_the_peak() -> None:
    # at the turn the whole window's slope understates the fall (on the stack: ETA 2 min 17 s
    # for a lag that was gone 4 s later); from the peak the lag falls 70 msg/s
    lags = [400, 450, 480, 420, 340]
    evs = run(Monitor(spec(window_size=5), "m"),
              [s(i + 1, lag=v, committed=100 * i) for i, v in enumerate(lags)])
    assert evs[-1].measures[CONSUMER_LAG].eta_seconds == pytest.approx((340 - 10) / 70)
    assert evs[-1].measures[CONSUMER_LAG].slope == pytest.approx(-15)  # the window's own
    # a fall of one poll is not yet a rate: the window's slope decides (here: not falling)
    evs = run(Monitor(spec(window_size=5), "m"),
              [s(i + 1, lag=v, committed=100 * i) for i, v in enumerate([300, 350, 400, 450,
                                                                          420])])
    assert evs[-1].measures[CONSUMER_LAG].eta_seconds is None


def test_time_lags_follow_a_draining_backlog_in_the_eta() -> None:
    # seen on the stack: while old messages are worked off, the age of the newest applied event
    # rises; it drops once the backlog is applied, so the backlog's ETA is the overall one
    evs = run(Monitor(spec(), "m"), [s(t, lag=1000 - 100 * t, committed=100 * t,
                                       event=4 + t, e2e=4 + t) for t in range(1, 5)])
    assert evs[-1].measures[EVENT_TIME_LAG].eta_seconds is None  # rising on its own
    assert evs[-1].eta_seconds == pytest.approx(5.9)
    # no backlog falling: a rising time lag makes the ETA unknown
    evs = run(Monitor(spec(), "m"), [s(t, lag=0, committed=100 * t, event=4 + t)
                                     for t in range(1, 5)])
    assert evs[-1].eta_seconds is None
    # nor does a backlog stand in for a slot that keeps its WAL
    evs = run(Monitor(spec(), "m"), [s(t, lag=1000 - 100 * t, committed=100 * t,
                                       slot=2e8) for t in range(1, 5)])
    assert evs[-1].eta_seconds is None


# ------------------------------------------------------------------ gate
def test_gate_passes_after_consecutive_caught_up_polls() -> None:
    sp = spec()
    mon, gate = Monitor(sp, "m"), Gate(sp, started_at=0)
    states = []
    for t, lag in enumerate([500, 5, 5, 50, 5, 5, 5, 500], start=1):
        st = gate.observe(mon.evaluate(s(t, lag=lag, committed=100 * t)))
        states.append((st.state, st.consecutive))
    assert states == [("waiting", 0), ("waiting", 1), ("waiting", 2), ("waiting", 0),
                      ("waiting", 1), ("waiting", 2), ("passed", 3), ("passed", 3)]


def test_unknown_measure_is_not_caught_up() -> None:
    sp = spec()
    mon, gate = Monitor(sp, "m"), Gate(sp, started_at=0)
    for t in range(1, 6):
        st = gate.observe(mon.evaluate(s(t, e2e=None)))
    assert st.state == "waiting" and st.consecutive == 0


def test_gate_fails_on_timeout_with_reason() -> None:
    sp = spec(timeout_seconds=10)
    mon, gate = Monitor(sp, "m"), Gate(sp, started_at=0)
    gate.observe(mon.evaluate(s(5, event=40)))
    with pytest.raises(GateFailed) as info:
        gate.observe(mon.evaluate(s(10, event=40)))
    reason = info.value.reason
    assert "not caught up after 10.0 s" in reason
    assert "event_time_lag_seconds 40.0 s > caught_up 5.0 s" in reason
    assert "\n" not in reason


def test_timeout_reason_leads_with_the_verdicts_reason_and_names_unknown_lags() -> None:
    sp = spec(timeout_seconds=2)
    mon, gate = Monitor(sp, "m"), Gate(sp, started_at=0)
    gate.observe(mon.evaluate(s(1, lag=300, alive=False, event=None)))
    with pytest.raises(GateFailed) as info:
        gate.observe(mon.evaluate(s(2, lag=305, alive=False, event=None)))
    assert info.value.reason == (
        "not caught up after 2.0 s (timeout 2.0 s): verdict STALLED (no applier in the consumer "
        "group; 305 messages wait); consumer_lag_messages 305 msgs > caught_up 10 msgs; "
        "event_time_lag_seconds not measured")


def test_gate_fails_on_hard_max() -> None:
    sp = spec()
    mon, gate = Monitor(sp, "m"), Gate(sp, started_at=0)
    with pytest.raises(GateFailed, match="consumer_lag_messages 60,000 msgs crossed its hard "
                                         "maximum 50,000 msgs"):
        gate.observe(mon.evaluate(s(1, lag=60_000, committed=1)))


def test_gate_passing_on_last_poll_before_timeout_wins() -> None:
    sp = spec(timeout_seconds=3)
    mon, gate = Monitor(sp, "m"), Gate(sp, started_at=0)
    for t in (1, 2, 3):
        st = gate.observe(mon.evaluate(s(t, committed=t)))
    assert st.state == "passed"


# ------------------------------------------------------------------ plain data
def test_sample_round_trips_through_json() -> None:
    x = Sample(at=1.5, values={CONSUMER_LAG: 3, EVENT_TIME_LAG: 0.5, END_TO_END_LAG: None,
                               SLOT_WAL: 10}, committed_offsets=7, applier_alive=True,
               partitions=(PartitionLag("t", 0, 10, 7, 3),),
               tables=(TableLag("public.a", "public.a", 0.5, 0),), problems=("x",))
    back = Sample.from_dict(json.loads(json.dumps(x.to_dict())))
    assert back == x
    assert x.data_lag_seconds == 0.5


def test_sample_round_trips_with_its_stopped_tables_and_older_samples_still_load() -> None:
    x = Sample(at=2.0, values={CONSUMER_LAG: 0}, stopped_tables=(GONE,))
    d = json.loads(json.dumps(x.to_dict()))
    assert d["stopped_tables"] == [{"table": "public.t",
                                    "change": "column 'gone' dropped on the source"}]
    assert Sample.from_dict(d) == x
    del d["stopped_tables"]  # a sample written before the field existed
    assert Sample.from_dict(d) == Sample(at=2.0, values={CONSUMER_LAG: 0})


def test_evaluation_is_json_ready() -> None:
    ev = Monitor(spec(), "m").evaluate(s(1, event=200))
    d = json.loads(json.dumps(ev.to_dict()))
    assert d["verdict"] == "WARNING" and d["severity"] == "CRITICAL"
    assert d["notices"][0]["kind"] == "critical"


def test_summarize_gives_throughput_columns() -> None:
    out = summarize([s(0, committed=0), s(2, committed=100), s(4, committed=100)])
    assert out["throughput_msgs_per_second"] == [None, 50.0, 0.0]
    assert out[CONSUMER_LAG] == [0, 0, 0] and out["at"] == [0, 2, 4]


def test_progress_from_peak_to_caught_up() -> None:
    mon, peaks = Monitor(spec(), "m"), {}
    ev = mon.evaluate(s(1, lag=1010, committed=1))
    update_peaks(peaks, ev)
    assert progress_percent(ev, peaks) == 0
    ev = mon.evaluate(s(2, lag=510, committed=2))
    update_peaks(peaks, ev)
    assert progress_percent(ev, peaks) == 50
    ev = mon.evaluate(s(3, lag=5, committed=3))
    assert progress_percent(ev, peaks) == 100


def test_status_rows_say_where_each_measure_stands() -> None:
    mon = Monitor(spec(), "m")
    mon.evaluate(s(1, lag=500, committed=1))
    ev = mon.evaluate(s(2, lag=400, committed=101, event=45, e2e=None))
    rows = {r["measure"]: r for r in status_rows(ev)}
    assert rows[CONSUMER_LAG] == {"measure": CONSUMER_LAG, "value": "400 msgs",
                                  "threshold": "caught_up 10 msgs", "state": "behind",
                                  "eta": "3.9 s"}
    assert rows[EVENT_TIME_LAG]["state"] == "warn"
    assert rows[EVENT_TIME_LAG]["threshold"] == "warn 30.0 s"
    assert rows[END_TO_END_LAG]["state"] == "unknown"
    assert rows[SLOT_WAL]["state"] == "caught up" and rows[SLOT_WAL]["eta"] == "-"


def test_format_value_units() -> None:
    assert format_value(EVENT_TIME_LAG, 75) == "1 min 15 s"
    assert format_value(SLOT_WAL, 3 * 1024 * 1024) == "3.0 MiB"
    assert format_value(CONSUMER_LAG, 12345) == "12,345 msgs"
    assert format_value(CONSUMER_LAG, None) == "?"


def test_lag_module_does_not_import_prefect() -> None:
    code = "import sys, migwatch.lag; print('prefect' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
