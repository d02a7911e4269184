"""What the commands print: tables whole when stdout is not a terminal (CI logs, pipes), a rich
table on a terminal, and `--json` — one document (JSON Lines for `monitor`) with
`schema_version` and nothing else on stdout, exit codes as without it.

The commands run through CliRunner (not a terminal) with their core calls replaced by results
built here, so no server is needed; the real `validate --json` is in
tests/integration/test_validation_cli.py.
"""

from __future__ import annotations

import io
import json
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text
from typer.testing import CliRunner

import migwatch.cli.run as cli_run
from migwatch import gate_check, measures, migrations
from migwatch import watch as watch_module
from migwatch.cli import app
from migwatch.cli._app import JSON_SCHEMA_VERSION, print_table
from migwatch.lag import CONSUMER_LAG, END_TO_END_LAG, EVENT_TIME_LAG, SLOT_WAL, Sample
from migwatch.migrations import State, StatusReport, StatusRow
from migwatch.validation import run as validation_run
from migwatch.validation.model import DIFFERENT, EQUAL, TableResult, ValidationResult

LONG = 'sales."Sales Dept. Quarterly Figures 2026"'
HEADERS = ("table", "status", "source rows", "target rows", "missing", "extra", "changed")


@pytest.fixture
def spec_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A spec file (nothing connects to it here) and a state directory of the test's own."""
    monkeypatch.setenv("MIGWATCH_STATE_DIR", str(tmp_path / "state"))
    (tmp_path / "migs").mkdir()
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({
        "source": {"kind": "postgres", "port": 15432, "database": "s"},
        "target": {"kind": "postgres", "port": 15433, "database": "t"},
        "tables": ["orders"],
        "monitor": {"poll_interval_seconds": 1, "consecutive_polls": 2, "window_size": 3,
                    "timeout_seconds": 6},
        "migrations": {"folder": "migs"},
    }))
    return path


def invoke(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def one_document(stdout: str) -> dict[str, Any]:
    """stdout is exactly one JSON document on one line, with the schema version."""
    lines = stdout.splitlines()
    assert len(lines) == 1, stdout
    doc: dict[str, Any] = json.loads(lines[0])
    assert doc["schema_version"] == JSON_SCHEMA_VERSION == 1
    return doc


def wide_table() -> Table:
    table = Table(title="migwatch validate: [bold red]different[/]", caption="a note")
    for col in HEADERS:
        table.add_column(col, justify="left" if col in ("table", "status") else "right")
    table.add_row(escape(LONG), "[bold red]different[/]", "1,200", "1,190", "10", "0", "3")
    table.add_row("public.orders", "[green]equal[/]", "10", "10", "0", "0", "0")
    return table


# ----------------------------------------------------------------------------- tables


def test_off_a_terminal_a_table_is_printed_whole() -> None:
    buf = io.StringIO()
    print_table(wide_table(), Console(file=buf, width=80))
    text = buf.getvalue()
    assert "…" not in text
    assert LONG in text and all(h in text for h in HEADERS)
    lines = text.splitlines()
    assert lines[0] == "migwatch validate: different" and lines[-1] == "a note"
    row = next(ln for ln in lines if ln.startswith(LONG))
    assert row.removeprefix(LONG).split() == ["different", "1,200", "1,190", "10", "0", "3"]
    assert max(len(ln) for ln in lines) > 80  # wider than the console: not cut to fit


def test_on_a_terminal_it_stays_a_rich_table() -> None:
    buf = io.StringIO()
    print_table(wide_table(), Console(file=buf, width=200, force_terminal=True))
    text = buf.getvalue()
    assert "\x1b[" in text  # colour
    plain = Text.from_ansi(text).plain
    assert "┏" in plain and "┃ table " in plain and f"│ {LONG} │ different │" in plain


# ----------------------------------------------------------------------------- validate


def validation_result(differs: bool) -> ValidationResult:
    long = TableResult(table=LONG, target=LONG, status=DIFFERENT if differs else EQUAL,
                       source_rows=1200, target_rows=1190 if differs else 1200,
                       missing=10 if differs else 0, changed=3 if differs else 0)
    orders = TableResult(table="public.orders", target="public.orders", source_rows=10,
                         target_rows=10)
    return ValidationResult("", "source", "target", "2026-01-01T00:00:00+00:00",
                            tables=[long, orders])


@pytest.fixture
def validated(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, bool]]:
    """`validation.run.validate` returning a built result; `differs` chooses which."""
    choice = {"differs": True}
    monkeypatch.setattr(validation_run, "validate",
                        lambda *a, **k: validation_result(choice["differs"]))
    yield choice


