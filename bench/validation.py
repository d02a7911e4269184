"""Benchmark: migwatch's table comparison against reladiff, with two reference points.

Two PostgreSQL tables of `--rows` rows — one on the stack's source cluster, one on its target
cluster — first equal, then with `--differences` scattered differences (changed values, rows
missing on the target, rows extra on the target). In the same run it times:

    migwatch     `migwatch.validation.validate` on the table (both sides at once, in-database
                 range hashes, bisection down to the rows)
    reladiff     the `reladiff` command (hashdiff), its JSONL output parsed — it exits 0 even
                 when rows differ
    count(*)     on both tables at once: the least a comparison must read
    COPY         `COPY … TO STDOUT` of both tables at once, discarded: a plain read

and prints the ratios, whether each tool found exactly the injected differences, and a profile
of where migwatch's time goes (its phases, then one side's database work split into scanning,
hashing and bucketing). Needs the local stack (`migwatch stack up`) and the `bench` extra.

    .venv/bin/python bench/validation.py --rows 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from migwatch.config import MigrationSpec, StackSettings, parse_spec  # noqa: E402
from migwatch.validation import validate  # noqa: E402
from migwatch.validation.model import TableResult  # noqa: E402

TABLE = "bench_orders"
COLUMNS = ["customer_id", "status", "total", "placed_at", "note", "paid"]
PASSWORD_ENV = "MIGWATCH_BENCH_PG_PASSWORD"
#: how reladiff 0.6 renders each column before md5 (from its `-d` log), for the profile
RELADIFF_TEXT = ["id::varchar", "customer_id::varchar", "status::varchar",
                 "total::decimal(38, 2)::varchar",
                 "to_char(placed_at::timestamp(6), 'YYYY-mm-dd HH24:MI:SS.US')",
                 "note::varchar", "paid::int::varchar"]

DDL = f"""
CREATE TABLE public.{TABLE} (
    id bigint PRIMARY KEY,
    customer_id bigint NOT NULL,
    status text NOT NULL,
    total numeric(14,2),
    placed_at timestamptz NOT NULL,
    note text,
    paid boolean NOT NULL
)"""

# even ids only, so that rows "extra on the target" can sit anywhere between them
FILL = f"""
INSERT INTO public.{TABLE}
SELECT 2 * g, 1 + g %% 50000, (ARRAY['new','paid','shipped','done'])[1 + g %% 4],
       round((g %% 100000) * 1.37, 2),
       timestamptz '2024-06-01 12:00:00+00' + g * interval '11 seconds 500001 microseconds',
       CASE WHEN g %% 7 = 0 THEN NULL ELSE 'note ' || g END, g %% 3 = 0
