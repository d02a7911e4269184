"""The Grafana dashboard built with grafana-foundation-sdk: panels, queries, thresholds, variable,
and the files `migwatch dashboard` writes. (Its PromQL runs against the real Prometheus in
tests/integration/test_observability.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from migwatch import dashboard, metrics, promql
from migwatch.config import parse_spec


def board() -> dict:
    return dashboard.dashboard_json()


def test_dashboard_targets_grafana_11_schema_with_a_stable_uid() -> None:
    d = board()
    assert d["schemaVersion"] == 41
    assert d["uid"] == dashboard.UID
    ids = [p["id"] for p in d["panels"]]
    assert ids == list(range(1, len(ids) + 1))


def test_migration_id_variable_feeds_every_query() -> None:
    d = board()
    variables = {v["name"]: v for v in d["templating"]["list"]}
    mid = variables["migration_id"]
    assert mid["type"] == "query" and mid["multi"] and mid["includeAll"]
    assert mid["allValue"] == ".*"
    assert mid["query"] == "label_values(migration_data_lag_seconds, migration_id)"
    assert variables["datasource"]["query"] == "prometheus"
    for q in dashboard.panel_exprs(d):
        assert 'migration_id=~"$migration_id"' in q.expr, q.title


def test_each_required_panel_is_there_with_its_metric() -> None:
    by_title = {q.title: q.expr for q in dashboard.panel_exprs(board())}
    expected = {
        "Migration progress (rows/s by table)": "rate(migration_rows_total{",
        "Data lag": "migration_data_lag_seconds{",
        "Error rate (errors/s)": "rate(migration_errors_total{",
        "Consumer lag per partition (messages)": "cdc_consumer_lag_messages{",
        "Event-time lag per table": "cdc_replication_lag_seconds{",
        "Validation mismatches (rows)": "migwatch_validation_mismatched_rows{",
        "Dead-lettered events": "migwatch_dlq_events_total{",
        "Caught up": "migwatch_caught_up{",
        "Initial load (rows/s)": "migwatch_load_rows_per_second{",
    }
    assert set(by_title) == set(expected)
    for title, fragment in expected.items():
        assert fragment in by_title[title], title
    assert by_title["Migration progress (rows/s by table)"].startswith(
        "sum by (migration_id, table_name) (rate(migration_rows_total{"
    )
    assert "[5m]" in by_title["Migration progress (rows/s by table)"]


def test_panel_queries_name_only_exported_metrics() -> None:
    exported = promql.exported_names()
    assert {"migration_data_lag_seconds", "migwatch_dlq_events_total"} <= exported
    queries = dashboard.panel_exprs(board())
    assert {"Data lag", "Dead-lettered events"} <= {q.title for q in queries}
    for q in queries:
        names = promql.metric_names(q.expr)
        assert names and names <= exported, (q.title, names - exported)


def test_data_lag_thresholds_are_green_yellow_red_at_0_60_300() -> None:
    panel = next(p for p in board()["panels"] if p["title"] == "Data lag")
    defaults = panel["fieldConfig"]["defaults"]
    assert defaults["unit"] == "s"
    steps = defaults["thresholds"]["steps"]
    # Grafana's base step has value null (-inf): for a lag that is "from 0"
    assert steps == [
        {"value": None, "color": "green"},
        {"value": 60.0, "color": "yellow"},
        {"value": 300.0, "color": "red"},
    ]
    assert defaults["custom"]["thresholdsStyle"]["mode"] == "line+area"


def test_lag_thresholds_follow_the_spec() -> None:
    spec = parse_spec(
        {
            "source": {"kind": "postgres", "port": 1, "database": "a"},
            "target": {"kind": "postgres", "port": 2, "database": "b"},
            "tables": ["t"],
            "monitor": {
                "thresholds": {
                    "event_time_lag_seconds": {"warn": 20, "critical": 40, "caught_up": 1},
                    "end_to_end_lag_seconds": {"warn": 20, "critical": 40, "caught_up": 1},
                }
            },
        }
    )
    panel = next(p for p in dashboard.dashboard_json(spec)["panels"] if p["title"] == "Data lag")
    assert [s["value"] for s in panel["fieldConfig"]["defaults"]["thresholds"]["steps"]] == [
        None,
        20.0,
        40.0,
    ]


def test_selectors_refuse_unknown_labels() -> None:
    with pytest.raises(ValueError, match="no label"):
        promql.selector(metrics.MIGRATION_ROWS, table="x")
    assert promql.name(metrics.MIGRATION_ROWS) == "migration_rows_total"
    assert promql.name(metrics.MIGRATION_DATA_LAG) == "migration_data_lag_seconds"
    assert promql.selector(metrics.CAUGHT_UP, migration_id='a"b') == (
        'migwatch_caught_up{migration_id="a\\"b"}'
    )


def test_write_bundle_writes_dashboard_provisioning_and_rules(tmp_path: Path) -> None:
    paths = dashboard.write_bundle(tmp_path / "out", migration_id="abc")
    assert json.loads(paths["dashboard"].read_text()) == board()
    prov = yaml.safe_load(paths["provisioning"].read_text())
    (provider,) = prov["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == str((tmp_path / "out").resolve())
    assert paths["rules"].name == "migwatch-abc.yml"
    assert 'migration_id="abc"' in paths["rules"].read_text()
