"""Benchmark: the CDC applier against the Debezium JDBC sink, on the same Kafka topics.

Produces `--events` (≥) Debezium change events once — the shop workload's snapshot plus streamed
inserts, updates, primary-key changes and deletes, JSON with schemas (the JDBC sink needs them;
the applier reads both forms) — then, in the same run, applies the same topics to fresh
PostgreSQL targets and times each from its start until its consumer group has committed the
topics' end offsets:

    jdbc-sink          Debezium JDBC sink (upsert, record_key, deletes on) with its defaults, on a
                       Kafka Connect worker of its own (never the stack's shared one)
    jdbc-sink tuned    the same with batches as large as the applier's and its reduction buffer
                       (last change per key): the faster of the two is the baseline
    applier metrics    `migwatch.applier.Applier`, metrics enabled (as in production)
    applier nometrics  the same with metrics disabled: the instrumentation overhead (off and
                       on alternate, `--repeat` times each, every run on a fresh target)
    kafka-python       a bare KafkaConsumer (the applier's fetch sizes) reading and
                       orjson-decoding every value, twice: the client's ceiling, no target

Every target is then compared with the source (row count and an md5 over every row, per table).
A last applier run under pyinstrument shows where the time goes. Needs the local stack
(`migwatch stack up`) and the `bench` extra; cleans up what it made, even on failure.

    .venv/bin/python -m bench.applier            # 200k events
    .venv/bin/python bench/applier.py --quick    # a small smoke run
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson
import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.connect_worker import JDBC_SINK, BenchConnectWorker  # noqa: E402
from migwatch import capture, names, workload  # noqa: E402
from migwatch.applier import FETCH_SIZES, Applier  # noqa: E402
from migwatch.config import MigrationSpec, parse_spec  # noqa: E402
from migwatch.connectors import postgres as pg  # noqa: E402
from migwatch.stack import Stack  # noqa: E402

PASSWORD_ENV = "MIGWATCH_BENCH_PG_PASSWORD"
# applier runs in this order, each on its own target: (target key, metrics enabled)
ORDER = [("off1", False), ("on1", True), ("on2", True), ("off2", False),
         ("off3", False), ("on3", True)]
SHOP = list(workload.SHOP_TABLES)
HEARTBEAT = "public.migwatch_heartbeat"
# streamed change events per workload operation (measured on the shop workload: some updates
# find no row); only sizes each round of changes, rounds go on until the count is reached
EVENTS_PER_OPERATION = 1.2
STREAMED_SHARE = 0.15
# Debezium writes what the JDBC sink can read: JSON with schemas, bytea as bytes (base64 in
# JSON); numerics stay exact strings (migwatch's default), bound by the sink as untyped text
TOPIC_OVERRIDES = {
    "key.converter.schemas.enable": "true",
    "value.converter.schemas.enable": "true",
    "binary.handling.mode": "bytes",
}


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


@dataclass
class Result:
    tool: str
    events: int
    seconds: float
    target_ok: bool | None = None
    note: str = ""

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


# ---------------------------------------------------------------------------- databases
@dataclass
class Db:
    which: str
    name: str
    port: int
    dsn: str

    def endpoint(self) -> dict[str, Any]:
        return {"kind": "postgres", "host": "127.0.0.1", "port": self.port,
                "database": self.name, "user": "migwatch", "password": {"env": PASSWORD_ENV}}


class Databases:
    """Throw-away databases on the stack's clusters; `drop_all` removes every one made here."""

    def __init__(self, stack: Stack, run_id: str) -> None:
        self.stack = stack
        self.run_id = run_id
        self.made: list[Db] = []

    def make(self, which: str, label: str) -> Db:
        name = f"bench_{self.run_id}_{label}"
        with psycopg.connect(self.stack.pg_dsn(which, "postgres"), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        port = self.stack.s.pg_source_port if which == "source" else self.stack.s.pg_target_port
        db = Db(which, name, port, self.stack.pg_dsn(which, name))
        self.made.append(db)
        return db

    def drop_all(self) -> None:
        for db in reversed(self.made):
            try:
                with psycopg.connect(self.stack.pg_dsn(db.which, "postgres"),
                                     autocommit=True) as conn:
                    if db.which == "source":
                        conn.execute("SELECT pg_drop_replication_slot(slot_name) FROM "
                                     "pg_replication_slots WHERE database = %s AND NOT active",
                                     [db.name])
                    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                        sql.Identifier(db.name)))
            except psycopg.Error as exc:
                say(f"could not drop {db.name}: {exc}")


