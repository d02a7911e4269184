"""A throw-away Kafka Connect worker for benchmarks, beside the stack's shared one.

The Debezium JDBC sink runs here, never on the stack's worker: its own REST port, group id and
config/offset/status topics, its own plugin.path (the sink plugin installed from Maven Central
into the stack's cache), and a small heap. Closing it stops the process it started (by its pid)
and deletes its internal topics and consumer groups.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path
from types import TracebackType
from typing import Any

import requests

from migwatch.stack import Stack, templates

JDBC_SINK = "io.debezium.connector.jdbc.JdbcSinkConnector"
# The JDBC sink's newest release on Maven Central (it has no 3.6.1.Final; 3.6.0 builds against
# the same Kafka 4.3 API as the stack's PostgreSQL connector).
JDBC_SINK_COORDINATES = "io.debezium:debezium-connector-jdbc:3.6.0.Final"


class BenchConnectWorker:
    """Start with `start()` (or `with`), use `url`, always `close()`."""

    def __init__(self, stack: Stack, port: int = 8093, heap: str = "512m",
                 coordinates: str = JDBC_SINK_COORDINATES, home: Path | None = None) -> None:
        self.stack = stack
        self.port = port
        self.heap = heap
        self.coordinates = coordinates
        self.name = f"migwatch-bench-{uuid.uuid4().hex[:8]}"
        self.home = home or stack.state / "bench" / self.name
        self.proc: subprocess.Popen[bytes] | None = None
        self.connectors: list[str] = []

    @property
    def url(self) -> str:
        return self.stack.s.url(self.port)

    @property
    def log(self) -> Path:
        return self.home / "connect.log"

    @property
    def plugin_dir(self) -> Path:
        version = self.coordinates.rsplit(":", 1)[1]
        return self.stack.cache / f"debezium-jdbc-{version}" / "plugins"

    def internal_topics(self) -> list[str]:
        return [f"{self.name}-{kind}" for kind in ("configs", "offsets", "status")]

    def properties(self) -> str:
        s = self.stack.s
        configs, offsets, status = self.internal_topics()
        return "\n".join([
            f"bootstrap.servers={s.host}:{s.kafka_port}",
            f"group.id={self.name}",
            f"listeners=http://{s.host}:{self.port}",
            f"rest.advertised.host.name={s.host}",
            f"rest.advertised.port={self.port}",
            "key.converter=org.apache.kafka.connect.json.JsonConverter",
            "value.converter=org.apache.kafka.connect.json.JsonConverter",
            "key.converter.schemas.enable=true",
            "value.converter.schemas.enable=true",
            f"config.storage.topic={configs}",
            f"offset.storage.topic={offsets}",
            f"status.storage.topic={status}",
            "config.storage.replication.factor=1",
            "offset.storage.replication.factor=1",
            "status.storage.replication.factor=1",
            "offset.storage.partitions=1",
            "status.storage.partitions=1",
            # sink offsets are committed on this interval: 1 s keeps "done" measurable
            "offset.flush.interval.ms=1000",
            "connector.client.config.override.policy=All",
            f"plugin.path={self.plugin_dir}",
            "plugin.discovery=hybrid_warn",
            "scheduled.rebalance.max.delay.ms=0",
            "",
        ])

    # ------------------------------------------------------------------ lifecycle
    def start(self, timeout: float = 240) -> BenchConnectWorker:
        self.stack.install_connect_plugin(self.coordinates, self.plugin_dir,
                                          "install-debezium-jdbc.log")
        self.home.mkdir(parents=True, exist_ok=True)
        log4j = self.home / "log4j2.properties"
        log4j.write_text(templates.LOG4J2)
        props = self.home / "worker.properties"
        props.write_text(self.properties())
        cmd = [*self.stack._java(self.heap, log4j),
               "org.apache.kafka.connect.cli.ConnectDistributed", str(props)]
        with self.log.open("ab") as fh:
            self.proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"bench Connect worker exited {self.proc.returncode}; "
                                   f"see {self.log}")
            try:
                r = requests.get(self.url + "/connector-plugins", timeout=5)
                if r.ok and any(p.get("class") == JDBC_SINK for p in r.json()):
                    return
            except requests.RequestException:
                pass
            time.sleep(1)
        raise RuntimeError(f"bench Connect worker not ready in {timeout:.0f}s; see {self.log}")

    # ------------------------------------------------------------------ connectors
    def put_connector(self, name: str, config: dict[str, str]) -> None:
        self.connectors.append(name)
        r = requests.put(f"{self.url}/connectors/{name}/config", json=config, timeout=30)
        if not r.ok:
            raise RuntimeError(f"connector {name}: {r.status_code} {r.text[:500]}")

    def status(self, name: str) -> dict[str, Any]:
        r = requests.get(f"{self.url}/connectors/{name}/status", timeout=10)
        return r.json() if r.ok else {}

    def failed_trace(self, name: str) -> str | None:
        st = self.status(name)
        for part in [st.get("connector") or {}, *(st.get("tasks") or [])]:
            if part.get("state") == "FAILED":
                return str(part.get("trace") or "FAILED")[:3000]
        return None

    def delete_connector(self, name: str) -> None:
        with contextlib.suppress(requests.RequestException):
            requests.delete(f"{self.url}/connectors/{name}", timeout=30)

    # ------------------------------------------------------------------ teardown
    def close(self) -> None:
        """Delete connectors, stop the worker we started, drop its topics and groups."""
        if self.proc is not None and self.proc.poll() is None:
            for name in self.connectors:
                self.delete_connector(name)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)
        self._delete_kafka_leftovers()

    def _delete_kafka_leftovers(self) -> None:
        from kafka import KafkaAdminClient

        s = self.stack.s
        admin = KafkaAdminClient(bootstrap_servers=f"{s.host}:{s.kafka_port}",
                                 request_timeout_ms=15000, client_id="migwatch-bench")
        try:
            existing = set(admin.list_topics())
            mine = [t for t in self.internal_topics() if t in existing]
            if mine:
                admin.delete_topics(mine, raise_errors=False)
            groups = [self.name, *(f"connect-{c}" for c in self.connectors)]
            # a group that never formed is not an error here
            with contextlib.suppress(Exception):
                admin.delete_groups(groups)
        finally:
            admin.close()

    def __enter__(self) -> BenchConnectWorker:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
