"""One differential run: a group of classes through the real CDC path under one seed.

    1. fresh source and target databases; the classes' tables on the source (types the tables
       need on both sides), the seeded initial rows (Debezium's snapshot reads them)
    2. migwatch's own set-up: `preflight.preflight` (its refusals recorded per table, never
       stopping the run: a refused table's run-time behaviour is checked too),
       `prepare_source`, `prepare_target_schema`, `ensure_connector`; the applier in a thread
    3. the seeded workload in a thread; a third of the way in, a second `Applier` joins the same
       consumer group for a few seconds and leaves (two rebalances mid-stream)
    4. a fence row written after the workload; drained when the fence is on the target and the
       group has consumed every topic to its end (or the applier died, or time ran out)
    5. the applier stopped — the target no longer moves — then the independent comparator
       (compare.py) and migwatch's validator (`validate(spec, None)`) on the same state; the
       dead-letter topic read, so failures say what the applier refused and why; a limit
       class's tables compared in full, for its contract's check (limits.py)
    6. teardown: connector, slot, topics, consumer group, databases

Any step that fails is recorded, never raised past the run: the classes are still compared, so
each reports what it saw (an applier that crashed at subscribe leaves every table empty).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from migwatch import capture, names, preflight
from migwatch.applier import Applier
from migwatch.config import MigrationSpec
from migwatch.errors import PreflightError
from migwatch.stack import Stack
from tests.conftest import PgDatabase, make_spec, mongo_endpoint, short_id
from tests.differential.compare import ROWS_SHOWN, TableComparison, compare_pg
from tests.differential.compare_mongo import Aside, compare_mongo, preflight_refusal
from tests.differential.limits import COLUMN as LIMIT_COLUMN
from tests.differential.limits import check as check_limit
from tests.differential.limits import names_column
from tests.differential.schema import (
    CATALOGUE_WEIGHT,
    DiffClass,
    TableDef,
    create_prerequisites,
    create_table,
    fence_table,
)
from tests.differential.types import LimitCase
from tests.differential.workload import Workload

#: PASS/FAIL lines go through this (pytest shows them with -s, or with a failure)
Echo = Callable[[str], None]
DLQ_REASONS = 3  # distinct dead-letter reasons shown per table


@dataclass
class RunConfig:
    seed: int
    group: str
    classes: list[DiffClass]
    rows: int = 100              # initial rows per table (the snapshot)
    #: streamed operations as if every class of the catalogue ran: each table gets its share
    #: by weight (schema.CATALOGUE_WEIGHT), so a table's operations never depend on which
    #: other classes run with it
    operations: int = 2500
    seconds: float = 15.0        # the workload's duration
    rebalances: int = 1          # times a second applier joins mid-stream, then leaves
    rebalance_seconds: float = 6.0
    drain_timeout: float = 60.0
    limit: int = 5               # differing keys shown per table
    target: str = "postgres"     # or "mongodb" (FerretDB in the stack)


@dataclass
class ClassOutcome:
    """One class's verdicts: the comparator's per table, the validator's per table, the
    dead-letter reasons of its tables' events, and anything that broke the run."""

    id: str
    comparisons: list[TableComparison]
    validator: dict[str, str]
    dead_letters: dict[str, Counter[str]]
    run_errors: list[str]
    seed: int
    #: the validator's (missing, extra, changed) per table
    validator_counts: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    #: per table, per key: the workload's last operations on it
    history: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    #: tables with a primary key: the validator locates rows there, so its counts must match
    keyed: dict[str, bool] = field(default_factory=dict)
    #: a limit class: judged by its written contract (limits.py), not by "equal"
    limit: LimitCase | None = None
    target: str = "postgres"
    #: pre-flight's refusals naming this class's tables
    preflight: list[str] = field(default_factory=list)
    #: MongoDB target: the tables the contract refuses as a whole (compare_mongo.
    #: preflight_refusal) — qualified name → (the spec's name, the columns pre-flight must
    #: name; none: the table itself, it has no key for `_id`)
    expected_refusal: dict[str, tuple[str, list[str]]] = field(default_factory=dict)

    def failures(self) -> list[str]:
        """Why the class fails its contract: a limit class's written one (limits.py), else
        "lands exactly" (or, for a table the contract refuses, "refused at pre-flight") and the
        validator agreeing; nothing when it holds."""
        if self.limit is not None:
            return check_limit(self, self.limit, self.target)
        return self.lands_problems() + self.disagreements()

    def lands_problems(self) -> list[str]:
        """The class's contract on the target, without the validator's verdict: it lands
        exactly and pre-flight lets it through — or, for the tables the contract refuses as a
        whole, pre-flight refused them naming table and columns."""
        if self.expected_refusal:
            return self.refusal_problems()
        return ([] if self.equal else ["the target differs"]) + [
            f"pre-flight refuses a table the contract says lands: {p}" for p in self.preflight]

    def refusal_problems(self) -> list[str]:
        """Tables the contract refuses at pre-flight that pre-flight did not refuse so, and
        anything that broke the run."""
        out = [f"run: {e}" for e in self.run_errors]
        for table, (spec_name, columns) in self.expected_refusal.items():
            mine = [p for p in self.preflight if names_table(p, spec_name, table)]
            if not mine:
                why = (f"columns {', '.join(repr(c) for c in columns)}" if columns
                       else "no key for _id")
                out.append(f"pre-flight does not refuse {spec_name} ({why}); its refusals: "
                           f"{self.preflight or 'none'}")
                continue
            unnamed = [c for c in columns if not any(names_column(p, c) for p in mine)]
            if unnamed:
                out.append(f"pre-flight refuses {spec_name} without naming column(s) "
                           f"{', '.join(repr(c) for c in unnamed)}: {'; '.join(mine)}")
        return out

    @property
    def equal(self) -> bool:
        return all(c.equal for c in self.comparisons) and not self.unreported_refusals()

    def unreported_refusals(self) -> list[str]:
        """MongoDB: tables with rows the contract refuses but no dead letter naming the column
        (a refused value must be refused loudly, never dropped or altered silently)."""
        out = []
        for c in self.comparisons:
            # each refused row's last event carries the refused value, so it must have been
            # dead-lettered: at least as many dead letters naming the column as refused rows
            refused = Counter(why.split(":")[0] for why in c.refused.values())
            letters = self.dead_letters.get(c.table, Counter())
            for column, rows in sorted(refused.items()):
                named = sum(n for reason, n in letters.items() if f"column '{column}'" in reason)
                if named < rows:
                    mine = [(k, w) for k, w in c.refused.items() if w.split(":")[0] == column]
                    # rows the target holds first: there a silent alteration shows
                    mine.sort(key=lambda kw: "the target holds" not in kw[1])
                    examples = "; ".join(f"key {k}: {w}" for k, w in mine[:2])
                    out.append(f"{c.table}: {rows} row(s) hold values of {column!r} the contract "
                               f"refuses, {named} dead letter(s) name the column; e.g. "
                               f"{examples}")
        return out

    def disagreements(self) -> list[str]:
        """Tables where the validator's verdict is not the comparator's (a table the contract
        refuses at pre-flight: the validator must never call it equal)."""
        out = []
        for c in self.comparisons:
            v = self.validator.get(c.table, "not validated")
            if c.table in self.expected_refusal:
                if v.startswith("equal") or v == "not validated":
                    out.append(f"{c.table}: refused at pre-flight by the contract, validator {v} "
                               f"(comparator {'equal' if c.equal else 'different'}; false GO)")
                continue
            # rows the contract refuses are not on the target: the migration is not complete,
            # and the validator must say so
            complete = c.equal and not c.refused
            if complete != v.startswith("equal"):
                what = "false NO-GO" if complete else "false GO"
                out.append(f"{c.table}: comparator {'equal' if c.equal else 'different'}"
                           f"{f' with {len(c.refused)} refused rows' if c.refused else ''}, "
                           f"validator {v} ({what})")
                continue
            counts = self.validator_counts.get(c.table)
            if (counts is not None and self.keyed.get(c.table) and not c.refused
                    and counts != (c.missing, c.extra, c.changed)):
                missed = sum(counts) < c.missing + c.extra + c.changed
                out.append(f"{c.table}: comparator missing/extra/changed "
                           f"{c.missing}/{c.extra}/{c.changed}, validator "
                           f"{counts[0]}/{counts[1]}/{counts[2]} (rows the validator "
                           f"{'missed' if missed else 'added'})")
        return out

    def describe(self) -> str:
        if self.limit is not None:
            broken = self.failures()
            state = "CONTRACT BROKEN" if broken else "contract held"
            lines = [f"class {self.id} (seed {self.seed}, limit: {self.limit.kind}): {state}"]
            lines += [f"  contract broken: {p}" for p in broken]
        elif self.expected_refusal:
            broken = self.failures()
            state = "CONTRACT BROKEN" if broken else "contract held"
            lines = [f"class {self.id} (seed {self.seed}, refused at pre-flight by the "
                     f"contract): {state}"]
            lines += [f"  contract broken: {p}" for p in broken]
        else:
            lines = [f"class {self.id} (seed {self.seed}): "
                     f"{'equal' if self.equal else 'DIFFERENT'}"]
        lines += [f"  run: {e}" for e in self.run_errors]
        lines += [f"  pre-flight refuses: {p}" for p in self.preflight]
        if self.limit is None and not self.expected_refusal:
            lines += [f"  refusal not reported: {r}" for r in self.unreported_refusals()]
        for c in self.comparisons:
            lines.append("  " + c.describe().replace("\n", "\n  "))
            seen = self.history.get(c.table, {})
            for d in c.first[:ROWS_SHOWN]:
                if d.key in seen:
                    lines.append(f"        workload on {d.key}: {' → '.join(seen[d.key])}")
            lines.append(f"    validator: {self.validator.get(c.table, 'not validated')}")
            reasons = self.dead_letters.get(c.table) or Counter()
            for reason, n in reasons.most_common(DLQ_REASONS):
                lines.append(f"    dead-lettered ×{n}: {reason}")
            if len(reasons) > DLQ_REASONS:
                rest = sum(reasons.values()) - sum(n for _, n in reasons.most_common(DLQ_REASONS))
                lines.append(f"    dead-lettered ×{rest}: {len(reasons) - DLQ_REASONS} other "
                             "reasons")
        return "\n".join(lines)