def make_spec(stack: Stack, source: Db, target: Db, batch_size: int) -> MigrationSpec:
    s = stack.s
    return parse_spec({
        "source": source.endpoint(),
        "target": target.endpoint(),
        "tables": SHOP,
        "kafka": {"bootstrap_servers": f"{s.host}:{s.kafka_port}", "batch_size": batch_size},
        "connect": {"url": s.url(s.connect_port), "overrides": TOPIC_OVERRIDES},
        "snapshot": {"method": "debezium"},  # the snapshot's events are the bench's input
    })


def table_digest(dsn: str, table: str) -> tuple[int, str]:
    """Row count and md5 over every column of every row in key order (text form)."""
    schema, name = table.split(".")
    with psycopg.connect(dsn) as conn:
        info = pg.describe_table(conn, schema, name)
        if info is None:
            return -1, "missing"
        order = sql.SQL(", ").join(sql.Identifier(k) for k in info.primary_key)
        row = conn.execute(sql.SQL(
            "SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY {}), '')) FROM {} t"
        ).format(order, info.ident)).fetchone()
    assert row is not None
    return int(row[0]), str(row[1])


def compare(source: dict[str, tuple[int, str]], target: Db) -> tuple[bool, str]:
    """True when every shop table has the source's rows; the note names what differs."""
    bad = []
    for t in SHOP:
        got = table_digest(target.dsn, t)
        if got != source[t]:
            what = "rows" if got[0] != source[t][0] else "values"
            bad.append(f"{t}: {what} {got[0]}/{source[t][0]}")
    return not bad, "; ".join(bad) or "equal to source"


# ---------------------------------------------------------------------------- Kafka
class Offsets:
    """End offsets of the bench topics and committed offsets of a consumer group."""

    def __init__(self, bootstrap: str) -> None:
        from kafka import KafkaAdminClient, KafkaConsumer

        self.bootstrap = bootstrap
        self.admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15000,
                                      client_id="migwatch-bench")
        self.consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                      client_id="migwatch-bench", enable_auto_commit=False)

    def partitions(self, topics: list[str]) -> list[Any]:
        from kafka import TopicPartition

        out = []
        for t in topics:
            parts = self.consumer.partitions_for_topic(t) or set()
            out += [TopicPartition(t, p) for p in sorted(parts)]
        return out

    def end(self, tps: list[Any]) -> dict[Any, int]:
        return dict(self.consumer.end_offsets(tps))

    def committed(self, group: str) -> dict[Any, int]:
        try:
            reply = self.admin.list_group_offsets({group: None})
        except Exception:  # the group forms a moment after its consumer starts
            return {}
        return {tp: om.offset for tp, om in (reply.get(group) or {}).items()
                if om is not None and om.offset >= 0}

    def delete_group(self, group: str) -> None:
        with contextlib.suppress(Exception):
            self.admin.delete_groups([group])

    def close(self) -> None:
        self.consumer.close()
        self.admin.close()


def wait_committed(offsets: Offsets, group: str, end: dict[Any, int], timeout: float,
                   check: Callable[[], None] | None = None, interval: float = 0.1) -> float:
    """Block until `group` has committed `end` on every partition; return monotonic time."""
    deadline = time.monotonic() + timeout
    last_check = 0.0
    while time.monotonic() < deadline:
        got = offsets.committed(group)
        if all(got.get(tp, -1) >= o for tp, o in end.items()):
            return time.monotonic()
        if check and time.monotonic() - last_check > 2:
            check()
            last_check = time.monotonic()
        time.sleep(interval)
    left = {f"{tp.topic}[{tp.partition}]": o - offsets.committed(group).get(tp, 0)
            for tp, o in end.items()}
    raise TimeoutError(f"group {group} did not reach the end offsets in {timeout:.0f}s: {left}")


