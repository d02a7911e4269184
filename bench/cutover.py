"""Benchmark: the cutover's write-downtime, with the application writing the whole time.

One migration of the shop workload (`--rows`, 100k) is brought to GO while an application
writes `--rate` (200) operations/s under a role of its own; then `--runs` (5) cutovers, each
with the built-in read-only freeze and no-op hooks (`true`) and `cutover.keep_cdc` on, so the
next run can start once the source is writable again. Between them the peer runs once: the
same freeze, then what a runbook does without a fence — watch the applier's consumer lag until
it reads 0 on three polls 0.5 s apart (`migwatch check`-style), then thaw.

Printed: each run's write-downtime (freeze → end of the switch) and each step's share; the
median; the peer's freeze → drained-by-watching time; their ratio. The source and target are
compared (row count and md5 of every row) after the last run. Needs the local stack.

    .venv/bin/python bench/cutover.py                 # the recorded run
    .venv/bin/python bench/cutover.py --rows 20000 --runs 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
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

from migwatch import capture, names, processes, workload  # noqa: E402
from migwatch.config import MigrationSpec  # noqa: E402
from migwatch.consumer_lag import group_lag  # noqa: E402
from migwatch.cutover import freeze  # noqa: E402
from migwatch.errors import MigwatchError  # noqa: E402
from migwatch.stack import Stack  # noqa: E402

PASSWORD_ENV = "MIGWATCH_BENCH_PG_PASSWORD"
APP_PASSWORD_ENV = "MIGWATCH_BENCH_APP_PASSWORD"
SHOP = list(workload.SHOP_TABLES)
STEPS = ["freeze", "drain", "final check", "sequences", "switch"]


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Application(threading.Thread):
    """The shop workload at `rate` ops/s under the application's role, started again after
    every refusal (its session ended, or read-only): what an application with a retrying
    connection pool does. Counts operations done and refused."""

    def __init__(self, dsn: str, rate: float) -> None:
        super().__init__(daemon=True)
        self.dsn, self.rate = dsn, rate
        self.done = 0
        self.refused = 0
        self.halt = threading.Event()

    def run(self) -> None:
        seed = 0
        while not self.halt.is_set():
            seed += 1
            try:
                result = workload.run(self.dsn, rate=self.rate, duration=2, seed=seed)
                self.done += result.total
            except MigwatchError:
                self.refused += 1
                time.sleep(0.05)


def setup(stack: Stack, rows: int, rate: float, tmp: Path) -> tuple[dict[str, str], str, str]:
    """Source and target databases, the shop filled, the application's role; the spec path."""
    dbs = {w: f"bench_cut_{uuid.uuid4().hex[:8]}" for w in ("source", "target")}
    for which, db in dbs.items():
        with psycopg.connect(stack.pg_dsn(which, "postgres"), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db)))
    src = stack.pg_dsn("source", dbs["source"])
    say(f"shop: {workload.init(src, rows)}")
    role = f"shop_app_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(src, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {r} LOGIN PASSWORD {p}; GRANT ALL ON ALL TABLES IN "
                             "SCHEMA public TO {r}").format(
            r=sql.Identifier(role), p=sql.Literal(os.environ[APP_PASSWORD_ENV])))
    dbs["role"] = role
    s = stack.s

    def endpoint(port: int, db: str) -> dict[str, Any]:
        return {"kind": "postgres", "host": s.host, "port": port, "database": db,
                "user": "migwatch", "password": {"env": PASSWORD_ENV}}

    spec = {"source": endpoint(s.pg_source_port, dbs["source"]),
            "target": endpoint(s.pg_target_port, dbs["target"]), "tables": SHOP,
            "kafka": {"bootstrap_servers": f"{s.host}:{s.kafka_port}"},
            "connect": {"url": s.url(s.connect_port), "heartbeat_interval_ms": 500},
            "metrics": {"pushgateway_url": s.url(s.pushgateway_port),
                        "prometheus_url": s.url(s.prometheus_port)},
            "monitor": {"poll_interval_seconds": 1, "consecutive_polls": 3, "window_size": 6,
                        "timeout_seconds": 600},
            "snapshot": {"poll_interval_seconds": 1},
            "cutover": {"keep_cdc": True, "switch": {"command": ["true"]},
                        "freeze": {"hooks": [{"name": "proxy", "command": ["true"],
                                              "undo": {"command": ["true"]}}]}}}
    path = tmp / "cutover-bench.yaml"
    path.write_text(yaml.safe_dump(spec))
    app_dsn = (f"host={s.host} port={s.pg_source_port} dbname={dbs['source']} user={role} "
               f"password={os.environ[APP_PASSWORD_ENV]} application_name=shop-app")
    return dbs, str(path), app_dsn


def writable_again(spec: MigrationSpec) -> None:
    """After a switched run (the source is left read-only): every setting back to none."""
    frozen = freeze.Frozen(database=str(spec.source.database),
                           before={"": None, str(spec.source.user): None})
    freeze.thaw(spec, frozen)


