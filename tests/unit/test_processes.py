"""Local background processes are found by their pid files and stopped (no stack needed)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from migwatch import processes


def test_stop_all_stops_every_local_applier_and_monitor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MIGWATCH_STATE_DIR", str(tmp_path))
    procs = {}
    for kind, mid in (("applier", "run-a"), ("monitor", "run-b")):
        procs[kind] = subprocess.Popen(["sleep", "300"])
        d = tmp_path / "runs" / mid
        d.mkdir(parents=True)
        (d / f"{kind}.pid").write_text(str(procs[kind].pid))
    (tmp_path / "runs" / "run-c").mkdir()
    (tmp_path / "runs" / "run-c" / "applier.pid").write_text("999999999")  # long gone

    stopped = processes.stop_all(timeout=5)

    assert stopped == ["applier run-a", "monitor run-b"]
    assert [p.wait(timeout=5) for p in procs.values()] == [-15, -15]  # SIGTERM, not SIGKILL
    assert not list((tmp_path / "runs").glob("run-[ab]/*.pid"))
    assert processes.stop_all(timeout=5) == []
