"""The cutover's data checks: a full pass before the freeze, and inside it only what changed.

Before the freeze the source still moves: every table is compared and its pending rows
re-checked (`validation.run.validate` + `revalidate`); a real difference refuses the cutover
before anything is frozen. The applier's event count per table is read *before* that pass, so
a table whose count did not move by the end of the drain had no change since — the pass still
holds for it. Inside the freeze the source stands still: the tables that changed (or were not
proven equal before) are compared again, as final results — equal, or the cutover aborts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from migwatch import names, positions
from migwatch.config import MigrationSpec
from migwatch.validation import run
from migwatch.validation.model import EQUAL, TableResult, ValidationResult

APPLICATION = "migwatch-cutover"


def applied_events(spec: MigrationSpec, migration_id: str) -> dict[str, int]:
    """Events (and snapshot rows) the applier has applied, per source table."""
    found = positions.read(spec, migration_id, [t.source for t in spec.tables],
                           application=APPLICATION)
    return {t: p.events + p.snapshot_rows + p.dlq_events for t, p in found.items()
            if t != names.ALL_TABLES}


@dataclass
class FullPass:
    """The pass before the freeze: the applier's counts when it began, the tables it could
    not prove equal (still pending), and the ones with real differences."""

    counts: dict[str, int]
    unproven: list[str] = field(default_factory=list)
    different: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def describe(self) -> str:
        text = f"{len(self.counts)} table(s) compared"
        if self.unproven:
            text += f"; still changing, checked again in the freeze: {', '.join(self.unproven)}"
        return text


def _summary(t: TableResult) -> str:
    return (f"{t.table}: {t.status} ({t.missing} missing, {t.extra} extra, {t.changed} "
            f"changed)" if t.error is None else f"{t.table}: error: {t.error}")


def full_pass(spec: MigrationSpec, migration_id: str,
              revalidate_seconds: float = 60) -> FullPass:
    """Every table compared while the source moves, pending rows re-checked."""
    counts = applied_events(spec, migration_id)
    result = run.validate(spec, migration_id, moving_source=True)
    if result.status != EQUAL:
        result = run.revalidate(spec, migration_id, result, max_attempts=3,
                                timeout_seconds=revalidate_seconds)
    out = FullPass(counts)
    for t in result.tables:
        if t.status == EQUAL:
            continue
        if t.status == "pending":
            out.unproven.append(t.table)
        else:
            out.different.append(_summary(t))
    if result.schema is not None and result.schema.status not in (EQUAL, "not applicable"):
        out.different.append(f"schema check: {result.schema.status}")
    return out


def changed_since(before: Mapping[str, int], after: Mapping[str, int],
                  unproven: Sequence[str], tables: Sequence[str]) -> list[str]:
    """The tables to compare again in the freeze: applied counts that moved since the full
    pass (or unknown on either side), and the ones that pass left unproven."""
    return [t for t in tables
            if t in unproven or t not in before or t not in after or before[t] != after[t]]


def final_pass(spec: MigrationSpec, tables: Sequence[str]) -> ValidationResult:
    """`tables` compared on the frozen source: a difference is final, not pending."""
    return run.validate(spec, None, tables=list(tables), moving_source=False)


def not_equal(result: ValidationResult) -> list[str]:
    return [_summary(t) for t in result.tables if t.status != EQUAL]
