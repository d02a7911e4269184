"""One metrics server per process: nested blocks reuse it; its file_sd target goes with it."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

from migwatch import metrics


def test_nested_serving_reuses_the_server_and_cleans_up(tmp_path: Path) -> None:
    metrics.MIGRATION_DATA_LAG.labels("serve-1").set(4.5)
    with metrics.serving(tmp_path, "migwatch-pipeline", "serve-1") as outer:
        targets = list(tmp_path.glob("*.json"))
        assert len(targets) == 1
        assert json.loads(targets[0].read_text())[0]["targets"] == [f"127.0.0.1:{outer.port}"]
        with metrics.serving(tmp_path, "migwatch-monitor", "serve-1") as inner:
            assert inner is outer and len(list(tmp_path.glob("*.json"))) == 1
        body = urllib.request.urlopen(f"http://127.0.0.1:{outer.port}/metrics", timeout=5).read()
        assert b'migration_data_lag_seconds{migration_id="serve-1"} 4.5' in body
    assert list(tmp_path.glob("*.json")) == []
    with metrics.serving(tmp_path, "migwatch-monitor", "serve-1") as again:
        assert again is not outer  # the first one stopped; a new block starts its own
    metrics.MIGRATION_DATA_LAG.remove("serve-1")
