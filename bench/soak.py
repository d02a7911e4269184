"""Soak: the shop workload at a sustained rate for `--minutes`, one fault every `--fault-every`
seconds (applier SIGKILL, broker, target, source and Connect restarts, in turn), the applier under
its supervisor as an operator runs it, nobody helping.

Sampled every 5 s and printed as it goes: consumer lag (messages), the applier's RSS, and the
open connections of migwatch on source and target. At the end: lag bounds, RSS first/last and its
growth over the second half (a plateau is ~1.0), connections first/last, per fault the seconds
until the lag was back under 1 000 messages, and an independent comparison of both sides (row text
by PostgreSQL) — rows lost and extra. Needs the local stack; not run in CI.

    .venv/bin/python bench/soak.py --minutes 10 --fault-every 120 --rate 300
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import psycopg
import yaml
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from migwatch import capture, names, processes, workload  # noqa: E402
from migwatch.config import parse_spec  # noqa: E402
from migwatch.consumer_lag import group_lag  # noqa: E402
from migwatch.demo import PASSWORD_ENV  # noqa: E402
from migwatch.errors import MigwatchError, TransientError  # noqa: E402
from migwatch.stack import Stack  # noqa: E402

SHOP = list(workload.SHOP_TABLES)
FAULTS = ["applier-sigkill", "kafka-restart", "target-restart", "source-restart",
          "connect-restart"]


@dataclass
class Sample:
    at: float
    lag: int | None
    rss_kb: int | None
    connections: tuple[int, int]


@dataclass
class Soak:
    stack: Stack
    source: str
    target: str
    mid: str
    samples: list[Sample] = field(default_factory=list)
    faults: list[tuple[float, str]] = field(default_factory=list)


def rss_kb(pid: int | None) -> int | None:
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def connections(dsn: str) -> int:
    try:
        with psycopg.connect(dsn, connect_timeout=3) as conn:
            row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = "
                               "current_database() AND pid <> pg_backend_pid() AND "
                               "application_name LIKE 'migwatch%'").fetchone()
            return int(row[0]) if row else -1
    except psycopg.Error:
        return -1


def sampler(soak: Soak, spec: object, topics: list[str], stop: threading.Event) -> None:
    while not stop.wait(5):
        try:
            lag: int | None = group_lag(soak.stack.address("kafka"),
                                        names.consumer_group(soak.mid), topics,
                                        timeout_ms=3000).total
        except MigwatchError:
            lag = None
        s = Sample(time.monotonic(), lag, rss_kb(processes.applier_worker_pid(soak.mid)),
                   (connections(soak.source), connections(soak.target)))
        soak.samples.append(s)
        print(f"  t={s.at - soak.samples[0].at:6.0f}s lag={s.lag} rss={s.rss_kb}kB "
              f"connections source/target={s.connections}", flush=True)


def strike(soak: Soak, fault: str) -> None:
    soak.faults.append((time.monotonic(), fault))
    print(f"FAULT {fault}", flush=True)
    component = {"kafka-restart": "kafka", "target-restart": "postgres-target",
                 "source-restart": "postgres-source", "connect-restart": "kafka-connect"}
    if fault == "applier-sigkill":
        pid = processes.applier_worker_pid(soak.mid)
        if pid:
            os.kill(pid, signal.SIGKILL)
        return
    soak.stack.down((component[fault],))
    time.sleep(8 if fault != "connect-restart" else 0)
    soak.stack.up((component[fault],))


def writer(dsn: str, rate: float, until: float, done: list[int]) -> None:
    """The workload until `until`, carrying on after a lost connection; `done[0]` counts what
    each call did, also the calls a source restart ended (counted every 100 operations)."""
    seed = 1
    while time.monotonic() < until:
        progress = [0]
        try:
            progress[0] = workload.run(
                dsn, rate=rate, duration=until - time.monotonic(), seed=seed,
                on_progress=lambda r, p=progress: p.__setitem__(0, r.total)).total
        except TransientError:
            time.sleep(0.5)
        done[0] += progress[0]
        seed += 1


def table_text(dsn: str, table: str) -> list[str]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(sql.SQL("SELECT t::text FROM {} t").format(
            sql.Identifier(*table.split(".")))).fetchall()
    return [r[0] for r in rows]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--fault-every", type=float, default=120)
    ap.add_argument("--rate", type=float, default=300)
    ap.add_argument("--size", type=int, default=5000)
    args = ap.parse_args()

    stack = Stack(echo=lambda m: None)
    stack.up()
    os.environ[PASSWORD_ENV] = stack.s.pg_password.get_secret_value()
    tag = uuid.uuid4().hex[:8]
    mid, db = f"soak-{tag}", f"soak_{tag}"
    for which in ("source", "target"):
        with psycopg.connect(stack.pg_dsn(which, "postgres"), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db)))
    source, target = stack.pg_dsn("source", db), stack.pg_dsn("target", db)
    workload.init(source, args.size)
    s = stack.s
    endpoint = {"kind": "postgres", "host": s.host, "database": db, "user": s.pg_user,
                "password": {"env": PASSWORD_ENV}}
    spec = parse_spec({
        "source": {**endpoint, "port": s.pg_source_port},
        "target": {**endpoint, "port": s.pg_target_port},
        "tables": SHOP, "kafka": {"bootstrap_servers": stack.address("kafka")},
        "connect": {"url": stack.address("kafka-connect")},
        "metrics": {"pushgateway_url": stack.address("pushgateway"),
                    "prometheus_url": stack.address("prometheus")},
        "supervision": {"check_interval_seconds": 5},
        "snapshot": {"method": "debezium"}})  # the connector is driven directly
    spec_file = Path(f"/tmp/{mid}.yaml")
    spec_file.write_text(yaml.safe_dump(orjson.loads(spec.model_dump_json(exclude_none=True))))
    soak = Soak(stack, source, target, mid)
    stop = threading.Event()
    try:
        capture.prepare_source(spec, mid)
        capture.prepare_target_schema(spec)
        capture.ensure_connector(spec, mid, timeout=120)
        processes.start_applier(spec_file, mid)
        processes.wait_applier_running(spec, mid, timeout=120)
        topics = [names.table_topic(mid, t) for t in SHOP]
        watcher = threading.Thread(target=sampler, args=(soak, spec, topics, stop), daemon=True)
        watcher.start()
        end = time.monotonic() + args.minutes * 60
        done = [0]
        w = threading.Thread(target=writer, args=(source, args.rate, end, done), daemon=True)
        w.start()
        i = 0
        while time.monotonic() + args.fault_every <= end + 1:
            time.sleep(args.fault_every)
            strike(soak, FAULTS[i % len(FAULTS)])
            i += 1
        w.join()
        print(f"writes ended: {done[0]} operations; waiting for the target", flush=True)
        deadline = time.monotonic() + 600
        differing = SHOP
        while differing and time.monotonic() < deadline:
            differing = [t for t in SHOP
                         if sorted(table_text(source, t)) != sorted(table_text(target, t))]
            time.sleep(2)
        stop.set()
        lost = extra = 0
        for t in SHOP:
            src, dst = set(table_text(source, t)), table_text(target, t)
            lost += len(src - set(dst))
            extra += sum(1 for r in dst if r not in src)
        report(soak, args, done[0], lost, extra)
        return 0 if (lost, extra) == (0, 0) else 1
    finally:
        stop.set()
        processes.stop_applier(mid)
        time.sleep(12)
        try:
            capture.teardown(spec, mid, delete_topics=True)
        except MigwatchError as exc:
            print(f"teardown: {exc}")
        for which in ("source", "target"):
            with psycopg.connect(stack.pg_dsn(which, "postgres"), autocommit=True) as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(db)))


def report(soak: Soak, args: argparse.Namespace, operations: int, lost: int,
           extra: int) -> None:
    lags = [x.lag for x in soak.samples if x.lag is not None]
    rss = [x.rss_kb for x in soak.samples if x.rss_kb is not None]
    half = rss[len(rss) // 2:]
    print("\n== soak", f"{args.minutes:.0f} min at {args.rate:.0f} ops/s, a fault every "
          f"{args.fault_every:.0f} s: {operations} operations")
    print(f"lag (messages): median {statistics.median(lags):.0f}, max {max(lags)}")
    if rss:
        print(f"applier RSS: first {rss[0]} kB, last {rss[-1]} kB, max {max(rss)} kB; "
              f"second-half growth {half[-1] / half[0]:.2f}x")
    conns = [x.connections for x in soak.samples]
    print(f"connections source/target: first {conns[0]}, last {conns[-1]}, max "
          f"{max(c[0] for c in conns)}/{max(c[1] for c in conns)}")
    for at, fault in soak.faults:
        after = [x for x in soak.samples if x.at > at + 2]
        back = next((x.at - at for x in after if x.lag is not None and x.lag < 1000), None)
        when = f"{back:.0f} s" if back is not None else "never"
        print(f"  {fault}: lag under 1000 messages again after {when}")
    print(f"independent comparison: lost {lost}, extra {extra}")


if __name__ == "__main__":
    raise SystemExit(main())