def test_validate_prints_full_names_in_a_log(spec_path: Path, validated: Any) -> None:
    res = invoke("validate", str(spec_path), "--no-expectations")
    assert res.exit_code == 1, res.output
    assert LONG in res.stdout and "…" not in res.stdout
    assert all(h in res.stdout for h in HEADERS)


@pytest.mark.parametrize(("differs", "code", "status"), [(True, 1, "different"),
                                                         (False, 0, "equal")])
def test_validate_json(spec_path: Path, validated: dict[str, bool], tmp_path: Path,
                       differs: bool, code: int, status: str) -> None:
    validated["differs"] = differs
    res = invoke("validate", str(spec_path), "--no-expectations", "--json",
                 "--output", str(tmp_path / "r.json"))
    assert res.exit_code == code, res.output
    doc = one_document(res.stdout)  # the "result: PATH" line went to stderr
    assert doc["status"] == status and doc["tables"][0]["table"] == LONG
    assert doc["tables"][0]["missing"] == (10 if differs else 0)
    saved = json.loads((tmp_path / "r.json").read_text())
    assert {k: v for k, v in doc.items() if k != "schema_version"} == saved
    assert "result:" in res.stderr


# ----------------------------------------------------------------------------- monitor


@pytest.fixture
def lags(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The monitor's watch loop, for real, over samples with these lags (no servers)."""
    feed: list[float] = []
    monkeypatch.setattr(measures, "poll", lambda *a, **k: None)  # the up-front reachability poll
    real = watch_module.watch

    def watch(spec: Any, mid: str, **kw: Any) -> Any:
        samples = iter([Sample(at=float(i), values={
            CONSUMER_LAG: 0.0, EVENT_TIME_LAG: lag, END_TO_END_LAG: lag, SLOT_WAL: 0.0},
            committed_offsets=100 + i, dlq_messages=0, applied_events=100 + i,
            applier_alive=True, connector_state="RUNNING") for i, lag in enumerate(feed)])
        clock = iter(range(10_000))
        return real(spec, mid, poll_fn=lambda *a: next(samples), serve_metrics=False,
                    heartbeat=False, sleep=lambda s: None, clock=lambda: float(next(clock)),
                    **kw)

    monkeypatch.setattr(watch_module, "watch", watch)
    return feed


@pytest.mark.parametrize(("series", "code"), [([30.0, 1.0, 0.5, 0.5, 0.5], 0),
                                              ([30.0] * 20, 1)])
def test_monitor_json_lines(spec_path: Path, lags: list[float], series: list[float],
                            code: int) -> None:
    lags.extend(series)
    res = invoke("monitor", str(spec_path), "--migration-id", "m-1", "--json")
    assert res.exit_code == code, res.output
    docs = [json.loads(line) for line in res.stdout.splitlines()]
    assert all(d["schema_version"] == 1 for d in docs)
    *polls, last = docs
    assert polls and [d["kind"] for d in polls] == ["poll"] * len(polls)
    assert [d["poll"] for d in polls] == list(range(1, len(polls) + 1))
    assert polls[0]["sample"]["values"][EVENT_TIME_LAG] == 30.0
    assert polls[0]["evaluation"]["verdict"] == polls[0]["verdict"]
    assert last["kind"] == "result" and last["passed"] is (code == 0)
    assert last["polls"] == len(polls) and Path(last["samples_path"]).exists()
    assert (last["reason"] is None) is (code == 0)
    assert "samples:" in res.stderr


# ----------------------------------------------------------------------------- check


def test_check_json_when_prometheus_cannot_be_asked() -> None:
    res = invoke("check", "--migration-id", "m-1", "--max-lag", "30", "--json",
                 "--prometheus-url", "http://127.0.0.1:1")
    assert res.exit_code == 2, res.output
    doc = one_document(res.stdout)
    assert (doc["status"], doc["code"], doc["migration_id"]) == ("unknown", 2, "m-1")


@pytest.mark.parametrize(("code", "label"), [(0, "healthy"), (1, "failing")])
def test_check_json(monkeypatch: pytest.MonkeyPatch, code: int, label: str) -> None:
    monkeypatch.setattr(gate_check, "check",
                        lambda *a, **k: gate_check.GateStatus(code, "lag 45 s, limit 30 s"))
    res = invoke("check", "--migration-id", "m-1", "--max-lag", "30", "--json",
                 "--prometheus-url", "http://127.0.0.1:1")
    assert res.exit_code == code, res.output
    doc = one_document(res.stdout)
    assert (doc["status"], doc["code"], doc["max_lag_seconds"]) == (label, code, 30.0)
    assert doc["reason"] == "lag 45 s, limit 30 s"


# ----------------------------------------------------------------------------- report


@pytest.mark.parametrize(("go", "code"), [(True, 0), (False, 1)])
def test_report_json(monkeypatch: pytest.MonkeyPatch, spec_path: Path, go: bool,
                     code: int) -> None:
    summary = {"migration_id": "m-1", "go": go, "reasons": [] if go else ["data differs"],
               "warnings": [], "failed_checks": [] if go else ["validation"],
               "paths": {"json": Path("/r/report.json"), "html": Path("/r/report.html")},
               "artifacts": [], "dashboard": {}, "pushed": False}
    fake = types.ModuleType("flows.report")
    fake.report = lambda spec, mid: summary  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "flows.report", fake)
    monkeypatch.setattr(cli_run, "use_stack_prefect", lambda: None)
    res = invoke("report", "--migration-id", "m-1", "--spec", str(spec_path), "--json")
    assert res.exit_code == code, res.output
    doc = one_document(res.stdout)
    assert doc["go"] is go and doc["reasons"] == summary["reasons"]
    assert doc["paths"]["json"] == "/r/report.json"


