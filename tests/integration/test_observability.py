"""Metrics, dashboard queries, report series, alert rules and the CI gate against the real
Prometheus, Pushgateway and Alertmanager of the local stack.

Values are set in migwatch's own REGISTRY under a test migration id and pushed the way batch
stages push them (`migwatch.metrics.push`); every test deletes its Pushgateway group and rules.
"""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.exposition import delete_from_gateway

from migwatch import alerts, dashboard, metrics, promql
from migwatch import report as R
from migwatch.connectors.prometheus import PrometheusClient, Sample
from migwatch.errors import PermanentError, TransientError
from migwatch.stack import Stack
from migwatch.stack.templates import alertmanager_config

MIGWATCH = str(Path(sys.executable).parent / "migwatch")


def new_id(prefix: str = "obs") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def forget(migration_id: str) -> None:
    """Drop every label set of `migration_id` from REGISTRY (tests share one process)."""
    for collector in list(metrics.REGISTRY._collector_to_names):
        names = getattr(collector, "_labelnames", ())
        if "migration_id" not in names:
            continue
        at = names.index("migration_id")
        for labels in list(getattr(collector, "_metrics", {})):
            if labels[at] == migration_id:
                collector.remove(*labels)


class Pushed:
    """Push helper bound to one migration id; cleans REGISTRY and the Pushgateway afterwards."""

    def __init__(self, stack: Stack, migration_id: str) -> None:
        self.stack = stack
        self.id = migration_id
        self.url = stack.address("pushgateway")

    def push(self) -> None:
        metrics.push(self.url, self.id)

    def close(self) -> None:
        forget(self.id)
        delete_from_gateway(
            self.url.removeprefix("http://"), job="migwatch", grouping_key={"migration_id": self.id}
        )


@pytest.fixture
def prom(stack: Stack) -> Iterator[PrometheusClient]:
    with PrometheusClient(stack.address("prometheus")) as client:
        yield client


def wait_for(
    client: PrometheusClient,
    expr: str,
    ok: Callable[[list[Sample]], bool] = bool,
    timeout: float = 30,
) -> list[Sample]:
    """Poll Prometheus until `ok(result)`; fail with the last result after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    result: list[Sample] = []
    while time.monotonic() < deadline:
        result = client.query(expr)
        if ok(result):
            return result
        time.sleep(0.5)
    raise AssertionError(f"Prometheus never satisfied the wait on {expr!r}: last {result}")


def lag_is(value: float) -> Callable[[list[Sample]], bool]:
    return lambda r: len(r) == 1 and r[0].value == value


# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def observed(stack: Stack) -> Iterator[dict[str, Any]]:
    """One migration's metrics pushed twice, a few scrapes apart, the way a run pushes them."""
    mid = new_id()
    p = Pushed(stack, mid)
    start = time.time()
    topic = f"migwatch.{mid}.public.orders"
    with PrometheusClient(stack.address("prometheus")) as client:
        try:
            m = metrics
            m.MIGRATION_ROWS.labels(mid, "public.orders").inc(100)
            m.MIGRATION_DATA_LAG.labels(mid).set(5)
            m.MIGRATION_ERRORS.labels(mid, "validate", "TransientError").inc()
            m.CDC_CONSUMER_LAG.labels(mid, topic, "0").set(40)
            m.CDC_REPLICATION_LAG.labels(mid, "public.orders", "public.orders").set(1.5)
            m.VALIDATION_MISMATCHES.labels(mid, "public.orders", "pending").set(2)
            m.DLQ_EVENTS.labels(mid, "unmappable").inc(3)
            m.CAUGHT_UP.labels(mid).set(0)
            m.CDC_EVENTS.labels(mid, "postgres", "public.orders", "c").inc(10)
            m.SNAPSHOT_PROGRESS.labels(mid, "public.orders").set(0.5)
            p.push()
            lag = promql.selector(m.MIGRATION_DATA_LAG, migration_id=mid)
            wait_for(client, lag, lag_is(5))
            time.sleep(4)  # two more scrapes: rate() needs two samples of each counter
            m.MIGRATION_ROWS.labels(mid, "public.orders").inc(300)
            m.CDC_EVENTS.labels(mid, "postgres", "public.orders", "c").inc(90)
            m.MIGRATION_DATA_LAG.labels(mid).set(7)
            m.CAUGHT_UP.labels(mid).set(1)
            m.SNAPSHOT_PROGRESS.labels(mid, "public.orders").set(1.0)
            m.LOAD_THROUGHPUT.labels(mid).set(1234)
            p.push()
            wait_for(client, lag, lag_is(7))
            time.sleep(2.5)  # one more scrape of the second values
            yield {"id": mid, "start": start, "end": time.time()}
        finally:
            p.close()


