"""Long randomized differential runs of the CDC path (the CI test's budget, lifted).

The same harness as tests/integration/test_cdc_differential.py (tests/differential/): every
selected class — a PostgreSQL type, a key shape, a naming hazard, a limit of Debezium — through
snapshot and a seeded random stream, judged by the independent comparator and by migwatch's
validator (a limit class by its written contract in docs/types.md, tests/differential/
limits.py). Rounds
follow one another until `--minutes` have passed; each round has its own seed (the first is
`--seed`, the next ones derive from it), prints the seed, the events Debezium wrote and the
applier applied or dead-lettered, and every class's PASS/FAIL; a failed class prints its first
differing keys. Needs the local stack (`migwatch stack up`).

    .venv/bin/python bench/cdc_differential.py --minutes 30                  # everything
    .venv/bin/python bench/cdc_differential.py --seed 42 --tables type-toast --minutes 5
    .venv/bin/python bench/cdc_differential.py --tables key-,name- --round-seconds 120
    .venv/bin/python bench/cdc_differential.py --target mongodb --minutes 10

Exit code: 0 when every class of every round held its contract (equal, the validator agreeing;
a limit class: its written contract), 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from migwatch.config import StackSettings  # noqa: E402
from migwatch.stack import Stack  # noqa: E402
from tests.conftest import PASSWORD_ENV  # noqa: E402
from tests.differential import schema  # noqa: E402
from tests.differential.run import RunConfig, run  # noqa: E402


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, default=None,
                   help="seed of the first round (default: random, printed)")
    p.add_argument("--minutes", type=float, default=10.0,
                   help="keep starting rounds until this many minutes have passed (10)")
    p.add_argument("--tables", default="",
                   help="classes to run, comma-separated id prefixes, e.g. "
                        "'type-timestamp,key-none' (default: every class); --list shows them")
    p.add_argument("--round-seconds", type=float, default=60.0,
                   help="workload duration of one round (60)")
    p.add_argument("--rate", type=float, default=150.0,
                   help="operations per second as if every class ran (150); a selection gets "
                        "its tables' share, so a class sees the same operations under a seed "
                        "whatever else runs")
    p.add_argument("--rows", type=int, default=200, help="initial rows per table (200)")
    p.add_argument("--rebalances", type=int, default=0,
                   help="second-applier joins per round (default: one per 30 s of workload)")
    p.add_argument("--target", choices=("postgres", "mongodb"), default="postgres",
                   help="target engine (mongodb: FerretDB, the classes of "
                        "tests/differential/schema.MONGO_CLASSES only)")
    p.add_argument("--list", action="store_true", help="print the classes and exit")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    classes = schema.select(args.tables)
    if args.target == "mongodb":
        classes = [c for c in classes if c.id in schema.MONGO_CLASSES]
    if args.list:
        for c in classes:
            print(f"{c.id:28} {c.group:10} {c.about}")
        return 0
    if not classes:
        say(f"no class matches --tables {args.tables!r} (see --list)")
        return 2
    settings = StackSettings()
    os.environ[PASSWORD_ENV] = settings.pg_password.get_secret_value()
    stack = Stack(settings, echo=lambda m: say(f"[stack] {m}"))
    stack.up()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 2**31)
    seeds = random.Random(seed)
    groups = list(dict.fromkeys(c.group for c in classes))
    rebalances = args.rebalances or max(1, int(args.round_seconds // 30))
    deadline = time.monotonic() + args.minutes * 60
    failed: dict[str, list[int]] = {}
    rounds = events = applied = dead = 0
    say(f"first seed {seed}; {len(classes)} classes in groups {groups}; rounds of "
        f"{args.round_seconds:.0f} s at {args.rate:.0f} ops/s, {args.rows} initial rows per "
        f"table, {rebalances} rebalance(s) per round")
    while time.monotonic() < deadline:
        rounds += 1
        for group in groups:
            chosen = [c for c in classes if c.group == group]
            say(f"round {rounds} group {group} seed {seed}: {len(chosen)} classes")
            outcome = run(stack, RunConfig(
                seed=seed, group=group, classes=chosen, rows=args.rows,
                operations=max(1, int(args.rate * args.round_seconds)),
                seconds=args.round_seconds, rebalances=rebalances, target=args.target,
                drain_timeout=max(60.0, args.round_seconds)), echo=say)
            events += outcome.topic_events
            applied += outcome.applier_events + outcome.second_applier_events
            dead += outcome.applier_dlq
            for cid, co in outcome.classes.items():
                if co.failures():
                    failed.setdefault(cid, []).append(seed)
                    print(co.describe(), flush=True)
        seed = seeds.randrange(1, 2**31)
    say(f"{rounds} round(s): events in Kafka {events}, applied {applied}, dead-lettered {dead}")
    for cid, bad in sorted(failed.items()):
        say(f"FAIL {cid} under seed(s) {', '.join(map(str, bad))}")
    if not failed:
        say("every class held its contract in every round (equal and the validator agreeing; "
            "limit classes as written)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
