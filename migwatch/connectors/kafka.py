"""Kafka: clients built in one place, with kafka-python's errors translated.

An unreachable broker or a timeout is a TransientError; everything else kafka-python raises is a
PermanentError naming the operation.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka import errors as kerr

from migwatch.errors import MigwatchError, PermanentError, TransientError

_TRANSIENT = (kerr.BrokerNotAvailableError, kerr.KafkaTimeoutError, kerr.KafkaConnectionError,
              kerr.NodeNotReadyError, kerr.CoordinatorNotAvailableError,
              kerr.NotCoordinatorError, kerr.CoordinatorLoadInProgressError,
              kerr.LeaderNotAvailableError, kerr.NotLeaderForPartitionError)


def translate(exc: BaseException, what: str) -> MigwatchError:
    if isinstance(exc, MigwatchError):
        return exc
    name = type(exc).__name__
    if isinstance(exc, _TRANSIENT) or getattr(exc, "retriable", False):
        return TransientError(f"{what}: Kafka unavailable ({name})")
    return PermanentError(f"{what}: {name}: {str(exc)[:300]}")


@contextmanager
def translated(what: str) -> Iterator[None]:
    try:
        yield
    except kerr.KafkaError as exc:
        raise translate(exc, what) from exc


def admin(bootstrap: str) -> KafkaAdminClient:
    with translated(f"kafka admin ({bootstrap})"):
        return KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15000,
                                client_id="migwatch-admin")


def producer(bootstrap: str, **config: Any) -> KafkaProducer:
    with translated(f"kafka producer ({bootstrap})"):
        return KafkaProducer(bootstrap_servers=bootstrap, client_id="migwatch", acks="all",
                             linger_ms=5, **config)


def consumer(bootstrap: str, group: str | None, **config: Any) -> KafkaConsumer:
    with translated(f"kafka consumer ({bootstrap})"):
        return KafkaConsumer(bootstrap_servers=bootstrap, group_id=group,
                             **{"enable_auto_commit": False, "auto_offset_reset": "earliest",
                                "client_id": "migwatch", **config})


def group_members(described: Mapping[str, Any], group: str) -> int:
    """Members of `group` in a `describe_groups` reply (kafka-python 3: a dict keyed by group)."""
    info = described.get(group) or {}
    return len(info.get("members") or ())


def active_members(bootstrap: str, group: str) -> int:
    """How many consumers are in `group` now — 0 when the group is empty or unknown."""
    client = admin(bootstrap)
    try:
        with translated(f"describe consumer group {group}"):
            try:
                described = client.describe_groups([group])
            except (ValueError, KeyError) as exc:  # a non-consumer protocol group
                raise PermanentError(f"group {group} is not a consumer group") from exc
    finally:
        client.close()
    return group_members(described, group)
