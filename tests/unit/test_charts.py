"""SVG line charts: scaling, peak-keeping downsampling, thresholds, units."""

from __future__ import annotations

import math
import re

import pytest

from migwatch import charts


def test_downsample_keeps_first_last_and_the_peak() -> None:
    points = [(float(t), 1.0) for t in range(1000)]
    points[537] = (537.0, 99.0)
    out = charts.downsample(points, limit=50)
    assert len(out) <= 50
    assert out[0] == (0.0, 1.0) and out[-1] == (999.0, 1.0)
    assert (537.0, 99.0) in out
    assert out == sorted(out)


def test_short_series_are_kept_whole() -> None:
    pts = [(1.0, 2.0), (0.0, 1.0)]
    assert charts.downsample(pts) == [(0.0, 1.0), (1.0, 2.0)]


@pytest.mark.parametrize(
    ("value", "ceiling"), [(0, 1), (0.7, 1), (1.01, 2), (3, 5), (23, 25), (61, 100), (260, 500)]
)
def test_nice_ceiling(value: float, ceiling: float) -> None:
    assert charts.nice_ceiling(value) == ceiling


@pytest.mark.parametrize(
    ("value", "unit", "text"),
    [
        (4.25, "seconds", "4.25 s"),
        (300, "seconds", "5 min"),
        (9000, "seconds", "2.5 h"),
        (3 << 30, "bytes", "3 GiB"),
        (512, "bytes", "512 B"),
        (0.5, "ratio", "50%"),
        (12.34, "per_second", "12.3/s"),
        (1234.5, "per_second", "1234/s"),
        (20_000, "per_second", "20k/s"),
        (999_999, "per_second", "1M/s"),
        (12.34, "messages", "12.34"),
        (25_000, "messages", "25k"),
        (math.nan, "seconds", "–"),
    ],
)
def test_format_value(value: float, unit: str, text: str) -> None:
    assert charts.format_value(value, unit) == text


def test_chart_draws_each_line_with_its_points_inside_the_plot() -> None:
    lines = [
        charts.Line("a", [(0.0, 0.0), (10.0, 50.0), (20.0, 25.0)]),
        charts.Line("b", [(0.0, 5.0), (20.0, 5.0)]),
    ]
    svg = charts.line_chart("c1", "Title", lines, "seconds", [charts.Rule(60, "warn 60 s")])
    assert 'data-series-count="2"' in svg
    assert 'data-series="a" data-points="3" data-last="25"' in svg
    assert svg.count('class="point"') == 5
    cx = [float(x) for x in re.findall(r'class="point" cx="([\d.]+)"', svg)]
    cy = [float(y) for y in re.findall(r'cy="([\d.]+)"', svg)]
    assert min(cx) >= 64 and max(cx) <= 760 - 16
    assert min(cy) >= 28 and max(cy) <= 260 - 34
    # the peak (50) is the highest point drawn; the threshold at 60 is drawn above it
    peak_y = min(cy)
    rule_y = float(re.search(r'class="threshold"[^>]*y1="([\d.]+)"', svg).group(1))  # type: ignore[union-attr]
    assert rule_y < peak_y


def test_far_thresholds_are_named_not_drawn() -> None:
    svg = charts.line_chart(
        "c2", "T", [charts.Line("a", [(0, 1.0), (5, 2.0)])], "seconds", [charts.Rule(300, "crit")]
    )
    assert 'class="threshold"' not in svg
    assert "above the plotted range: crit" in svg


def test_empty_chart_says_so() -> None:
    svg = charts.line_chart("c3", "T", [charts.Line("a", [])], "ratio")
    assert 'data-series-count="0"' in svg and "no data sampled" in svg


def test_names_are_escaped() -> None:
    svg = charts.line_chart("c4", "<T>", [charts.Line("<a>", [(0, 1.0)])], "ratio")
    assert "<a>" not in svg and "&lt;a&gt;" in svg and "&lt;T&gt;" in svg


def test_a_shared_time_axis_places_a_late_series_where_it_was_sampled() -> None:
    late = [charts.Line("monitor only", [(50.0, 3.0), (100.0, 1.0)])]
    own = charts.line_chart("c3", "T", late, "seconds")
    shared = charts.line_chart("c4", "T", late, "seconds", x_range=(0.0, 100.0))
    first = [float(x) for x in re.findall(r'class="point" cx="([\d.]+)"', own)][0]
    placed = [float(x) for x in re.findall(r'class="point" cx="([\d.]+)"', shared)][0]
    assert first == pytest.approx(64)  # its own axis starts where it starts
    assert placed == pytest.approx(64 + (760 - 64 - 16) / 2)  # half way through the run