def peer(spec: MigrationSpec, migration_id: str) -> float:
    """Freeze, then watch the consumer lag until it reads 0 three times 0.5 s apart; thaw."""
    started = time.monotonic()
    frozen = freeze.freeze(spec, terminate=True, terminate_timeout=10)
    zeros = 0
    topics = [names.table_topic(migration_id, t) for t in SHOP]
    while zeros < 3:
        lag = group_lag(spec.kafka.bootstrap_servers, names.consumer_group(migration_id), topics)
        zeros = zeros + 1 if lag.total == 0 else 0
        if zeros < 3:
            time.sleep(0.5)
    seconds = time.monotonic() - started
    freeze.thaw(spec, frozen)
    return seconds


def md5s(dsn: str) -> dict[str, tuple[int, str]]:
    out = {}
    with psycopg.connect(dsn) as conn:
        for t in SHOP:
            schema, name = t.split(".")
            row = conn.execute(sql.SQL(
                "SELECT count(*), md5(coalesce(string_agg(md5(x::text), '' ORDER BY md5(x::text)"
                "), '')) FROM {} x").format(sql.Identifier(schema, name))).fetchone()
            assert row is not None
            out[t] = (int(row[0]), str(row[1]))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--rate", type=float, default=200)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    stack = Stack(echo=lambda _m: None)
    os.environ[PASSWORD_ENV] = stack.s.pg_password.get_secret_value()
    os.environ.setdefault(APP_PASSWORD_ENV, uuid.uuid4().hex)
    from migwatch.cli.run import use_stack_prefect

    use_stack_prefect()
    from flows.cutover import cutover
    from flows.pipeline import migration_pipeline
    from migwatch.config import load_spec
    from migwatch.prefect_adapter import quiet_typed_tracebacks

    quiet_typed_tracebacks()
    tmp = Path(os.environ.get("TMPDIR", "/tmp"))
    dbs, spec_path, app_dsn = setup(stack, args.rows, args.rate, tmp)
    spec = load_spec(spec_path)
    mid = f"bench-cut-{uuid.uuid4().hex[:6]}"
    app = Application(app_dsn, args.rate)
    runs: list[dict[str, Any]] = []
    peers: list[float] = []
    ok = False
    try:
        app.start()
        summary = migration_pipeline(spec_path, mid)
        assert summary["go"], summary["reasons"]
        say(f"GO for {mid}; the application writes {args.rate:g} ops/s")
        for i in range(args.runs):
            time.sleep(3)
            result = cutover(spec_path, mid, ask_approval=False, approved_by="bench")
            assert result["outcome"] == "switched", result
            steps = {s["name"]: s for s in result["steps"]}
            share = {n: _seconds(steps[n]) for n in STEPS if n in steps}
            runs.append({"downtime": result["downtime_seconds"], "steps": share,
                         "sessions": result["sessions_terminated"]})
            say(f"run {i + 1}: write-downtime {result['downtime_seconds']:.3f}s "
                + " ".join(f"{n}={v:.3f}" for n, v in share.items()))
            writable_again(spec)
            time.sleep(3)
            peers.append(peer(spec, mid))
            say(f"peer {i + 1}: freeze → lag 0 three times: {peers[-1]:.3f}s")
        app.halt.set()
        app.join(timeout=10)
        time.sleep(5)
        same = md5s(stack.pg_dsn("source", dbs["source"])) == \
            md5s(stack.pg_dsn("target", dbs["target"]))
        ok = same
        _print(runs, peers, app, same)
        if args.json:
            args.json.write_text(json.dumps({"runs": runs, "peer": peers}, indent=2))
    finally:
        app.halt.set()
        processes.stop_applier(mid)
        try:
            capture.teardown(spec, mid, delete_topics=True, timeout=90)
        except MigwatchError as exc:
            say(f"teardown: {exc}")
        for which in ("source", "target"):
            with psycopg.connect(stack.pg_dsn(which, "postgres"), autocommit=True) as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(dbs[which])))
        with psycopg.connect(stack.pg_dsn("source", "postgres"), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(dbs["role"])))
    return 0 if ok else 1


def _seconds(step: dict[str, Any]) -> float:
    from datetime import datetime

    return (datetime.fromisoformat(step["ended_at"])
            - datetime.fromisoformat(step["started_at"])).total_seconds()


def _print(runs: list[dict[str, Any]], peers: list[float], app: Application, same: bool) -> None:
    downtimes = [r["downtime"] for r in runs]
    med = statistics.median(downtimes)
    print()
    print(f"write-downtime over {len(runs)} runs: median {med:.3f}s, min {min(downtimes):.3f}s,"
          f" max {max(downtimes):.3f}s (goal: median < 2 s)")
    print("step shares of the downtime (median seconds, share):")
    for n in STEPS:
        values = [r["steps"].get(n, 0.0) for r in runs]
        print(f"  {n:12} {statistics.median(values):7.3f}s  "
              f"{100 * statistics.median(values) / med:5.1f} %")
    if peers:
        pm = statistics.median(peers)
        print(f"peer (freeze, watch lag to 0 ×3, no data check): median {pm:.3f}s; "
              f"peer / migwatch = {pm / med:.2f}")
    print(f"application: {app.done:,} operations, {app.refused} refusals/reconnects")
    print(f"source and target equal after the runs: {same}")


if __name__ == "__main__":
    raise SystemExit(main())