# ---------------------------------------------------------------------------- producing
def produce(stack: Stack, spec: MigrationSpec, source: Db, mid: str, events: int,
            offsets: Offsets) -> tuple[list[Any], dict[Any, int], dict[str, int]]:
    """Fill the source, stream its snapshot and then changes until the topics hold `events`,
    wait until every event is in Kafka, then remove the connector and its slot (the topics
    stay). Returns partitions, end offsets and records per topic."""
    snapshot_rows = events - int(events * STREAMED_SHARE)
    say(f"source: shop workload with {snapshot_rows} rows")
    counts = workload.init(source.dsn, snapshot_rows)
    capture.prepare_source(spec, mid)
    say("Debezium connector on the stack's Connect worker (snapshot + streaming)")
    capture.ensure_connector(spec, mid, timeout=180)
    shop_topics = [names.table_topic(mid, t) for t in SHOP]

    def in_kafka() -> int:
        return sum(offsets.end(offsets.partitions(shop_topics)).values())

    # changes made before the snapshot's consistent point would land in the snapshot: stream
    # them only once every snapshot row is in Kafka
    deadline = time.monotonic() + 1800
    while in_kafka() < sum(counts.values()):
        if time.monotonic() > deadline:
            raise TimeoutError("the snapshot did not reach Kafka in 30 minutes")
        time.sleep(1)
    seed = 11
    while (have := in_kafka()) < events:
        ops = math.ceil((events - have) / EVENTS_PER_OPERATION * 1.05) + 10
        say(f"{have} events in Kafka: streaming {ops} workload operations")
        done = workload.run(source.dsn, rate=100_000, duration=3600, max_operations=ops,
                            seed=seed)
        seed += 1
        say(f"workload: {done.total} operations in {done.seconds:.1f}s")
        _wait_drained(source, mid, offsets, shop_topics)
    say("all events are in Kafka: removing the connector and its slot (topics stay)")
    capture.teardown(spec, mid, delete_topics=False)
    topics = [*shop_topics, names.table_topic(mid, HEARTBEAT)]
    tps = offsets.partitions(topics)
    end = offsets.end(tps)
    per_topic: dict[str, int] = {}
    for tp, o in end.items():
        per_topic[tp.topic] = per_topic.get(tp.topic, 0) + o
    return tps, end, per_topic


def _wait_drained(source: Db, mid: str, offsets: Offsets, shop_topics: list[str]) -> None:
    """Until the connector has passed the source's WAL and the topics stop growing."""
    stable, last = 0, None
    deadline = time.monotonic() + 1800
    while stable < 3:
        if time.monotonic() > deadline:
            raise TimeoutError("the connector did not finish writing its topics in 30 minutes")
        time.sleep(2)
        now = offsets.end(offsets.partitions(shop_topics))
        stable = stable + 1 if now == last else 0
        last = now
        with psycopg.connect(source.dsn, autocommit=True) as conn:
            row = conn.execute(
                "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn) FROM "
                "pg_replication_slots WHERE slot_name = %s", [names.slot_name(mid)]).fetchone()
        if row and row[0] is not None and row[0] > 1 << 20:
            stable = 0


# ---------------------------------------------------------------------------- the tools
def jdbc_config(stack: Stack, target: Db, topics: list[str], tuned: bool,
                batch_size: int) -> dict[str, str]:
    s = stack.s
    config = {
        "connector.class": JDBC_SINK,
        "tasks.max": "1",
        "topics": ",".join(topics),
        # stringtype=unspecified: numerics arrive as exact strings and are bound as untyped text
        "connection.url": f"jdbc:postgresql://{s.host}:{target.port}/{target.name}"
                          "?stringtype=unspecified",
        "connection.username": s.pg_user,
        "connection.password": s.pg_password.get_secret_value(),
        "insert.mode": "upsert",
        "primary.key.mode": "record_key",
        "delete.enabled": "true",
        "truncate.enabled": "true",
        "schema.evolution": "none",
        "quote.identifiers": "true",
        "collection.name.format": "${source.schema}.${source.table}",
        "key.converter": "org.apache.kafka.connect.json.JsonConverter",
        "key.converter.schemas.enable": "true",
        "value.converter": "org.apache.kafka.connect.json.JsonConverter",
        "value.converter.schemas.enable": "true",
        "consumer.override.auto.offset.reset": "earliest",
    }
    if tuned:
        config.update({
            "batch.size": str(batch_size),
            "consumer.override.max.poll.records": str(batch_size),
            "use.reduction.buffer": "true",
            # dialect.postgres.unnest.insert.enabled is left off: its arrays are typed from the
            # record schema, and numerics-as-strings then fail ("numeric but expression is of
            # type text")
        })
    return config


def run_jdbc(worker: BenchConnectWorker, stack: Stack, target: Db, topics: list[str],
             end: dict[Any, int], offsets: Offsets, tuned: bool, batch_size: int,
             run_id: str) -> float:
    name = f"bench-jdbc-{run_id}-{'tuned' if tuned else 'default'}"
    config = jdbc_config(stack, target, topics, tuned, batch_size)

    def check() -> None:
        trace = worker.failed_trace(name)
        if trace:
            raise RuntimeError(f"JDBC sink {name} FAILED:\n{trace}")

    start = time.monotonic()
    worker.put_connector(name, config)
    finished = wait_committed(offsets, f"connect-{name}", end, timeout=3600, check=check,
                              interval=0.1)
    seconds = finished - start
    worker.delete_connector(name)
    return seconds


