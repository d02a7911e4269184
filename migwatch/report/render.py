"""The report as text: JSON (written and read back) and the markdown summary of a Prefect artifact.

Also the plain per-table rows that the Prefect table artifact and the markdown share; the HTML
page lives in `html_page`, which reuses this module's number formatting.
"""

from __future__ import annotations

from typing import Any

from migwatch import sequences
from migwatch.charts import format_value
from migwatch.report.model import (
    CutoverFigures,
    Report,
    SchemaCheckFigures,
    SequenceFigures,
    _key_text,
)


def render_json(report: Report) -> str:
    return report.model_dump_json(indent=2)


def load_json(text: str | bytes) -> Report:
    """A report written by `render_json` (used to rebuild a past run's HTML)."""
    return Report.model_validate_json(text)


def _n(value: float | int | None, unit: str = "") -> str:
    if value is None:
        return "–"
    if unit:
        return format_value(float(value), unit)
    return f"{value:,}" if isinstance(value, int) else f"{value:,.4g}"


def table_rows(report: Report) -> list[dict[str, Any]]:
    """One plain row per table (the Prefect table artifact and the markdown summary use it)."""
    return [
        {
            "source table": t.source_table,
            "target table": t.target_table,
            "rows on source": t.rows_source,
            "rows on target": t.rows_target,
            "rows counted": t.counted_at,
            "rows loaded by snapshot": t.rows_snapshot,
            "changes applied": t.changes_applied,
            "event-time lag (s)": None
            if t.event_time_lag_seconds is None
            else round(t.event_time_lag_seconds, 3),
            "validation": t.validation,
            "mismatched rows": t.mismatched_rows,
            "differing keys (sample)": ", ".join(_key_text(k) for k in t.differing_keys),
            "failed expectations": "; ".join(t.failed_expectations),
        }
        for t in report.tables
    ]


def sequence_rows(report: Report) -> list[dict[str, str]]:
    """One plain row per sequence: sequence, table, source value, target value, behind by."""
    return sequences.rows(s.model_dump() for s in report.sequences)


def schema_note(check: SchemaCheckFigures) -> str:
    """One sentence of the schema check's figures."""
    if check.status == "not checked":
        return "Not checked: the validation result has no schema check."
    if check.status == "not applicable":
        return f"Not applicable: {check.method}."
    text = (f"{check.status}: {check.objects} object(s) compared, {len(check.differences)} "
            f"differ, {len(check.declared)} declared by migrations")
    return text + (f"; could not check: {check.error}" if check.error else "")


def schema_lines(check: SchemaCheckFigures) -> list[str]:
    """The differences (declared ones too) as a markdown table, then the check's notes."""
    from migwatch.validation.schema_check import difference_rows

    rows = difference_rows(check.model_dump())
    lines: list[str] = []
    if rows:
        lines += ["", "| object | difference | source | target | declared by |",
                  "|---|---|---|---|---|"]
        lines += [f"| {_md(r['object'])} | {r['difference']} | {_md(r['source'])} | "
                  f"{_md(r['target'])} | {_md(r['declared by'])} |" for r in rows]
    lines += [f"- {_md(w)}" for w in check.warnings]
    return lines


def sequences_note(report: Report) -> str:
    """What the report says of the sequences above their rows."""
    if report.sequences_unread:
        return f"The sequences could not be read: {report.sequences_unread}"
    if any(s.state == "not_applicable" for s in report.sequences):
        return ("Not applicable to this target: it keeps no sequences (the source's values "
                "are listed for reference).")
    if not report.sequences:
        return "The tables use no sequence."
    return ("Sequence values do not travel with the changes: the cutover sets the target's. "
            "A target behind the source only warns.")


def sequence_state_text(s: SequenceFigures) -> str:
    return {"ok": "in step", "behind": "behind", "missing": "missing on the target",
            "not_readable": "not readable", "not_applicable": "n/a"}.get(s.state, s.state)


#: what migwatch did about a schema change (`SchemaChangeRecord.outcome`), as people read it
OUTCOME_MEANING = {
    "followed": "the target was altered the same way",
    "stopped": "the table's apply stopped before the first event that needs the change",
    "continued": "the target has the change now: the table went on",
    "accepted": "`migwatch resume-table --accept` let the target follow the change",
}


def outcome_text(outcome: str) -> str:
    """The outcome with what it means: `stopped — the table's apply stopped …`."""
    meaning = OUTCOME_MEANING.get(outcome)
    return f"{outcome} — {meaning}" if meaning else outcome


