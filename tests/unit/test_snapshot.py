"""Snapshot progress without servers: ratio, rate over a window, ETA, per-table seconds, and the
end of the snapshot reaching tables that never got their own mark (empty ones)."""

from __future__ import annotations

import pytest

from migwatch.names import ALL_TABLES
from migwatch.snapshot import (
    Applied,
    RateWindow,
    SnapshotTracker,
    eta_seconds,
    format_seconds,
    progress_ratio,
)

A, B, EMPTY = "public.a", "public.b", "public.empty"


def test_ratio_stays_below_one_until_done_even_past_the_estimate() -> None:
    assert progress_ratio(0, 1000, False) == 0.0
    assert progress_ratio(250, 1000, False) == 0.25
    assert progress_ratio(1200, 1000, False) == 0.99  # the estimate was low: not done yet
    assert progress_ratio(900, 1000, True) == 1.0  # the end mark decides, not the estimate
    assert progress_ratio(5, 0, False) == 0.0
    assert progress_ratio(0, 0, True) == 1.0


def test_eta_is_unknown_without_a_rate_and_zero_with_nothing_left() -> None:
    assert eta_seconds(1000, None) is None
    assert eta_seconds(1000, 0.0) is None
    assert eta_seconds(1000, 250.0) == 4.0
    assert eta_seconds(0, None) == 0.0
    assert eta_seconds(-5, 10.0) == 0.0


def test_rate_is_measured_over_the_window_only() -> None:
    w = RateWindow(window=10)
    assert w.rate() is None
    w.add(0, 0)
    assert w.rate() is None  # one reading is no rate
    w.add(5, 5000)  # fast start: 1000 rows/s
    assert w.rate() == 1000.0
    for t in range(6, 31):  # then 100 rows/s for 25 s
        w.add(t, 5000 + (t - 5) * 100)
    assert w.rate() == pytest.approx(100.0)  # the fast start has left the window
    assert w.points[0][0] <= 30 - 10  # the window stays spanned


def test_rate_never_goes_negative_and_ignores_a_clock_that_stands_still() -> None:
    w = RateWindow(window=10)
    w.add(1, 100)
    w.add(1, 100)
    assert w.rate() is None
    w.add(2, 50)  # a reset position row: no negative speed
    assert w.rate() == 0.0


def test_tracker_rate_eta_and_per_table_seconds() -> None:
    t = SnapshotTracker("m1", {A: 1000, B: 500}, window=60)
    p = t.observe(100.0, {})
    assert not p.done and p.rows == 0 and p.rows_per_second is None and p.eta_seconds is None
    assert p.ratio == 0.0 and p.estimate == 1500

    p = t.observe(102.0, {A: Applied(400)})
    a = p.tables[0]
    assert (a.rows, a.ratio, a.rows_per_second) == (400, 0.4, 200.0)
    assert a.eta_seconds == 3.0  # 600 rows left at 200 rows/s
    assert p.rows_per_second == 200.0 and p.eta_seconds == 5.5  # 1100 left overall
    assert "400 of ~1,500 rows" in p.describe() and "ETA 6s" in p.describe()

    p = t.observe(104.0, {A: Applied(1000, True, updated_at=103.5), B: Applied(100)})
    a, b = p.tables
    assert a.done and a.ratio == 1.0 and a.eta_seconds == 0.0 and a.rows_per_second is None
    # from the last reading without rows (100) to the commit that completed it (103.5)
    assert a.seconds == 3.5
    assert b.seconds is None and not p.done and p.tables_done == 1
    assert b.rows_per_second == 25.0  # 100 rows over the 4 s since following began

    p = t.observe(106.0, {A: Applied(1000, True, 103.5), B: Applied(500, True, 105.0),
                          ALL_TABLES: Applied(1500, True, 105.9)})
    assert p.done and p.ratio == 1.0 and p.eta_seconds == 0.0 and not p.already_done
    assert p.tables[1].seconds == 3.0  # no rows yet at 102: it started after that
    assert p.elapsed_seconds == 5.0  # first reading to the last table's completing commit
    assert p.rows_per_second == 300.0  # once done: the average over the whole load
    assert p.to_dict()["tables"][A]["rows"] == 1000
    assert "complete after 5.0s" in p.describe()


def test_a_table_starting_later_is_timed_from_its_last_empty_reading() -> None:
    t = SnapshotTracker("m1", {A: 10, B: 10})
    t.observe(0.0, {})
    t.observe(10.0, {A: Applied(10, True)})  # no commit time: the reading's time
    t.observe(20.0, {A: Applied(10, True)})  # B still empty: it has not started
    p = t.observe(25.0, {A: Applied(10, True), B: Applied(10, True)})
    assert [x.seconds for x in p.tables] == [10.0, 5.0]