def run_applier(spec: MigrationSpec, mid: str, end: dict[Any, int], offsets: Offsets,
                metrics_enabled: bool, profiler: Any = None) -> tuple[float, int]:
    """Run the applier in this thread until its group committed `end`; seconds and events."""
    group = names.consumer_group(mid)
    offsets.delete_group(group)  # a previous run's offsets must not be reused
    applier = Applier(spec, mid, metrics_enabled=metrics_enabled)
    box: dict[str, Any] = {}

    def watch() -> None:
        try:
            box["finished"] = wait_committed(offsets, group, end, timeout=3600)
        except Exception as exc:
            box["error"] = exc
        finally:
            applier.stop()

    watcher = threading.Thread(target=watch, daemon=True)
    start = time.monotonic()
    watcher.start()
    if profiler is not None:
        profiler.start()
    try:
        stats = applier.run(idle_exit_seconds=120)
    finally:
        if profiler is not None:
            profiler.stop()
        applier.stop()
        watcher.join(60)
    if "error" in box:
        raise box["error"]
    return box["finished"] - start, stats.events


def run_ceiling(bootstrap: str, tps: list[Any], total: int, batch_size: int) -> float:
    """kafka-python alone: read every record of the topics and decode each value."""
    from kafka import KafkaConsumer

    start = time.monotonic()
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                             enable_auto_commit=False, client_id="migwatch-bench-ceiling",
                             max_poll_records=batch_size, **FETCH_SIZES)
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    seen = decoded = 0
    deadline = time.monotonic() + 3600
    try:
        while seen < total and time.monotonic() < deadline:
            for recs in consumer.poll(timeout_ms=500, max_records=batch_size).values():
                for rec in recs:
                    seen += 1
                    if rec.value is not None:
                        orjson.loads(rec.value)
                        decoded += 1
    finally:
        consumer.close()
    if seen < total:
        raise TimeoutError(f"kafka-python read {seen} of {total} records")
    return time.monotonic() - start


# ---------------------------------------------------------------------------- profile
# (category, test on a pyinstrument frame) in the order they are tried; the first frame on a
# path that matches takes its whole subtree, so categories never overlap.
def _is(func: str, file_part: str) -> Callable[[Any], bool]:
    return lambda f: f.function == func and file_part in (f.file_path or "")


CATEGORIES: list[tuple[str, Callable[[Any], bool]]] = [
    ("Kafka fetch: waiting on the network thread", _is("run", "kafka/net/selector.py")),
    ("Kafka fetch: parsing records", _is("fetched_records", "kafka/consumer/fetcher.py")),
    ("Kafka fetch: rest of poll", _is("poll", "kafka/consumer/group.py")),
    ("Kafka offset commit", _is("commit", "kafka/consumer/group.py")),
    ("decode (JSON + values)", _is("decode", "migwatch/events.py")),
    ("decode heartbeats", _is("heartbeat_ts", "migwatch/consuming.py")),
    ("collapse by key", _is("add", "migwatch/batches.py")),
    ("position + offsets rows", _is("_record", "migwatch/targets/postgres/writer.py")),
    ("COPY to staging", lambda f: "psycopg" in (f.file_path or "")
     and ("copy" in (f.file_path or "").rsplit("/", 1)[-1] or f.function == "copy")),
    ("upsert/delete statements", lambda f: f.function in ("execute", "executemany")
     and "psycopg" in (f.file_path or "")),
    ("target commit", lambda f: f.function == "__exit__"
     and "psycopg/transaction.py" in (f.file_path or "")),
    ("metrics", _is("_count", "migwatch/applier.py")),
    ("dead-letter", _is("_send_dead_letters", "migwatch/applier.py")),
    ("start-up (describe tables, connect)", lambda f: f.function in ("_load_tables", "_writer")
     and "migwatch/applier.py" in (f.file_path or "")),
]


