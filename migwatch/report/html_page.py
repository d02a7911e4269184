"""The report as one self-contained HTML page: verdict, checks, tables, charts, errors.

Its own module because the page carries its CSS and chart layout. The page has inline CSS and SVG
charts, opens offline, and its Content-Security-Policy forbids any fetch.
"""

from __future__ import annotations

from datetime import UTC, datetime
from html import escape

from migwatch import charts
from migwatch.charts import format_value
from migwatch.report.model import CutoverFigures, Report, _key_text
from migwatch.report.render import (
    OUTCOME_MEANING,
    _n,
    schema_note,
    sequence_rows,
    sequence_state_text,
    sequences_note,
)

CHART_WIDTH = 950

_CSS = """
:root{--go:#1a7f37;--nogo:#c62828;--ink:#1f2328;--muted:#59636e;--line:#d0d7de}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--ink);
margin:0 auto;max-width:1000px;padding:24px}
h1{font-size:22px;margin:0}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid var(--line)}
.verdict{border-radius:8px;padding:16px 20px;color:#fff}
.verdict.go{background:var(--go)}.verdict.nogo{background:var(--nogo)}
.verdict ul{margin:8px 0 0;padding-left:20px}.meta{color:var(--muted);margin:10px 0}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{border-bottom:1px solid var(--line);padding:5px 8px;text-align:left;vertical-align:top}
td.n{text-align:right;font-variant-numeric:tabular-nums}
.badge{border-radius:10px;padding:1px 8px;font-size:12px;color:#fff}
.badge.equal,.badge.pass{background:var(--go)}.badge.mismatched,.badge.fail{background:var(--nogo)}
.badge.pending,.badge.behind,.badge.missing{background:#b26a00}
.badge.not_checked,.badge.not_readable,.badge.not_applicable{background:#6e7781}
.badge.ok{background:var(--go)}
.warn{color:#8a5a00}.note{color:var(--muted);font-size:13px}code{font-size:12px}
figure.chart{margin:12px 0}svg{max-width:100%;height:auto;font-size:11px}
svg .frame{fill:#fff;stroke:var(--line)}svg .grid line{stroke:#eef1f4}
svg .grid text,svg .x-axis text{fill:var(--muted)}svg .chart-title{font-size:13px;font-weight:600}
svg .line{stroke-width:2}svg .threshold{stroke-dasharray:6 4;stroke-width:1.5}
svg .empty{fill:var(--muted);font-size:13px}
figcaption{font-size:12px;color:var(--muted)}
figcaption .key{margin-right:14px}figcaption i{display:inline-block;width:10px;height:10px;
margin-right:4px;border-radius:2px}.off-scale{font-style:italic}
"""


def _lag_rules(report: Report, unit: str) -> list[charts.Rule]:
    m = next((m for m in report.lag if m.name == "data_lag_seconds"), None) or next(
        (m for m in report.lag if m.unit == unit), None
    )
    if m is None or m.unit != unit:
        return []
    rules = []
    if m.warn is not None:
        rules.append(charts.Rule(m.warn, f"warn {format_value(m.warn, unit)}", "#b26a00"))
    if m.critical is not None:
        rules.append(
            charts.Rule(m.critical, f"critical {format_value(m.critical, unit)}", "#c62828")
        )
    return rules


def _charts(report: Report) -> list[str]:
    s = report.series
    span = (report.started_at.timestamp(), report.finished_at.timestamp())
    out = []
    for unit, chart_id, title in (
        ("seconds", "lag-seconds", "Lag over time (seconds)"),
        ("messages", "lag-messages", "Consumer lag (messages)"),
        ("bytes", "slot-wal", "WAL retained by the replication slot"),
    ):
        lines = [charts.Line(x.name, x.points) for x in s.lag if x.unit == unit]
        if lines or unit == "seconds":
            out.append(
                charts.line_chart(
                    chart_id, title, lines, unit, _lag_rules(report, unit), width=CHART_WIDTH,
                    x_range=span,
                )
            )
    out.append(
        charts.line_chart(
            "throughput",
            "Throughput (events per second)",
            [charts.Line(x.name, x.points) for x in s.throughput],
            "per_second",
            width=CHART_WIDTH,
            x_range=span,
        )
    )
    out.append(
        charts.line_chart(
            "progress",
            "Snapshot progress per table",
            [charts.Line(x.name, x.points) for x in s.progress],
            "ratio",
            y_max=1.0,
            width=CHART_WIDTH,
            x_range=span,
        )
    )
    return out