def _md(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def cutover_markdown(c: CutoverFigures, migration_id: str) -> str:
    """The cutover's Prefect markdown artifact: outcome, write-downtime, approver, timeline."""
    icon = {"switched": "✅", "running": "⏳"}.get(c.outcome, "⛔")
    downtime = "–" if c.downtime_seconds is None else f"{c.downtime_seconds:.2f} s"
    lines = [f"# {icon} cutover {c.outcome} — migration `{migration_id}`", "",
             f"write-downtime (freeze → switch): **{downtime}**; approved by "
             + (f"{_md(c.approver)} (self-declared, {_md(c.approval)})" if c.approver
                else "nobody yet")
             + (f": “{_md(c.comment)}”" if c.comment else "")
             + f"; application sessions ended: {c.sessions_terminated}", ""]
    if c.reasons:
        lines += ["**Why:**", *[f"- {_md(r)}" for r in c.reasons], ""]
    if c.undone:
        lines += [f"**Undone:** {_md(', '.join(c.undone))}", ""]
    lines += [*[f"_{_md(n)}_  " for n in c.notes], "", "| step | seconds | outcome | detail |",
              "|---|---:|---|---|"]
    lines += [f"| {_md(st.name)} | {'' if st.seconds is None else f'{st.seconds:.3f}'} | "
              f"{st.outcome} | {_md(st.detail)} |" for st in c.steps]
    return "\n".join(lines) + "\n"


def render_markdown(report: Report, html_path: str | None = None) -> str:
    """The summary for a Prefect markdown artifact: the verdict first, then the figures."""
    v = report.verdict
    icon = "✅" if v.go else "⛔"
    lines = [f"# {icon} {v.label} — migration `{report.migration_id}`", ""]
    if v.reasons:
        lines += ["**Why no-go:**", *[f"- {_md(r)}" for r in v.reasons], ""]
    if v.warnings:
        lines += ["**Warnings:**", *[f"- {_md(w)}" for w in v.warnings], ""]
    if report.notes:
        lines += [*[f"_{_md(n)}_  " for n in report.notes], ""]
    if report.source:
        lines.append(f"{_md(report.source)} → {_md(report.target)}  ")
    lines += [
        f"{report.started_at:%Y-%m-%d %H:%M:%S} → {report.finished_at:%H:%M:%S} UTC "
        f"({format_value(report.duration_seconds, 'seconds')}); caught up: "
        f"{'yes' if report.caught_up else 'no'}; DLQ events: {report.dlq_events}; "
        f"failed stages: {sum(1 for e in report.errors if not e.recovered)}",
        "",
        "| check | result | detail |",
        "|---|---|---|",
    ]
    lines += [
        f"| {_md(c.name)} | {'pass' if c.passed else 'FAIL'} | {_md(c.detail)} |" for c in v.checks
    ]
    lines += [
        "",
        "| table | rows source | rows target | counted | snapshot rows | changes | lag | "
        "validation |",
        "|---|---:|---:|---|---:|---:|---:|---|",
    ]
    for t in report.tables:
        state = t.validation + (f" ({t.mismatched_rows})" if t.mismatched_rows else "")
        lines.append(
            f"| {_md(t.target_table)} | {_n(t.rows_source)} | {_n(t.rows_target)} | "
            f"{_md(t.counted_at)} | "
            f"{_n(t.rows_snapshot)} | {_n(t.changes_applied)} | "
            f"{_n(t.event_time_lag_seconds, 'seconds')} | {state} |"
        )
    if report.schema_changes:
        lines += [
            "",
            "| schema change at (UTC) | table | change | migwatch |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {r.at:%Y-%m-%d %H:%M:%S} | {_md(r.table)} | {_md(r.change)} | "
            f"{_md(outcome_text(r.outcome))}{f' ({_md(r.note)})' if r.note else ''} |"
            for r in report.schema_changes
        ]
    if report.schema_check is not None:
        lines += ["", "**Schema.** " + _md(schema_note(report.schema_check))]
        lines += schema_lines(report.schema_check)
    lines += ["", "**Sequences.** " + _md(sequences_note(report))]
    if report.sequences:
        lines += [
            "",
            "| sequence | used by | source value | target value | behind by | state |",
            "|---|---|---:|---:|---:|---|",
        ]
        lines += [
            f"| {_md(r['sequence'])} | {_md(r['table'])} | {_md(r['source value'])} | "
            f"{_md(r['target value'])} | {_md(r['behind by'])} | "
            f"{_md(sequence_state_text(s))} |"
            for s, r in zip(report.sequences, sequence_rows(report), strict=True)
        ]
    if report.lag:
        lines += [
            "",
            "| lag measure | last | peak | caught-up | warn | critical |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        lines += [
            f"| {m.name} | {_n(m.last, m.unit)} | {_n(m.peak, m.unit)} | "
            f"{_n(m.caught_up, m.unit)} | {_n(m.warn, m.unit)} | "
            f"{_n(m.critical, m.unit)} |"
            for m in report.lag
        ]
    links = dict(report.links)
    if html_path:
        links.setdefault("HTML report", html_path)
    if links:
        lines += ["", *[f"- [{_md(k)}]({v})" for k, v in links.items()]]
    return "\n".join(lines) + "\n"