# ----------------------------------------------------------------------------- migrations


@pytest.fixture
def status_rows(monkeypatch: pytest.MonkeyPatch) -> list[StatusRow]:
    rows: list[StatusRow] = []
    monkeypatch.setattr(migrations, "run_status",
                        lambda spec: StatusReport("sql", "postgresql://t", rows, None))
    return rows


def test_migrations_status_prints_full_names_in_a_log(spec_path: Path,
                                                      status_rows: list[StatusRow]) -> None:
    status_rows += [StatusRow("1", "Sales Dept. Quarterly Figures 2026", "V1__sales.sql",
                              State.MISSING),
                    StatusRow("2", "Sales Dept. Quarterly Figures 2026 index", "V2__idx.sql",
                              State.CHANGED)]
    res = invoke("migrations", "status", str(spec_path))
    assert res.exit_code == 1, res.output  # a changed version
    assert "…" not in res.stdout
    assert "Sales Dept. Quarterly Figures 2026 index" in res.stdout
    assert "missing" in res.stdout and "changed" in res.stdout


@pytest.mark.parametrize(("state", "code"), [(State.APPLIED, 0), (State.CHANGED, 1)])
def test_migrations_status_json(spec_path: Path, status_rows: list[StatusRow], state: State,
                                code: int) -> None:
    status_rows.append(StatusRow("1", "sales", "V1__sales.sql", state))
    res = invoke("migrations", "status", str(spec_path), "--json")
    assert res.exit_code == code, res.output
    doc = one_document(res.stdout)
    assert doc["kind"] == "sql" and doc["lock"] is None
    assert [(r["version"], r["state"]) for r in doc["rows"]] == [("1", state.value)]