def test_a_fast_load_done_before_the_first_reading_is_timed_from_since() -> None:
    t = SnapshotTracker("m1", {A: 1000, B: 10}, since=50.0)
    p = t.observe(58.0, {A: Applied(1000, True, 52.5), B: Applied(10, True, 51.0),
                         ALL_TABLES: Applied(1010, True, 57.0)})
    assert p.done and not p.already_done
    assert [x.seconds for x in p.tables] == [2.5, 1.0]
    assert p.elapsed_seconds == 2.5 and p.rows_per_second == 404.0


def test_a_reading_during_the_uncommitted_batch_that_loads_a_table_does_not_hide_its_time(
) -> None:
    """Seen empty at 20.0 while the batch that loads B (begun at 18.5) was not yet committed:
    B's load is timed from the reading before that batch, not left without seconds."""
    t = SnapshotTracker("m1", {A: 10, B: 10}, since=5.0)
    t.observe(10.0, {})
    t.observe(20.0, {A: Applied(10, True, 15.0)})
    p = t.observe(21.0, {A: Applied(10, True, 15.0), B: Applied(10, True, 18.5)})
    assert [x.seconds for x in p.tables] == [5.0, 8.5]


def test_a_commit_stamp_ahead_of_the_reading_is_capped_at_the_reading() -> None:
    t = SnapshotTracker("m1", {A: 5}, since=10.0)
    p = t.observe(12.0, {A: Applied(5, True, 99.0)})  # the target's clock runs ahead
    assert p.tables[0].seconds == 2.0


def test_an_empty_table_is_done_when_the_whole_snapshot_is_and_its_topic_is_read() -> None:
    t = SnapshotTracker("m1", {A: 3, EMPTY: 0})
    p = t.observe(0.0, {A: Applied(3, True)}, consumed={EMPTY})
    assert not p.done  # A is done, but the snapshot has not said it is over
    empty = p.tables[1]
    assert not empty.done and empty.eta_seconds == 0.0  # nothing to load: no wait estimated
    p = t.observe(2.0, {A: Applied(3, True), ALL_TABLES: Applied(4, True)}, consumed={EMPTY})
    assert p.done
    empty = p.tables[1]
    assert (empty.rows, empty.done, empty.ratio, empty.seconds) == (0, True, 1.0, 0.0)


def test_the_end_mark_alone_does_not_finish_a_table_whose_topic_still_holds_rows() -> None:
    # `*` rides in the heartbeat table's topic and can be applied before other topics are read
    t = SnapshotTracker("m1", {A: 100, B: 50})
    p = t.observe(0.0, {A: Applied(40), ALL_TABLES: Applied(41, True)}, consumed=set())
    assert not p.done and [x.done for x in p.tables] == [False, False]
    p = t.observe(1.0, {A: Applied(100, True), B: Applied(1), ALL_TABLES: Applied(102, True)},
                  consumed={B})  # a one-row table marked `first`: no mark of its own
    assert p.done and p.tables[1].seconds == 1.0


def test_a_snapshot_done_before_following_returns_at_once_without_seconds() -> None:
    t = SnapshotTracker("m1", {A: 1000, EMPTY: 0})
    p = t.observe(50.0, {A: Applied(1000, True, 20.0), ALL_TABLES: Applied(1001, True, 49.0)},
                  consumed={EMPTY})
    assert p.done and p.already_done and p.elapsed_seconds == 0.0
    assert p.tables[0].seconds is None and p.tables[0].rows == 1000
    assert p.rows_per_second is None and "already complete" in p.describe()


def test_a_run_that_restarted_the_applier_after_an_earlier_load_is_already_done() -> None:
    t = SnapshotTracker("m1", {A: 1000}, since=100.0)
    p = t.observe(105.0, {A: Applied(1000, True, 40.0), ALL_TABLES: Applied(1000, True, 104)})
    assert p.already_done and p.tables[0].seconds is None


def test_only_empty_tables_loaded_now_are_not_already_done() -> None:
    t = SnapshotTracker("m1", {EMPTY: 0}, since=100.0)
    p = t.observe(103.0, {ALL_TABLES: Applied(1, True, 102.0)}, consumed={EMPTY})
    assert p.done and not p.already_done and p.tables[0].seconds == 0.0


def test_durations_read_well() -> None:
    assert format_seconds(4.4) == "4s"
    assert format_seconds(75) == "1m15s"
    assert format_seconds(3 * 3600 + 125) == "3h02m"
