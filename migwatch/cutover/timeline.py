"""The cutover's record as it happens: each step's start, end and outcome, the approver, and
the write-downtime (from the start of the freeze to the end of the switch).

Saved after every step in the run's folder (`cutover.json`), and folded into the migration's
report (`report.json`, `report.html`) so the go/no-go page also says how the switch went.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from migwatch.config import MigrationSpec
from migwatch.cutover import freeze
from migwatch.errors import CutoverError
from migwatch.report.html_page import render_html
from migwatch.report.model import CutoverFigures, CutoverStep, Report
from migwatch.report.render import render_json

FREEZE = "freeze"
SWITCH = "switch"


def _now() -> datetime:
    return datetime.now(UTC)


class Timeline:
    """The record of one cutover, written to `folder` as it goes."""

    def __init__(self, migration_id: str, folder: Path) -> None:
        self.migration_id = migration_id
        self.folder = folder
        self.figures = CutoverFigures(started_at=_now())

    @contextmanager
    def step(self, name: str) -> Iterator[CutoverStep]:
        """Record one step: done when the block ends, failed (with the error) when it raises.
        The block may set `detail` (and `outcome`, e.g. skipped) on the step it gets."""
        st = CutoverStep(name=name, started_at=_now())
        self.figures.steps.append(st)
        self.save()
        try:
            yield st
        except BaseException as exc:
            st.outcome = "failed"
            st.detail = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            st.ended_at = _now()
            self.save()

    def skipped(self, name: str, why: str) -> None:
        now = _now()
        self.figures.steps.append(CutoverStep(name=name, started_at=now, ended_at=now,
                                              outcome="skipped", detail=why))

    def downtime(self) -> float | None:
        """Seconds from the start of the freeze to the end of the switch (or of the undo, or
        now while frozen); None when nothing was frozen."""
        steps = {st.name: st for st in self.figures.steps}
        frozen = steps.get(FREEZE)
        if frozen is None:
            return None
        end = next((st.ended_at for st in reversed(self.figures.steps)
                    if st.name in (SWITCH, "undo freeze") and st.ended_at is not None), None)
        return round(((end or _now()) - frozen.started_at).total_seconds(), 3)

    def finish(self, outcome: str, reasons: list[str] | None = None) -> CutoverFigures:
        self.figures.outcome = outcome  # type: ignore[assignment]
        self.figures.reasons = list(reasons or [])
        self.figures.finished_at = _now()
        self.figures.downtime_seconds = self.downtime()
        self.save(into_report=True)
        return self.figures

    def save(self, into_report: bool = False) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / "cutover.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(self.figures.model_dump_json(indent=2))
        tmp.replace(path)
        if into_report:
            self._into_report()
        return path

    def _into_report(self) -> None:
        """The report of the migration, with its cutover section now."""
        path = self.folder / "report.json"
        if not path.is_file():
            return
        report = Report.model_validate_json(path.read_text())
        report.cutover = self.figures
        for name, text in (("report.json", render_json(report)),
                           ("report.html", render_html(report))):
            tmp = self.folder / f"{name}.tmp"
            tmp.write_text(text)
            tmp.replace(self.folder / name)


def load(folder: Path) -> CutoverFigures | None:
    path = folder / "cutover.json"
    return CutoverFigures.model_validate_json(path.read_text()) if path.is_file() else None


def undo_recorded_freeze(spec: MigrationSpec, folder: Path, why: str) -> bool:
    """Put back the source settings a cutover recorded as frozen and never undid (its process
    ended mid-way); False when no such freeze is recorded. Refused after a switch: writes on
    the source would then not reach the target."""
    record = load(folder)
    if record is None or record.frozen_before is None or record.frozen_database is None:
        return False
    if record.outcome == "switched":
        raise CutoverError("this cutover switched the application to the target: the source "
                           "stays read-only, since writes there would not reach the target")
    freeze.thaw(spec, freeze.Frozen(record.frozen_database, dict(record.frozen_before)))
    record.frozen_before = None
    record.undone.append(f"source read-only setting ({why})")
    if record.outcome == "running":
        record.outcome = "aborted"
        record.reasons.append(f"the cutover's process ended while the source was frozen; the "
                              f"freeze was undone ({why})")
    tmp = folder / "cutover.tmp"
    tmp.write_text(record.model_dump_json(indent=2))
    tmp.replace(folder / "cutover.json")
    return True