def profile_summary(root: Any) -> list[tuple[str, float]]:
    totals: dict[str, float] = {}

    def walk(frame: Any) -> None:
        for name, test in CATEGORIES:
            if test(frame):
                if name == "Kafka fetch: rest of poll":  # split it further below
                    inner = sum(_kafka_inner(child, totals) for child in frame.children)
                    totals[name] = totals.get(name, 0.0) + frame.time - inner
                else:
                    totals[name] = totals.get(name, 0.0) + frame.time
                return
        for child in frame.children:
            walk(child)

    walk(root)
    totals["other"] = max(0.0, root.time - sum(totals.values()))
    return sorted(totals.items(), key=lambda kv: -kv[1])


def _kafka_inner(frame: Any, totals: dict[str, float]) -> float:
    """Time of the network wait and record parsing under `frame`, added to `totals`."""
    for name, test in CATEGORIES[:2]:
        if test(frame):
            totals[name] = totals.get(name, 0.0) + frame.time
            return float(frame.time)
    return sum(_kafka_inner(child, totals) for child in frame.children)


# ---------------------------------------------------------------------------- main
def print_table(results: list[Result], baseline: float) -> None:
    print()
    print(f"{'tool':<22} {'events':>9} {'seconds':>9} {'events/s':>10} {'× JDBC':>7}  target")
    for r in results:
        ratio = f"{r.rate / baseline:.2f}" if baseline else "-"
        ok = {True: "ok", False: "DIFFERS", None: "-"}[r.target_ok]
        print(f"{r.tool:<22} {r.events:>9} {r.seconds:>9.2f} {r.rate:>10.0f} {ratio:>7}  "
              f"{ok} {r.note}")
    print()


