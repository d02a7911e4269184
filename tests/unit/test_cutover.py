"""The cutover's pieces that need no server: hooks (real processes, a real local HTTP
receiver), the report's preconditions, which tables the freeze compares again, the timeline's
write-downtime and its HTML section."""

from __future__ import annotations

import json
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from migwatch.config import Hook
from migwatch.cutover import hooks
from migwatch.cutover.final import changed_since
from migwatch.cutover.preconditions import report_reasons
from migwatch.cutover.timeline import Timeline
from migwatch.errors import HookFailed
from migwatch.report.html_page import cutover_section
from migwatch.report.model import Report, SchemaCheckFigures, Verdict
from tests.receivers import webhook_receiver


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --------------------------------------------------------------------------------- hooks
def test_a_command_hook_gets_the_migration_and_step_and_its_failure_is_typed(
        tmp_path: Path) -> None:
    out = tmp_path / "env"
    ok = Hook(command=["sh", "-c", f'echo "$MIGWATCH_MIGRATION_ID $MIGWATCH_CUTOVER_STEP" > {out}'])
    assert hooks.run(ok, "switch", "m-1") == "command sh exited 0"
    assert out.read_text().split() == ["m-1", "switch"]
    with pytest.raises(HookFailed, match=r"'switch' failed: command sh exited 3: no proxy"):
        hooks.run(Hook(command=["sh", "-c", "echo no proxy >&2; exit 3"]), "switch", "m-1")
    with pytest.raises(HookFailed, match="not found"):
        hooks.run(Hook(command=[str(tmp_path / "missing")]), "switch", "m-1")
    with pytest.raises(HookFailed, match=r"no exit after 0.5s"):
        hooks.run(Hook(command=["sleep", "5"], timeout_seconds=0.5), "switch", "m-1")


def test_a_webhook_hook_posts_json_and_fails_typed_without_its_path(
        monkeypatch: pytest.MonkeyPatch) -> None:
    with webhook_receiver() as ok:
        assert hooks.run(Hook(url=ok.url + "/flip"), "switch", "m-2").endswith("answered 200")
        assert ok.json_bodies() == [{"migration_id": "m-2", "step": "switch"}]
    with webhook_receiver(status=500) as bad:
        monkeypatch.setenv("SWITCH_URL", bad.url + "/hooks/T0KEN-abc")
        with pytest.raises(HookFailed, match="answered 500") as err:
            hooks.run(Hook(url={"env": "SWITCH_URL"}), "switch", "m-2")
        assert "T0KEN" not in str(err.value) and "env:SWITCH_URL" in str(err.value)
    with pytest.raises(HookFailed, match="unreachable") as err:
        hooks.run(Hook(url=f"http://127.0.0.1:{free_port()}/secret-path"), "switch", "m-2")
    assert "secret-path" not in str(err.value)


def test_a_hook_is_a_command_or_a_url_not_both() -> None:
    with pytest.raises(ValidationError, match="exactly one"):
        Hook(command=["true"], url="http://x")
    with pytest.raises(ValidationError, match="exactly one"):
        Hook()


# ---------------------------------------------------------------------- the report's say
def report(go: bool = True, age: float = 10, schema: str | None = "equal") -> Report:
    now = datetime.now(UTC)
    return Report(migration_id="m", started_at=now - timedelta(seconds=age + 60),
                  finished_at=now - timedelta(seconds=age), caught_up=go,
                  verdict=Verdict(go=go, reasons=[] if go else ["validation: 3 rows differ"]),
                  schema_check=None if schema is None else SchemaCheckFigures(status=schema))


def test_only_a_recent_go_with_a_passed_schema_check_allows_a_cutover() -> None:
    assert report_reasons(report(), 3600) == []
    assert report_reasons(report(schema="not applicable"), 3600) == []
    assert report_reasons(None, 3600)[0].startswith("no report")
    assert "NO-GO: validation: 3 rows differ" in report_reasons(report(go=False), 3600)[0]
    assert "older than cutover.max_report_age_seconds" in report_reasons(report(age=90), 60)[0]
    assert "schema check did not pass: different" in report_reasons(
        report(schema="different"), 3600)[0]
    assert "it did not run" in report_reasons(report(schema=None), 3600)[0]


def test_the_freeze_compares_again_only_tables_that_moved_or_were_unproven() -> None:
    tables = ["a", "b", "c", "d"]
    before = {"a": 10, "b": 5, "c": 7}
    after = {"a": 10, "b": 6, "c": 7, "d": 1}
    assert changed_since(before, after, ["c"], tables) == ["b", "c", "d"]
    assert changed_since(before, before, [], ["a", "b", "c"]) == []


# -------------------------------------------------------------------------- the timeline
def test_the_downtime_runs_from_the_freeze_to_the_end_of_the_switch(tmp_path: Path) -> None:
    line = Timeline("m", tmp_path)
    with line.step("approval"):
        pass
    with line.step("freeze"):
        pass
    with line.step("drain") as st:
        st.detail = "fence passed"
    with line.step("switch"):
        pass
    with line.step("teardown"):
        pass
    steps = {s.name: s for s in line.figures.steps}
    expected = (steps["switch"].ended_at - steps["freeze"].started_at).total_seconds()  # type: ignore
    figures = line.finish("switched")
    assert figures.downtime_seconds == pytest.approx(expected, abs=1e-3)
    saved = json.loads((tmp_path / "cutover.json").read_text())
    assert saved["outcome"] == "switched" and saved["steps"][2]["detail"] == "fence passed"


def test_a_failed_step_is_recorded_with_its_error_and_an_abort_counts_until_the_undo(
        tmp_path: Path) -> None:
    line = Timeline("m", tmp_path)
    with line.step("freeze"):
        pass
    with pytest.raises(HookFailed), line.step("switch"):
        raise HookFailed("switch", "webhook http://h answered 503")
    with line.step("undo freeze") as st:
        st.outcome = "undone"
    figures = line.finish("aborted", ["cutover aborted at switch"])
    assert [s.outcome for s in figures.steps] == ["done", "failed", "undone"]
    assert "HookFailed: hook 'switch' failed" in figures.steps[1].detail
    undo_end = figures.steps[2].ended_at
    assert figures.downtime_seconds == pytest.approx(
        (undo_end - figures.steps[0].started_at).total_seconds(), abs=1e-3)  # type: ignore
    html = cutover_section(figures)
    assert 'data-outcome="aborted"' in html and "<svg" in html and "answered 503" in html
    assert cutover_section(None) == ""


def test_the_cutover_is_folded_into_the_report(tmp_path: Path) -> None:
    (tmp_path / "report.json").write_text(report().model_dump_json())
    line = Timeline("m", tmp_path)
    line.figures.approver, line.figures.approval = "Dana", "Prefect run input"
    with line.step("freeze"):
        pass
    with line.step("switch"):
        pass
    line.finish("switched")
    folded = json.loads((tmp_path / "report.json").read_text())
    assert folded["cutover"]["approver"] == "Dana"
    assert 'id="cutover-timeline"' in (tmp_path / "report.html").read_text()
