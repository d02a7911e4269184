"""The record of one migration run: where its files live and how each stage ended.

A migration run keeps its local files in `<state dir>/runs/<migration_id>/`: the run record
(`run.json`: spec path, start time, one outcome per stage), the migrate stage's figures, the
validation result, the monitor's samples and the report. The pipeline writes the record as it
goes, so the report stage — or `migwatch report` long after — rebuilds the report from files
alone, and a crashed run started again knows what it already did.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from migwatch.config import StackSettings, check_migration_id
from migwatch.errors import PermanentError

RECORD_FILE = "run.json"
STAGES = ("migrate", "validate", "monitor", "report")
StageStatus = Literal["running", "completed", "failed"]


def run_dir(migration_id: str, settings: StackSettings | None = None) -> Path:
    """`<state dir>/runs/<migration_id>/`, created on first use."""
    s = settings or StackSettings()
    d = s.state_dir / "runs" / check_migration_id(migration_id)
    d.mkdir(parents=True, exist_ok=True)
    return d


class StageOutcome(BaseModel):
    """How one stage of the run ended; `error_type` is the exception class, never a secret."""

    model_config = ConfigDict(extra="forbid")

    status: StageStatus
    started_at: datetime
    finished_at: datetime | None = None
    error_type: str | None = None
    message: str | None = None
    #: the stage's own result, as plain data (figures the report needs)
    result: dict[str, Any] = Field(default_factory=dict)

    @property
    def seconds(self) -> float | None:
        if self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()


class RunRecord(BaseModel):
    """One migration run: what ran, from which spec, and how each stage ended."""

    model_config = ConfigDict(extra="forbid")

    migration_id: str
    spec_path: str
    started_at: datetime
    stages: dict[str, StageOutcome] = Field(default_factory=dict)

    def stage_result(self, stage: str) -> dict[str, Any]:
        outcome = self.stages.get(stage)
        return outcome.result if outcome is not None else {}

    def begin(self, stage: str) -> None:
        self.stages[stage] = StageOutcome(status="running", started_at=_now())

    def end(self, stage: str, result: dict[str, Any] | None = None,
            error: BaseException | None = None) -> None:
        outcome = self.stages.get(stage) or StageOutcome(status="running", started_at=_now())
        outcome.finished_at = _now()
        outcome.result = dict(result or {})
        if error is None:
            outcome.status = "completed"
        else:
            from migwatch.report import scrub

            outcome.status = "failed"
            outcome.error_type = type(error).__name__
            outcome.message = scrub(str(error).strip().splitlines()[0] if str(error).strip()
                                    else "", limit=300)
        self.stages[stage] = outcome

    def save(self, settings: StackSettings | None = None) -> Path:
        path = run_dir(self.migration_id, settings) / RECORD_FILE
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(self.model_dump_json(indent=2))
        tmp.replace(path)  # atomic: a reader never sees half a record
        return path


def _now() -> datetime:
    return datetime.now(UTC)


def start(spec_path: str | os.PathLike[str], migration_id: str,
          settings: StackSettings | None = None) -> RunRecord:
    """The run's record: the saved one when the run is started again (it resumes), else new."""
    try:
        record = load(migration_id, settings)
    except PermanentError:
        record = RunRecord(migration_id=migration_id, spec_path=str(Path(spec_path).resolve()),
                           started_at=_now())
    else:
        record.spec_path = str(Path(spec_path).resolve())
    record.save(settings)
    return record


def load(migration_id: str, settings: StackSettings | None = None) -> RunRecord:
    """The saved record of a run; PermanentError naming the file when there is none."""
    path = run_dir(migration_id, settings) / RECORD_FILE
    try:
        return RunRecord.model_validate_json(path.read_text())
    except FileNotFoundError:
        raise PermanentError(f"no run record for migration {migration_id} at {path}: "
                             "was it run on this machine (same state dir)?") from None
    except ValidationError as exc:
        raise PermanentError(f"run record {path} is unreadable: {exc.errors()[0]['msg']}") \
            from None
