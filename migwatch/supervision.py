"""Keeping a migration's moving parts running with nobody watching: the local supervisor around
the applier process, and the restart of a connector task that failed on a passing fault.

Why: the applier waits out outages it can see (`Applier._until_ready`), but a process that dies
anyway — killed by the OOM killer or a person, a fault it cannot wait out — or a Debezium task that
Connect marks FAILED stops the target following the source for good. The supervisor starts the
applier again after a backoff, and restarts a FAILED task whose trace says the cause was passing.
Every restart is counted (`migwatch_restarts_total`) and notified once; more restarts of one
component than its budget (`spec.supervision`) means the fault is permanent: it stops trying,
sets `migwatch_supervisor_gave_up` and notifies critical, so a person looks instead of a loop.

Under Prefect the applier runs as a `cdc-applier` deployment run instead; the same budget and
connector check apply there through `ensure_applier` and the deployment's automation.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import random
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from migwatch import capture, metrics
from migwatch.config import MigrationSpec, SupervisionSpec
from migwatch.errors import MigwatchError
from migwatch.lag.model import Notice, Verdict
from migwatch.runs import run_dir

log = logging.getLogger("migwatch.supervision")

APPLIER = "applier"
CONNECTOR = "connector"
#: the exit status of an applier that refused to start (a wrong spec or setting): it would fail
#: the same way again, so the supervisor does not restart it
REFUSED = 3
#: the Pushgateway job the supervisor's counters go to (the applier serves its own)
PUSH_JOB = "migwatch-supervisor"

#: what a FAILED task's trace says when the cause was passing (a server restarting, a network
#: cut, a broker leader moving): Kafka Connect's own retriable class, and the messages the
#: PostgreSQL JDBC driver and the Kafka client give for a lost or refused connection
RETRIABLE_MARKERS = (
    "RetriableException", "Connection refused", "connection has been closed",
    "An I/O error occurred", "terminating connection", "the database system is starting up",
    "the database system is shutting down", "the database system is in recovery mode",
    "TimeoutException", "DisconnectException", "SocketTimeoutException", "EOFException",
    "java.net.ConnectException", "NetworkException", "NotLeaderOrFollowerException",
    "is active for PID",  # the replication slot still held by the session a restart ended
)


def is_retriable(trace: str | None) -> bool:
    """True when a FAILED task's trace names a passing cause (see RETRIABLE_MARKERS)."""
    return bool(trace) and any(m in trace for m in RETRIABLE_MARKERS)  # type: ignore[operator]


def backoff(attempt: int, initial: float, maximum: float,
            rand: Callable[[], float] = random.random) -> float:
    """Seconds before restart number `attempt` (0-based): doubling from `initial`, capped at
    `maximum`, then "equal jitter" (between half and all of it) so that supervisors restarted
    together do not retry in step."""
    base = min(maximum, initial * 2 ** min(attempt, 32))
    return base / 2 + rand() * base / 2


