"""The COPY load's progress figures: rows and bytes against estimates, rate, ETA, and a ratio
that reaches 1 only when every table is done."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest

from migwatch.load.progress import LoadProgress, bar, read_view, save_view


def test_progress_counts_rows_and_bytes_and_ends_at_one() -> None:
    p = LoadProgress({"a": 100, "b": 0}, ["a", "b"])
    v = p.view()
    assert (v.rows, v.ratio, v.eta_seconds) == (0, 0.0, None)
    time.sleep(0.01)
    p.add("a", 50, 5000)
    v = p.view()
    assert v.rows == 50 and v.bytes == 5000 and 0 < v.ratio < 1
    assert v.eta_seconds is not None and v.eta_seconds > 0
    p.add("a", 80, 8000)  # more rows than the estimate: still short of 1 until done
    assert p.view().ratio <= 0.99
    p.finish("a", 130)
    p.add("b", 3, 30)  # a table the estimate thought empty
    assert p.view().ratio < 1
    p.finish("b", 3)
    v = p.view()
    assert v.ratio == 1.0 and v.eta_seconds == 0.0 and v.rows == 133
    assert all(t.done for t in v.tables)
    assert "2 of 2 table(s) loaded; 133 of ~133 rows" in v.describe()


def test_the_view_saved_for_a_watching_terminal_reads_back_and_draws_a_bar(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIGWATCH_STATE_DIR", str(tmp_path))
    assert read_view("m-1") is None  # nothing saved yet: no bar, no error
    p = LoadProgress({"a": 100}, ["a"])
    p.add("a", 40, 4000)
    save_view("m-1", replace(p.view(), held="source held: xmin horizon 3 transactions back"))
    back = read_view("m-1")
    assert back is not None and back.rows == 40 and 0.39 < back.ratio < 0.41
    assert "xmin horizon 3" in back.describe()
    assert bar(back.ratio, 10) == "████░░░░░░" and bar(1.0, 4) == "████" and bar(0, 2) == "░░"
