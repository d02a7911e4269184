"""The Grafana dashboard of migwatch, built in code with grafana-foundation-sdk (Grafana 11.6).

Every query is built from the metric objects of `migwatch.metrics` through `migwatch.promql`, so a
renamed metric or label fails here rather than drawing an empty panel. A `datasource` variable
picks the Prometheus to read and a `migration_id` variable (multi-value, "All" = `.*`) filters
every panel. `dashboard_json()` is both the file Grafana's provisioning reads and the `dashboard`
of a `POST /api/dashboards/db`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import prometheus, stat, timeseries
from grafana_foundation_sdk.builders.common import (
    GraphThresholdsStyleConfig,
    ReduceDataOptions,
    VizLegendOptions,
)
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model

from migwatch import metrics, promql
from migwatch.alerts import data_lag_threshold
from migwatch.config import MigrationSpec, MonitorSpec

UID = "migwatch-migrations"
TITLE = "migwatch — migrations"
DATASOURCE = model.DataSourceRef(type_val="prometheus", uid="${datasource}")
ID_MATCH = "=~$migration_id"


@dataclass(frozen=True)
class PanelQuery:
    """A panel's title and its PromQL, as the dashboard holds them (for checks and tests)."""

    title: str
    expr: str


def _sel(metric: Any) -> str:
    return promql.selector(metric, migration_id=ID_MATCH)


def queries(spec: MigrationSpec | None = None) -> list[PanelQuery]:
    """Each panel's PromQL, in dashboard order."""
    m = metrics
    return [
        PanelQuery(
            "Migration progress (rows/s by table)",
            f"sum {promql.by(m.MIGRATION_ROWS, 'migration_id', 'table_name')} "
            f"(rate({_sel(m.MIGRATION_ROWS)}[5m]))",
        ),
        PanelQuery(
            "Data lag",
            f"max {promql.by(m.MIGRATION_DATA_LAG, 'migration_id')} ({_sel(m.MIGRATION_DATA_LAG)})",
        ),
        PanelQuery(
            "Error rate (errors/s)",
            f"sum {promql.by(m.MIGRATION_ERRORS, 'migration_id', 'stage', 'error_type')} "
            f"(rate({_sel(m.MIGRATION_ERRORS)}[5m]))",
        ),
        PanelQuery(
            "Consumer lag per partition (messages)",
            f"max {promql.by(m.CDC_CONSUMER_LAG, 'migration_id', 'topic', 'partition')} "
            f"({_sel(m.CDC_CONSUMER_LAG)})",
        ),
        PanelQuery(
            "Event-time lag per table",
            f"max {promql.by(m.CDC_REPLICATION_LAG, 'migration_id', 'source_table')} "
            f"({_sel(m.CDC_REPLICATION_LAG)})",
        ),
        PanelQuery(
            "Validation mismatches (rows)",
            f"sum {promql.by(m.VALIDATION_MISMATCHES, 'migration_id', 'table_name')} "
            f"({_sel(m.VALIDATION_MISMATCHES)})",
        ),
        PanelQuery(
            "Dead-lettered events",
            f"sum {promql.by(m.DLQ_EVENTS, 'migration_id')} ({_sel(m.DLQ_EVENTS)})",
        ),
        PanelQuery(
            "Caught up", f"max {promql.by(m.CAUGHT_UP, 'migration_id')} ({_sel(m.CAUGHT_UP)})"
        ),
        PanelQuery(
            "Initial load (rows/s)",
            f"max {promql.by(m.LOAD_THROUGHPUT, 'migration_id')} ({_sel(m.LOAD_THROUGHPUT)})",
        ),
    ]


def _target(expr: str, legend: str) -> prometheus.Dataquery:
    return (
        prometheus.Dataquery()
        .ref_id("A")
        .expr(expr)
        .legend_format(legend)
        .range()
        .datasource(DATASOURCE)
    )


def _steps(*steps: tuple[float | None, str]) -> dash.ThresholdsConfig:
    return (
        dash.ThresholdsConfig()
        .mode(model.ThresholdsMode.ABSOLUTE)
        .steps([model.Threshold(value=v, color=c) for v, c in steps])
    )


def _series(q: PanelQuery, legend: str, unit: str, width: int = 12) -> timeseries.Panel:
    return (
        timeseries.Panel()
        .title(q.title)
        .datasource(DATASOURCE)
        .with_target(_target(q.expr, legend))
        .unit(unit)
        .min(0)
        .span(width)
        .height(8)
        .legend(
            VizLegendOptions()
            .show_legend(True)
            .display_mode(common.LegendDisplayMode.TABLE)
            .placement(common.LegendPlacement.BOTTOM)
            .calcs(["lastNotNull", "max"])
        )
    )


def _stat(q: PanelQuery, legend: str, steps: dash.ThresholdsConfig, width: int = 8) -> stat.Panel:
    return (
        stat.Panel()
        .title(q.title)
        .datasource(DATASOURCE)
        .with_target(_target(q.expr, legend))
        .thresholds(steps)
        .span(width)
        .height(6)
        .color_mode(common.BigValueColorMode.BACKGROUND)
        .graph_mode(common.BigValueGraphMode.NONE)
        .reduce_options(ReduceDataOptions().calcs(["lastNotNull"]).values(False))
    )


