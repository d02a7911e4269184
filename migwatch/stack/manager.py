"""Install, start, check and stop the local stack.

Every component is installed on demand from a package registry (Debian packages, Maven Central,
the Go module proxy), started on 127.0.0.1 with its data, log and pid file under the state folder,
and declared up only after a real round trip. Downloads are cached outside any checkout
(`MIGWATCH_CACHE_DIR`), so a fresh clone on the same machine starts fast. `down` stops only what
`up` started, by pid file.

`Stack` is assembled from one part per concern: `base.py` (folders, addresses, processes),
`install.py`, `servers.py` (starting each server) and `health.py` (round-trip checks); this
module holds the public entry points `up`, `status` and `down`.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from migwatch.errors import StackError
from migwatch.stack.base import PG_BIN, _tail
from migwatch.stack.health import HealthChecks
from migwatch.stack.servers import Servers

COMPONENTS = (
    "postgres-source",
    "postgres-target",
    "kafka",
    "kafka-connect",
    "ferretdb",
    "prometheus",
    "pushgateway",
    "alertmanager",
    "prefect-server",
)


@dataclass(frozen=True)
class ComponentStatus:
    name: str
    address: str
    healthy: bool
    pid: int | None
    detail: str = ""


class Stack(Servers, HealthChecks):
    """The local stack described by `settings`; every method is safe to call twice."""

    # ------------------------------------------------------------------ public API
    def up(self, components: tuple[str, ...] = COMPONENTS) -> list[ComponentStatus]:
        """Install and start what is not running, then prove each with a round trip."""
        for d in (self.state, self.logs, self.pids, self.s.file_sd_dir, self.cache):
            d.mkdir(parents=True, exist_ok=True)
        os.chmod(self.state, 0o755)
        self._install(components)
        order = [c for c in COMPONENTS if c in components]
        for name in order:
            if self._running(name):
                self.echo(f"{name}: already running")
                continue
            self.echo(f"{name}: starting")
            getattr(self, "_start_" + name.replace("-", "_"))()
            if name == "kafka":  # Connect needs the broker before it starts
                self._wait(name)
        for name in order:
            self._wait(name)
            self.echo(f"{name}: round trip ok ({self.address(name)})")
        return self.status(components)

    def _running(self, name: str, grace: float = 30) -> bool:
        """Whether `name` runs and answers. A process that holds its pid file but does not
        answer yet (a previous `up` still starting it, or one going down) gets `grace`
        seconds: once it has exited it is started again; still there and silent is a
        StackError naming it, with its log — never a second server on the same port."""
        deadline = time.monotonic() + grace
        last = ""
        while True:
            pid = self._pid(name)
            if pid is None:
                return False
            try:
                if self._healthy(name, deep=False):
                    return True
            except StackError:
                raise
            except Exception as exc:  # noqa: BLE001 - a server not answering yet
                last = str(exc)[:300]
            if time.monotonic() >= deadline:
                raise StackError(name, f"process {pid} holds {name}'s pid file but has not "
                                       f"answered for {grace:.0f}s ({last}): stop it, or "
                                       "remove its pid file if it is not this stack's",
                                 log_tail=_tail(self.logs / f"{name}.log"))
            time.sleep(1)

    def status(self, components: tuple[str, ...] = COMPONENTS) -> list[ComponentStatus]:
        out = []
        for name in components:
            pid = self._pid(name)
            try:
                healthy = self._healthy(name, deep=False)
                detail = ""
            except Exception as exc:  # status must never crash on a half-started stack
                healthy, detail = False, str(exc)[:200]
            out.append(ComponentStatus(name, self.address(name), healthy, pid, detail))
        return out

    def down(self, components: tuple[str, ...] = COMPONENTS) -> list[str]:
        """Stop the processes `up` started (by pid file), in reverse order; return their names."""
        stopped = []
        for name in reversed([c for c in COMPONENTS if c in components]):
            if name.startswith("postgres-"):
                data = self._pg_data(name)
                if (data / "postmaster.pid").exists():
                    self._run_as_pg([str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "fast",
                                     "-w", "-t", "60", "stop"], check=False)
                    stopped.append(name)
                continue
            pid = self._pid(name)
            if pid is None:
                continue
            self._terminate(pid)
            (self.pids / f"{name}.pid").unlink(missing_ok=True)
            stopped.append(name)
        return stopped
