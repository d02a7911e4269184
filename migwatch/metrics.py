"""Every metric migwatch exports, declared once, in one dedicated registry.

Long-running processes (the applier, the monitor) serve `REGISTRY` over HTTP and announce
themselves to Prometheus through a file_sd target file; batch stages push the same registry to the
Pushgateway under a grouping key per migration id. Labels are bounded: never a secret, a row key or
an error message.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.error import HTTPError

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.exposition import push_to_gateway
from prometheus_client.metrics_core import Metric

from migwatch.errors import MigwatchError, PermanentError, TransientError

REGISTRY = CollectorRegistry(auto_describe=True)

_BUCKETS = (0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600)

# --- names the users already use (DESIGN.md) -------------------------------------------------
MIGRATION_DURATION = Histogram(
    "migration_duration_seconds", "Time spent in a migration stage.",
    ["migration_id", "stage", "status"], buckets=_BUCKETS, registry=REGISTRY,
)
MIGRATION_ROWS = Counter(
    "migration_rows_total", "Rows written to the target (snapshot and changes).",
    ["migration_id", "table_name"], registry=REGISTRY,
)
MIGRATION_ERRORS = Counter(
    "migration_errors_total", "Errors by stage and error class.",
    ["migration_id", "stage", "error_type"], registry=REGISTRY,
)
MIGRATION_DATA_LAG = Gauge(
    "migration_data_lag_seconds",
    "The larger of event-time and end-to-end lag: what `migwatch check --max-lag` compares.",
    ["migration_id"], registry=REGISTRY,
)
CDC_EVENTS = Counter(
    "cdc_events_processed_total", "Change events applied to the target.",
    ["migration_id", "source", "table", "operation"], registry=REGISTRY,
)
CDC_CONSUMER_LAG = Gauge(
    "cdc_consumer_lag_messages", "End offset minus the applier group's committed offset.",
    ["migration_id", "topic", "partition"], registry=REGISTRY,
)
CDC_REPLICATION_LAG = Gauge(
    "cdc_replication_lag_seconds", "Event-time lag per table: now minus source commit time.",
    ["migration_id", "source_table", "target_table"], registry=REGISTRY,
)
MONGO_MIGRATION_DURATION = Histogram(
    "mongodb_migration_duration_seconds", "Duration of one versioned MongoDB migration.",
    ["version", "status"], buckets=_BUCKETS, registry=REGISTRY,
)
MONGO_MIGRATION_DOCUMENTS = Counter(
    "mongodb_migration_documents_total", "Documents a versioned MongoDB migration touched.",
    ["version", "collection"], registry=REGISTRY,
)
MONGO_MIGRATION_ERRORS = Counter(
    "mongodb_migration_errors_total", "Failed versioned MongoDB migrations.",
    ["version", "error_type"], registry=REGISTRY,
)
SQL_MIGRATION_DURATION = Histogram(
    "sql_migration_duration_seconds", "Duration of one versioned SQL migration.",
    ["version", "status"], buckets=_BUCKETS, registry=REGISTRY,
)
SQL_MIGRATION_ERRORS = Counter(
    "sql_migration_errors_total", "Failed versioned SQL migrations.",
    ["version", "error_type"], registry=REGISTRY,
)

# --- migwatch's own --------------------------------------------------------------------------
DLQ_EVENTS = Counter(
    "migwatch_dlq_events_total", "Events sent to the dead-letter topic, by reason class.",
    ["migration_id", "reason"], registry=REGISTRY,
)
APPLIER_WAITING = Gauge(
    "migwatch_applier_waiting",
    "1 while the applier waits for a dependency (source, target, kafka) to come back.",
    ["migration_id", "dependency"], registry=REGISTRY,
)
APPLIER_OUTAGES = Counter(
    "migwatch_applier_outages_total",
    "Times the applier lost a dependency (source, target, kafka) and waited for it.",
    ["migration_id", "dependency"], registry=REGISTRY,
)
RESTARTS = Counter(
    "migwatch_restarts_total",
    "Restarts by the supervisor: an applier process that died, a FAILED connector task.",
    ["migration_id", "component"], registry=REGISTRY,
)
SUPERVISOR_GAVE_UP = Gauge(
    "migwatch_supervisor_gave_up",
    "1 when a component failed more often than its restart budget allows and is left down.",
    ["migration_id", "component"], registry=REGISTRY,
)
SCHEMA_CHANGES = Counter(
    "migwatch_schema_changes_total",
    "Source schema changes the applier saw, by whether the target followed or the table stopped.",
    ["migration_id", "table_name", "outcome"], registry=REGISTRY,
)
TABLE_STOPPED = Gauge(
    "migwatch_table_stopped",
    "1 while a table's apply is stopped by a source schema change its target does not follow.",
    ["migration_id", "table_name"], registry=REGISTRY,
)
APPLIER_REJOINS = Counter(
    "migwatch_applier_rejoins_total",
    "Consumer-group joins the Kafka client left half done and the applier re-armed.",
    ["migration_id"], registry=REGISTRY,
)
APPLY_BATCH_DURATION = Histogram(
    "migwatch_apply_batch_duration_seconds", "Time to apply and commit one batch.",
    ["migration_id"], buckets=_BUCKETS, registry=REGISTRY,
)
EVENT_TIME_LAG = Gauge(
    "migwatch_event_time_lag_seconds", "Now minus source commit time of the newest applied event.",
    ["migration_id"], registry=REGISTRY,
)
END_TO_END_LAG = Gauge(
    "migwatch_end_to_end_lag_seconds", "Heartbeat written on the source, seen on the target.",
    ["migration_id"], registry=REGISTRY,
)
APPLIED_SOURCE_TS = Gauge(
    "migwatch_applied_source_timestamp_seconds", "Source commit time of the newest applied event.",
    ["migration_id"], registry=REGISTRY,
)
SLOT_RETAINED_WAL = Gauge(
    "migwatch_slot_retained_wal_bytes", "WAL the replication slot keeps on the source.",
    ["migration_id", "slot"], registry=REGISTRY,
)
CAUGHT_UP = Gauge(
    "migwatch_caught_up", "1 when every lag measure is under its caught_up threshold.",
    ["migration_id"], registry=REGISTRY,
)
LAG_STATUS = Gauge(
    "migwatch_lag_status", "1 for the current lag verdict (OK, WARNING, ...), else 0.",
    ["migration_id", "status"], registry=REGISTRY,
)
VERDICT = Gauge(
    "migwatch_verdict_go", "1 when the report's verdict is go, 0 when no-go.",
    ["migration_id"], registry=REGISTRY,
)
VALIDATION_ROWS = Counter(
    "migwatch_validation_rows_compared_total", "Rows covered by validation checksums.",
    ["migration_id", "table_name"], registry=REGISTRY,
)
VALIDATION_MISMATCHES = Gauge(
    "migwatch_validation_mismatched_rows", "Rows found different on the target.",
    ["migration_id", "table_name", "state"], registry=REGISTRY,
)
VALIDATION_RANGES = Counter(
    "migwatch_validation_ranges_checked_total", "Primary-key ranges checksummed.",
    ["migration_id", "table_name"], registry=REGISTRY,
)
SNAPSHOT_PROGRESS = Gauge(
    "migwatch_snapshot_progress_ratio", "Rows applied over the source's row estimate.",
    ["migration_id", "table_name"], registry=REGISTRY,
)
CUTOVER_DOWNTIME = Gauge(
    "migwatch_cutover_downtime_seconds",
    "Write-downtime of the last cutover: from the freeze of the source to the end of the switch "
    "(or of the undo, when it aborted).", ["migration_id"], registry=REGISTRY,
)
CUTOVER_STEP = Gauge(
    "migwatch_cutover_step_seconds", "How long each step of the last cutover took.",
    ["migration_id", "step"], registry=REGISTRY,
)
LOAD_THROUGHPUT = Gauge(
    "migwatch_load_rows_per_second",
    "Rows per second of the initial load by COPY so far (snapshot.method: copy).",
    ["migration_id"], registry=REGISTRY,
)
NOTIFICATIONS = Counter(
    "migwatch_notifications_total", "Notifications sent, by severity and outcome.",
    ["migration_id", "severity", "outcome"], registry=REGISTRY,
)


def error_type(exc: BaseException) -> str:
    """A bounded label for an exception: its class name, never its message."""
    return type(exc).__name__


@contextmanager
def observe_stage(migration_id: str, stage: str) -> Iterator[None]:
    """Time a stage into `migration_duration_seconds` and count its failure by error class."""
    start = time.perf_counter()
    status = "success"
    try:
        yield
    except BaseException as exc:
        status = "failed"
        MIGRATION_ERRORS.labels(migration_id, stage, error_type(exc)).inc()
        raise
    finally:
        MIGRATION_DURATION.labels(migration_id, stage, status).observe(time.perf_counter() - start)


class _OneMigration:
    """REGISTRY seen through one migration id: the Pushgateway refuses (400) a push whose samples
    carry another `migration_id` than the grouping key, as soon as a process watched two ids."""

    def __init__(self, migration_id: str) -> None:
        self.migration_id = migration_id

    def collect(self) -> Iterator[Metric]:
        for family in REGISTRY.collect():
            kept = [s for s in family.samples
                    if s.labels.get("migration_id", self.migration_id) == self.migration_id]
            if kept:
                copy = Metric(family.name, family.documentation, family.type, family.unit)
                copy.samples = kept
                yield copy


def push(pushgateway_url: str, migration_id: str, job: str = "migwatch") -> None:
    """Replace this migration's group on the Pushgateway with the registry's current values."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_OneMigration(migration_id))  # type: ignore[arg-type]
    try:
        push_to_gateway(
            pushgateway_url.removeprefix("http://"), job=job, registry=registry,
            grouping_key={"migration_id": migration_id}, timeout=10,
        )
    except HTTPError as exc:
        if exc.code < 500:
            raise PermanentError(f"pushgateway at {pushgateway_url} refused the push: "
                                 f"HTTP {exc.code}") from exc
        raise TransientError(f"pushgateway at {pushgateway_url}: HTTP {exc.code}") from exc
    except OSError as exc:
        raise TransientError(f"pushgateway at {pushgateway_url} unreachable: {exc}") from exc