FROM generate_series(1, %s) g"""


# ----------------------------------------------------------------------------- the stack
@dataclass
class Bench:
    """The two throw-away databases and how to reach them."""

    settings: StackSettings
    name: str
    rows: int

    def dsn(self, which: str, database: str | None = None) -> str:
        s = self.settings
        port = s.pg_source_port if which == "source" else s.pg_target_port
        return (f"host={s.host} port={port} user={s.pg_user} "
                f"password={s.pg_password.get_secret_value()} dbname={database or self.name}")

    def url(self, which: str) -> str:
        """A URL without the password (reladiff reads it from PGPASSWORD)."""
        s = self.settings
        port = s.pg_source_port if which == "source" else s.pg_target_port
        return f"postgresql://{s.pg_user}@{s.host}:{port}/{self.name}"

    def spec(self) -> MigrationSpec:
        s = self.settings
        os.environ[PASSWORD_ENV] = s.pg_password.get_secret_value()

        def endpoint(port: int) -> dict[str, Any]:
            return {"kind": "postgres", "host": s.host, "port": port, "database": self.name,
                    "user": s.pg_user, "password": {"env": PASSWORD_ENV}}

        return parse_spec({"source": endpoint(s.pg_source_port),
                           "target": endpoint(s.pg_target_port),
                           "tables": [f"public.{TABLE}"]})

    def sql(self, which: str, statement: str | sql.Composable, params: Any = None) -> Any:
        with psycopg.connect(self.dsn(which), autocommit=True) as conn:
            cur = conn.execute(statement, params)  # type: ignore[arg-type]
            return cur.fetchall() if cur.description else None


def create(bench: Bench, log: Callable[[str], None]) -> None:
    for which in ("source", "target"):
        with psycopg.connect(bench.dsn(which, "postgres"), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(bench.name)))
    started = time.perf_counter()
    bench.sql("source", DDL)
    bench.sql("source", FILL, [bench.rows])
    bench.sql("target", DDL)
    ident = sql.Identifier("public", TABLE)
    with psycopg.connect(bench.dsn("source")) as src, psycopg.connect(bench.dsn("target")) as tgt:
        with src.cursor().copy(sql.SQL("COPY {} TO STDOUT (FORMAT binary)").format(ident)) \
                as out, tgt.cursor().copy(
                    sql.SQL("COPY {} FROM STDIN (FORMAT binary)").format(ident)) as into:
            for chunk in out:
                into.write(chunk)
        tgt.commit()
    for which in ("source", "target"):
        bench.sql(which, f"VACUUM (ANALYZE) public.{TABLE}")
    size = bench.sql("source", f"SELECT pg_size_pretty(pg_table_size('public.{TABLE}'))")[0][0]
    log(f"created {bench.rows:,} rows on each side ({size} per table) in "
        f"{time.perf_counter() - started:.0f} s")


def drop(bench: Bench) -> None:
    for which in ("source", "target"):
        with psycopg.connect(bench.dsn(which, "postgres"), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(bench.name)))


# ----------------------------------------------------------------------------- differences
@dataclass
class Difference:
    kind: str  # changed, missing (on target), extra (on target)
    key: int
    column: str = ""


def inject(bench: Bench, count: int) -> list[Difference]:
    """`count` differences spread evenly over the key space, in rotating kinds: changed text,
    numeric (+0.01), timestamptz (+1 µs), boolean, NULL → '' ; missing and extra rows."""
    plan = ["changed:status", "missing", "changed:total", "extra", "changed:placed_at",
            "missing", "changed:paid", "extra", "changed:note", "missing"]
    diffs = []
    for i in range(count):
        g = 1 + (2 * i + 1) * bench.rows // (2 * count)  # the middle of each of `count` slices
        kind, _, column = plan[i % len(plan)].partition(":")
        if column == "note":
            g -= g % 7  # a row whose note is NULL on the source: '' on the target
        key = 2 * g + (1 if kind == "extra" else 0)
        diffs.append(Difference(kind, key, column))
    change = {
        "status": "status = 'lost'",
        "total": "total = total + 0.01",
        "placed_at": "placed_at = placed_at + interval '1 microsecond'",
        "paid": "paid = NOT paid",
        "note": "note = ''",
    }
    with psycopg.connect(bench.dsn("target"), autocommit=True) as conn:
        for d in diffs:
            if d.kind == "missing":
                conn.execute(f"DELETE FROM public.{TABLE} WHERE id = %s", [d.key])
            elif d.kind == "extra":
                conn.execute(f"INSERT INTO public.{TABLE} SELECT %s, customer_id, status, total, "
                             f"placed_at, note, paid FROM public.{TABLE} WHERE id = %s",
                             [d.key, d.key - 1])
            else:
                conn.execute(f"UPDATE public.{TABLE} SET {change[d.column]} WHERE id = %s",
                             [d.key])
    return diffs


# ----------------------------------------------------------------------------- timed runs
def timed(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    """Median wall seconds over `repeat` runs, and the last run's value."""
    times, value = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), value


