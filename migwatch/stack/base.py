"""What every part of the local stack stands on: its folders and addresses, and how a process is
spawned, found again by its pid file, stopped, or run to completion with its output logged.

Installing (`install.py`), starting (`servers.py`) and checking (`health.py`) all build on
`StackBase`, so each of them stays one concern while `Stack` (`manager.py`) is still one object.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from migwatch.config import StackSettings
from migwatch.errors import StackError

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is not alive
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
        return state != "Z"
    except OSError:
        return False


class StackBase:
    """The stack's settings, folders, addresses and processes — shared by every other part."""

    def __init__(self, settings: StackSettings | None = None, echo: Callable[[str], None] = print):
        self.s = settings or StackSettings()
        self.echo = echo
        self.state = self.s.state_dir
        self.cache = self.s.cache_dir
        self.logs = self.state / "logs"
        self.pids = self.state / "pids"

    # ------------------------------------------------------------------ addresses
    def address(self, name: str) -> str:
        s = self.s
        return {
            "postgres-source": f"postgresql://{s.host}:{s.pg_source_port}",
            "postgres-target": f"postgresql://{s.host}:{s.pg_target_port}",
            "kafka": f"{s.host}:{s.kafka_port}",
            "kafka-connect": s.url(s.connect_port),
            "ferretdb": f"mongodb://{s.host}:{s.ferretdb_port}",
            "prometheus": s.url(s.prometheus_port),
            "pushgateway": s.url(s.pushgateway_port),
            "alertmanager": s.url(s.alertmanager_port),
            "prefect-server": s.url(s.prefect_port) + "/api",
        }[name]

    def pg_dsn(self, which: str, database: str = "migwatch") -> str:
        """DSN of the stack's source or target cluster — holds the password: never log it."""
        port = self.s.pg_source_port if which == "source" else self.s.pg_target_port
        pw = self.s.pg_password.get_secret_value()
        return (
            f"host={self.s.host} port={port} user={self.s.pg_user} password={pw} "
            f"dbname={database} connect_timeout=5"
        )

    # ------------------------------------------------------------------ processes
    def _pid(self, name: str) -> int | None:
        if name.startswith("postgres-"):
            f = self._pg_data(name) / "postmaster.pid"
        else:
            f = self.pids / f"{name}.pid"
        try:
            pid = int(f.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        return pid if _pid_alive(pid) else None

    def _spawn(self, name: str, cmd: list[str], env: dict[str, str] | None = None,
               cwd: Path | None = None) -> None:
        log = self.logs / f"{name}.log"
        fh = log.open("ab")
        try:
            proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL,
                                    env={**os.environ, **(env or {})}, cwd=cwd,
                                    start_new_session=True)
        except FileNotFoundError as exc:
            raise StackError(name, f"{cmd[0]} not found", " ".join(cmd)) from exc
        finally:
            fh.close()
        (self.pids / f"{name}.pid").write_text(str(proc.pid))
        self._cmds = getattr(self, "_cmds", {})
        self._cmds[name] = " ".join(cmd)

    def _terminate(self, pid: int, timeout: float = 30) -> None:
        try:
            os.killpg(pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _pid_alive(pid):
            time.sleep(0.2)
        if _pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)

    def _run_logged(self, component: str, cmd: list[str], log_name: str,
                    cwd: Path | None = None, env: dict[str, str] | None = None) -> None:
        log = self.logs / log_name
        with log.open("wb") as fh:
            try:
                rc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=cwd,
                                    env=env).returncode
            except FileNotFoundError as exc:
                raise StackError(component, f"{cmd[0]} is not installed", " ".join(cmd)) from exc
        if rc != 0:
            raise StackError(component, f"install step exited {rc}", " ".join(cmd), _tail(log))

    # ------------------------------------------------------------------ PostgreSQL
    def _pg_data(self, name: str) -> Path:
        return self.state / "pg" / name.removeprefix("postgres-")

    def _check_reachable_by_pg(self, folder: Path) -> None:
        """The clusters run as the `postgres` OS user, who must be able to enter every folder
        above their data: say which one it cannot (a state folder under a private directory),
        instead of initdb's "Permission denied" on a file."""
        if os.geteuid() != 0:
            return
        for part in [*reversed(folder.resolve().parents), folder.resolve()]:
            res = subprocess.run(["runuser", "-u", "postgres", "--", "test", "-x", str(part)],
                                 capture_output=True, cwd="/")
            if res.returncode != 0:
                raise StackError("postgres", f"the postgres OS user cannot enter {part}, "
                                             "above the stack's state folder: choose a state "
                                             "folder it can reach (MIGWATCH_STATE_DIR, e.g. "
                                             f"under /var/tmp) or allow it in (chmod o+x {part})")

    def _run_as_pg(self, cmd: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if check and res.returncode != 0:
            raise StackError("postgres", f"exited {res.returncode}", " ".join(cmd),
                             (res.stdout + res.stderr)[-3000:])
        return res