def test_every_panel_query_runs_on_prometheus_and_returns_data(
    observed: dict[str, Any], prom: PrometheusClient
) -> None:
    mid = observed["id"]
    exported = promql.exported_names()
    panels = dashboard.panel_exprs(dashboard.dashboard_json())
    assert len(panels) == 9
    for q in panels:
        assert promql.metric_names(q.expr) <= exported, q.title
        # Grafana interpolates the variable as a regex; use the test's id the same way
        expr = q.expr.replace("$migration_id", mid)
        result = prom.query(expr)  # a parse error would raise PermanentError here
        assert result, f"{q.title}: no data for {expr}"
        assert {s.labels.get("migration_id") for s in result} == {mid}, q.title
    # each metric the dashboard names is really a series Prometheus holds for this id
    for name in set().union(*(promql.metric_names(q.expr) for q in panels)):
        assert prom.series(f'{name}{{migration_id="{mid}"}}'), name


def test_panel_values_are_the_pushed_ones(observed: dict[str, Any], prom: PrometheusClient) -> None:
    mid = observed["id"]
    values = {
        q.title: prom.query(q.expr.replace("$migration_id", mid))
        for q in dashboard.panel_exprs(dashboard.dashboard_json())
    }
    assert values["Data lag"][0].value == 7
    assert values["Caught up"][0].value == 1
    assert values["Initial load (rows/s)"][0].value == 1234
    assert values["Dead-lettered events"][0].value == 3
    assert values["Validation mismatches (rows)"][0].value == 2
    (partition,) = values["Consumer lag per partition (messages)"]
    assert partition.labels["partition"] == "0" and partition.value == 40
    (progress,) = values["Migration progress (rows/s by table)"]
    assert progress.labels["table_name"] == "public.orders" and progress.value > 0


def test_a_bad_query_is_a_permanent_error(prom: PrometheusClient) -> None:
    with pytest.raises(PermanentError, match="bad_data"):
        prom.query("sum(rate(migration_rows_total[5m])")


def test_unreachable_prometheus_is_transient() -> None:
    with (
        PrometheusClient("http://127.0.0.1:9", timeout=2) as client,
        pytest.raises(TransientError, match="unreachable"),
    ):
        client.query("up")


def test_report_series_come_from_prometheus(
    observed: dict[str, Any], prom: PrometheusClient
) -> None:
    series = R.collect_series(prom, observed["id"], observed["start"] - 5, time.time())
    lag = {s.name: s for s in series.lag}
    assert set(lag) == {"data_lag_seconds", "consumer_lag_messages"}
    values = [v for _, v in lag["data_lag_seconds"].points]
    assert 5 in values and values[-1] == 7
    throughput = {s.name: s for s in series.throughput}
    assert max(v for _, v in throughput["rows written/s"].points) > 0
    assert max(v for _, v in throughput["change events applied/s"].points) > 0
    (progress,) = series.progress
    assert progress.name == "public.orders"
    assert {v for _, v in progress.points} == {0.5, 1.0}
    # and they render as charts with those points
    html = R.render_html(
        R.build_report(
            migration_id=observed["id"],
            started_at=datetime.fromtimestamp(observed["start"], UTC),
            finished_at=datetime.now(UTC),
            tables=[],
            caught_up=True,
            series=series,
        )
    )
    assert f'data-points="{len(lag["data_lag_seconds"].points)}"' in html


def test_rules_api_and_alerts_api_answer(prom: PrometheusClient) -> None:
    assert isinstance(prom.rules(), list)
    assert isinstance(prom.alerts(), list)