def both(fn: Callable[[str], Any]) -> list[Any]:
    """`fn('source')` and `fn('target')` at once, as the tools read both sides at once."""
    out: dict[str, Any] = {}
    threads = [threading.Thread(target=lambda w=w: out.__setitem__(w, fn(w)))
               for w in ("source", "target")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [out["source"], out["target"]]


def count_rows(bench: Bench) -> Any:
    return both(lambda w: bench.sql(w, f"SELECT count(*) FROM public.{TABLE}")[0][0])


def copy_out(bench: Bench) -> Any:
    def read(which: str) -> int:
        n = 0
        with psycopg.connect(bench.dsn(which)) as conn, conn.cursor().copy(
                f"COPY public.{TABLE} TO STDOUT") as copy:
            for chunk in copy:
                n += len(chunk)
        return n
    return both(read)


def run_migwatch(bench: Bench, spec: MigrationSpec) -> TableResult:
    result = validate(spec, moving_source=False)
    return result.tables[0]


def run_reladiff(bench: Bench, threads: int) -> tuple[set[int], list[str]]:
    """reladiff's differing keys and the errors it logged (it exits 0 either way).

    `--skip-sort-results`: reladiff 0.6.0 sorts a segment's differing rows as tuples, which
    raises TypeError when a changed row holds NULL on one side (`None < str`); it then logs an
    ERROR, drops the remaining segments and still exits 0. Unsorted output avoids that."""
    cmd = [str(Path(sys.executable).with_name("reladiff")), bench.url("source"), TABLE,
           bench.url("target"), TABLE, "-k", "id", *sum((["-c", c] for c in COLUMNS), []),
           "--json", "--skip-sort-results", "-j", str(threads)]
    env = {**os.environ, "PGPASSWORD": bench.settings.pg_password.get_secret_value(),
           "COLUMNS": "100000"}  # reladiff prints through rich, which wraps at the width
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(f"reladiff exited {proc.returncode}: {proc.stderr[-2000:]}")
    keys = set()
    for line in proc.stdout.splitlines():
        if line.startswith("["):
            _sign, row = json.loads(line)
            keys.add(int(row[0]))
    errors = [line for line in proc.stderr.splitlines() if " ERROR " in line]
    return keys, errors


# ----------------------------------------------------------------------------- profile
def profile_source(bench: Bench, spec: MigrationSpec, repeat: int) -> dict[str, float]:
    """One side's database work, split: scan (count), + row hashes, + migwatch's bucketing."""
    from migwatch.config import postgres_conninfo
    from migwatch.connectors.postgres import describe_table
    from migwatch.validation.base import KeyRange
    from migwatch.validation.postgres import PostgresDialect, open_connection

    conn = open_connection(postgres_conninfo(spec.source, "source"), "source")
    try:
        info = describe_table(conn, "public", TABLE)
        assert info is not None
        d = PostgresDialect(info, [c.name for c in info.columns], list(info.primary_key))
        step = bench.rows * 2 // 100
        bucket, params = d.bucket_query([(2 + i * step,) for i in range(1, 100)], KeyRange())
        queries: dict[str, tuple[Any, list[Any]]] = {
            "scan: count(*)": (sql.SQL("SELECT count(*) FROM {}").format(d.table), []),
            "+ row hashes: bit_xor(hash_record_extended(row))": (sql.SQL(
                "SELECT count(*), bit_xor({}) FROM {}").format(d.row_hash(), d.table), []),
            "+ 100 range buckets (migwatch's query)": (bucket, params),
            "reladiff's checksum query (md5 of row text), whole table": (sql.SQL(
                "SELECT count(*), sum(('x' || substring(md5({}), 18))::bit(60)::bigint) FROM {}"
            ).format(sql.SQL(" || '|' || ").join(
                sql.SQL("coalesce({}, '<null>')").format(sql.SQL(e)) for e in RELADIFF_TEXT),
                d.table), []),
        }
        out = {}
        for name, (query, p) in queries.items():
            out[name], _ = timed(lambda q=query, p=p: conn.execute(q, p).fetchall(), repeat)
            conn.rollback()
        return out
    finally:
        conn.close()


# ----------------------------------------------------------------------------- main
@dataclass
class Report:
    rows: int
    differences: int
    reladiff_threads: list[int]
    seconds: dict[str, float] = field(default_factory=dict)
    found: dict[str, Any] = field(default_factory=dict)
    migwatch_phases: dict[str, dict[str, float]] = field(default_factory=dict)
    profile: dict[str, float] = field(default_factory=dict)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000, help="rows per table (1,000,000)")
    ap.add_argument("--differences", type=int, default=10, help="injected differences (10)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per timing; the median counts")
    ap.add_argument("--reladiff-threads", default="1",
                    help="comma-separated reladiff -j values to time (1: one connection per "
                         "database, as migwatch uses for one table; empty: time no reladiff)")
    ap.add_argument("--keep", action="store_true", help="keep the two databases afterwards")
    ap.add_argument("--json", type=Path, help="also write the figures as JSON here")
    args = ap.parse_args(argv)

    def log(msg: str) -> None:
        print(msg, flush=True)

    settings = StackSettings()
    bench = Bench(settings, f"bench_validation_{uuid.uuid4().hex[:8]}", args.rows)
    threads = [int(t) for t in args.reladiff_threads.split(",") if t.strip()]
    report = Report(args.rows, args.differences, threads)
    spec = bench.spec()
    ok = True
    try:
        create(bench, log)
        count_rows(bench)  # warm the caches: every timing below reads from memory
        copy_out(bench)
        r = report.seconds
        r["count(*)"], counts = timed(lambda: count_rows(bench), args.repeat)
        assert counts == [args.rows, args.rows], counts
        r["COPY TO STDOUT"], _ = timed(lambda: copy_out(bench), args.repeat)
        log(f"reference: count(*) {r['count(*)']:.2f} s, COPY {r['COPY TO STDOUT']:.2f} s")

        for phase in ("equal", "differences"):
            expected: dict[int, str] = {}
            if phase == "differences":
                diffs = inject(bench, args.differences)
                expected = {d.key: d.kind for d in diffs}
            secs, table = timed(lambda: run_migwatch(bench, spec), args.repeat)
            r[f"migwatch {phase}"] = secs
            got = {d.key["id"]: d.kind for d in table.sample}
            report.migwatch_phases[phase] = dict(table.timings)
            kinds = [d.kind for d in diffs] if phase == "differences" else []
            want = (kinds.count("missing"), kinds.count("extra"), kinds.count("changed"))
            # every injected difference counted by kind, and the (capped) sample all injected
            found_all = (table.missing, table.extra, table.changed) == want \
                and all(expected.get(k) == kind for k, kind in got.items()) \
                and len(got) == min(len(expected), spec.validation.sample_cap)
            report.found[f"migwatch {phase}"] = {"ok": found_all, "found": len(got),
                                                 "expected": len(expected)}
            ok &= found_all
            log(f"migwatch {phase}: {secs:.2f} s, {table.ranges_checked} ranges, "
                f"found {len(got)}/{len(expected)} {'(exact)' if found_all else '(WRONG)'}; "
                f"phases {table.timings}")
            for j in threads:
                name = f"reladiff -j{j} {phase}"
                runs = [timed(lambda j=j: run_reladiff(bench, j), 1) for _ in range(args.repeat)]
                r[name] = statistics.median(t for t, _ in runs)
                founds = [len(keys & set(expected)) for _, (keys, _e) in runs]
                exact = all(keys == set(expected) and not errors for _, (keys, errors) in runs)
                missed = sorted(set().union(*(set(expected) - keys for _, (keys, _e) in runs)))
                errors = sorted({e for _, (_k, errs) in runs for e in errs})
                report.found[name] = {"ok": exact, "found_per_run": founds,
                                      "expected": len(expected), "missed": missed,
                                      "errors": errors}
                ok &= exact
                log(f"{name}: {r[name]:.2f} s, found {founds} of {len(expected)} per run"
                    + (f", missed {missed}" if missed else "")
                    + (f", errors {errors}" if errors else ""))
        report.profile = profile_source(bench, spec, args.repeat)
    finally:
        if not args.keep:
            drop(bench)
    _print(report)
    if args.json:
        args.json.write_text(json.dumps(report.__dict__, indent=2))
    return 0 if ok else 1


