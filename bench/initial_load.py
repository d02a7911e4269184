"""Benchmark: the initial load — migwatch's COPY load against Debezium's snapshot through the
applier, with a plain `pg_dump | pg_restore` pipe as the ceiling, on the same source.

The shop workload at `--rows` (1M) rows on a source database; then, each onto a fresh target
database of its own, timed from start to a loaded target with its indexes and constraints:

    copy        the migrate stage with `snapshot.method: copy` (COPY from the slot's exported
                snapshot, then Debezium streams)
    debezium    the migrate stage with `snapshot.method: debezium` (every row an event through
                Kafka and the applier)
    pipe        `pg_dump -Fc -t <tables> | pg_restore` (schema, data, indexes; no CDC)

Each target is compared with the source (count and md5 of every row). Prints seconds, rows/s
and the ratios; `--repeat` runs each (median). Needs the local stack.

    .venv/bin/python bench/initial_load.py                  # the recorded run
    .venv/bin/python bench/initial_load.py --rows 100000 --repeat 1
    .venv/bin/python bench/initial_load.py --pad-bytes 1000 --skip-debezium   # the ≥ 1 GB one

`--pad-bytes N` widens every row by a text column of N bytes (written, not a default: the
tables really hold it), for the wide-row variant.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
import yaml
from psycopg import sql

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.cutover import md5s  # noqa: E402
from migwatch import capture, processes, workload  # noqa: E402
from migwatch.connectors.postgres import PG_BIN  # noqa: E402
from migwatch.errors import MigwatchError  # noqa: E402
from migwatch.stack import Stack  # noqa: E402

PASSWORD_ENV = "MIGWATCH_BENCH_PG_PASSWORD"
SHOP = list(workload.SHOP_TABLES)


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def database(stack: Stack, which: str) -> str:
    name = f"bench_load_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(stack.pg_dsn(which, "postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return name


def drop(stack: Stack, which: str, name: str) -> None:
    with psycopg.connect(stack.pg_dsn(which, "postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(name)))


def spec_file(stack: Stack, source: str, target: str, method: str, tmp: Path,
              mongo: bool = False) -> str:
    s = stack.s

    def endpoint(port: int, db: str) -> dict[str, Any]:
        return {"kind": "postgres", "host": s.host, "port": port, "database": db,
                "user": "migwatch", "password": {"env": PASSWORD_ENV}}

    into = ({"kind": "mongodb", "host": s.host, "port": s.ferretdb_port, "database": target}
            if mongo else endpoint(s.pg_target_port, target))
    data = {"source": endpoint(s.pg_source_port, source), "target": into, "tables": SHOP,
            "kafka": {"bootstrap_servers": f"{s.host}:{s.kafka_port}"},
            "connect": {"url": s.url(s.connect_port)},
            "metrics": {"pushgateway_url": s.url(s.pushgateway_port),
                        "prometheus_url": s.url(s.prometheus_port)},
            "snapshot": {"method": method, "poll_interval_seconds": 0.5,
                         "timeout_seconds": 3600}}
    path = tmp / f"load-{method}-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def migrate_run(stack: Stack, source: str, method: str, tmp: Path, mongo: bool = False
                ) -> tuple[float, float, bool]:
    from flows.migrate import migrate
    from migwatch.config import load_spec

    target = f"bench_load_{uuid.uuid4().hex[:8]}" if mongo else database(stack, "target")
    path = spec_file(stack, source, target, method, tmp, mongo)
    mid = f"bench-load-{uuid.uuid4().hex[:6]}"
    spec = load_spec(path)
    try:
        started = time.monotonic()
        result = migrate(path, mid)
        seconds = time.monotonic() - started
        # the load alone: the COPY load's own time, or Debezium's snapshot followed to its end
        load = float(result["load_by_copy"]["seconds"]) if result.get("load_by_copy") \
            else float(result["snapshot"]["elapsed_seconds"])
        same = (keys_equal(stack, source, target) if mongo else
                md5s(stack.pg_dsn("source", source)) == md5s(stack.pg_dsn("target", target)))
    finally:
        processes.stop_applier(mid)
        try:
            capture.teardown(spec, mid, delete_topics=True, timeout=90)
        except MigwatchError as exc:
            say(f"teardown: {exc}")
        if mongo:
            from pymongo import MongoClient

            MongoClient(stack.address("ferretdb")).drop_database(target)
        else:
            drop(stack, "target", target)
    return seconds, load, same


def keys_equal(stack: Stack, source: str, target: str) -> bool:
    """Every source row's key is a document's `_id` on the MongoDB target, and nothing else
    (the documents' values are migwatch's validator's to compare)."""
    from pymongo import MongoClient

    client: MongoClient[Any] = MongoClient(stack.address("ferretdb"))
    try:
        with psycopg.connect(stack.pg_dsn("source", source)) as conn:
            for t in SHOP:
                schema, name = t.split(".")
                key = [r[0] for r in conn.execute(
                    "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = "
                    "i.indrelid AND a.attnum = ANY(i.indkey) WHERE i.indrelid = %s::regclass "
                    "AND i.indisprimary ORDER BY array_position(i.indkey::int2[], a.attnum)",
                    [sql.Identifier(schema, name).as_string(conn)])]
                rows = {tuple(r) for r in conn.execute(sql.SQL("SELECT {} FROM {}").format(
                    sql.SQL(", ").join(map(sql.Identifier, key)), sql.Identifier(schema, name)))}
                docs = {tuple(d["_id"].values()) if isinstance(d["_id"], dict) else (d["_id"],)
                        for d in client[target][name].find({}, {"_id": 1})}
                if rows != docs:
                    return False
    finally:
        client.close()
    return True


def pipe_run(stack: Stack, source: str) -> tuple[float, bool]:
    target = database(stack, "target")
    env = {**os.environ, "PGPASSWORD": os.environ[PASSWORD_ENV]}
    tables = [arg for t in SHOP for arg in ("-t", '"{}"."{}"'.format(*t.split(".")))]
    s = stack.s
    try:
        started = time.monotonic()
        dump = subprocess.Popen([str(PG_BIN / "pg_dump"), "-Fc", "-h", s.host, "-p",
                                 str(s.pg_source_port), "-U", "migwatch", *tables, source],
                                stdout=subprocess.PIPE, env=env)
        subprocess.run([str(PG_BIN / "pg_restore"), "--no-owner", "-h", s.host, "-p",
                        str(s.pg_target_port), "-U", "migwatch", "-d", target],
                       stdin=dump.stdout, env=env, check=True)
        dump.wait()
        seconds = time.monotonic() - started
        same = md5s(stack.pg_dsn("source", source)) == md5s(stack.pg_dsn("target", target))
    finally:
        drop(stack, "target", target)
    return seconds, same


def pad(dsn: str, size: int) -> int:
    """Every shop row widened by `size` bytes of text (md5s repeated: below TOAST's threshold
    it stays in the row uncompressed); returns the tables' size in bytes."""
    total = 0
    with psycopg.connect(dsn, autocommit=True) as conn:
        for t in SHOP:
            ident = sql.Identifier(*t.split("."))
            conn.execute(sql.SQL("ALTER TABLE {} ADD COLUMN pad text").format(ident))
            conn.execute(sql.SQL("UPDATE {} SET pad = left(repeat(md5(random()::text), %s), %s)"
                                 ).format(ident), [size // 32 + 1, size])
            conn.execute(sql.SQL("VACUUM FULL ANALYZE {}").format(ident))
            row = conn.execute("SELECT pg_table_size(%s::regclass)",
                               [ident.as_string(conn)]).fetchone()
            total += int(row[0]) if row else 0
    return total


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--pad-bytes", type=int, default=0,
                    help="widen every row by a text column of this many bytes")
    ap.add_argument("--target", choices=("postgres", "mongodb"), default="postgres",
                    help="the target engine (mongodb: FerretDB; no pipe to compare with)")
    ap.add_argument("--skip-debezium", action="store_true",
                    help="leave out Debezium's snapshot (the slow one)")
    args = ap.parse_args(argv)
    stack = Stack(echo=lambda _m: None)
    os.environ[PASSWORD_ENV] = stack.s.pg_password.get_secret_value()
    from migwatch.cli.run import use_stack_prefect
    from migwatch.prefect_adapter import quiet_typed_tracebacks

    use_stack_prefect()
    quiet_typed_tracebacks()
    tmp = Path(os.environ.get("TMPDIR", "/tmp"))
    mongo = args.target == "mongodb"
    source = database(stack, "source")
    times: dict[str, list[float]] = {"copy": [], "debezium": [], "pipe": []}
    loads: dict[str, list[float]] = {"copy": [], "debezium": []}
    ok = True
    try:
        say(f"shop: {workload.init(stack.pg_dsn('source', source), args.rows)}")
        if args.pad_bytes:
            say(f"source: {pad(stack.pg_dsn('source', source), args.pad_bytes) / 2**30:.2f} GiB "
                f"after widening every row by {args.pad_bytes} bytes")
        for i in range(args.repeat):
            for method in ("pipe", "copy", "debezium"):
                if (method == "debezium" and args.skip_debezium) or \
                        (method == "pipe" and mongo):
                    continue
                if method == "pipe":
                    seconds, same = pipe_run(stack, source)
                    say(f"run {i + 1} {method:9} {seconds:8.2f}s  equal: {same}")
                else:
                    seconds, load, same = migrate_run(stack, source, method, tmp, mongo)
                    loads[method].append(load)
                    say(f"run {i + 1} {method:9} {seconds:8.2f}s (load alone {load:.2f}s)  "
                        f"equal: {same}")
                ok = ok and same
                times[method].append(seconds)
    finally:
        drop(stack, "source", source)
    med = {m: statistics.median(v) for m, v in times.items() if v}
    lmed = {m: statistics.median(v) for m, v in loads.items() if v}
    print()
    print("whole migrate stage (pre-flight, schema, connector, applier, load, indexes):")
    for m, v in med.items():
        print(f"  {m:9} median {v:8.2f}s  {args.rows / v:>10,.0f} rows/s")
    print("the load alone:")
    for m, v in lmed.items():
        print(f"  {m:9} median {v:8.2f}s  {args.rows / v:>10,.0f} rows/s")
    if "debezium" in med:
        print(f"copy vs debezium: stage {med['debezium'] / med['copy']:.2f}×, load alone "
              f"{lmed['debezium'] / lmed['copy']:.2f}× faster (goal ≥ 5×)")
    if "pipe" in med:
        print(f"copy vs pipe: stage {med['pipe'] / med['copy']:.2f}×, load alone "
              f"{med['pipe'] / lmed['copy']:.2f}× the pipe's speed (goal ≥ 0.6×)")
    print(f"every target equal to the source: {ok}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
