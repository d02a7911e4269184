"""Kafka: clients built in one place, with kafka-python's errors translated.

An unreachable broker or a timeout is a TransientError; everything else kafka-python raises is a
PermanentError naming the operation. The consumer-group workarounds kafka-python 3 needs live
here too (`rejoin_if_dropped`, `REBALANCED`), next to the one place that knows its internals.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka import errors as kerr
from kafka.coordinator.base import MemberState

from migwatch.errors import MigwatchError, PermanentError, TransientError

_TRANSIENT = (kerr.BrokerNotAvailableError, kerr.KafkaTimeoutError, kerr.KafkaConnectionError,
              kerr.NodeNotReadyError, kerr.CoordinatorNotAvailableError,
              kerr.NotCoordinatorError, kerr.CoordinatorLoadInProgressError,
              kerr.LeaderNotAvailableError, kerr.NotLeaderForPartitionError)


#: a commit refused because the group moved on (a rebalance began, or this member was dropped):
#: the member no longer owns those partitions in the group's eyes; the next poll rejoins
REBALANCED = (kerr.CommitFailedError, kerr.RebalanceInProgressError,
              kerr.IllegalGenerationError, kerr.UnknownMemberIdError)


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


def rejoin_if_dropped(consumer: KafkaConsumer) -> bool:
    """Re-arm a group join that kafka-python 3 left half done; True when it had to.

    kafka-python 3.0 (3.0.12 included) runs the JoinGroup/SyncGroup round trip as a task on its
    IO thread, and `poll()` waits for it only until its own timeout. When the group leader
    rejoins because its subscription's metadata changed (a subscribed topic appeared — as every
    table's topic does during the snapshot — or gained partitions), and `poll()` returns before
    that task ends, the task's assignment step records the new metadata as assigned; the next
    `poll()` then finds nothing to rejoin and never takes the assignment in. The consumer stays
    REBALANCING with heartbeats off and its partitions held back: the broker drops it after the
    session timeout and every later `poll()` returns nothing (a stuck applier, 0 members).

    Call between polls. A member REBALANCING with no rejoin pending is in exactly that state;
    asking for a rejoin makes the next `poll()` finish the join (or redo it if the broker has
    dropped the member meanwhile). No-op on a consumer without a group.
    """
    coordinator = getattr(consumer, "_coordinator", None)
    if coordinator is None or getattr(coordinator, "group_id", None) is None:
        return False
    if coordinator.state is not MemberState.REBALANCING or coordinator.need_rejoin():
        return False
    coordinator.request_rejoin()
    return True


def stable_member(consumer: KafkaConsumer) -> bool:
    """Whether the consumer is a joined, stable member of its group (True without a group)."""
    coordinator = getattr(consumer, "_coordinator", None)
    if coordinator is None or getattr(coordinator, "group_id", None) is None:
        return True
    return bool(coordinator.state is MemberState.STABLE)


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