_STEP_COLOUR = {"done": "#2e7d32", "failed": "#c62828", "skipped": "#9e9e9e",
                "undone": "#ef6c00"}


def _timeline_svg(c: CutoverFigures) -> str:
    """The cutover's steps as bars on one time axis, the write-downtime shaded behind them."""
    steps = [st for st in c.steps if st.ended_at is not None]
    if not steps:
        return ""
    t0 = min(st.started_at for st in steps)
    span = max(max((st.ended_at - t0).total_seconds() for st in steps  # type: ignore[operator]
                   ), 1e-3)
    width, label, row = 760, 170, 20
    scale = (width - label - 70) / span
    height = row * len(steps) + 24
    bars = []
    for i, st in enumerate(steps):
        x = label + (st.started_at - t0).total_seconds() * scale
        w = max(1.5, (st.seconds or 0) * scale)
        y = i * row + 4
        bars.append(
            f'<text x="{label - 6}" y="{y + 12}" text-anchor="end" font-size="12">'
            f"{escape(st.name)}</text>"
            f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{row - 6}" '
            f'fill="{_STEP_COLOUR.get(st.outcome, "#555")}"><title>{escape(st.name)}: '
            f"{st.outcome}, {st.seconds or 0:.3f}s</title></rect>"
            f'<text x="{x + w + 4:.1f}" y="{y + 12}" font-size="11">{st.seconds or 0:.2f}s'
            "</text>")
    shade = ""
    freeze = next((st for st in steps if st.name == "freeze"), None)
    if freeze is not None and c.downtime_seconds is not None:
        x = label + (freeze.started_at - t0).total_seconds() * scale
        shade = (f'<rect x="{x:.1f}" y="0" width="{c.downtime_seconds * scale:.1f}" '
                 f'height="{height - 20}" fill="#ffcdd2" opacity="0.6"><title>write-downtime '
                 f"{c.downtime_seconds:.2f}s</title></rect>")
    axis = (f'<text x="{label}" y="{height - 4}" font-size="11">0 s</text>'
            f'<text x="{width - 70}" y="{height - 4}" font-size="11">{span:.2f} s</text>')
    return (f'<svg id="cutover-timeline" role="img" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}">{shade}{"".join(bars)}{axis}</svg>')


def cutover_section(c: CutoverFigures | None) -> str:
    """The cutover's outcome, approver, write-downtime, timeline and step table."""
    if c is None:
        return ""
    e = escape
    downtime = "–" if c.downtime_seconds is None else f"{c.downtime_seconds:.2f} s"
    approver = (f"{e(c.approver)} (self-declared, {e(c.approval)})" if c.approver
                else "not approved")
    reasons = "".join(f"<li>{e(r)}</li>" for r in c.reasons)
    notes = "".join(f'<p class="note">{e(n)}</p>' for n in c.notes)
    rows = "".join(
        f"<tr><td>{e(st.name)}</td><td>{st.started_at:%H:%M:%S.%f}</td>"
        f"<td>{'' if st.ended_at is None else f'{st.ended_at:%H:%M:%S.%f}'}</td>"
        f"<td class=n>{'' if st.seconds is None else f'{st.seconds:.3f}'}</td>"
        f"<td>{e(st.outcome)}</td><td>{e(st.detail)}</td></tr>" for st in c.steps)
    return (
        f'<h2>Cutover</h2><p id="cutover" data-outcome="{e(c.outcome)}" '
        f'data-downtime="{"" if c.downtime_seconds is None else c.downtime_seconds}">'
        f"<b>{e(c.outcome)}</b> · write-downtime (freeze → switch): <b>{e(downtime)}</b> · "
        f"approved by {approver}"
        + (f" · “{e(c.comment)}”" if c.comment else "")
        + f" · application sessions ended: {c.sessions_terminated}</p>"
        + (f"<ul>{reasons}</ul>" if reasons else "")
        + (f"<p>undone: {e(', '.join(c.undone))}</p>" if c.undone else "")
        + notes + _timeline_svg(c)
        + '<table id="cutover-steps"><tr><th>step</th><th>start (UTC)</th><th>end</th>'
          "<th>seconds</th><th>outcome</th><th>detail</th></tr>" + rows + "</table>")