@dataclass
class RunOutcome:
    config: RunConfig
    migration_id: str
    classes: dict[str, ClassOutcome] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    applier_error: str | None = None
    second_applier_error: str | None = None
    max_members: int = 0
    rebalances: int = 0
    applier_events: int = 0
    second_applier_events: int = 0
    applier_dlq: int = 0
    topic_events: int = 0
    workload: dict[str, Any] = field(default_factory=dict)
    phases: dict[str, float] = field(default_factory=dict)
    #: pre-flight's failures (each names its table, or is about the stack)
    preflight: list[str] = field(default_factory=list)

    def summary(self) -> str:
        c = self.config
        ok = sum(1 for o in self.classes.values() if not o.failures())
        phases = ", ".join(f"{k} {v:.1f}s" for k, v in self.phases.items())
        return (f"differential run group={c.group} target={c.target} seed={c.seed} "
                f"migration={self.migration_id}: "
                f"{ok}/{len(self.classes)} classes hold their contract; events in Kafka "
                f"{self.topic_events}, "
                f"applied {self.applier_events} (+{self.second_applier_events} by the second "
                f"applier), dead-lettered {self.applier_dlq}; "
                f"second applier joined {self.rebalances}×, group members seen "
                f"{self.max_members}; workload {self.workload}; {phases}"
                + (f"\n  applier crashed: {self.applier_error}" if self.applier_error else "")
                + (f"\n  second applier: {self.second_applier_error}"
                   if self.second_applier_error else "")
                + "".join(f"\n  run error: {e}" for e in self.errors))


