"""Long-running migwatch processes started locally (the CDC applier, a background monitor),
tracked by pid file in the run's folder.

Under a Prefect worker the applier runs as a deployment run instead; either way "running" means
the applier's consumer group has active members — that is what `applier_running` checks.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from migwatch import names
from migwatch.config import MigrationSpec, StackSettings
from migwatch.connectors import kafka as kafka_conn
from migwatch.errors import ApplierExited, MigwatchError, TransientError
from migwatch.runs import run_dir


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


# ------------------------------------------------------------------ background processes
def _pid(migration_id: str, kind: str) -> int | None:
    try:
        pid = int((run_dir(migration_id) / f"{kind}.pid").read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _alive(pid) else None


def _start(migration_id: str, kind: str, argv: list[str],
           extra_env: dict[str, str] | None = None) -> int:
    """`migwatch <argv>` in the background, its output in <run dir>/<kind>.log, unless one runs."""
    pid = _pid(migration_id, kind)
    if pid is not None:
        return pid
    d = run_dir(migration_id)
    exe = Path(sys.executable).parent / "migwatch"
    log = (d / f"{kind}.log").open("ab")
    try:
        proc = subprocess.Popen(
            [str(exe), *argv], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, **(extra_env or {})}, start_new_session=True)
    finally:
        log.close()
    (d / f"{kind}.pid").write_text(str(proc.pid))
    return proc.pid


def _stop(migration_id: str, kind: str, timeout: float) -> bool:
    """SIGTERM (the process finishes what it is doing and exits), SIGKILL after `timeout`."""
    pid = _pid(migration_id, kind)
    if pid is None:
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.2)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)
    (run_dir(migration_id) / f"{kind}.pid").unlink(missing_ok=True)
    return True


def applier_pid(migration_id: str) -> int | None:
    return _pid(migration_id, "applier")


def applier_worker_pid(migration_id: str) -> int | None:
    """The pid of the applier process itself under its supervisor (`applier_pid`)."""
    return _pid(migration_id, "applier-worker")


def start_applier(spec_path: str | os.PathLike[str], migration_id: str,
                  extra_env: dict[str, str] | None = None) -> int:
    """Start `migwatch apply` (a supervisor that runs the applier and starts it again when it
    dies) in the background unless it already runs; return the supervisor's pid."""
    return _start(migration_id, "applier", [
        "apply", str(Path(spec_path).resolve()), "--migration-id", migration_id], extra_env)


def stop_applier(migration_id: str, timeout: float = 60) -> bool:
    """SIGTERM the local applier (it finishes its batch and commits); True if one was running."""
    return _stop(migration_id, "applier", timeout)


def monitor_pid(migration_id: str) -> int | None:
    return _pid(migration_id, "monitor")


def start_monitor(spec_path: str | os.PathLike[str], migration_id: str) -> int:
    """`migwatch monitor --keep-running` in the background (the CI gate's `start`)."""
    return _start(migration_id, "monitor", [
        "monitor", str(Path(spec_path).resolve()), "--migration-id", migration_id,
        "--keep-running"])


def stop_monitor(migration_id: str, timeout: float = 30) -> bool:
    return _stop(migration_id, "monitor", timeout)


def stop_all(timeout: float = 60) -> list[str]:
    """Stop every local applier and monitor still running (by the pid files in the runs folder),
    e.g. before the stack they work against goes away; return "<kind> <migration_id>" of each."""
    stopped = []
    for pid_file in sorted((StackSettings().state_dir / "runs").glob("*/*.pid")):
        kind, migration_id = pid_file.stem, pid_file.parent.name
        if kind in ("monitor", "applier") and _stop(migration_id, kind, timeout):
            stopped.append(f"{kind} {migration_id}")
    return stopped


def applier_members(spec: MigrationSpec, migration_id: str) -> int:
    """Active members of the applier's consumer group (0 when empty or unknown)."""
    try:
        return kafka_conn.active_members(spec.kafka.bootstrap_servers,
                                         names.consumer_group(migration_id))
    except TransientError:
        raise
    except MigwatchError:
        return 0


def applier_running(spec: MigrationSpec, migration_id: str) -> bool:
    """True when the applier's consumer group has active members."""
    return applier_members(spec, migration_id) > 0


def log_tail(migration_id: str, chars: int = 2000) -> str:
    """The end of the local applier's log ('' when there is none)."""
    log = run_dir(migration_id) / "applier.log"
    return log.read_text(errors="replace")[-chars:] if log.exists() else ""


def wait_applier_running(spec: MigrationSpec, migration_id: str, timeout: float = 90,
                         pid: int | None = None, poll: float = 1.0) -> int:
    """Wait until the consumer group has members; returns how many.

    With `pid` (a local applier just started) a process that exits meanwhile fails at once
    with its log tail instead of waiting out `timeout`. Both failures are TransientError: a
    broker or target that was briefly away makes the applier exit, and a retry starts it again.
    """
    deadline = time.monotonic() + timeout
    while True:
        members = applier_members(spec, migration_id)
        if members:
            return members
        if pid is not None and not _alive(pid):
            raise ApplierExited(migration_id, pid, log_tail(migration_id))
        if time.monotonic() >= deadline:
            tail = log_tail(migration_id) if pid is not None else ""
            raise TransientError(f"applier for {migration_id} did not join its consumer group "
                                 f"within {timeout:.0f}s"
                                 + (f"; log tail:\n{tail}" if tail else ""))
        time.sleep(poll)