@contextlib.contextmanager
def cleanup(what: str, fn: Callable[[], Any]) -> Iterator[None]:
    try:
        yield
    finally:
        try:
            fn()
        except Exception as exc:
            say(f"cleanup of {what} failed: {type(exc).__name__}: {exc}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=200_000,
                    help="at least this many change events in Kafka (default 200000)")
    ap.add_argument("--quick", action="store_true", help="a small smoke run (20000 events)")
    ap.add_argument("--batch-size", type=int, default=None,
                    help="applier batch size (default: the spec's, 2000)")
    ap.add_argument("--skip-jdbc", action="store_true",
                    help="leave out the JDBC sink runs (to iterate on the applier)")
    ap.add_argument("--no-profile", action="store_true", help="leave out the profiled run")
    ap.add_argument("--repeat", type=int, default=2, choices=(1, 2, 3),
                    help="applier runs with metrics on, and as many off, alternated (2)")
    ap.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = ap.parse_args(argv)
    events = 20_000 if args.quick else args.events
    batch_size = args.batch_size or 2000

    stack = Stack(echo=say)
    need = ("postgres-source", "postgres-target", "kafka", "kafka-connect")
    down = [c.name for c in stack.status(need) if not c.healthy]
    if down:
        print(f"the local stack is not running ({', '.join(down)}): run `migwatch stack up`",
              file=sys.stderr)
        return 2
    os.environ[PASSWORD_ENV] = stack.s.pg_password.get_secret_value()
    run_id = uuid.uuid4().hex[:8]
    mid = f"bench-{run_id}"
    bootstrap = f"{stack.s.host}:{stack.s.kafka_port}"
    out_dir = stack.state / "bench" / f"applier-{run_id}"
    out_dir.mkdir(parents=True, exist_ok=True)
    dbs = Databases(stack, run_id)
    offsets = Offsets(bootstrap)
    worker = BenchConnectWorker(stack, home=out_dir / "connect")
    results: list[Result] = []
    say(f"run {run_id}: migration id {mid}, ≥{events} events, applier batch {batch_size}")

    with contextlib.ExitStack() as es:
        es.enter_context(cleanup("databases", dbs.drop_all))
        es.enter_context(cleanup("Kafka clients", offsets.close))
        source = dbs.make("source", "src")
        targets = {k: dbs.make("target", k) for k in
                   ("jdbc", "jdbctuned", *(k for k, _ in ORDER[:2 * args.repeat]), "prof")}
        spec = make_spec(stack, source, targets["prof"], batch_size)
        es.enter_context(cleanup("connector, slot, group and topics",
                                 lambda: capture.teardown(spec, mid, delete_topics=True)))
        es.enter_context(cleanup("bench Connect worker", worker.close))
        started: dict[str, BaseException] = {}

        def start_worker() -> None:
            try:
                worker.start()
            except BaseException as exc:
                started["error"] = exc

        starter = threading.Thread(target=start_worker, daemon=True)
        if not args.skip_jdbc:
            starter.start()  # the JVM starts while Debezium writes the topics

        tps, end, per_topic = produce(stack, spec, source, mid, events, offsets)
        total = sum(end.values())
        topics = sorted(per_topic)
        say(f"{total} events in {len(topics)} topics: " + ", ".join(
            f"{t.rsplit('.', 1)[-1]}={n}" for t, n in per_topic.items()))
        src_digest = {t: table_digest(source.dsn, t) for t in SHOP}
        specs = {k: make_spec(stack, source, db, batch_size) for k, db in targets.items()}
        for s in specs.values():
            capture.prepare_target_schema(s)

        if not args.skip_jdbc:
            starter.join(300)
            if "error" in started:
                raise started["error"]
            for key, tuned in (("jdbc", False), ("jdbctuned", True)):
                label = "jdbc-sink tuned" if tuned else "jdbc-sink"
                say(f"{label}: applying")
                secs = run_jdbc(worker, stack, targets[key], topics, end, offsets, tuned,
                                batch_size, run_id)
                ok, note = compare(src_digest, targets[key])
                results.append(Result(label, total, secs, ok, note))
                say(f"{label}: {total / secs:.0f} events/s ({note})")
            worker.close()

        # metrics off and on alternate, each on a fresh target, so neither profits from
        # running second; the table shows every run, the summary their medians
        for i, (key, on) in enumerate(ORDER[:2 * args.repeat]):
            label = f"applier {'metrics' if on else 'nometrics'}"
            say(f"{label} (run {i // 2 + 1}): applying")
            secs, applied = run_applier(specs[key], mid, end, offsets, metrics_enabled=on)
            ok, note = compare(src_digest, targets[key])
            results.append(Result(label, total, secs, ok, note + f"; {applied} changes applied"))
            say(f"{label}: {total / secs:.0f} events/s ({note})")

        for _ in range(2):  # twice: the machine is shared, one reading can be unlucky
            say("kafka-python ceiling: read + orjson.loads of every record")
            secs = run_ceiling(bootstrap, tps, total, batch_size)
            results.append(Result("kafka-python ceiling", total, secs, None, "no target"))

        summary: list[tuple[str, float]] = []
        if not args.no_profile:
            from pyinstrument import Profiler

            say("profiled applier run (pyinstrument, metrics on)")
            profiler = Profiler(interval=0.002)
            secs, _ = run_applier(specs["prof"], mid, end, offsets, metrics_enabled=True,
                                  profiler=profiler)
            session = profiler.last_session
            root = session.root_frame() if session else None
            if root is not None:
                summary = profile_summary(root)
                (out_dir / "profile.txt").write_text(
                    profiler.output_text(unicode=True, color=False, show_all=False))
                (out_dir / "profile.html").write_text(profiler.output_html())
            ok, note = compare(src_digest, targets["prof"])
            say(f"profiled run: {total / secs:.0f} events/s under the profiler ({note})")

    jdbc = [r.rate for r in results if r.tool.startswith("jdbc")]
    baseline = max(jdbc) if jdbc else 0.0
    print_table(results, baseline)
    on = statistics.median(r.rate for r in results if r.tool == "applier metrics")
    off = statistics.median(r.rate for r in results if r.tool == "applier nometrics")
    overhead = (off - on) / off * 100 if off else 0.0
    print(f"metrics overhead: {overhead:+.1f}% of the metrics-off rate "
          f"(medians {on:.0f} vs {off:.0f} events/s)")
    if baseline:
        print(f"applier (metrics on, median) / best JDBC sink: {on / baseline:.2f}× (goal 3×)")
    if summary:
        whole = sum(v for _, v in summary)
        print("\nwhere the applier's time goes (pyinstrument, profiled run):")
        for name, v in summary:
            print(f"  {name:<44} {v:8.2f}s {v / whole * 100:5.1f}%")
        print(f"  full profile: {out_dir / 'profile.txt'} and profile.html")
    figures = {"run_id": run_id, "events": total, "per_topic": per_topic,
               "batch_size": batch_size, "results": [asdict(r) | {"rate": r.rate}
                                                     for r in results],
               "metrics_overhead_percent": overhead, "profile": summary}
    path = args.out or out_dir / "figures.json"
    path.write_text(json.dumps(figures, indent=2))
    print(f"figures: {path}")
    bad = [r.tool for r in results if r.target_ok is False]
    if not bad:  # the worker's log (MBs: a warning per tombstone) matters only when it failed
        shutil.rmtree(out_dir / "connect", ignore_errors=True)
    if bad:
        print(f"targets that differ from the source: {', '.join(bad)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