# ----------------------------------------------------------------------------- helpers
def names_table(failure: str, spec_name: str, qualified: str) -> bool:
    """Whether a pre-flight failure is about this table: it starts `table <spec name>: `, or
    names the table (spec or qualified name) as a whole word."""
    if failure.startswith(f"table {spec_name}: "):
        return True
    return any(re.search(r"(?<![\w.\"])" + re.escape(n) + r"(?![\w.\"])", failure)
               for n in dict.fromkeys((spec_name, qualified)))


def sanitized(name: str) -> str:
    """Debezium's topic-name sanitising: every character outside [a-zA-Z0-9._-] becomes `_`."""
    return re.sub(r"[^a-zA-Z0-9._-]", "_", name)


@contextlib.contextmanager
def database(stack: Stack, which: str) -> Iterator[PgDatabase]:
    """A throw-away database on one of the stack's clusters (dropped with its slots)."""
    name = short_id("dw")
    admin = stack.pg_dsn(which, "postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    port = stack.s.pg_source_port if which == "source" else stack.s.pg_target_port
    try:
        yield PgDatabase(which, name, port, stack.pg_dsn(which, name))
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                         "WHERE database = %s AND NOT active", [name])
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))


class _Thread(threading.Thread):
    """A daemon thread that keeps the exception its target raised."""

    def __init__(self, target: Callable[[], Any], name: str) -> None:
        super().__init__(name=name, daemon=True)
        self._fn = target
        self.error: BaseException | None = None
        self.trace = ""

    def run(self) -> None:
        try:
            self._fn()
        except BaseException as exc:  # kept for the report
            self.error = exc
            self.trace = traceback.format_exc()


