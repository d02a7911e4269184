"""The HTML report as a browser renders it: Debian's headless Chromium opens the file offline,
draws every chart with its lines, loads nothing else, and a screenshot is kept."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from PIL import Image

from migwatch import report as R
from migwatch.stack import Stack
from tests.browser import ensure_chromium, render

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def chromium(stack: Stack) -> None:
    ensure_chromium(stack)


def _series() -> R.TimeSeries:
    s = R.TimeSeries()
    t0 = T0.timestamp()
    for i in range(60):
        t = t0 + 5 * i
        s.record("lag", "data_lag_seconds", "seconds", t, max(0.2, 90 - 2.5 * i))
        s.record("lag", "consumer_lag_messages", "messages", t, max(0, 5000 - 120 * i))
        s.record("throughput", "change events applied/s", "per_second", t, 300 + (i % 7) * 20)
        s.record("progress", "public.orders", "ratio", t, min(1.0, i / 30))
    return s


def test_charts_are_drawn_and_nothing_is_fetched(chromium: None, tmp_path: Path) -> None:
    rep = R.build_report(
        migration_id="html-1", started_at=T0, finished_at=T0 + timedelta(minutes=5),
        tables=[{"source_table": "public.orders", "target_table": "public.orders",
                 "rows_source": 1000, "rows_target": 1000, "validation": "equal"},
                {"source_table": "public.Reviews", "target_table": "public.Reviews",
                 "rows_source": 10, "rows_target": 9, "validation": "mismatched",
                 "mismatched_rows": 1, "differing_keys": [{"id": 7}]}],
        caught_up=True, series=_series())
    html = tmp_path / "report.html"
    html.write_text(R.render_html(rep))
    seen = render(html, "report-html-1.png")
    assert seen["verdict"].startswith("NO-GO") and seen["go"] == "false"
    assert seen["requests"] == 0  # self-contained: no stylesheet, script, font or image fetched
    assert [t["table"] for t in seen["tables"]] == ["public.orders", "public.Reviews"]
    charts = {c["id"]: c for c in seen["charts"]}
    assert {"lag-seconds", "lag-messages", "throughput", "progress"} <= set(charts)
    for cid in ("lag-seconds", "lag-messages", "throughput", "progress"):
        lines = charts[cid]["lines"]
        assert lines and all(ln["points"] > 1 and ln["length"] > 100 for ln in lines), cid
        width, height = charts[cid]["size"]
        assert width > 400 and height > 100, cid
    falling = charts["lag-seconds"]["lines"][0]["size"]
    assert falling[1] > 50  # the lag line spans the plot's height: it fell from 90 s to 0.2 s
    img = Image.open(seen["screenshot"]).convert("RGB")
    colours = img.getcolors(maxcolors=1 << 20) or []
    assert len(colours) > 50  # text, lines and badges, not a blank page