def build(spec: MigrationSpec | None = None) -> model.Dashboard:
    """The dashboard model (data lag thresholds from the spec, 60/300 s by default)."""
    lag = data_lag_threshold(spec.monitor if spec is not None else MonitorSpec())
    (progress, data_lag, errors, consumer, table_lag, mismatches, dlq, caught_up,
     load) = queries(spec)
    caught_up_map = model.ValueMap(
        options={
            "0": model.ValueMappingResult(text="catching up", color="orange", index=0),
            "1": model.ValueMappingResult(text="caught up", color="green", index=1),
        }
    )
    builder = (
        dash.Dashboard(TITLE)
        .uid(UID)
        .tags(["migwatch", "migration", "cdc"])
        .description("Progress, lag, errors and validation of migwatch migrations.")
        .refresh("10s")
        .time("now-1h", "now")
        .timezone("browser")
        .editable()
        .tooltip(model.DashboardCursorSync.CROSSHAIR)
        .with_variable(dash.DatasourceVariable("datasource").label("Prometheus").type("prometheus"))
        .with_variable(
            dash.QueryVariable("migration_id")
            .label("Migration")
            .datasource(DATASOURCE)
            .query(f"label_values({promql.name(metrics.MIGRATION_DATA_LAG)}, migration_id)")
            .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(model.VariableSort.ALPHABETICAL_ASC)
            .multi(True)
            .include_all(True)
            .all_value(".*")
        )
        .with_panel(
            _stat(caught_up, "{{migration_id}}", _steps((None, "orange"), (1, "green"))).mappings(
                [caught_up_map]
            )
        )
        .with_panel(
            _stat(
                mismatches, "{{migration_id}} {{table_name}}", _steps((None, "green"), (1, "red"))
            ).unit("short")
        )
        .with_panel(
            _stat(dlq, "{{migration_id}}", _steps((None, "green"), (1, "red"))).unit("short")
        )
        .with_panel(
            _series(data_lag, "{{migration_id}}", "s")
            .thresholds(_steps((None, "green"), (lag.warn, "yellow"), (lag.critical, "red")))
            .thresholds_style(
                GraphThresholdsStyleConfig().mode(common.GraphThresholdsStyleMode.LINE_AND_AREA)
            )
        )
        .with_panel(_series(progress, "{{migration_id}} {{table_name}}", "short"))
        .with_panel(_series(load, "{{migration_id}}", "short"))
        .with_panel(_series(table_lag, "{{migration_id}} {{source_table}}", "s"))
        .with_panel(_series(consumer, "{{migration_id}} {{topic}}[{{partition}}]", "short"))
        .with_panel(_series(errors, "{{migration_id}} {{stage}} {{error_type}}", "short", 24))
    )
    built = builder.build()
    for number, panel in enumerate(built.panels or [], start=1):
        panel.id_val = number  # stable ids: Grafana links and provisioning diffs rely on them
    return built


def dashboard_json(spec: MigrationSpec | None = None) -> dict[str, Any]:
    """The dashboard as Grafana's JSON model (plain data)."""
    return json.loads(json.dumps(build(spec), cls=JSONEncoder))


def provisioning_yaml(dashboards_dir: str) -> str:
    """A Grafana file-provisioning provider that loads the dashboards in `dashboards_dir`."""
    import yaml

    return yaml.safe_dump(
        {
            "apiVersion": 1,
            "providers": [
                {
                    "name": "migwatch",
                    "orgId": 1,
                    "folder": "migwatch",
                    "type": "file",
                    "disableDeletion": False,
                    "allowUiUpdates": False,
                    "updateIntervalSeconds": 30,
                    "options": {"path": dashboards_dir, "foldersFromFilesStructure": False},
                }
            ],
        },
        sort_keys=False,
    )


def panel_exprs(dashboard: dict[str, Any]) -> list[PanelQuery]:
    """Every (panel title, PromQL) pair found in a dashboard's JSON model."""
    return [
        PanelQuery(p.get("title", ""), t["expr"])
        for p in dashboard.get("panels", [])
        for t in p.get("targets", [])
        if "expr" in t
    ]


DASHBOARD_FILE = "migwatch-dashboard.json"
PROVISIONING_FILE = "grafana-provisioning.yaml"


def write_bundle(
    out_dir: Path, spec: MigrationSpec | None = None, migration_id: str | None = None
) -> dict[str, Path]:
    """Write the dashboard JSON, a Grafana provisioning file that loads it, and the alert rules
    (scoped to `migration_id` when given) into `out_dir`; return the paths by kind."""
    from migwatch import alerts

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "dashboard": out_dir / DASHBOARD_FILE,
        "provisioning": out_dir / PROVISIONING_FILE,
        "rules": out_dir / alerts.rules_file_name(migration_id),
    }
    paths["dashboard"].write_text(json.dumps(dashboard_json(spec), indent=2) + "\n")
    paths["provisioning"].write_text(provisioning_yaml(str(out_dir.resolve())))
    paths["rules"].write_text(alerts.render_rules(alerts.alert_rules(spec, migration_id)))
    return paths
