"""The applier group's consumer lag on Kafka: end offset − committed offset per partition, read
with the admin client. Measured here, below both the monitor's measures (`measures.py`) and the
"applied through L?" question (`positions.py`), which both need it."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from kafka import KafkaAdminClient, OffsetSpec, TopicPartition

from migwatch.connectors import kafka as kafka_conn
from migwatch.lag import PartitionLag


@dataclass(frozen=True)
class GroupLag:
    """Consumer lag of a group over some topics, and whether anyone consumes."""

    partitions: tuple[PartitionLag, ...]
    committed_total: int
    active_members: int
    missing_topics: tuple[str, ...] = ()

    @property
    def total(self) -> int:
        return sum(p.lag for p in self.partitions)

    def of_topic(self, topic: str) -> int:
        return sum(p.lag for p in self.partitions if p.topic == topic)


def group_lag(bootstrap: str, group: str, topics: Iterable[str],
              timeout_ms: int = 10_000) -> GroupLag:
    """Lag of `group` on `topics` (topics that do not exist yet are listed, not errors).

    `timeout_ms` bounds reaching the broker, so an outage costs one poll, not half a minute.
    """
    wanted = list(dict.fromkeys(topics))
    with kafka_conn.translated(f"kafka admin ({bootstrap})"):
        client = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="migwatch-monitor",
                                  request_timeout_ms=timeout_ms, bootstrap_timeout_ms=timeout_ms)
    try:
        with kafka_conn.translated(f"consumer lag of group {group}"):
            meta = client.describe_topics(wanted)
            tps = [TopicPartition(t["name"], p["partition_index"])
                   for t in meta if t.get("error_code") == 0 for p in t.get("partitions", ())]
            missing = tuple(sorted(t["name"] for t in meta if t.get("error_code") != 0))
            committed = client.list_group_offsets({group: None}).get(group, {})
            ends = client.list_partition_offsets({tp: OffsetSpec.LATEST for tp in tps}) \
                if tps else {}
            fresh = [tp for tp in tps if tp not in committed or committed[tp].offset < 0]
            starts = client.list_partition_offsets({tp: OffsetSpec.EARLIEST for tp in fresh}) \
                if fresh else {}
            described = client.describe_groups([group])
    finally:
        client.close()
    rows = []
    for tp in sorted(tps):
        end = int(ends[tp].offset)
        c = committed.get(tp)
        done = int(c.offset) if c is not None and c.offset >= 0 else None
        base = done if done is not None else int(starts[tp].offset)
        rows.append(PartitionLag(tp.topic, tp.partition, end, done, max(0, end - base)))
    return GroupLag(partitions=tuple(rows),
                    committed_total=sum(r.committed or 0 for r in rows),
                    active_members=kafka_conn.group_members(described, group),
                    missing_topics=missing)
