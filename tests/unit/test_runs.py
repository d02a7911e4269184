"""The run record: stage outcomes saved as they happen, resumed on a second start, no secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from migwatch import runs
from migwatch.config import StackSettings
from migwatch.errors import GateFailed, PermanentError


@pytest.fixture
def settings(tmp_path: Path) -> StackSettings:
    return StackSettings(state_dir=tmp_path)


def test_stages_are_recorded_and_a_second_start_resumes(settings: StackSettings) -> None:
    rec = runs.start("spec.yaml", "abc-1", settings)
    rec.begin("migrate")
    rec.end("migrate", result={"tables": {"public.t": {"rows_loaded": 3}}})
    rec.begin("monitor")
    rec.end("monitor", error=GateFailed("timeout after 900 s: lag 40 s > caught_up 5 s"))
    rec.save(settings)
    again = runs.start("spec.yaml", "abc-1", settings)
    assert again.started_at == rec.started_at
    assert again.stages["migrate"].status == "completed"
    assert again.stage_result("migrate")["tables"]["public.t"]["rows_loaded"] == 3
    monitor = again.stages["monitor"]
    assert (monitor.status, monitor.error_type) == ("failed", "GateFailed")
    assert monitor.message.startswith("timeout after 900 s") and monitor.seconds is not None
    assert (settings.state_dir / "runs" / "abc-1" / "run.json").exists()


def test_an_error_message_loses_its_secrets(settings: StackSettings) -> None:
    rec = runs.start("spec.yaml", "abc-2", settings)
    rec.end("migrate", error=RuntimeError("cannot connect postgresql://app:hunter2@db/x"))
    assert "hunter2" not in (rec.stages["migrate"].message or "")


def test_a_run_never_started_is_a_clear_error(settings: StackSettings) -> None:
    with pytest.raises(PermanentError, match="no run record for migration nope"):
        runs.load("nope", settings)
