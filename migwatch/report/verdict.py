"""The go/no-go verdict: `decide()` turns a run's findings into one reason per blocking problem.

Kept pure and apart from assembly and rendering so every rule is unit-tested on made-up figures:
not caught up, lag over critical, tables not proven equal, failed expectations, a table stopped
at a source schema change (or a history that could not be read), dead-lettered events, failed
stages, slot retention near its limit. Sequences behind on the target only warn: the cutover sets
them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from migwatch.alerts import SLOT_RISK_FRACTION
from migwatch.charts import format_value
from migwatch.report.model import (
    Check,
    LagMeasure,
    RunError,
    SchemaCheckFigures,
    SequenceFigures,
    SlotRetention,
    TableFigures,
    Verdict,
    _key_text,
    scrub,
)


def decide(
    *,
    caught_up: bool,
    tables: Sequence[TableFigures],
    lag: Sequence[LagMeasure] = (),
    dlq_events: int = 0,
    errors: Sequence[RunError] = (),
    slot: SlotRetention | None = None,
    gate_reason: str | None = None,
    stopped_tables: Mapping[str, str] | None = None,
    schema_changes_unread: str | None = None,
    migration_id: str = "<id>",
    sequences: Sequence[SequenceFigures] = (),
    sequences_unread: str | None = None,
    schema_check: SchemaCheckFigures | None = None,
) -> Verdict:
    """Go only when caught up, no lag over critical, every table proven equal, no table stopped
    at a schema change, nothing dead-lettered, no stage failed and the slot is clear of its
    limit. `stopped_tables`: table → what changed; `schema_changes_unread`: why the
    schema-change history could not be read (then no stopped table can be ruled out);
    `migration_id` goes into the `resume-table` command a stopped table's reason names.
    `sequences` behind, missing or unreadable on the target (or `sequences_unread`: why none
    could be read) are warnings, never reasons. `schema_check`: a difference no migration
    declares, a check that could not run or was not run is a reason."""
    checks: list[Check] = []
    reasons: list[str] = []
    warnings: list[str] = []

    def check(name: str, problems: list[str], ok_detail: str) -> None:
        checks.append(
            Check(
                name=name,
                passed=not problems,
                detail="; ".join(problems) if problems else ok_detail,
            )
        )
        reasons.extend(problems)

    behind = [
        m for m in lag if m.last is not None and m.caught_up is not None and m.last > m.caught_up
    ]
    problems = []
    if not caught_up:
        why = scrub(gate_reason) if gate_reason else "the monitor gate did not pass"
        detail = ", ".join(
            f"{m.name} {format_value(m.last or 0, m.unit)} > "
            f"{format_value(m.caught_up or 0, m.unit)}"
            for m in behind
        )
        problems.append(f"not caught up: {why}" + (f" ({detail})" if detail else ""))
    elif behind:
        warnings.extend(
            f"{m.name} is {format_value(m.last or 0, m.unit)} at report time, above "
            f"its caught-up threshold {format_value(m.caught_up or 0, m.unit)}"
            for m in behind
        )
    check("caught up", problems, "every lag measure held under its caught-up threshold")

    problems = [
        f"{m.name} is {format_value(m.last, m.unit)}, over its critical threshold "
        f"{format_value(m.critical, m.unit)}"
        for m in lag
        if m.last is not None and m.critical is not None and m.last > m.critical
    ]
    check("lag under critical", problems, "no lag measure over its critical threshold")

    problems = []
    for t in tables:
        keys = ", ".join(_key_text(k) for k in t.differing_keys[:3])
        more = f" (keys {keys}{', …' if len(t.differing_keys) > 3 else ''})" if keys else ""
        if t.validation == "mismatched":
            problems.append(
                f"{t.target_table}: {t.mismatched_rows} row(s) differ from {t.source_table}{more}"
            )
        elif t.validation == "pending":
            problems.append(
                f"{t.target_table}: {t.mismatched_rows} row(s) still pending revalidation{more}"
            )
        elif t.validation == "not_checked":
            problems.append(f"{t.target_table}: not validated")
    if not tables:
        problems.append("no table in the report")
    check("validation", problems, f"all {len(tables)} table(s) equal on source and target")

    problems = [f"{t.target_table}: fails {', '.join(t.failed_expectations)}"
                for t in tables if t.failed_expectations]
    check("expectations", problems, "no expectation failed on the target")

    problems = [
        f"table {table} stopped by a schema change: {scrub(change)} — `migwatch resume-table "
        f"<spec> {table} --migration-id {migration_id} --accept` or a versioned migration"
        for table, change in (stopped_tables or {}).items()
    ]
    if schema_changes_unread:
        problems.append(
            f"the schema-change history could not be read ({scrub(schema_changes_unread, 200)}):"
            " a table stopped by a schema change cannot be ruled out"
        )
    check("schema changes", problems, "no table stopped by a schema change")

    problems = (
        [f"{dlq_events} event(s) went to the dead-letter topic and were not applied"]
        if dlq_events > 0
        else []
    )
    check("dead-letter queue", problems, "no event dead-lettered")

    failed = [e for e in errors if not e.recovered]
    problems = [
        f"{e.stage} failed: {e.error_type}" + (f" ({e.message})" if e.message else "")
        for e in failed
    ]
    warnings.extend(
        f"{e.stage}: {e.count} {e.error_type} retried and recovered" for e in errors if e.recovered
    )
    check("errors", problems, "no stage failed")

    problems = []
    detail = "no replication slot measured"
    if slot is not None and slot.retained_wal_bytes is not None:
        kept = format_value(slot.retained_wal_bytes, "bytes")
        detail = f"slot {slot.slot} retains {kept}"
        if slot.limit_bytes and slot.retained_wal_bytes >= SLOT_RISK_FRACTION * slot.limit_bytes:
            problems.append(
                f"slot {slot.slot} retains {kept} of WAL, "
                f"{slot.retained_wal_bytes / slot.limit_bytes:.0%} of its limit "
                f"{format_value(slot.limit_bytes, 'bytes')}: the source risks "
                "running out of disk or invalidating the slot"
            )
        elif slot.warn_bytes and slot.retained_wal_bytes >= slot.warn_bytes:
            warnings.append(
                f"slot {slot.slot} retains {kept} of WAL, over its warn threshold "
                f"{format_value(slot.warn_bytes, 'bytes')}"
            )
    check("slot retention", problems, detail)

    problems, notes = schema_problems(schema_check)
    check("schema", problems,
          "not checked (no validation result)" if schema_check is None else
          f"target definitions equal the source's ({schema_check.objects} object(s))"
          if schema_check.status == "equal" else schema_check.status)
    warnings.extend(notes)

    warnings.extend(sequence_warnings(sequences, sequences_unread))
    return Verdict(go=not reasons, reasons=reasons, warnings=warnings, checks=checks)


#: schema differences a reason names before it says how many more there are
SCHEMA_NAMED = 10


def schema_problems(check: SchemaCheckFigures | None) -> tuple[list[str], list[str]]:
    """(reasons, warnings) of the schema check: each difference no migration declares is a
    reason, as is a check that could not run or was not run; declared differences and the
    check's own notes are warnings."""
    if check is None:
        return [], []
    reasons = [f"schema: {d.object} {d.kind} on the target"
               for d in check.differences[:SCHEMA_NAMED]]
    if len(check.differences) > SCHEMA_NAMED:
        reasons.append(f"schema: {len(check.differences) - SCHEMA_NAMED} more object(s) differ")
    if check.status == "error":
        reasons.append(f"schema check could not run: {scrub(check.error or '', 200)}")
    elif check.status == "not checked":
        reasons.append("schema not checked: the validation result has no schema check (run "
                       "the validate stage on every table)")
    warnings = [f"schema: {d.object} {d.kind}, declared by {d.declared_by}"
                for d in check.declared]
    warnings += [f"schema: {scrub(w, 300)}" for w in check.warnings]
    return reasons, warnings