def _shape(error: str) -> str:
    """A dead-letter error without the value it quotes, so errors of one kind group together
    (the first example is kept, cut to 160 characters)."""
    return re.sub(r'"[^"]{12,}"', '"…"', error)[:160]


def _err(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:400]


class _Kafka:
    """What the harness asks Kafka itself: topics, end offsets, committed offsets, members."""

    def __init__(self, spec: MigrationSpec, migration_id: str) -> None:
        from kafka import KafkaAdminClient

        self.admin = KafkaAdminClient(bootstrap_servers=spec.kafka.bootstrap_servers,
                                      client_id="dw-harness", request_timeout_ms=10000)
        self.group = names.consumer_group(migration_id)
        self.prefix = names.topic_prefix(migration_id) + "."
        self.dlq = spec.dlq_topic(migration_id)

    def close(self) -> None:
        self.admin.close()

    def members(self) -> int:
        try:
            described = self.admin.describe_groups([self.group])
        except Exception:  # the group may not exist yet
            return 0
        info = described.get(self.group) if isinstance(described, dict) else None
        return len((info or {}).get("members") or ())

    def lag(self, tables: list[TableDef]) -> tuple[int, int]:
        """(events in the topics of `tables`, events there not yet committed by the group).

        Only the harness's tables: the heartbeat table's topic moves all the time."""
        from kafka import OffsetSpec, TopicPartition

        mine = {self.prefix + sanitized(t.schema) + "." + sanitized(t.name) for t in tables}
        topics = [t for t in self.admin.list_topics() if t in mine]
        meta = self.admin.describe_topics(topics) if topics else []
        tps = [TopicPartition(t["name"], p["partition_index"]) for t in meta
               if t.get("error_code") == 0 for p in t.get("partitions", ())]
        if not tps:
            return 0, 0
        ends = self.admin.list_partition_offsets({tp: OffsetSpec.LATEST for tp in tps})
        committed = self.admin.list_group_offsets({self.group: None}).get(self.group, {})
        total = behind = 0
        for tp in tps:
            end = int(ends[tp].offset)
            c = committed.get(tp)
            done = int(c.offset) if c is not None and c.offset >= 0 else 0
            total += end
            behind += max(0, end - done)
        return total, behind

    def dead_letters(self) -> list[tuple[str, str, str]]:
        """(source topic, reason, error) of every record on the dead-letter topic."""
        from kafka import KafkaConsumer, OffsetSpec, TopicPartition

        if self.dlq not in self.admin.list_topics():
            return []
        tp = TopicPartition(self.dlq, 0)
        end = int(self.admin.list_partition_offsets({tp: OffsetSpec.LATEST})[tp].offset)
        if end == 0:
            return []
        consumer = KafkaConsumer(bootstrap_servers=self.admin.config["bootstrap_servers"],
                                 enable_auto_commit=False, consumer_timeout_ms=10000)
        out = []
        try:
            consumer.assign([tp])
            consumer.seek_to_beginning(tp)
            for rec in consumer:
                h = {k: v.decode(errors="replace") for k, v in rec.headers or []}
                out.append((h.get("migwatch.topic", "?"), h.get("migwatch.reason", "?"),
                            h.get("migwatch.error", "")))
                if rec.offset + 1 >= end:
                    break
        finally:
            consumer.close()
        return out


