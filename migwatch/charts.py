"""Line charts as inline SVG, drawn in Python: a report stays one file that opens offline.

Every chart is an `<svg data-chart=ID>` with one `<g class="series" data-points=N>` per line
holding a `<polyline>` and a `<circle class="point">` per drawn point, so a browser test (or a
person with view-source) can check what was plotted. Long series are bucketed down to their
peaks, so a lag spike is never averaged away.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape

PALETTE = ("#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#f0e442", "#000000")
MAX_POINTS = 120


@dataclass(frozen=True)
class Line:
    name: str
    points: Sequence[tuple[float, float]]  # (unix seconds, value)


@dataclass(frozen=True)
class Rule:
    """A horizontal threshold line (warn, critical)."""

    value: float
    label: str
    color: str = "#d55e00"


def format_value(value: float, unit: str) -> str:
    """A short human form of a value in its unit (s, messages, bytes, ratio, /s)."""
    if math.isnan(value):
        return "–"
    if unit == "seconds":
        if abs(value) >= 7200:
            return f"{value / 3600:.3g} h"
        if abs(value) >= 120:
            return f"{value / 60:.3g} min"
        return f"{value:.3g} s"
    if unit == "bytes":
        for factor, suffix in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
            if abs(value) >= factor:
                return f"{value / factor:.3g} {suffix}"
        return f"{value:.0f} B"
    if unit == "ratio":
        return f"{value * 100:.0f}%"
    if unit == "per_second":
        return f"{_count(value, 3)}/s"
    return _count(value, 4)


def _count(value: float, digits: int) -> str:
    """1234 → 1234, 12345 → 12.3k, 1234567 → 1.23M: never an exponent on an axis."""
    if abs(value) >= 999_500:
        return f"{value / 1_000_000:.3g}M"
    if abs(value) >= 9_999.5:
        return f"{value / 1000:.3g}k"
    if abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.{digits}g}"


def downsample(
    points: Sequence[tuple[float, float]], limit: int = MAX_POINTS
) -> list[tuple[float, float]]:
    """At most `limit` points: the peak of each equal-width bucket, first and last kept."""
    pts = sorted(points)
    if len(pts) <= limit:
        return list(pts)
    t0, t1 = pts[0][0], pts[-1][0]
    width = (t1 - t0) / (limit - 2) or 1.0
    buckets: dict[int, tuple[float, float]] = {}
    for t, v in pts[1:-1]:
        k = int((t - t0) / width)
        if k not in buckets or v > buckets[k][1]:
            buckets[k] = (t, v)
    return [pts[0], *(buckets[k] for k in sorted(buckets)), pts[-1]]


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 × 10^n at or above `value` (an axis maximum that reads well)."""
    if value <= 0:
        return 1.0
    exp = math.floor(math.log10(value))
    for m in (1, 2, 2.5, 5, 10):
        if m * 10**exp >= value * (1 - 1e-9):
            return float(m * 10**exp)
    return float(10 ** (exp + 1))


def _clock(t: float, span: float) -> str:
    fmt = "%H:%M:%S" if span < 6 * 3600 else "%d %H:%M"
    return datetime.fromtimestamp(t, UTC).strftime(fmt)