def render_html(report: Report) -> str:
    """One self-contained HTML page: verdict, checks, per-table figures, charts, errors."""
    v = report.verdict
    e = escape
    css_class = "go" if v.go else "nogo"
    reasons = "".join(f"<li>{e(r)}</li>" for r in v.reasons)
    head = (
        f'<section class="verdict {css_class}" id="verdict" data-go="{str(v.go).lower()}">'
        f"<h1>{v.label} — migration {e(report.migration_id)}</h1>"
        + (
            f"<ul>{reasons}</ul>"
            if reasons
            else "<p>Every check passed: the target is caught up and holds the source's data.</p>"
        )
        + "</section>"
    )
    endpoints = f"{e(report.source)} → {e(report.target)}<br>" if report.source else ""
    meta = (
        f'<p class="meta">{endpoints}'
        f"{report.started_at:%Y-%m-%d %H:%M:%S} → {report.finished_at:%Y-%m-%d %H:%M:%S} "
        f"UTC ({e(format_value(report.duration_seconds, 'seconds'))}) · caught up: "
        f"{'yes' if report.caught_up else 'no'} · DLQ events: {report.dlq_events}</p>"
    )
    warnings = "".join(f'<p class="warn">⚠ {e(w)}</p>' for w in v.warnings)
    warnings += "".join(f'<p class="note">{e(n)}</p>' for n in report.notes)
    checks = (
        '<h2>Checks</h2><table id="checks"><tr><th>check</th><th>result</th>'
        "<th>detail</th></tr>"
        + "".join(
            f'<tr><td>{e(c.name)}</td><td><span class="badge '
            f'{"pass" if c.passed else "fail"}">{"pass" if c.passed else "fail"}</span>'
            f"</td><td>{e(c.detail)}</td></tr>"
            for c in v.checks
        )
        + "</table>"
    )
    rows = []
    for t in report.tables:
        keys = ""
        if t.differing_keys:
            items = "".join(f"<li><code>{e(_key_text(k))}</code></li>" for k in t.differing_keys)
            more = " (sample capped)" if t.differing_keys_truncated else ""
            keys = (
                f"<details><summary>{len(t.differing_keys)} key(s){more}</summary>"
                f"<ul>{items}</ul></details>"
            )
        rows.append(
            f'<tr data-table="{e(t.target_table)}"><td>{e(t.source_table)}<br>'
            f"→ {e(t.target_table)}</td><td class=n>{_n(t.rows_source)}</td>"
            f"<td class=n>{_n(t.rows_target)}</td><td>{e(t.counted_at)}</td>"
            f"<td class=n>{_n(t.rows_snapshot)}</td>"
            f"<td class=n>{_n(t.changes_applied)}</td>"
            f"<td class=n>{e(_n(t.event_time_lag_seconds, 'seconds'))}</td>"
            f'<td><span class="badge {t.validation}">{t.validation.replace("_", " ")}</span>'
            f"{f' {t.mismatched_rows} row(s)' if t.mismatched_rows else ''}{keys}"
            + "".join(f'<br><small class="warn">fails {e(x)}</small>'
                      for x in t.failed_expectations)
            + f"{f'<br><small>{e(t.note)}</small>' if t.note else ''}</td></tr>"
        )
    tables = (
        '<h2>Tables</h2><table id="tables"><tr><th>table</th><th>rows on source</th>'
        "<th>rows on target</th><th>counted</th><th>loaded by snapshot</th><th>changes applied</th>"
        "<th>event-time lag</th><th>validation</th></tr>" + "".join(rows) + "</table>"
    )
    schema = ""
    if report.schema_changes:
        schema = (
            '<h2>Schema changes</h2><table id="schema-changes"><tr><th>at (UTC)</th>'
            "<th>table</th><th>change</th><th>migwatch</th></tr>"
            + "".join(
                f'<tr data-table="{e(r.table)}" data-outcome="{e(r.outcome)}">'
                f"<td>{r.at:%Y-%m-%d %H:%M:%S}</td><td>{e(r.table)}</td><td>{e(r.change)}</td>"
                f'<td><span class="badge {"fail" if r.outcome == "stopped" else "pass"}">'
                f"{e(r.outcome)}</span> {e(OUTCOME_MEANING.get(r.outcome, ''))}"
                + (f"<br><small>{e(r.note)}</small>" if r.note else "")
                + "</td></tr>"
                for r in report.schema_changes
            )
            + "</table>"
        )
    seq_rows = "".join(
        f'<tr data-sequence="{e(s.sequence)}" data-state="{e(s.state)}">'
        f"<td>{e(r['sequence'])}</td><td>{'<br>'.join(e(u) for u in s.used_by)}</td>"
        f"<td class=n>{e(r['source value'])}</td><td class=n>{e(r['target value'])}</td>"
        f"<td class=n>{e(r['behind by'])}</td>"
        f'<td><span class="badge {e(s.state)}">{e(sequence_state_text(s))}</span></td></tr>'
        for s, r in zip(report.sequences, sequence_rows(report), strict=True)
    )
    definitions = ""
    if report.schema_check is not None:
        from migwatch.validation.schema_check import difference_rows

        check = report.schema_check
        check_rows = "".join(
            f'<tr data-object="{e(r["object"])}" data-kind="{e(r["difference"])}">'
            f"<td>{e(r['object'])}</td><td>{e(r['difference'])}</td>"
            f"<td><code>{e(r['source'])}</code></td><td><code>{e(r['target'])}</code></td>"
            f"<td>{e(r['declared by'])}</td></tr>"
            for r in difference_rows(check.model_dump()))
        definitions = (f'<h2>Schema</h2><p class="note" id="schema-note" data-status='
                       f'"{e(check.status)}">{e(schema_note(check))}</p>')
        if check_rows:
            definitions += ('<table id="schema"><tr><th>object</th><th>difference</th>'
                            "<th>source</th><th>target</th><th>declared by</th></tr>"
                            + check_rows + "</table>")
        definitions += "".join(f'<p class="note">{e(w)}</p>' for w in check.warnings)
    seqs = (
        f'<h2>Sequences</h2><p class="note" id="sequences-note">{e(sequences_note(report))}</p>'
    )
    if seq_rows:
        seqs += (
            '<table id="sequences"><tr><th>sequence</th><th>used by</th><th>source value</th>'
            "<th>target value</th><th>behind by</th><th>state</th></tr>" + seq_rows + "</table>"
        )
    lag = ""
    if report.lag:
        lag = (
            '<h2>Lag</h2><table id="lag"><tr><th>measure</th><th>last</th><th>peak</th>'
            "<th>caught-up</th><th>warn</th><th>critical</th></tr>"
            + "".join(
                f"<tr><td>{e(m.name)}</td>"
                + "".join(
                    f"<td class=n>{e(_n(x, m.unit))}</td>"
                    for x in (m.last, m.peak, m.caught_up, m.warn, m.critical)
                )
                + "</tr>"
                for m in report.lag
            )
            + "</table>"
        )
    graphs = "<h2>Over time</h2>" + "".join(_charts(report))
    slot = ""
    if report.slot is not None:
        sl = report.slot
        slot = (
            f"<h2>Replication slot</h2><p>{e(sl.slot)}: retains "
            f"{e(_n(sl.retained_wal_bytes, 'bytes'))} of WAL (warn "
            f"{e(_n(sl.warn_bytes, 'bytes'))}, limit {e(_n(sl.limit_bytes, 'bytes'))})</p>"
        )
    errors = ""
    if report.errors:
        errors = (
            '<h2>Errors</h2><table id="errors"><tr><th>stage</th><th>type</th>'
            "<th>count</th><th>recovered</th><th>message</th></tr>"
            + "".join(
                f"<tr><td>{e(x.stage)}</td><td>{e(x.error_type)}</td>"
                f"<td class=n>{x.count}</td><td>{'yes' if x.recovered else 'no'}</td>"
                f"<td>{e(x.message)}</td></tr>"
                for x in report.errors
            )
            + "</table>"
        )
    links = ""
    if report.links:
        links = (
            "<h2>Links</h2><ul>"
            + "".join(
                f'<li><a href="{e(url)}">{e(name)}</a></li>' for name, url in report.links.items()
            )
            + "</ul>"
        )
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "style-src 'unsafe-inline'; img-src data:\">"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{v.label} — migwatch report {e(report.migration_id)}</title>"
        f"<style>{_CSS}</style></head><body>{head}{meta}{cutover_section(report.cutover)}"
        f"{warnings}{checks}{tables}{schema}"
        f"{definitions}{seqs}{lag}"
        f'{graphs}{slot}{errors}{links}<footer class="meta">migwatch report, schema '
        f"{report.schema_version}, generated {generated}</footer></body></html>\n"
    )
