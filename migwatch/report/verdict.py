"""The go/no-go verdict: `decide()` turns a run's findings into one reason per blocking problem.

Kept pure and apart from assembly and rendering so every rule is unit-tested on made-up figures:
not caught up, lag over critical, tables not proven equal, failed expectations, a table stopped
at a source schema change (or a history that could not be read), dead-lettered events, failed
stages, slot retention near its limit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from migwatch.alerts import SLOT_RISK_FRACTION
from migwatch.charts import format_value
from migwatch.report.model import (
    Check,
    LagMeasure,
    RunError,
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
) -> Verdict:
    """Go only when caught up, no lag over critical, every table proven equal, no table stopped
    at a schema change, nothing dead-lettered, no stage failed and the slot is clear of its
    limit. `stopped_tables`: table → what changed; `schema_changes_unread`: why the
    schema-change history could not be read (then no stopped table can be ruled out);
    `migration_id` goes into the `resume-table` command a stopped table's reason names."""
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

    return Verdict(go=not reasons, reasons=reasons, warnings=warnings, checks=checks)
