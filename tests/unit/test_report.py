"""The report: the go/no-go decision rule by rule, JSON round trip, markdown and HTML rendering,
and that no secret reaches any of them."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest

from migwatch import report as R
from migwatch.config import parse_spec
from migwatch.schema_changes import (
    ACCEPTED,
    ADDED,
    CONTINUED,
    DROPPED,
    FOLLOWED,
    STOPPED,
    ColumnChange,
    SchemaChange,
)

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
SECRET = "s3cr3t-Hunter2"


def table(name: str = "public.orders", **kw: object) -> R.TableFigures:
    base: dict[str, object] = {
        "source_table": name,
        "target_table": name,
        "rows_source": 100,
        "rows_target": 100,
        "rows_snapshot": 90,
        "changes_applied": 12,
        "event_time_lag_seconds": 0.4,
        "validation": "equal",
    }
    return R.TableFigures.model_validate({**base, **kw})


def measure(name: str = "data_lag_seconds", last: float = 1.0, **kw: float) -> R.LagMeasure:
    limits = {"caught_up": 10.0, "warn": 60.0, "critical": 300.0, **kw}
    return R.LagMeasure(name=name, unit="seconds", last=last, peak=last, **limits)


def go_inputs(**over: object) -> dict[str, object]:
    args: dict[str, object] = {
        "caught_up": True,
        "tables": [table(), table("public.customers")],
        "lag": [measure()],
        "dlq_events": 0,
        "errors": [],
        "slot": R.SlotRetention(
            slot="migwatch_x", retained_wal_bytes=1 << 20, warn_bytes=1 << 30, limit_bytes=4 << 30
        ),
    }
    args.update(over)
    return args


# ------------------------------------------------------------------------------------ decide
def test_everything_fine_is_go_with_every_check_passed() -> None:
    v = R.decide(**go_inputs())  # type: ignore[arg-type]
    assert v.go and v.label == "GO"
    assert v.reasons == []
    assert [c.name for c in v.checks] == [
        "caught up",
        "lag under critical",
        "validation",
        "expectations",
        "schema changes",
        "dead-letter queue",
        "errors",
        "slot retention",
        "schema",
    ]
    assert all(c.passed for c in v.checks)


def test_not_caught_up_is_no_go_with_the_gate_reason_and_the_measures_behind() -> None:
    v = R.decide(
        **go_inputs(
            caught_up=False,
            gate_reason="timed out after 1800s",
            lag=[measure(last=42.0), measure("event_time_lag_seconds", last=3.0, caught_up=5.0)],
        )
    )  # type: ignore[arg-type]
    assert not v.go
    assert len(v.reasons) == 1
    assert "not caught up: timed out after 1800s" in v.reasons[0]
    assert "data_lag_seconds 42 s > 10 s" in v.reasons[0]
    assert "event_time_lag_seconds" not in v.reasons[0]  # it is under its threshold


def test_caught_up_but_a_late_burst_only_warns() -> None:
    v = R.decide(**go_inputs(lag=[measure(last=12.0)]))  # type: ignore[arg-type]
    assert v.go
    assert any("above its caught-up threshold" in w for w in v.warnings)


def test_lag_over_critical_blocks_even_when_the_gate_passed() -> None:
    v = R.decide(**go_inputs(lag=[measure(last=301.0)]))  # type: ignore[arg-type]
    assert not v.go
    assert v.reasons == ["data_lag_seconds is 5.02 min, over its critical threshold 5 min"]


def test_mismatched_table_is_no_go_naming_table_and_key() -> None:
    bad = table(
        "public.orders",
        validation="mismatched",
        mismatched_rows=2,
        differing_keys=[{"key": {"id": 42}, "kind": "different"}, {"key": {"id": 7}}],
    )
    v = R.decide(**go_inputs(tables=[bad, table("public.customers")]))  # type: ignore[arg-type]
    assert not v.go
    assert v.reasons == [
        'public.orders: 2 row(s) differ from public.orders (keys {"id":42}, {"id":7})'
    ]
    assert not next(c for c in v.checks if c.name == "validation").passed


def test_pending_and_unchecked_tables_block_too() -> None:
    v = R.decide(
        **go_inputs(
            tables=[
                table("public.a", validation="pending", mismatched_rows=1),
                table("public.b", validation="not_checked"),
            ]
        )
    )  # type: ignore[arg-type]
    assert not v.go
    assert v.reasons == [
        "public.a: 1 row(s) still pending revalidation",
        "public.b: not validated",
    ]


def test_no_table_at_all_is_not_a_go() -> None:
    assert not R.decide(**go_inputs(tables=[])).go  # type: ignore[arg-type]


def test_dead_lettered_events_block() -> None:
    v = R.decide(**go_inputs(dlq_events=3))  # type: ignore[arg-type]
    assert not v.go
    assert v.reasons == ["3 event(s) went to the dead-letter topic and were not applied"]


def test_failed_stage_blocks_but_recovered_errors_only_warn() -> None:
    errors = [
        R.RunError(stage="migrate", error_type="TransientError", count=2, recovered=True),
        R.RunError(stage="validate", error_type="PermanentError", message="missing table"),
    ]
    v = R.decide(**go_inputs(errors=errors))  # type: ignore[arg-type]
    assert v.reasons == ["validate failed: PermanentError (missing table)"]
    assert v.warnings == ["migrate: 2 TransientError retried and recovered"]
    v2 = R.decide(**go_inputs(errors=errors[:1]))  # type: ignore[arg-type]
    assert v2.go


@pytest.mark.parametrize(
    ("retained", "go", "warned"),
    [(1 << 20, True, False), (2 << 30, True, True), (int(3.3 * (1 << 30)), False, False)],
)
def test_slot_retention_warns_then_blocks_near_its_limit(
    retained: int, go: bool, warned: bool
) -> None:
    slot = R.SlotRetention(
        slot="migwatch_x", retained_wal_bytes=retained, warn_bytes=1 << 30, limit_bytes=4 << 30
    )
    v = R.decide(**go_inputs(slot=slot))  # type: ignore[arg-type]
    assert v.go is go
    assert any("slot migwatch_x" in w for w in v.warnings) is warned
    if not go:
        assert "82% of its limit 4 GiB" in v.reasons[0]


def test_several_problems_give_several_reasons_in_check_order() -> None:
    v = R.decide(
        **go_inputs(caught_up=False, dlq_events=1, tables=[table(validation="mismatched")])
    )  # type: ignore[arg-type]
    assert [r.split(":")[0].split(" ")[0] for r in v.reasons] == ["not", "public.orders", "1"]


# ------------------------------------------------------------------------------------ build
def spec_with_secret_env() -> object:
    return parse_spec(
        {
            "source": {
                "kind": "postgres",
                "port": 15432,
                "database": "shop",
                "user": "app",
                "password": {"env": "SRC_PW"},
            },
            "target": {"kind": "postgres", "port": 15433, "database": "shop2", "user": "app"},
            "tables": ["orders"],
            "validation": {"sample_cap": 2},
        }
    )


def sample_report(**over: object) -> R.Report:
    series = R.TimeSeries()
    for i in range(30):
        t = T0.timestamp() + i * 10
        series.record("lag", "data_lag_seconds", "seconds", t, 30 - i)
        series.record("throughput", "change events applied/s", "per_second", t, 20 + i % 3)
        series.record("progress", "public.orders", "ratio", t, min(1.0, i / 20))
    args: dict[str, object] = {
        "migration_id": "rep-1",
        "started_at": T0,
        "finished_at": T0 + timedelta(minutes=5),
        "tables": [table().model_dump()],
        "caught_up": True,
        "spec": spec_with_secret_env(),
        "series": series,
        "slot": R.slot_retention("migwatch_rep_1", 5 << 20),
        "links": {"Prefect run": "http://127.0.0.1:4200/runs/flow-run/abc"},
    }
    args.update(over)
    return R.build_report(**args)  # type: ignore[arg-type]


def test_build_report_summarises_lag_from_series_with_spec_thresholds() -> None:
    rep = sample_report()
    assert rep.verdict.go
    (m,) = rep.lag
    assert (m.name, m.last, m.peak, m.warn, m.critical) == ("data_lag_seconds", 1, 30, 60, 300)
    assert rep.source == "postgres://app@127.0.0.1:15432/shop"
    assert rep.duration_seconds == 300


def test_build_report_caps_the_key_sample_at_the_spec_cap() -> None:
    keys = [{"key": {"id": i}} for i in range(5)]
    rep = sample_report(
        tables=[table(validation="mismatched", mismatched_rows=5, differing_keys=keys)]
    )
    t = rep.tables[0]
    assert len(t.differing_keys) == 2 and t.differing_keys_truncated
    assert not rep.verdict.go


def test_json_round_trip_is_lossless() -> None:
    rep = sample_report()
    text = R.render_json(rep)
    json.loads(text)  # plain JSON
    assert R.load_json(text) == rep


# ------------------------------------------------------------------------------------ secrets
@pytest.mark.parametrize(
    "text",
    [
        f"connect to postgresql://app:{SECRET}@db:5432/shop failed",
        f"host=db password={SECRET} dbname=shop",
        f"token: {SECRET}",
        f"Authorization: Bearer {SECRET}",
        f"mongodb://root:{SECRET}@mongo/",
    ],
)
def test_scrub_masks_credentials(text: str) -> None:
    out = R.scrub(text)
    assert SECRET not in out
    assert "***" in out


def test_no_secret_reaches_json_markdown_or_html(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SRC_PW", SECRET)
    rep = sample_report(
        caught_up=False,
        gate_reason=f"gate timed out; dsn postgresql://app:{SECRET}@127.0.0.1/shop",
        errors=[
            {
                "stage": "migrate",
                "error_type": "PermanentError",
                "message": f"password authentication failed: password={SECRET}",
            }
        ],
        tables=[table(note=f"checked with token={SECRET}")],
    )
    for text in (R.render_json(rep), R.render_markdown(rep), R.render_html(rep)):
        assert SECRET not in text
        assert "postgres://app@127.0.0.1:15432/shop" in text or "app@127.0.0.1" in text


# ------------------------------------------------------------------------------------ markdown
def test_markdown_opens_with_the_verdict_and_lists_tables_and_link() -> None:
    rep = sample_report(dlq_events=2)
    md = R.render_markdown(rep, "file:///tmp/report.html")
    first = md.splitlines()[0]
    assert first.startswith("# ") and "NO-GO" in first and "rep-1" in first
    assert "- 2 event(s) went to the dead-letter topic" in md
    assert "| public.orders | 100 | 100 | while comparing | 90 | 12 | 0.4 s | equal |" in md
    assert "[HTML report](file:///tmp/report.html)" in md


# ------------------------------------------------------------------------------------ html
def test_html_is_self_contained_and_loads_nothing() -> None:
    html = R.render_html(sample_report())
    assert "default-src 'none'" in html  # the browser may fetch nothing
    assert not re.search(r"<script|<link|<img|<iframe|@import|url\(|src=", html, re.I)
    # the only absolute URLs are the report's own links and the SVG namespace
    urls = set(re.findall(r"https?://[^\"'<> ]+", html))
    assert urls == {"http://www.w3.org/2000/svg", "http://127.0.0.1:4200/runs/flow-run/abc"}


def test_html_puts_the_verdict_first_then_tables_and_charts() -> None:
    rep = sample_report(dlq_events=1)
    html = R.render_html(rep)
    body = html.split("<body>", 1)[1]
    assert body.startswith('<section class="verdict nogo" id="verdict" data-go="false">')
    assert body.index("NO-GO") < body.index('id="tables"') < body.index("data-chart=")
    assert '<tr data-table="public.orders">' in html
    for chart in ("lag-seconds", "throughput", "progress"):
        assert f'data-chart="{chart}"' in html
    # 30 lag samples, all drawn as points
    lag_chart = html.split('data-chart="lag-seconds"', 1)[1].split("</svg>", 1)[0]
    assert 'data-series="data_lag_seconds" data-points="30"' in lag_chart
    assert lag_chart.count('class="point"') == 30
    # thresholds far above a 30 s peak are named, not drawn (they would flatten the line)
    assert 'class="threshold"' not in lag_chart
    assert "above the plotted range: warn 60 s, critical 5 min" in html


def test_html_escapes_names() -> None:
    rep = sample_report(tables=[table('public."<b>x</b>"')])
    html = R.render_html(rep)
    assert "<b>x</b>" not in html
    assert "&lt;b&gt;x&lt;/b&gt;" in html


def test_empty_series_render_a_placeholder_not_an_error() -> None:
    html = R.render_html(sample_report(series=R.TimeSeries()))
    assert html.count("no data sampled during this run") == 3  # lag, throughput, progress


def test_report_module_does_not_import_prefect() -> None:
    code = "import sys, migwatch.report, migwatch.dashboard, migwatch.alerts, migwatch.gate_check;"
    code += "print('prefect' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ------------------------------------------------------------------------- stage results
def _two_table_spec() -> object:
    return parse_spec({
        "source": {"kind": "postgres", "port": 15432, "database": "shop"},
        "target": {"kind": "postgres", "port": 15433, "database": "shop"},
        "tables": ["orders", {"source": "public.Reviews", "target": "archive.reviews"}],
    })


def test_table_figures_come_from_each_stage_result() -> None:
    validation = {"tables": [
        {"table": "public.orders", "status": "different", "source_rows": 10, "target_rows": 9,
         "missing": 1, "extra": 0, "changed": 2, "sample_truncated": True,
         "sample": [{"kind": "missing", "key": {"id": 7}}, {"kind": "changed", "key": {"id": 8}}]},
        {"table": "public.Reviews", "status": "pending", "source_rows": 5, "target_rows": 5,
         "missing": 0, "extra": 0, "changed": 1, "sample": [], "warnings": ["no primary key"]},
    ]}
    figures = R.table_figures(_two_table_spec(), validation,  # type: ignore[arg-type]
                              snapshot_rows={"public.orders": 8},
                              applied_events={"public.orders": 11, "*": 99},
                              table_lag={"public.orders": 0.5})
    orders, reviews = figures
    assert (orders.rows_source, orders.rows_target, orders.rows_snapshot) == (10, 9, 8)
    assert orders.changes_applied == 3  # events minus the snapshot's reads
    assert orders.validation == "mismatched" and orders.mismatched_rows == 3
    assert orders.differing_keys == [{"id": 7}, {"id": 8}] and orders.differing_keys_truncated
    assert orders.event_time_lag_seconds == 0.5
    assert reviews.target_table == "archive.reviews" and reviews.validation == "pending"
    assert reviews.changes_applied is None and reviews.note == "no primary key"
    v = R.decide(caught_up=True, tables=figures)
    assert not v.go and any("archive.reviews" in r and "pending" in r for r in v.reasons)


def test_a_table_no_stage_saw_is_not_checked_and_blocks_go() -> None:
    figures = R.table_figures(_two_table_spec())  # type: ignore[arg-type]
    assert [f.validation for f in figures] == ["not_checked", "not_checked"]
    assert all(f.rows_source is None for f in figures)
    assert not R.decide(caught_up=True, tables=figures).go


def test_series_from_monitor_samples_and_the_prometheus_fallback() -> None:
    columns = {"at": [1.0, 2.0, 3.0], "event_time_lag_seconds": [4.0, None, 1.0],
               "consumer_lag_messages": [10, 5, 0], "throughput_msgs_per_second": [None, 5, 5]}
    series = R.series_from_samples(columns)
    lag = {s.name: s.points for s in series.lag}
    assert lag["event_time_lag_seconds"] == [(1.0, 4.0), (3.0, 1.0)]
    assert lag["consumer_lag_messages"][-1] == (3.0, 0.0)
    assert [p for s in series.throughput for p in s.points] == [(2.0, 5.0), (3.0, 5.0)]
    from_prometheus = R.TimeSeries(progress=[R.SeriesData(name="t", unit="ratio",
                                                          points=[(1.0, 1.0)])])
    merged = R.merge_series(from_prometheus, series)
    assert merged.progress == from_prometheus.progress and merged.lag == series.lag


def test_failed_expectations_block_go_except_a_row_count_the_comparison_owns() -> None:
    validation = {"tables": [
        {"table": "public.orders", "status": "equal", "source_rows": 3, "target_rows": 3,
         "expectations": {"applies": True, "failed": [
             {"expectation": "expect_table_row_count_to_equal", "kwargs": {"value": 4}},
             {"expectation": "expect_column_values_to_not_be_null",
              "kwargs": {"column": "email"}}]}},
        {"table": "public.Reviews", "status": "equal", "expectations": {"applies": True,
         "failed": [{"expectation": "expect_table_row_count_to_equal", "kwargs": {}}]}},
    ]}
    orders, reviews = R.table_figures(_two_table_spec(), validation)  # type: ignore[arg-type]
    assert orders.failed_expectations == ["expect_column_values_to_not_be_null(email)"]
    assert reviews.failed_expectations == []  # the comparison counted the rows itself
    v = R.decide(caught_up=True, tables=[orders, reviews])
    assert not v.go
    assert v.reasons == ["public.orders: fails expect_column_values_to_not_be_null(email)"]
    assert R.decide(caught_up=True, tables=[reviews]).go


def test_run_notes_are_said_once_in_every_rendering() -> None:
    note = "MongoDB target: timestamps are compared at millisecond precision"
    rep = R.build_report(migration_id="n-1", started_at=T0, finished_at=T0, caught_up=True,
                         tables=[table()], notes=[note, "token=abc counted at LSN 0/1"])
    assert rep.notes == [note, "token=*** counted at LSN 0/1"]
    assert R.render_html(rep).count(note) == 1
    assert R.render_markdown(rep).count(note) == 1
    assert R.load_json(R.render_json(rep)).notes == rep.notes


def test_counts_of_an_equal_table_on_a_moving_source_say_when_they_were_taken() -> None:
    """Unequal counts beside "equal" read as a contradiction unless the report says when each
    count was taken: at one LSN (revalidation) or at two moments of the comparison."""
    at_lsn = table("public.orders", rows_source=1204, rows_target=1204, counts_lsn="0/1A2B3C4")
    moving = table("public.customers", rows_source=510, rows_target=507)
    rep = sample_report(tables=[at_lsn.model_dump(), moving.model_dump()])
    md, html = R.render_markdown(rep), R.render_html(rep)
    for text in (md, html):
        assert "at LSN 0/1A2B3C4" in text
        assert "at two moments while comparing (source moving)" in text
    rows = {r["source table"]: r for r in R.table_rows(rep)}
    assert rows["public.orders"]["rows counted"] == "at LSN 0/1A2B3C4"
    figures = R.table_figures(
        spec_with_secret_env(),
        {"tables": [{"table": "public.orders", "status": "equal", "source_rows": 3,
                     "target_rows": 3, "counts_lsn": "0/FF"}]})
    assert next(f for f in figures if f.source_table == "public.orders").counts_lsn == "0/FF"


# ------------------------------------------------------------------------- schema changes
RESUME = "`migwatch resume-table <spec> {} --migration-id {} --accept` or a versioned migration"


def schema_history() -> list[SchemaChange]:
    """orders followed an added column; reviews stopped, was accepted and went on; customers
    stopped and still is."""
    at = T0.timestamp()
    gone = (ColumnChange("gone", DROPPED, None, "text"),)
    return [
        SchemaChange(at + 60, "public.orders", FOLLOWED, (ColumnChange("note", ADDED, "text"),)),
        SchemaChange(at + 70, "public.reviews", STOPPED, gone),
        SchemaChange(at + 80, "public.reviews", ACCEPTED, gone,
                     f"removed from the target: gone; token={SECRET}"),
        SchemaChange(at + 90, "public.reviews", CONTINUED, gone),
        SchemaChange(at + 120, "public.customers", STOPPED, gone, "the target refused it"),
    ]


def test_a_table_still_stopped_by_a_schema_change_is_no_go() -> None:
    v = R.decide(**go_inputs(  # type: ignore[arg-type]
        stopped_tables={"public.t": "column 'gone' dropped on the source"}))
    assert not v.go
    assert v.reasons == ["table public.t stopped by a schema change: column 'gone' dropped on "
                         "the source — " + RESUME.format("public.t", "<id>")]
    check = next(c for c in v.checks if c.name == "schema changes")
    assert not check.passed and check.detail == v.reasons[0]


def test_a_schema_change_history_that_could_not_be_read_is_no_go() -> None:
    v = R.decide(**go_inputs(  # type: ignore[arg-type]
        schema_changes_unread=f"PermanentError: postgresql://app:{SECRET}@db/x refused"))
    assert not v.go
    (reason,) = v.reasons
    assert reason.startswith("the schema-change history could not be read (PermanentError: ")
    assert reason.endswith("a table stopped by a schema change cannot be ruled out")
    assert SECRET not in reason


def test_build_report_lists_every_schema_change_and_blocks_on_a_table_still_stopped() -> None:
    rep = sample_report(schema_changes=schema_history())
    assert [(r.table, r.outcome) for r in rep.schema_changes] == [
        ("public.orders", "followed"), ("public.reviews", "stopped"),
        ("public.reviews", "accepted"), ("public.reviews", "continued"),
        ("public.customers", "stopped")]
    first = rep.schema_changes[0]
    assert (first.at, first.change, first.note) == (
        T0 + timedelta(seconds=60), "column 'note' added (text)", None)
    assert rep.schema_changes[2].note == "removed from the target: gone; token=***"
    # reviews went on after its stop: only customers blocks
    assert rep.verdict.reasons == [
        "table public.customers stopped by a schema change: column 'gone' dropped on the "
        "source (the target refused it) — " + RESUME.format("public.customers", "rep-1")]
    assert R.load_json(R.render_json(rep)) == rep
    assert sample_report(schema_changes=schema_history()[:4]).verdict.go


def test_schema_changes_render_as_a_section_only_when_there_are_some() -> None:
    rep = sample_report(schema_changes=schema_history())
    md, html = R.render_markdown(rep), R.render_html(rep)
    assert ("| 2026-11-25 12:01:00 | public.orders | column 'note' added (text) | followed — "
            "the target was altered the same way |") in md
    assert ("| 2026-11-25 12:02:00 | public.customers | column 'gone' dropped on the source | "
            "stopped — the table's apply stopped before the first event that needs the change "
            "(the target refused it) |") in md
    assert md.count("| public.reviews |") == 3
    assert html.index('id="tables"') < html.index('<table id="schema-changes">')
    assert html.count('<tr data-table="public.reviews" data-outcome=') == 3
    stopped = html.split('<tr data-table="public.customers" data-outcome="stopped">', 1)[1]
    stopped = stopped.split("</tr>", 1)[0]
    assert "<td>2026-11-25 12:02:00</td>" in stopped
    assert "column &#x27;gone&#x27; dropped on the source" in stopped
    assert '<span class="badge fail">stopped</span>' in stopped
    assert "the target refused it" in stopped
    assert SECRET not in html and SECRET not in md

    plain = sample_report()
    assert "schema change at" not in R.render_markdown(plain)
    assert "schema-changes" not in R.render_html(plain)
    assert "Schema changes" not in R.render_html(plain)
