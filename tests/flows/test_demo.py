"""`migwatch demo` as the README tells a new user to run it (a subprocess, a smaller shop): the
whole pipeline with the sample migrations ends GO — its schema check included, the index the
sample migration adds being declared — and exits 0; then the run is torn down."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from migwatch import capture, processes
from migwatch.config import load_spec
from migwatch.demo import demo_dir
from migwatch.stack import Stack
from tests.conftest import short_id

MIGWATCH = str(Path(sys.executable).parent / "migwatch")


@pytest.mark.usefixtures("stack")
def test_the_demo_ends_go(stack: Stack) -> None:
    mid = short_id("demo")
    env = {**os.environ, "PREFECT_API_URL": stack.address("prefect-server"),
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "COLUMNS": "200"}
    try:
        done = subprocess.run([MIGWATCH, "demo", "--size", "6000", "--rate", "50",
                               "--write-seconds", "10", "--migration-id", mid],
                              capture_output=True, text=True, env=env, timeout=900)
        out = done.stdout + done.stderr
        assert done.returncode == 0, out[-5000:]
        assert f"verdict: GO for {mid}" in out, out[-5000:]
        assert "declared by V1__orders_customer_id_index.sql" in out, out[-5000:]
        assert not [ln for ln in out.splitlines() if ln.startswith("error:")]
    finally:
        processes.stop_applier(mid)
        spec_file = demo_dir() / "shop-postgres.yaml"
        if spec_file.exists():
            capture.teardown(load_spec(spec_file), mid, delete_topics=True)