# ----------------------------------------------------------------------------- the run
class DifferentialRun:
    def __init__(self, stack: Stack, config: RunConfig, echo: Echo = print) -> None:
        self.stack = stack
        self.config = config
        self.echo = echo
        self.mid = f"dw-{config.group}-{os.urandom(4).hex()}"
        self.outcome = RunOutcome(config, self.mid)
        self.tables: list[TableDef] = [t for c in config.classes for t in c.tables]
        self.fence = fence_table()

    def _phase(self, name: str, since: float) -> float:
        now = time.monotonic()
        self.outcome.phases[name] = round(now - since, 1)
        return now

    def execute(self) -> RunOutcome:
        # the harness reads the dead-letter topic itself: the applier's line per dead-lettered
        # event would bury a test report
        quiet = logging.getLogger("migwatch.applier")
        level = quiet.level
        quiet.setLevel(logging.ERROR)
        try:
            return self._execute_in_databases()
        finally:
            quiet.setLevel(level)

    def _execute_in_databases(self) -> RunOutcome:
        tables = [t.spec_name for t in [*self.tables, self.fence]]
        with database(self.stack, "source") as source, self._target() as target:
            endpoint: Any = target if isinstance(target, PgDatabase) else mongo_endpoint(
                self.stack, target)
            spec = make_spec(source, endpoint, tables, self.stack,
                             connect={"heartbeat_interval_ms": 500})
            try:
                self._execute(spec, source, target)
            finally:
                self._teardown(spec)
        return self.outcome

    @contextlib.contextmanager
    def _target(self) -> Iterator[PgDatabase | str]:
        """A throw-away PostgreSQL database, or a MongoDB database name (dropped after)."""
        if self.config.target == "postgres":
            with database(self.stack, "target") as target:
                yield target
            return
        from pymongo import MongoClient

        name = short_id("dwm")
        try:
            yield name
        finally:
            client: Any = MongoClient(self.stack.address("ferretdb"))
            client.drop_database(name)
            client.close()

    def _fenced(self, target: PgDatabase | str) -> bool:
        """Whether the fence row written after the workload is on the target (not yet while
        the target is away: a fault injected by hand restarts it mid-run)."""
        if isinstance(target, PgDatabase):
            try:
                with psycopg.connect(target.dsn, autocommit=True) as conn:
                    return conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE id = 1").format(
                        self.fence.ident)).fetchone() == (1,)
            except psycopg.OperationalError:
                return False
        from pymongo import MongoClient

        client: Any = MongoClient(self.stack.address("ferretdb"))
        try:
            return client[target][self.fence.name].count_documents({"_id": 1}) == 1
        finally:
            client.close()

    def _execute(self, spec: MigrationSpec, source: PgDatabase, target: PgDatabase | str,
                 ) -> None:
        cfg, out = self.config, self.outcome
        t0 = time.monotonic()
        work = Workload(self.tables, cfg.seed)
        with psycopg.connect(source.dsn, autocommit=True) as conn:
            create_prerequisites(conn)
            for table in [*self.tables, self.fence]:
                create_table(conn, table)
        if isinstance(target, PgDatabase):
            with psycopg.connect(target.dsn, autocommit=True) as conn:
                create_prerequisites(conn)
        work.load(source.dsn, cfg.rows)
        t = self._phase("load", t0)
        applier: Applier | None = None
        main: _Thread | None = None
        kafka = _Kafka(spec, self.mid)
        try:
            try:
                preflight.preflight(spec, self.mid)
            except PreflightError as exc:
                out.preflight = list(exc.failures)
                out.errors += [f"pre-flight: {f}" for f in exc.failures
                               if not any(names_table(f, t.spec_name, t.qualified)
                                          for t in [*self.tables, self.fence])]
            except Exception as exc:
                out.errors.append(f"pre-flight raised {_err(exc)}")
            try:
                capture.prepare_source(spec, self.mid)
                capture.prepare_target_schema(spec)
                capture.ensure_connector(spec, self.mid, timeout=120)
            except Exception as exc:
                out.errors.append(f"set-up: {_err(exc)}")
            t = self._phase("setup", t)
            if not out.errors:
                applier = Applier(spec, self.mid)
                main = _Thread(applier.run, "dw-applier")
                main.start()
                self._stream(spec, source, work, main, kafka)
                t = self._phase("stream", t)
                self._drain(target, main, kafka)
                t = self._phase("drain", t)
        finally:
            if applier is not None and main is not None:
                applier.stop()
                main.join(60)
                out.applier_events, out.applier_dlq = applier.stats.events, applier.stats.dlq
                if main.error is not None:
                    out.applier_error = _err(main.error)
                elif main.is_alive():
                    out.errors.append("the applier did not stop within 60 s")
            out.workload = work.summary()
            try:
                out.topic_events = kafka.lag([*self.tables, self.fence])[0]
                dead = kafka.dead_letters()
            except Exception as exc:
                out.errors.append(f"reading Kafka: {_err(exc)}")
                dead = []
            finally:
                kafka.close()
        self._judge(spec, source, target, dead, work)
        self._phase("compare", t)

    def _stream(self, spec: MigrationSpec, source: PgDatabase, work: Workload, main: _Thread,
                kafka: _Kafka) -> None:
        cfg, out = self.config, self.outcome
        halt = threading.Event()  # the applier died: the rest of the workload proves nothing
        per_weight = cfg.operations / CATALOGUE_WEIGHT
        writer = _Thread(lambda: work.run(source.dsn, per_weight, cfg.seconds, halt),
                         "dw-workload")
        writer.start()
        start = time.monotonic()
        for i in range(cfg.rebalances):
            # joins spread over the stream: at 1/(k+1), 2/(k+1), … of the workload's time
            at = start + cfg.seconds * (i + 1) / (cfg.rebalances + 1)
            while time.monotonic() < at and writer.is_alive():
                if not main.is_alive():
                    halt.set()
                time.sleep(0.2)
            if not main.is_alive():
                break
            second = Applier(spec, self.mid)
            th = _Thread(second.run, f"dw-applier-{i + 2}")
            th.start()
            # in the group for `rebalance_seconds` once it is a member (a join can take a
            # while on a loaded machine; 30 s at most)
            started = time.monotonic()
            joined: float | None = None
            while main.is_alive() and th.is_alive():
                now = time.monotonic()
                members = kafka.members()
                out.max_members = max(out.max_members, members)
                if joined is None and members >= 2:
                    joined = now
                if (joined is not None and now - joined >= cfg.rebalance_seconds) or (
                        joined is None and now - started > 30):
                    break
                time.sleep(0.5)
            second.stop()
            th.join(60)
            out.second_applier_events += second.stats.events
            if th.error is not None:
                out.second_applier_error = _err(th.error)
            elif th.is_alive():
                out.errors.append("a second applier did not stop within 60 s")
            out.rebalances += 1
        # a source slowed down by a loaded machine must not stretch the run without bound
        cut = start + cfg.seconds * 3 + 30
        while writer.is_alive():
            if not main.is_alive() or time.monotonic() > cut:
                halt.set()
            writer.join(0.5)
        if writer.error is not None:
            out.errors.append(f"workload: {_err(writer.error)}")
        done = work.counts["transactions"]
        if halt.is_set() and main.is_alive():
            out.errors.append(f"workload cut short after {time.monotonic() - start:.0f} s "
                              f"({done} transactions): the source was too slow")
        with psycopg.connect(source.dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("INSERT INTO {} (id, n) VALUES (1, %s)").format(
                self.fence.ident), [cfg.seed % 2**31])

    def _drain(self, target: PgDatabase | str, main: _Thread, kafka: _Kafka) -> None:
        """Until the fence is on the target and the group has committed every topic's end."""
        deadline = time.monotonic() + self.config.drain_timeout
        settled = 0
        while time.monotonic() < deadline and main.is_alive():
            fenced = self._fenced(target)
            behind = kafka.lag([*self.tables, self.fence])[1] if fenced else -1
            settled = settled + 1 if behind == 0 else 0
            if settled >= 2:
                return
            time.sleep(1.0)
        if main.is_alive():
            self.outcome.errors.append(
                f"not drained in {self.config.drain_timeout:.0f} s (fence on the target and "
                "every topic committed): compared as it stood")

    def _judge(self, spec: MigrationSpec, source: PgDatabase, target: PgDatabase | str,
               dead: list[tuple[str, str, str]], work: Workload) -> None:
        out = self.outcome
        if isinstance(target, PgDatabase):
            every = frozenset(t.qualified for c in self.config.classes if c.limit
                              for t in c.tables)
            comparisons = compare_pg(source.dsn, target.dsn, self.tables, self.config.limit,
                                     every)
        else:
            # a limit table's rows holding the limit's values are judged by its contract
            aside: dict[str, Aside] = {
                t.qualified: (LIMIT_COLUMN, None if c.limit.mongo_exact
                              else c.limit.holds_outside)
                for c in self.config.classes if c.limit for t in c.tables}
            comparisons = compare_mongo(source.dsn, self.stack.address("ferretdb"), target,
                                        self.tables, self.config.limit, aside)
        validator: dict[str, str] = {}
        counts: dict[str, tuple[int, int, int]] = {}
        try:
            from migwatch.validation.run import validate

            result = validate(spec, None, tables=[t.spec_name for t in self.tables])
            by_spec = {t.spec_name: t.qualified for t in self.tables}
            for tr in result.tables:
                detail = f"{tr.status}"
                if tr.status != "equal":
                    detail += (f" (missing {tr.missing}, extra {tr.extra}, changed {tr.changed}"
                               + (f", error {tr.error}" if tr.error else "")
                               + (f", schema {tr.schema_differences}"
                                  if tr.schema_differences else "") + ")")
                name = by_spec.get(tr.table, tr.table)
                validator[name] = detail
                counts[name] = (tr.missing, tr.extra, tr.changed)
        except Exception as exc:
            out.errors.append(f"validator raised {_err(exc)}")
        by_topic: dict[str, Counter[str]] = {}
        for topic, reason, error in dead:
            by_topic.setdefault(topic, Counter())[f"{reason}: {_shape(error)}"] += 1
        run_errors = list(out.errors)
        if out.applier_error:
            run_errors.append(f"applier crashed: {out.applier_error}")
        for cls in self.config.classes:
            dl = {}
            for t in cls.tables:
                topic = f"{names.topic_prefix(self.mid)}.{sanitized(t.schema)}." \
                        f"{sanitized(t.name)}"
                merged: Counter[str] = Counter()
                for tp in {topic, f"{names.topic_prefix(self.mid)}.{t.qualified}"}:
                    merged.update(by_topic.get(tp, Counter()))
                if merged:
                    dl[t.qualified] = merged
            out.classes[cls.id] = ClassOutcome(
                cls.id, [comparisons[t.qualified] for t in cls.tables],
                {t.qualified: validator.get(t.qualified, "not validated") for t in cls.tables},
                dl, run_errors, self.config.seed,
                {t.qualified: counts[t.qualified] for t in cls.tables if t.qualified in counts},
                {t.qualified: work.history.get(t.qualified, {}) for t in cls.tables},
                {t.qualified: t.key_kind == "primary" and isinstance(target, PgDatabase)
                 for t in cls.tables}, cls.limit, self.config.target,
                [f for f in out.preflight if any(names_table(f, t.spec_name, t.qualified)
                                                 for t in cls.tables)],
                {t.qualified: (t.spec_name, cols) for t in cls.tables
                 if cls.limit is None and not isinstance(target, PgDatabase)
                 and (cols := preflight_refusal(t)) is not None})

    def _teardown(self, spec: MigrationSpec) -> None:
        try:
            capture.teardown(spec, self.mid, delete_topics=True, timeout=90)
        except Exception as exc:
            self.outcome.errors.append(f"teardown: {_err(exc)}")


def run(stack: Stack, config: RunConfig, echo: Echo = print) -> RunOutcome:
    """Execute one run and print its summary and every class's PASS/FAIL line."""
    outcome = DifferentialRun(stack, config, echo).execute()
    echo(outcome.summary())
    for cid, co in outcome.classes.items():
        if co.limit is not None:
            broken = co.failures()
            echo(f"  {'PASS' if not broken else 'FAIL'} {cid} (limit, {co.limit.kind})"
                 + ("" if not broken else f"  [contract broken: {'; '.join(broken)}]"))
            continue
        if co.expected_refusal:
            broken = co.failures()
            echo(f"  {'PASS' if not broken else 'FAIL'} {cid} (refused at pre-flight)"
                 + ("" if not broken else f"  [contract broken: {'; '.join(broken)}]"))
            continue
        agree = co.disagreements()
        echo(f"  {'PASS' if co.equal else 'FAIL'} {cid}"
             + ("" if not agree else f"  [validator disagrees: {'; '.join(agree)}]"))
    return outcome
