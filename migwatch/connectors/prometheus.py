"""A small client of the Prometheus HTTP API (instant and range queries, series, rules, alerts).

Errors are translated once, here: unreachable, timed out or 5xx → TransientError; a query
Prometheus rejects (400/422, `status: error`) → PermanentError carrying Prometheus's own message.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import requests

from migwatch.errors import PermanentError, TransientError


@dataclass(frozen=True)
class Sample:
    """One series of an instant vector: its labels, the evaluation time and the value."""

    labels: dict[str, str]
    timestamp: float
    value: float


@dataclass(frozen=True)
class Series:
    """One series of a range query: its labels and (time, value) points, NaNs dropped."""

    labels: dict[str, str]
    points: list[tuple[float, float]] = field(default_factory=list)


class PrometheusClient:
    """Talks to one Prometheus server; every method raises only migwatch errors."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._session = requests.Session()

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> PrometheusClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ transport
    def _call(self, method: str, path: str, params: Any = None) -> Any:
        where = f"Prometheus at {self.url}"
        try:
            if method == "GET":
                r = self._session.get(self.url + path, params=params, timeout=self.timeout)
            else:
                r = self._session.post(self.url + path, data=params, timeout=self.timeout)
        except requests.Timeout as exc:
            raise TransientError(f"{where}: timed out after {self.timeout:.0f}s") from exc
        except requests.RequestException as exc:
            raise TransientError(f"{where}: unreachable ({type(exc).__name__})") from exc
        if r.status_code >= 500 and r.status_code != 503:
            raise TransientError(f"{where}: HTTP {r.status_code} on {path}")
        try:
            body = r.json()
        except ValueError as exc:
            if r.status_code == 503:
                raise TransientError(f"{where}: not ready (HTTP 503)") from exc
            raise PermanentError(
                f"{where}: HTTP {r.status_code}, not a JSON answer on {path}"
            ) from exc
        if body.get("status") != "success":
            kind = body.get("errorType", "error")
            message = body.get("error", "no error message")
            if r.status_code == 503 or kind in ("timeout", "unavailable"):
                raise TransientError(f"{where}: {kind}: {message}")
            raise PermanentError(f"{where}: {kind}: {message}")
        return body.get("data")

    # ------------------------------------------------------------------ API
    def query(self, expr: str, at: float | None = None) -> list[Sample]:
        """Evaluate `expr` now (or at `at`); a scalar comes back as one sample without labels."""
        params: dict[str, Any] = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = self._call("POST", "/api/v1/query", params)
        kind, result = data["resultType"], data["result"]
        if kind == "vector":
            return [
                Sample(dict(s["metric"]), float(s["value"][0]), float(s["value"][1]))
                for s in result
            ]
        if kind == "scalar":
            return [Sample({}, float(result[0]), float(result[1]))]
        raise PermanentError(f"expected an instant vector from {expr!r}, got a {kind}")

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[Series]:
        """Evaluate `expr` over [start, end] every `step` seconds."""
        params = {
            "query": expr,
            "start": f"{start:.3f}",
            "end": f"{end:.3f}",
            "step": f"{max(step, 0.001):.3f}",
        }
        data = self._call("POST", "/api/v1/query_range", params)
        out = []
        for s in data["result"]:
            points = [(float(t), float(v)) for t, v in s["values"]]
            out.append(Series(dict(s["metric"]), [(t, v) for t, v in points if not math.isnan(v)]))
        return out

    def series(
        self, *match: str, start: float | None = None, end: float | None = None
    ) -> list[dict[str, str]]:
        """Label sets of the series matching any of the selectors."""
        params: list[tuple[str, str]] = [("match[]", m) for m in match]
        if start is not None:
            params.append(("start", f"{start:.3f}"))
        if end is not None:
            params.append(("end", f"{end:.3f}"))
        return [dict(s) for s in self._call("GET", "/api/v1/series", params)]

    def rules(self, kind: str | None = None) -> list[dict[str, Any]]:
        """Rule groups Prometheus has loaded (`kind`: "alert" or "record" to filter)."""
        data = self._call("GET", "/api/v1/rules", {"type": kind} if kind else None)
        return list(data["groups"])

    def alerts(self) -> list[dict[str, Any]]:
        """Alerts that are pending or firing now."""
        return list(self._call("GET", "/api/v1/alerts")["alerts"])

    def ready(self) -> bool:
        """True when Prometheus answers its readiness probe."""
        try:
            r = self._session.get(self.url + "/-/ready", timeout=self.timeout)
        except requests.RequestException:
            return False
        return r.status_code == 200