#: sequences a warning names before it says how many more there are
SEQUENCES_NAMED = 5


def _listed(items: list[str]) -> str:
    more = len(items) - SEQUENCES_NAMED
    return ", ".join(items[:SEQUENCES_NAMED]) + (f" and {more} more" if more > 0 else "")


def sequence_warnings(sequences: Sequence[SequenceFigures],
                      unread: str | None = None) -> list[str]:
    """One warning per kind of trouble with the target's sequences: behind the source (the
    cutover sets them: logical decoding does not carry their values), missing, not readable."""
    out = []
    behind = [s for s in sequences if s.state == "behind"]
    if behind:
        out.append(
            f"{len(behind)} sequence(s) on the target behind the source: "
            + _listed([f"{s.sequence} by {s.behind_by:,}" for s in behind])
            + " — sequence values do not travel with the changes; the cutover sets them"
        )
    missing = [s.sequence for s in sequences if s.state == "missing"]
    if missing:
        out.append(
            f"{len(missing)} sequence(s) the tables use missing on the target: "
            + _listed(missing) + " — the cutover has none to set"
        )
    unreadable = [f"{s.sequence} ({' and '.join(s.not_readable_on)})"
                  for s in sequences if s.state == "not_readable"]
    if unreadable:
        out.append(
            f"{len(unreadable)} sequence(s) not readable by the migration's user: "
            + _listed(unreadable) + " — grant SELECT or USAGE on them to see their values"
        )
    if unread:
        out.append(f"the sequences could not be read ({scrub(unread, 200)}): how far the "
                   "target's trail the source's is not known")
    return out