# ---------------------------------------------------------------------------------------------
def run_check(stack: Stack, migration_id: str, max_lag: float, *extra: str) -> tuple[int, str]:
    res = subprocess.run(
        [MIGWATCH, "check", "--migration-id", migration_id, "--max-lag", str(max_lag),
         "--prometheus-url", stack.address("prometheus"), *extra],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    lines = res.stdout.strip().splitlines()
    assert len(lines) == 1, res.stdout + res.stderr  # one line, whatever the answer
    return res.returncode, lines[0]


@pytest.fixture
def pushed(stack: Stack) -> Iterator[Pushed]:
    p = Pushed(stack, new_id("chk"))
    yield p
    p.close()


def test_check_healthy(stack: Stack, prom: PrometheusClient, pushed: Pushed) -> None:
    metrics.MIGRATION_DATA_LAG.labels(pushed.id).set(3.5)
    pushed.push()
    wait_for(prom, promql.selector(metrics.MIGRATION_DATA_LAG, migration_id=pushed.id))
    code, line = run_check(stack, pushed.id, 60)
    assert (code, line) == (
        0,
        "healthy: lag 3.5s is within --max-lag 60s, no errors in the last 5m",
    )


def test_check_over_threshold(stack: Stack, prom: PrometheusClient, pushed: Pushed) -> None:
    metrics.MIGRATION_DATA_LAG.labels(pushed.id).set(120)
    pushed.push()
    wait_for(prom, promql.selector(metrics.MIGRATION_DATA_LAG, migration_id=pushed.id))
    assert run_check(stack, pushed.id, 60) == (1, "failing: lag 120.0s is over --max-lag 60s")


def test_check_no_data(stack: Stack) -> None:
    mid = new_id("none")
    assert run_check(stack, mid, 60) == (
        2,
        f"unknown: no migration_data_lag_seconds for migration_id {mid} in Prometheus",
    )


def test_check_stale_push(stack: Stack, prom: PrometheusClient, pushed: Pushed) -> None:
    metrics.MIGRATION_DATA_LAG.labels(pushed.id).set(1)
    pushed.push()
    pushed_at = time.time()
    wait_for(prom, promql.selector(metrics.MIGRATION_DATA_LAG, migration_id=pushed.id))
    time.sleep(max(0.0, pushed_at + 3 - time.time()))
    code, line = run_check(stack, pushed.id, 60, "--freshness", "2")
    assert code == 2
    assert line.startswith("unknown: the newest pushed migration_data_lag_seconds is ")
    assert "freshness limit 2s" in line
    # the same data within a wider freshness limit is healthy: only the age made it unknown
    assert run_check(stack, pushed.id, 60, "--freshness", "300")[0] == 0


def test_check_errors_fail_the_gate(stack: Stack, prom: PrometheusClient, pushed: Pushed) -> None:
    errors = metrics.MIGRATION_ERRORS.labels(pushed.id, "apply", "PermanentError")
    metrics.MIGRATION_DATA_LAG.labels(pushed.id).set(1)
    pushed.push()  # errors counter at 0
    sel = promql.selector(metrics.MIGRATION_ERRORS, migration_id=pushed.id)
    wait_for(prom, sel, lambda r: len(r) == 1 and r[0].value == 0)
    errors.inc(3)
    pushed.push()
    wait_for(prom, f"rate({sel}[5m])", lambda r: len(r) == 1 and r[0].value > 0)
    code, line = run_check(stack, pushed.id, 60)
    assert code == 1
    assert line.startswith("failing: ") and "errors/s over the last 5m" in line


def test_check_prometheus_down(stack: Stack) -> None:
    res = subprocess.run(
        [MIGWATCH, "check", "--migration-id", "x-1", "--max-lag", "5",
         "--prometheus-url", "http://127.0.0.1:9"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert res.returncode == 2
    assert res.stdout.startswith("unknown: cannot ask Prometheus: ") and "unreachable" in res.stdout


# ---------------------------------------------------------------------------------------------
class _Webhook(BaseHTTPRequestHandler):
    inbox: queue.Queue[dict[str, Any]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.inbox.put(json.loads(body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[tuple[str, queue.Queue[dict[str, Any]]]]:
    inbox: queue.Queue[dict[str, Any]] = queue.Queue()
    handler = type("Handler", (_Webhook,), {"inbox": inbox})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/alerts", inbox
    server.shutdown()
    server.server_close()


def _alertmanager_alerts(stack: Stack, migration_id: str) -> Any:
    """What Alertmanager holds for `migration_id` (for a failure message)."""
    import requests

    url = stack.address("alertmanager") + "/api/v2/alerts/groups"
    groups = requests.get(url, params={"filter": f'migration_id="{migration_id}"'}, timeout=10)
    return groups.json()


@pytest.fixture
def alertmanager_to(stack: Stack, webhook: tuple[str, Any]) -> Iterator[None]:
    """Point the stack's Alertmanager at the webhook; restore its configuration afterwards."""
    cfg = stack.s.state_dir / "alertmanager" / "alertmanager.yml"
    original = cfg.read_text()
    cfg.write_text(alertmanager_config(webhook[0]))
    try:
        stack.reload("alertmanager")
        yield
    finally:
        cfg.write_text(original)
        stack.reload("alertmanager")


def test_rule_fires_through_alertmanager_to_a_webhook(
    stack: Stack,
    prom: PrometheusClient,
    pushed: Pushed,
    webhook: tuple[str, queue.Queue[dict[str, Any]]],
    alertmanager_to: None,
) -> None:
    mid = pushed.id
    rules = alerts.alert_rules(migration_id=mid, options=alerts.RuleOptions(lag_for="0s"))
    path = alerts.install_rules(alerts.render_rules(rules), alerts.rules_file_name(mid), stack.s)
    try:
        groups = {g["name"] for g in prom.rules("alert")}
        assert f"migwatch-{mid}" in groups  # Prometheus loaded the generated file
        metrics.MIGRATION_DATA_LAG.labels(mid).set(999)
        pushed.push()
        inbox = webhook[1]
        deadline = time.monotonic() + 60
        got: dict[str, Any] | None = None
        seen: list[dict[str, Any]] = []
        while got is None and time.monotonic() < deadline:
            try:
                message = inbox.get(timeout=1)
            except queue.Empty:
                continue
            seen.append(message)
            got = next(
                (a for a in message["alerts"]
                 if a["labels"].get("migration_id") == mid
                 and a["labels"]["alertname"] == "MigrationLagCritical"),
                None,
            )  # fmt: skip
        firing = f'ALERTS{{migration_id="{mid}"}}'
        assert got is not None, (
            "MigrationLagCritical never reached the webhook within 60s; "
            f"Prometheus ALERTS: {prom.query(firing)}; "
            f"Alertmanager: {_alertmanager_alerts(stack, mid)}; webhook got {seen}"
        )
        assert got["status"] == "firing"
        assert got["labels"]["severity"] == "critical"
        assert got["annotations"]["summary"] == (
            f"data lag of migration {mid} is 16m 39s, over 300s"
        )
    finally:
        path.unlink(missing_ok=True)
        alerts.reload_prometheus(stack.s)
    assert f"migwatch-{mid}" not in {g["name"] for g in prom.rules()}


def test_dashboard_cli_installs_rules_into_prometheus(
    stack: Stack, prom: PrometheusClient, tmp_path: Path
) -> None:
    mid = new_id("cli")
    res = subprocess.run(
        [MIGWATCH, "dashboard", "--out", str(tmp_path), "--migration-id", mid, "--install-rules"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    installed = stack.s.state_dir / "prometheus" / "rules" / alerts.rules_file_name(mid)
    try:
        assert res.returncode == 0, res.stdout + res.stderr
        assert sorted(p.name for p in tmp_path.iterdir()) == [
            "grafana-provisioning.yaml",
            f"migwatch-{mid}.yml",
            "migwatch-dashboard.json",
        ]
        assert installed.read_text() == (tmp_path / f"migwatch-{mid}.yml").read_text()
        group = next(g for g in prom.rules() if g["name"] == f"migwatch-{mid}")
        assert len(group["rules"]) == len(alerts.alert_rules()["groups"][0]["rules"]) == 9
        assert all(r["health"] in ("ok", "unknown") for r in group["rules"])
    finally:
        installed.unlink(missing_ok=True)
        alerts.reload_prometheus(stack.s)


def test_a_prometheus_reload_returns_with_its_alertmanager_listed(stack: Stack) -> None:
    """Alerts firing in the seconds after a rules install are not dropped: Prometheus knows no
    Alertmanager for ~5 s after a reload, and the reload waits that out."""
    import requests

    for _ in range(2):
        stack.reload("prometheus")
        listed = requests.get(stack.address("prometheus") + "/api/v1/alertmanagers", timeout=10)
        assert listed.json()["data"]["activeAlertmanagers"] == [
            {"url": f"{stack.address('alertmanager')}/api/v2/alerts"}
        ]