def line_chart(
    chart_id: str,
    title: str,
    lines: Sequence[Line],
    unit: str,
    rules: Sequence[Rule] = (),
    width: int = 760,
    height: int = 260,
    y_max: float | None = None,
    x_range: tuple[float, float] | None = None,
) -> str:
    """One `<figure>` with an SVG line chart, its legend and a note for off-scale thresholds.

    `x_range` fixes the time axis (a report's charts share the run's span, so a measure sampled
    only during one stage shows when it was); by default the axis spans the points."""
    left, right, top, bottom = 64, 16, 28, 34
    plot_w, plot_h = width - left - right, height - top - bottom
    drawn = [(ln, downsample([p for p in ln.points if math.isfinite(p[1])])) for ln in lines]
    drawn = [(ln, pts) for ln, pts in drawn if pts]
    cid = escape(chart_id)
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-label="{escape(title)}" '
        f'data-chart="{cid}" data-unit="{escape(unit)}">'
        f"<title>{escape(title)}</title>"
        f'<text x="{left}" y="18" class="chart-title">{escape(title)}</text>'
    )
    if not drawn:
        body = (
            f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" class="frame"/>'
            f'<text x="{left + plot_w / 2}" y="{top + plot_h / 2}" text-anchor="middle" '
            f'class="empty">no data sampled during this run</text>'
        )
        return (
            f'<figure class="chart" id="chart-{cid}" data-series-count="0">'
            f"{head}{body}</svg></figure>"
        )

    ts = [t for _, pts in drawn for t, _ in pts]
    t0, t1 = (min(ts), max(ts)) if x_range is None else (min(x_range[0], min(ts)),
                                                          max(x_range[1], max(ts)))
    if t1 - t0 < 1:
        t0, t1 = t0 - 30, t1 + 30
    data_max = max(v for _, pts in drawn for _, v in pts)
    data_min = min(v for _, pts in drawn for _, v in pts)
    on_scale = [r for r in rules if r.value <= max(data_max, 1e-12) * 1.5]
    off_scale = [r for r in rules if r not in on_scale]
    top_value = (
        y_max
        if y_max is not None
        else nice_ceiling(max([data_max, *(r.value for r in on_scale)]) * 1.05)
    )
    bottom_value = min(0.0, data_min)
    span_v = (top_value - bottom_value) or 1.0

    def x(t: float) -> float:
        return left + (t - t0) / (t1 - t0) * plot_w

    def y(v: float) -> float:
        return top + plot_h - (v - bottom_value) / span_v * plot_h

    parts = [
        head,
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" class="frame"/>',
        '<g class="grid">',
    ]
    for i in range(5):
        v = bottom_value + span_v * i / 4
        yy = y(v)
        parts.append(
            f'<line x1="{left}" x2="{left + plot_w}" y1="{yy:.1f}" y2="{yy:.1f}"/>'
            f'<text x="{left - 6}" y="{yy + 4:.1f}" text-anchor="end">'
            f"{escape(format_value(v, unit))}</text>"
        )
    parts.append('</g><g class="x-axis">')
    for i in range(5):
        t = t0 + (t1 - t0) * i / 4
        anchor = "start" if i == 0 else "end" if i == 4 else "middle"
        parts.append(
            f'<text x="{x(t):.1f}" y="{height - 12}" text-anchor="{anchor}">'
            f"{_clock(t, t1 - t0)}</text>"
        )
    parts.append('</g><g class="rules">')
    for r in on_scale:
        yy = y(r.value)
        parts.append(
            f'<line class="threshold" x1="{left}" x2="{left + plot_w}" y1="{yy:.1f}" '
            f'y2="{yy:.1f}" stroke="{r.color}" data-value="{r.value:g}"/>'
            f'<text x="{left + plot_w - 4}" y="{yy - 4:.1f}" text-anchor="end" '
            f'fill="{r.color}">{escape(r.label)}</text>'
        )
    parts.append("</g>")
    legend = []
    for i, (ln, pts) in enumerate(drawn):
        color = PALETTE[i % len(PALETTE)]
        coords = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in pts)
        last = pts[-1][1]
        parts.append(
            f'<g class="series" data-series="{escape(ln.name)}" '
            f'data-points="{len(pts)}" data-last="{last:g}" stroke="{color}" '
            f'fill="{color}"><polyline class="line" fill="none" points="{coords}"/>'
        )
        parts.extend(
            f'<circle class="point" cx="{x(t):.1f}" cy="{y(v):.1f}" r="2">'
            f"<title>{escape(ln.name)} {_clock(t, 0)} UTC: "
            f"{escape(format_value(v, unit))}</title></circle>"
            for t, v in pts
        )
        parts.append("</g>")
        legend.append(
            f'<span class="key"><i style="background:{color}"></i>{escape(ln.name)} '
            f"(last {escape(format_value(last, unit))})</span>"
        )
    parts.append("</svg>")
    note = ""
    if off_scale:
        note = (
            '<span class="off-scale">above the plotted range: '
            + ", ".join(escape(f"{r.label}") for r in off_scale)
            + "</span>"
        )
    return (
        f'<figure class="chart" id="chart-{cid}" data-series-count="{len(drawn)}">'
        + "".join(parts)
        + f"<figcaption>{''.join(legend)}{note}</figcaption></figure>"
    )