class MetricsServer:
    """Serve REGISTRY over HTTP and announce it to Prometheus via a file_sd target file."""

    def __init__(self, file_sd_dir: Path | None, job: str, migration_id: str, port: int = 0):
        self.file_sd_dir = file_sd_dir
        self.job = job
        self.migration_id = migration_id
        self.port = port or _free_port()
        self._target: Path | None = None
        self._server: Any = None

    def start(self) -> MetricsServer:
        try:
            self._server, _ = start_http_server(self.port, addr="127.0.0.1", registry=REGISTRY)
        except OSError as exc:
            raise MigwatchError(f"metrics port {self.port} unavailable: {exc}") from exc
        if self.file_sd_dir is not None:
            self.file_sd_dir.mkdir(parents=True, exist_ok=True)
            self._target = self.file_sd_dir / f"{self.job}-{self.migration_id}-{os.getpid()}.json"
            tmp = self._target.with_suffix(".tmp")
            tmp.write_text(json.dumps([{
                "targets": [f"127.0.0.1:{self.port}"],
                "labels": {"job": self.job, "instance_pid": str(os.getpid())},
            }]))
            tmp.rename(self._target)  # atomic: Prometheus never reads half a file
        return self

    def stop(self) -> None:
        if self._target is not None:
            self._target.unlink(missing_ok=True)
            self._target = None
        if self._server is not None:
            self._server.shutdown()
            self._server = None


_serving: list[MetricsServer] = []
_serving_lock = threading.Lock()


@contextmanager
def serving(file_sd_dir: Path | None, job: str, migration_id: str,
            port: int = 0) -> Iterator[MetricsServer]:
    """Serve REGISTRY while the block runs — once per process: a nested block (the pipeline
    serving its whole run, then its monitor stage) reuses the server already running, so
    Prometheus never scrapes the same registry twice."""
    with _serving_lock:
        outer = _serving[0] if _serving else None
        server = outer or MetricsServer(file_sd_dir, job, migration_id, port).start()
        _serving.append(server)
    try:
        yield server
    finally:
        with _serving_lock:
            _serving.pop()
            if outer is None:
                server.stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
