"""The applier's dealings with Kafka and its outages, kept out of its loop: the order records
are applied in, dead-letter headers, heartbeat records, group-membership bounds, waiting out a
dependency that went away (`Outage`), and seeking to the offsets the target stored on every
partition assignment (`SeekToStored`) — the reason a rebalance or restart never skips or
repeats an event."""

from __future__ import annotations

import logging
import random
import sys
import threading
import time
import traceback
from typing import Any

import orjson
from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener

from migwatch import metrics
from migwatch.decoding import SkipEvent
from migwatch.errors import MigwatchError, TransientError
from migwatch.targets.base import Writer

log = logging.getLogger("migwatch.applier")


def in_offset_order(records: list[Any]) -> list[Any]:
    """Each (topic, partition, offset) once, in offset order per partition."""
    unique = {(r.topic, r.partition, r.offset): r for r in records}
    return [unique[k] for k in sorted(unique)]


def dlq_headers(rec: Any, exc: SkipEvent) -> list[tuple[str, bytes]]:
    return [
        ("migwatch.reason", exc.reason.encode()),
        ("migwatch.error", exc.detail[:1000].encode()),
        ("migwatch.topic", rec.topic.encode()),
        ("migwatch.partition", str(rec.partition).encode()),
        ("migwatch.offset", str(rec.offset).encode()),
    ]


def first_offsets(records: list[Any]) -> dict[TopicPartition, int]:
    first: dict[TopicPartition, int] = {}
    for rec in records:
        tp = TopicPartition(rec.topic, rec.partition)
        first[tp] = min(first.get(tp, rec.offset), rec.offset)
    return first


def heartbeat_ts(value: bytes | None) -> int | None:
    if not value:
        return None
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    if isinstance(doc, dict) and "payload" in doc:
        doc = doc["payload"]
    ts = doc.get("ts_ms") if isinstance(doc, dict) else None
    return int(ts) if isinstance(ts, int | float) else None


def membership_bound_seconds(config: dict[str, Any]) -> float:
    """How long a consumer may legitimately be outside a stable group: the broker waits up to
    the rebalance timeout (`max_poll_interval_ms`) for slow members, plus one session timeout,
    and never less than 30 s."""
    return max(30.0, (config["max_poll_interval_ms"] + config["session_timeout_ms"]) / 1000)


def thread_stacks() -> str:
    """Every thread's stack (the Kafka client's IO thread included), for a stuck applier."""
    names_ = {t.ident: t.name for t in threading.enumerate()}
    return "\n".join(f"--- {names_.get(ident, ident)}\n" + "".join(traceback.format_stack(frame))
                     for ident, frame in sys._current_frames().items())


class Stopped(Exception):
    """The applier was stopped while it waited for a dependency."""


class StuckConsumer(TransientError):
    """The Kafka client stayed outside its group longer than any rebalance may take."""


def dependency_of(exc: BaseException) -> str:
    """Which dependency a TransientError of a batch is about (for the log and the metric)."""
    text = str(exc).lower()
    return "target" if text.startswith("target") else "kafka"


def close_quietly(closer: Any) -> None:
    try:
        if isinstance(closer, KafkaConsumer):
            closer.close(autocommit=False)
        else:
            closer.close()
    except Exception:  # noqa: BLE001 - closing what an outage already broke
        log.debug("close failed", exc_info=True)


class Outage:
    """Waiting for a dependency that is away: backoff with jitter (0.5 s doubling to 30 s), the
    state said once per change in the log and in `migwatch_applier_waiting`."""

    def __init__(self, migration_id: str, stop: threading.Event, metrics_enabled: bool) -> None:
        self.mid = migration_id
        self.stop = stop
        self.metrics_enabled = metrics_enabled
        self.dependency: str | None = None
        self.since = 0.0
        self.attempt = 0

    def wait(self, dependency: str, exc: BaseException) -> None:
        if dependency != self.dependency:
            if self.dependency is not None:
                self._gauge(self.dependency, 0)
            log.warning("applier %s: waiting for %s: %s", self.mid, dependency, exc)
            self.dependency, self.since, self.attempt = dependency, time.monotonic(), 0
            self._gauge(dependency, 1)
            if self.metrics_enabled:
                metrics.APPLIER_OUTAGES.labels(self.mid, dependency).inc()
        self.attempt += 1
        delay = min(30.0, 0.5 * 2 ** min(self.attempt, 6)) * random.uniform(0.5, 1.0)
        self.stop.wait(delay)
        if self.stop.is_set():
            raise Stopped

    def ok(self) -> None:
        if self.dependency is None:
            return
        log.warning("applier %s: %s is back after %.1f s", self.mid, self.dependency,
                    time.monotonic() - self.since)
        self._gauge(self.dependency, 0)
        self.dependency = None

    def _gauge(self, dependency: str, value: int) -> None:
        if self.metrics_enabled:
            metrics.APPLIER_WAITING.labels(self.mid, dependency).set(value)


class SeekToStored(ConsumerRebalanceListener):
    """On assignment, continue from the offsets stored on the target with the data itself.

    kafka-python 3 calls it on its IO thread, but only while the applier's own thread is blocked
    inside `consumer.poll()` (the join that assigns runs within it), so the writer's connection
    is never used by two threads at once, and never inside an apply transaction.
    """

    def __init__(self, consumer: Any, writer: Writer) -> None:
        self.consumer = consumer
        self.writer = writer
        #: stored offsets of the last assignment, for the applier's thread to commit to Kafka
        #: (a commit cannot be made from the IO thread)
        self.owed: dict[TopicPartition, int] = {}

    def on_partitions_revoked(self, revoked: Any) -> None:
        return None

    def on_partitions_assigned(self, assigned: Any) -> None:
        try:
            stored = self.writer.stored_offsets(assigned)
        except MigwatchError as exc:
            log.warning("cannot read stored offsets (%s); using the group's committed ones", exc)
            return
        for tp, offset in stored.items():
            self.consumer.seek(tp, offset)
        self.owed = dict(stored)
