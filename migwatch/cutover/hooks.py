"""The cutover's user hooks: a command or an HTTP webhook, bounded in time, failing typed.

A command runs without a shell, with the migration and step in its environment
(`MIGWATCH_MIGRATION_ID`, `MIGWATCH_CUTOVER_STEP`) and nothing secret added; a webhook gets a
POST with the same as JSON. Any failure — non-zero exit, a URL that does not answer, an answer
other than 2xx, the timeout — is a `HookFailed` naming the step, and never shows the webhook's
path or query (where tokens live) nor the command's output beyond its last line.
"""

from __future__ import annotations

import os
import subprocess
from urllib.parse import urlsplit

import httpx

from migwatch.config import Hook, SecretRef
from migwatch.errors import HookFailed


def _url(hook: Hook, step: str) -> str:
    if isinstance(hook.url, SecretRef):
        return hook.url.resolve(f"cutover hook {step}").get_secret_value()
    return str(hook.url)


def describe(hook: Hook) -> str:
    """What the hook is, safe to log: the command's program, or the webhook's scheme and host."""
    if hook.command:
        return f"command {os.path.basename(hook.command[0])}"
    if isinstance(hook.url, SecretRef):
        return f"webhook ({hook.url.describe()})"
    parts = urlsplit(str(hook.url))
    return f"webhook {parts.scheme}://{parts.hostname or ''}"


def run(hook: Hook, step: str, migration_id: str) -> str:
    """Run one hook; returns a one-line outcome, raises `HookFailed`."""
    if hook.command:
        return _command(hook, step, migration_id)
    return _webhook(hook, step, migration_id)


def _command(hook: Hook, step: str, migration_id: str) -> str:
    assert hook.command is not None
    env = {**os.environ, "MIGWATCH_MIGRATION_ID": migration_id, "MIGWATCH_CUTOVER_STEP": step}
    try:
        done = subprocess.run(hook.command, env=env, capture_output=True, text=True,
                              timeout=hook.timeout_seconds, check=False)
    except FileNotFoundError as exc:
        raise HookFailed(step, f"{describe(hook)}: not found") from exc
    except PermissionError as exc:
        raise HookFailed(step, f"{describe(hook)}: not executable") from exc
    except subprocess.TimeoutExpired as exc:
        raise HookFailed(step, f"{describe(hook)}: no exit after "
                               f"{hook.timeout_seconds:g}s (killed)") from exc
    last = (done.stderr.strip() or done.stdout.strip()).splitlines()[-1:] or [""]
    if done.returncode != 0:
        raise HookFailed(step, f"{describe(hook)} exited {done.returncode}"
                               + (f": {last[0][:200]}" if last[0] else ""))
    return f"{describe(hook)} exited 0"


def _webhook(hook: Hook, step: str, migration_id: str) -> str:
    url = _url(hook, step)
    try:
        answer = httpx.post(url, json={"migration_id": migration_id, "step": step},
                            timeout=hook.timeout_seconds)
    except httpx.TimeoutException as exc:
        raise HookFailed(step, f"{describe(hook)}: no answer after "
                               f"{hook.timeout_seconds:g}s") from exc
    except httpx.HTTPError as exc:
        raise HookFailed(step, f"{describe(hook)}: unreachable ({type(exc).__name__})") from exc
    if not answer.is_success:
        raise HookFailed(step, f"{describe(hook)} answered {answer.status_code}")
    return f"{describe(hook)} answered {answer.status_code}"
