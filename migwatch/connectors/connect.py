"""Kafka Connect REST API: the connector lifecycle calls migwatch needs, errors translated once.

Unreachable worker, timeouts, 5xx and 409 (a rebalance in progress) → TransientError; a 4xx that
says the config is wrong → ConfigError with Connect's own message; any other 4xx →
PermanentError. A missing connector is `None`/`False`, not an error. No exception message or log
line carries a secret: config values whose key names a password are shown as `********`, and
their values are scrubbed from any text Connect sends back.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import requests

from migwatch.errors import ConfigError, PermanentError, TransientError

REDACTED = "********"
_SECRET_KEY = re.compile(r"password|secret|token|credential", re.IGNORECASE)


def is_secret_key(key: str) -> bool:
    """True for config keys whose value must never be shown (`database.password`, …)."""
    return bool(_SECRET_KEY.search(key))


def redact(config: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of `config` safe to log: every secret value replaced by `********`."""
    return {k: (REDACTED if is_secret_key(k) and v else v) for k, v in config.items()}


def scrub(text: str, secrets: Iterable[str]) -> str:
    """`text` with every non-empty secret value replaced by `********`."""
    for value in secrets:
        if value:
            text = text.replace(value, REDACTED)
    return text


class ConnectClient:
    """A small client for one Kafka Connect worker (or cluster behind one URL)."""

    def __init__(self, url: str, timeout: float = 15.0,
                 session: requests.Session | None = None) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._session = session or requests.Session()
        self._secrets: set[str] = set()

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> ConnectClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ calls
    def put_config(self, name: str, config: Mapping[str, str]) -> bool:
        """Create or update connector `name`; True when it was created, False when updated."""
        self._remember_secrets(config)
        response = self._request("PUT", f"/connectors/{_seg(name)}/config", json=dict(config),
                                 what=f"put config of connector {name!r}")
        return response.status_code == 201

    def get_config(self, name: str) -> dict[str, str] | None:
        """The stored config of `name` (with secrets as stored), or None when it does not exist."""
        response = self._request("GET", f"/connectors/{_seg(name)}/config", missing_ok=True,
                                 what=f"get config of connector {name!r}")
        if response is None:
            return None
        config = {str(k): str(v) for k, v in response.json().items()}
        self._remember_secrets(config)
        return config

    def status(self, name: str) -> dict[str, Any] | None:
        """`GET /connectors/<name>/status` (traces scrubbed of the secrets this client has seen),
        or None when the connector is unknown."""
        response = self._request("GET", f"/connectors/{_seg(name)}/status", missing_ok=True,
                                 what=f"get status of connector {name!r}")
        if response is None:
            return None
        status = dict(response.json())
        for part in [status.get("connector") or {}, *(status.get("tasks") or [])]:
            if isinstance(part, dict) and part.get("trace"):
                part["trace"] = scrub(str(part["trace"]), self._secrets)
        return status

    def delete(self, name: str) -> bool:
        """Delete `name`; True if it existed."""
        response = self._request("DELETE", f"/connectors/{_seg(name)}", missing_ok=True,
                                 what=f"delete connector {name!r}")
        return response is not None

    def stop(self, name: str) -> bool:
        """Stop `name` (tasks shut down, config kept) — needed before its offsets can be reset."""
        response = self._request("PUT", f"/connectors/{_seg(name)}/stop", missing_ok=True,
                                 what=f"stop connector {name!r}")
        return response is not None

    def reset_offsets(self, name: str) -> bool:
        """Forget the stored source offsets of a STOPPED connector; True if it existed."""
        response = self._request("DELETE", f"/connectors/{_seg(name)}/offsets", missing_ok=True,
                                 what=f"reset offsets of connector {name!r}")
        return response is not None

    def source_offsets(self, name: str) -> list[dict[str, Any]] | None:
        """The connector's committed source offsets (each `{"partition", "offset"}`), written
        only once every record before them was acknowledged by Kafka; None if it is absent."""
        response = self._request("GET", f"/connectors/{_seg(name)}/offsets", missing_ok=True,
                                 what=f"offsets of connector {name!r}")
        if response is None:
            return None
        offsets: list[dict[str, Any]] = response.json().get("offsets") or []
        return offsets

    def restart(self, name: str, include_tasks: bool = True, only_failed: bool = True) -> bool:
        """Restart `name` (and by default its failed tasks); True if it existed."""
        params = {"includeTasks": str(include_tasks).lower(),
                  "onlyFailed": str(only_failed).lower()}
        response = self._request("POST", f"/connectors/{_seg(name)}/restart", params=params,
                                 missing_ok=True, what=f"restart connector {name!r}")
        return response is not None

    def resume(self, name: str) -> bool:
        """Resume a PAUSED or STOPPED connector; True if it existed."""
        response = self._request("PUT", f"/connectors/{_seg(name)}/resume", missing_ok=True,
                                 what=f"resume connector {name!r}")
        return response is not None

    def validate(self, connector_class: str, config: Mapping[str, str]) -> list[str]:
        """Connect's verdict on `config` without creating anything: one `key: message` per error.

        Checked before every PUT because a PUT whose config has errors can fail inside the
        worker (HTTP 500 with a NullPointerException on Connect 4.3 + Debezium 3.6) instead of
        naming them — and the connector validates its database login here, so a wrong password
        shows up now rather than as a task failure later.
        """
        self._remember_secrets(config)
        plugin = connector_class.rsplit(".", 1)[-1]
        response = self._request("PUT", f"/connector-plugins/{_seg(plugin)}/config/validate",
                                 json=dict(config), what=f"validate config of {plugin}")
        body = response.json()
        errors: list[str] = []
        for item in body.get("configs") or []:
            value = item.get("value") or {}
            for message in value.get("errors") or []:
                errors.append(f"{value.get('name')}: {scrub(str(message), self._secrets)}")
        return errors

    def connectors(self) -> list[str]:
        response = self._request("GET", "/connectors", what="list connectors")
        return [str(n) for n in response.json()]

    def plugins(self) -> list[dict[str, Any]]:
        """Installed connector plugins: dicts with `class`, `type`, `version`."""
        response = self._request("GET", "/connector-plugins", what="list connector plugins")
        return [dict(p) for p in response.json()]

    # ------------------------------------------------------------------ plumbing
    def _remember_secrets(self, config: Mapping[str, Any]) -> None:
        self._secrets.update(str(v) for k, v in config.items() if is_secret_key(k) and v)

    def _request(self, method: str, path: str, what: str, missing_ok: bool = False,
                 **kwargs: Any) -> Any:
        """One call; returns the response (None for a 404 when `missing_ok`) or raises."""
        try:
            response = self._session.request(method, self.url + path, timeout=self.timeout,
                                             **kwargs)
        except requests.Timeout as exc:
            raise TransientError(f"Kafka Connect at {self.url}: {what}: timed out") from exc
        except requests.RequestException as exc:
            raise TransientError(
                f"Kafka Connect at {self.url} unreachable: {what}: {type(exc).__name__}") from exc
        code = response.status_code
        if code < 300:
            return response
        if code == 404 and missing_ok:
            return None
        message = scrub(_message(response), self._secrets)
        text = f"Kafka Connect {what}: HTTP {code}: {message}"
        if code >= 500 or code in (408, 409, 429):
            raise TransientError(text)
        if code in (400, 422):
            raise ConfigError(text, field="connect")
        raise PermanentError(text)


def _seg(name: str) -> str:
    return requests.utils.quote(name, safe="")


def _message(response: requests.Response) -> str:
    """Connect's `message` field, or the start of the body."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:500] or response.reason
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])
    return str(body)[:500]
