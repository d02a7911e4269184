"""Pushing the dashboard to Grafana's HTTP API, received by a local stand-in (no Grafana server
can run here): method, path, bearer token and a body that is exactly the dashboard the SDK
built; a refused token is a clear permanent error that never repeats the token."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr

from migwatch import dashboard
from migwatch.config import parse_spec
from migwatch.connectors.grafana import push_dashboard
from migwatch.errors import PermanentError, TransientError
from tests.receivers import free_port, grafana_receiver

TOKEN = "glsa_local-Test-Token-4242"
MIGWATCH = str(Path(sys.executable).parent / "migwatch")


def test_the_push_is_the_sdk_dashboard_with_overwrite_and_the_token() -> None:
    built = dashboard.dashboard_json()
    with grafana_receiver(TOKEN) as grafana:
        first = push_dashboard(grafana.url, SecretStr(TOKEN), built, folder_uid="ops")
        again = push_dashboard(grafana.url, SecretStr(TOKEN), built, folder_uid="ops")
    [req, _] = grafana.requests
    assert req["method"] == "POST" and req["path"] == "/api/dashboards/db"
    assert req["headers"]["Authorization"] == f"Bearer {TOKEN}"
    body = json.loads(req["body"])
    assert body["overwrite"] is True and body["folderUid"] == "ops"
    assert body["dashboard"] == {**built, "id": None}  # exactly what the SDK built
    assert first.uid == built["uid"] and first.url == f"/d/{built['uid']}/migwatch"
    assert (first.version, again.version) == (1, 2)


def test_a_refused_token_is_permanent_and_never_quoted() -> None:
    with grafana_receiver("the-right-one") as grafana, \
            pytest.raises(PermanentError, match="authentication refused") as err:
        push_dashboard(grafana.url, SecretStr(TOKEN), dashboard.dashboard_json())
    assert TOKEN not in str(err.value)


def test_an_unreachable_grafana_is_transient() -> None:
    with pytest.raises(TransientError, match="unreachable"):
        push_dashboard(f"http://127.0.0.1:{free_port()}", SecretStr(TOKEN),
                       dashboard.dashboard_json(), timeout=2)


def test_the_dashboard_command_pushes_with_the_spec_token_reference(tmp_path: Path) -> None:
    with grafana_receiver(TOKEN) as grafana:
        spec = tmp_path / "spec.yaml"
        spec.write_text(json.dumps({
            "source": {"kind": "postgres", "port": 15432, "database": "s"},
            "target": {"kind": "postgres", "port": 15433, "database": "t"},
            "tables": ["orders"],
            "metrics": {"grafana_url": grafana.url, "grafana_token": {"env": "GRAFANA_PUSH"}}}))
        parse_spec(json.loads(spec.read_text()))  # a valid spec
        r = subprocess.run([MIGWATCH, "dashboard", "--spec", str(spec), "--out",
                            str(tmp_path / "out")], capture_output=True, text=True, timeout=120,
                           env={**os.environ, "GRAFANA_PUSH": TOKEN})
    assert r.returncode == 0, r.stderr
    assert f"{grafana.url}/d/" in r.stdout and TOKEN not in r.stdout + r.stderr
    [req] = grafana.requests
    pushed = json.loads(req["body"])["dashboard"]
    written = json.loads((tmp_path / "out" / dashboard.DASHBOARD_FILE).read_text())
    assert pushed == {**written, "id": None}  # the file for provisioning and the push agree