def _print(rep: Report) -> None:
    s = rep.seconds
    print(f"\n== {rep.rows:,} rows per table, {rep.differences} differences; median of runs ==")
    print(f"{'':38} {'seconds':>8} {'vs migwatch':>12} {'vs count(*)':>12}")
    for phase in ("equal", "differences"):
        mw = s[f"migwatch {phase}"]
        for name in [f"migwatch {phase}"] + [k for k in s if k.startswith("reladiff")
                                             and k.endswith(phase)]:
            print(f"{name:38} {s[name]:8.2f} {s[name] / mw:11.1f}x "
                  f"{s[name] / s['count(*)']:11.1f}x")
    for name in ("count(*)", "COPY TO STDOUT"):
        print(f"{name + ' (both tables at once)':38} {s[name]:8.2f}")
    print("\nreladiff / migwatch: " + ", ".join(
        f"{k.removesuffix(' ' + p)} {p}: {s[k] / s[f'migwatch {p}']:.1f}x"
        for p in ("equal", "differences") for k in s if k.startswith("reladiff")
        and k.endswith(p)) + "  (goal: 5x)")
    print("\nwhere migwatch's time goes (wall seconds, one run):")
    for phase, t in rep.migwatch_phases.items():
        print(f"  {phase:12} " + ", ".join(f"{k} {v:.3f}" for k, v in t.items()))
    print("one side's database work (source, one connection):")
    for name, secs in rep.profile.items():
        print(f"  {name:60} {secs:6.2f} s")
    print("\nfound:", json.dumps(rep.found))


if __name__ == "__main__":
    sys.exit(main())
