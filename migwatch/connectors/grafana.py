"""Push a dashboard to Grafana's HTTP API (`POST /api/dashboards/db`, overwrite, into a folder).

The token travels only in the `Authorization: Bearer` header: it is never logged, never part of
an error message (Grafana's own answer is quoted, the request is not). Errors are translated once:
401/403 → PermanentError naming authentication; other 4xx → PermanentError with Grafana's message;
5xx, timeouts and refused connections → TransientError.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import requests
from pydantic import SecretStr

from migwatch.config import MigrationSpec, SecretRef
from migwatch.errors import ConfigError, PermanentError, TransientError

DEFAULT_TOKEN_ENV = "GRAFANA_TOKEN"


@dataclass(frozen=True)
class PushResult:
    """What Grafana answered: the dashboard's uid, url and version, and the status word."""

    uid: str
    url: str
    version: int | None
    status: str


def grafana_token(spec: MigrationSpec | None, env: str = DEFAULT_TOKEN_ENV) -> SecretStr:
    """The token from the spec's `metrics.grafana_token` reference, else from `env`."""
    if spec is not None and spec.metrics.grafana_token is not None:
        return spec.metrics.grafana_token.resolve("metrics.grafana_token")
    return SecretRef(env=env).resolve("metrics.grafana_token")


def push_dashboard(
    url: str,
    token: SecretStr,
    dashboard: dict[str, Any],
    folder_uid: str | None = None,
    message: str = "migwatch dashboard",
    timeout: float = 10.0,
) -> PushResult:
    """Create or overwrite `dashboard` (by uid) in Grafana at `url`, in folder `folder_uid`."""
    if not token.get_secret_value():
        raise ConfigError("the Grafana token is empty", field="metrics.grafana_token")
    body: dict[str, Any] = {
        "dashboard": {**dashboard, "id": None},
        "overwrite": True,
        "message": message,
    }
    if folder_uid:
        body["folderUid"] = folder_uid
    else:
        body["folderId"] = 0  # the General folder
    endpoint = url.rstrip("/") + "/api/dashboards/db"
    where = f"Grafana at {url.rstrip('/')}"
    try:
        r = requests.post(
            endpoint,
            json=body,
            timeout=timeout,
            headers={
                "Authorization": f"Bearer {token.get_secret_value()}",
                "Accept": "application/json",
            },
        )
    except requests.Timeout as exc:
        raise TransientError(f"{where}: timed out after {timeout:.0f}s") from exc
    except requests.RequestException as exc:
        raise TransientError(f"{where}: unreachable ({type(exc).__name__})") from exc
    answer = _message(r).replace(token.get_secret_value(), "***")
    if r.status_code in (401, 403):
        raise PermanentError(
            f"{where}: authentication refused (HTTP {r.status_code}): check the "
            f"token's validity and its dashboard write permission ({answer})"
        )
    if r.status_code >= 500:
        raise TransientError(f"{where}: HTTP {r.status_code} ({answer})")
    if r.status_code >= 400:
        raise PermanentError(f"{where}: dashboard refused (HTTP {r.status_code}: {answer})")
    try:
        data = r.json()
    except ValueError as exc:
        raise PermanentError(f"{where}: HTTP {r.status_code} but not a JSON answer") from exc
    return PushResult(
        uid=str(data.get("uid", dashboard.get("uid", ""))),
        url=str(data.get("url", "")),
        version=data.get("version"),
        status=str(data.get("status", "success")),
    )


def _message(r: requests.Response) -> str:
    try:
        return str(r.json().get("message", ""))[:200]
    except (ValueError, AttributeError):
        return r.text[:200].strip()