class RestartBudget:
    """At most `max_restarts` restarts within any `window_seconds`; `spend` says whether one
    more is allowed now (and counts it when it is)."""

    def __init__(self, max_restarts: int, window_seconds: float) -> None:
        self.max_restarts = max_restarts
        self.window_seconds = window_seconds
        self._at: deque[float] = deque()

    def spend(self, now: float) -> bool:
        while self._at and now - self._at[0] > self.window_seconds:
            self._at.popleft()
        if len(self._at) >= self.max_restarts:
            return False
        self._at.append(now)
        return True

    @property
    def recent(self) -> int:
        return len(self._at)


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the supervisor dies (even by SIGKILL), so no
    applier is left running that nobody supervises (Linux prctl PR_SET_PDEATHSIG)."""
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)


@dataclass
class ConnectorWatch:
    """The connector side of supervision: a FAILED connector or task with a retriable trace is
    restarted through Connect's REST API (FAILED instances only) within its budget; a
    non-retriable one is reported once and left for a person."""

    spec: MigrationSpec
    migration_id: str
    notify: Callable[[str, str], None]

    def __post_init__(self) -> None:
        s = self.spec.supervision
        self.budget = RestartBudget(s.max_restarts, s.window_seconds)
        self.gave_up = False
        self._reported: str | None = None
        self._unreachable = False

    def check(self) -> str:
        """One look: returns ok, absent, unreachable, restarted, failed (not retriable) or
        gave-up."""
        try:
            status = capture.connector_status(self.spec, self.migration_id)
        except MigwatchError as exc:
            if not self._unreachable:
                log.warning("supervisor %s: cannot read the connector's status (%s); "
                            "checked again later", self.migration_id, type(exc).__name__)
            self._unreachable = True
            return "unreachable"
        self._unreachable = False
        if status.state == "ABSENT":
            return "absent"
        if not status.failed:
            self._reported = None
            if self.gave_up:
                self.gave_up = False
                metrics.SUPERVISOR_GAVE_UP.labels(self.migration_id, CONNECTOR).set(0)
            return "ok"
        if self.gave_up:
            return "gave-up"
        first_line = (status.trace or status.state).strip().splitlines()[0][:300]
        if not is_retriable(status.trace):
            if self._reported != first_line:
                self._reported = first_line
                self.notify("critical", f"connector {status.name} FAILED and its trace names "
                            f"no passing cause, so it is not restarted: {first_line}")
            return "failed"
        if not self.budget.spend(time.monotonic()):
            self.gave_up = True
            metrics.SUPERVISOR_GAVE_UP.labels(self.migration_id, CONNECTOR).set(1)
            self.notify("critical", f"connector {status.name} FAILED again after "
                        f"{self.budget.recent} restarts within "
                        f"{self.spec.supervision.window_seconds:.0f}s; no longer restarted: "
                        f"{first_line}")
            return "gave-up"
        try:
            capture.restart_failed(self.spec, self.migration_id)
        except MigwatchError as exc:
            log.warning("supervisor %s: restarting the connector failed (%s); tried again "
                        "later", self.migration_id, type(exc).__name__)
            return "unreachable"
        metrics.RESTARTS.labels(self.migration_id, CONNECTOR).inc()
        self.notify("warning", f"connector {status.name}: a FAILED task was restarted "
                    f"(restart {self.budget.recent} within "
                    f"{self.spec.supervision.window_seconds:.0f}s): {first_line}")
        return "restarted"


class Supervisor:
    """Runs `argv` (the applier, unsupervised) and starts it again when it dies.

    A child that exits 0 stopped on request (SIGTERM): the supervisor ends too; one that exits
    REFUSED could not start on its spec or settings and is not restarted. Any other end —
    a non-zero exit, a signal such as SIGKILL — is a death: restarted after `backoff`, unless
    the budget is spent (then it gives up with the child's exit status). SIGTERM or SIGINT to
    the supervisor is passed to the child, which finishes its batch, commits and exits 0.
    Between deaths the connector's tasks are checked every `check_interval_seconds`.
    """

    def __init__(self, spec: MigrationSpec, migration_id: str, argv: Sequence[str], *,
                 notify: Callable[[str, str], None] | None = None,
                 watch_connector: bool = True) -> None:
        self.spec = spec
        self.migration_id = migration_id
        self.argv = list(argv)
        self.settings: SupervisionSpec = spec.supervision
        self.notify = notify or self._notify
        self.budget = RestartBudget(self.settings.max_restarts, self.settings.window_seconds)
        self.connector = ConnectorWatch(spec, migration_id, self.notify) \
            if watch_connector else None
        self._stop = threading.Event()
        self._child: subprocess.Popen[bytes] | None = None
        self.starts = 0
        metrics.RESTARTS.labels(migration_id, APPLIER)
        metrics.RESTARTS.labels(migration_id, CONNECTOR)
        metrics.SUPERVISOR_GAVE_UP.labels(migration_id, APPLIER).set(0)
        metrics.SUPERVISOR_GAVE_UP.labels(migration_id, CONNECTOR).set(0)

    @property
    def worker_pid_file(self) -> Path:
        return run_dir(self.migration_id) / "applier-worker.pid"

    def stop(self) -> None:
        """Ask the child to finish (SIGTERM) and the supervisor not to start another."""
        self._stop.set()
        child = self._child
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGTERM)

    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stop())

    def run(self) -> int:
        """Supervise until stopped (returns 0) or until the budget is spent (returns the last
        child's exit status, 128 + signal number for a signal)."""
        self._push()
        attempt = 0
        next_check = time.monotonic() + self.settings.check_interval_seconds
        while True:
            started = time.monotonic()
            child = self._start()
            while (code := self._wait(child, 1.0)) is None:
                if self.connector is not None and time.monotonic() >= next_check:
                    if self.connector.check() == "restarted":
                        self._push()
                    next_check = time.monotonic() + self.settings.check_interval_seconds
            self.worker_pid_file.unlink(missing_ok=True)
            status = 128 - code if code < 0 else code
            if self._stop.is_set() or code == 0:
                log.info("supervisor %s: applier ended (exit %d); not restarted",
                         self.migration_id, status)
                return 0 if self._stop.is_set() else status
            if code == REFUSED:
                metrics.SUPERVISOR_GAVE_UP.labels(self.migration_id, APPLIER).set(1)
                self._push()
                self.notify("critical", "the applier refused to start (a wrong spec or "
                            f"setting); not restarted — see {run_dir(self.migration_id)}"
                            "/applier.log")
                return status
            if time.monotonic() - started > self.settings.window_seconds:
                attempt = 0  # it ran well for a whole window: start the backoff over
            how = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
            if not self.budget.spend(time.monotonic()):
                metrics.SUPERVISOR_GAVE_UP.labels(self.migration_id, APPLIER).set(1)
                self._push()
                self.notify("critical", f"applier died ({how}) after {self.budget.recent} "
                            f"restarts within {self.settings.window_seconds:.0f}s; the "
                            f"supervisor gives up — see {run_dir(self.migration_id)}/applier.log")
                log.error("supervisor %s: applier died (%s); restart budget spent, giving up",
                          self.migration_id, how)
                return status or 1
            delay = backoff(attempt, self.settings.backoff_initial_seconds,
                            self.settings.backoff_max_seconds)
            attempt += 1
            metrics.RESTARTS.labels(self.migration_id, APPLIER).inc()
            self._push()
            log.warning("supervisor %s: applier died (%s); starting it again in %.1fs "
                        "(restart %d within %.0fs)", self.migration_id, how, delay,
                        self.budget.recent, self.settings.window_seconds)
            self.notify("warning", f"applier died ({how}) and was started again "
                        f"(restart {self.budget.recent} within "
                        f"{self.settings.window_seconds:.0f}s)")
            if self._stop.wait(delay):
                return 0

    def _start(self) -> subprocess.Popen[bytes]:
        self._child = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL,
                                       preexec_fn=_die_with_parent)
        self.starts += 1
        self.worker_pid_file.write_text(str(self._child.pid))
        log.info("supervisor %s: applier started (pid %d, start %d)", self.migration_id,
                 self._child.pid, self.starts)
        if self._stop.is_set():  # a stop that came while it started
            self._child.send_signal(signal.SIGTERM)
        return self._child

    @staticmethod
    def _wait(child: subprocess.Popen[bytes], seconds: float) -> int | None:
        try:
            return child.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            return None

    def _push(self) -> None:
        push(self.spec, self.migration_id)

    def _notify(self, kind: str, reason: str) -> None:
        notify(self.spec, self.migration_id, kind, reason)


def notify(spec: MigrationSpec, migration_id: str, kind: str, reason: str) -> None:
    """One `warning` or `critical` message about a restart through the blocks the spec names for
    `kind` (none named: the log only); never raises — a notification must not stop supervision."""
    from migwatch.notifications import send

    notice = Notice(kind=kind, migration_id=migration_id,
                    verdict=Verdict.ERROR if kind == "critical" else Verdict.STALLED,
                    measure=None, value=None, threshold=None, eta_seconds=None,
                    reasons=(reason,), at=time.time())
    try:
        send(notice, spec.notifications)
    except Exception as exc:
        log.warning("supervisor %s: notification failed (%s)", migration_id,
                    type(exc).__name__)


def push(spec: MigrationSpec, migration_id: str) -> None:
    """The restart counters to the Pushgateway (job PUSH_JOB); a failure is logged only."""
    try:
        metrics.push(spec.metrics.pushgateway_url, migration_id, job=PUSH_JOB)
    except MigwatchError as exc:
        log.warning("supervisor %s: metrics push failed (%s)", migration_id,
                    type(exc).__name__)


def worker_argv(executable: str, spec_path: str, migration_id: str,
                metrics_port: int = 0) -> list[str]:
    """The unsupervised applier the supervisor runs."""
    return [executable, "apply", spec_path, "--migration-id", migration_id, "--no-supervise",
            "--metrics-port", str(metrics_port)]
