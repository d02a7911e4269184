"""Benchmark: what each event's own definition costs — migwatch's connector events (schemas on,
every column's source type: `event_schema`) against the same connector with schemas off, both
capturing the same table's same writes in the same run.

Two connectors (two slots) on one source table; `--rows` inserts and as many updates; then both
topics are read to the end and measured: bytes per event (median and total) and the applier's
parse cost per event (`decoding.load_value`, plus the per-event lookup of the definition by its
schema bytes for the schemas-on form). Needs the local stack (`migwatch stack up`); cleans up.

    .venv/bin/python bench/envelope.py             # 20k rows
    .venv/bin/python bench/envelope.py --rows 2000
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from migwatch import capture, names  # noqa: E402
from migwatch.config import MigrationSpec, StackSettings, parse_spec  # noqa: E402
from migwatch.decoding import load_value  # noqa: E402

PASSWORD_ENV = "MIGWATCH_BENCH_PG_PASSWORD"
TABLE = ("CREATE TABLE public.orders (id bigint PRIMARY KEY, customer_id int NOT NULL, "
         "status text NOT NULL, total numeric(12,2), note varchar(200), "
         "created_at timestamptz NOT NULL DEFAULT now(), shipped date, tags text[])")


def spec_for(db: str, overrides: dict[str, str]) -> MigrationSpec:
    def endpoint(port: int) -> dict[str, Any]:
        return {"kind": "postgres", "host": "127.0.0.1", "port": port, "database": db,
                "user": "migwatch", "password": {"env": PASSWORD_ENV}}

    return parse_spec({"source": endpoint(15432), "target": endpoint(15433),
                       "tables": ["public.orders"], "connect": {"overrides": overrides},
                       "snapshot": {"method": "debezium"}})  # events from its snapshot


def read_all(topic: str, want: int, timeout: float = 300) -> tuple[list[bytes], float]:
    """The topic's values, and the seconds kafka-python took to fetch them (the applier's
    fetch sizes)."""
    from kafka import KafkaConsumer, TopicPartition

    from migwatch.applier import FETCH_SIZES

    consumer = KafkaConsumer(bootstrap_servers="127.0.0.1:9092", enable_auto_commit=False,
                             group_id=None, consumer_timeout_ms=2000, **FETCH_SIZES)
    out: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        tp = TopicPartition(topic, 0)
        while time.monotonic() < deadline:
            if consumer.partitions_for_topic(topic):
                break
            time.sleep(1)
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        start = time.perf_counter()
        while len(out) < want and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=1000, max_records=5000).values():
                out += [r.value for r in records if r.value is not None]
        took = time.perf_counter() - start
    finally:
        consumer.close()
    if len(out) < want:
        raise SystemExit(f"{topic}: {len(out)} of {want} events within {timeout:.0f}s")
    return out, took


def on_disk(topic: str) -> int:
    """Bytes of the topic's log segments on the local broker."""
    folder = StackSettings().state_dir / "kafka" / "data"
    return sum(f.stat().st_size for d in folder.glob(f"{topic}-*") for f in d.glob("*.log"))


def parse_cost(values: list[bytes], with_definition: bool, repeat: int = 3) -> float:
    """Microseconds per event: the envelope parsed, and (schemas on) its definition found."""
    best = float("inf")
    for _ in range(repeat):
        shapes: dict[bytes, int] = {}
        start = time.perf_counter()
        for raw in values:
            _, schema = load_value(raw)
            if with_definition and schema is not None:
                shapes.setdefault(bytes(schema), len(shapes))
        best = min(best, time.perf_counter() - start)
    return best / len(values) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=20_000)
    args = ap.parse_args()
    os.environ[PASSWORD_ENV] = StackSettings().pg_password.get_secret_value()
    admin = (f"host=127.0.0.1 port=15432 user=migwatch dbname=postgres "
             f"password={os.environ[PASSWORD_ENV]}")
    db = f"bench_env_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db}"')
    runs = {"definition, zstd (migwatch)": ({}, f"benv-z-{uuid.uuid4().hex[:6]}"),
            "definition, uncompressed": ({"producer.override.compression.type": "none"},
                                         f"benv-on-{uuid.uuid4().hex[:6]}"),
            "schemas off": ({"producer.override.compression.type": "none",
                             "value.converter.schemas.enable": "false",
                             "column.propagate.source.type": "no_such_column_x"},
                            f"benv-off-{uuid.uuid4().hex[:6]}")}
    specs = {label: spec_for(db, overrides) for label, (overrides, _) in runs.items()}
    try:
        with psycopg.connect(admin.replace("dbname=postgres", f"dbname={db}"),
                             autocommit=True) as conn:
            conn.execute(TABLE)
        for label, (_, mid) in runs.items():
            capture.prepare_source(specs[label], mid)
            capture.ensure_connector(specs[label], mid, timeout=180)
        with psycopg.connect(admin.replace("dbname=postgres", f"dbname={db}")) as conn:
            conn.execute(
                "INSERT INTO orders (id, customer_id, status, total, note, shipped, tags) "
                "SELECT g, g %% 997, 'new', (g %% 1000) + 0.99, 'note ' || g, "
                "date '2026-01-01' + g %% 300, ARRAY['a', 'b'] FROM generate_series(1, %s) g",
                [args.rows])
            conn.commit()
            conn.execute("UPDATE orders SET status = 'paid', total = total + 1")
            conn.commit()
        print(f"{args.rows} inserts + {args.rows} updates, captured twice "
              f"(same writes, same run)\n")
        print(f"{'form':28} {'value B p50':>11} {'on disk MiB':>11} {'fetch µs/ev':>11} "
              f"{'parse µs/ev':>11}")
        figures = {}
        for _, mid in runs.values():  # every connector done capturing before any timing
            read_all(names.table_topic(mid, "public.orders"), 2 * args.rows)
        for label, (_, mid) in runs.items():
            topic = names.table_topic(mid, "public.orders")
            values, took = min((read_all(topic, 2 * args.rows) for _ in range(3)),
                               key=lambda r: r[1])
            sizes = [len(v) for v in values]
            cost = parse_cost(values, label.startswith("definition"))
            fetch = took / len(values) * 1e6
            figures[label] = (statistics.median(sizes), on_disk(topic), fetch, cost)
            print(f"{label:28} {statistics.median(sizes):11.0f} "
                  f"{figures[label][1] / 2**20:11.1f} {fetch:11.2f} {cost:11.2f}")
        off = figures["schemas off"]
        for label in ("definition, zstd (migwatch)", "definition, uncompressed"):
            on = figures[label]
            print(f"{label} / schemas off: value bytes {on[0] / off[0]:.2f}×, on disk "
                  f"{on[1] / max(off[1], 1):.2f}×, fetch {on[2] / off[2]:.2f}×, "
                  f"parse {on[3] / off[3]:.2f}×")
    finally:
        for label, (_, mid) in runs.items():
            try:
                capture.teardown(specs[label], mid, delete_topics=True)
            except Exception as exc:  # noqa: BLE001 - clean up the rest
                print(f"teardown {mid}: {exc}", file=sys.stderr)
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


if __name__ == "__main__":
    main()
