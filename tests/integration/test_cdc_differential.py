"""The randomized differential proof that every change lands exactly (CI budget).

Every class — one PostgreSQL type, one key shape, one naming hazard (tests/differential/
schema.py) — goes through the real path: seeded initial rows (Debezium's snapshot), then a
seeded random workload of inserts, updates (TOAST left untouched, primary keys changed),
deletes and truncates while migwatch's applier runs, with a second applier joining the consumer
group mid-stream and leaving. Then, on the same final state:

    test_class_lands_exactly                 the independent comparator (tests/differential/
                                             compare.py, no migwatch code): target == source
                                             (timetz: the same instant at +00, the contract),
                                             and pre-flight did not refuse the class's tables
    test_validator_agrees_with_comparator    migwatch's validator says equal exactly when the
                                             comparator does (no false GO, no false NO-GO)
    test_limit_holds_its_contract            a limit class — values Debezium does not carry
                                             (types.LIMITS) — differs exactly as its written
                                             contract in docs/types.md says, and the validator
                                             reports it with the comparator's counts
                                             (tests/differential/limits.py)
    test_run_kept_its_applier_through_a_rebalance   the run itself: the applier survived, a
                                             second member really joined, the stream drained

Ordinary classes hold only values inside the domain Debezium carries and must land exactly; the
values outside it are the limit classes' (one run with the rest: their events land altered or
are dead-lettered, they never take the applier down). Classes share a run (one connector, one
applier) per group and seed; the groups that can take the applier down (names outside Kafka's
topic charset, colliding topics) run on their own. A class fails where the product is wrong —
nothing here is skipped or expected to fail.

Seeds: two fixed ones and one random one, printed in every test id and failure. Choose:

    MIGWATCH_DIFF_SEEDS=123,456        these seeds instead
    MIGWATCH_DIFF_CLASSES=type-timestamp,key-none   only classes whose id starts so
    pytest tests/integration/test_cdc_differential.py -k "type-timetz3"   (runs only what the
                                       selected tests need)

Name-hazard groups run under the first seed only (their subject is names, not data); the main
group under every seed. Long runs: bench/cdc_differential.py.

MongoDB target (FerretDB), separate tests under the first seed, on every class
(schema.MONGO_CLASSES), in the same run groups as on PostgreSQL; both sides re-encoded by the
MongoDB contract (docs/types.md) by tests/differential/compare_mongo.py, no migwatch code:

    test_mongodb_class_lands_as_documented   every value mapped as the contract says, and
                                             every value the contract refuses dead-lettered
                                             naming its column (never dropped or altered); a
                                             table the contract refuses as a whole (no key,
                                             a '.' in a column name) refused by pre-flight
                                             naming table and column
    test_mongodb_validator_agrees            the validator's verdict, refused rows counting as
                                             "not complete" (a table refused at pre-flight:
                                             never "equal")
    test_mongodb_limit_holds_its_contract    the limit classes, by their MongoDB contract
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator

import pytest

from migwatch.stack import Stack
from tests.differential import schema
from tests.differential.run import RunConfig, RunOutcome, run
from tests.differential.schema import MAIN, DiffClass

FIXED_SEEDS = (20240601, 7)
#: CI sizes: 60 initial rows per table (every edge value is in the snapshot), 2700 streamed
#: operations shared by weight over the whole catalogue — 20 per type or limit table, 80 per
#: TOAST table, 60 per key-shape table — in 12 s
ROWS, OPERATIONS, SECONDS = 60, 2700, 12.0


def _seeds() -> list[int]:
    chosen = os.environ.get("MIGWATCH_DIFF_SEEDS", "").strip()
    if chosen:
        return [int(s) for s in chosen.split(",") if s.strip()]
    return [*FIXED_SEEDS, random.SystemRandom().randrange(1, 2**31)]


SEEDS = _seeds()
CLASSES = schema.select(os.environ.get("MIGWATCH_DIFF_CLASSES"))
ORDINARY = [c for c in CLASSES if c.limit is None]
LIMITS = [c for c in CLASSES if c.limit is not None]


#: MongoDB sizes: FerretDB writes slowly, so fewer rows and operations (one seed; the
#: operations are catalogue-wide and shared by weight as on PostgreSQL: about 15 per type or
#: limit table)
MONGO_ROWS, MONGO_OPERATIONS, MONGO_SECONDS = 30, 1950, 10.0
#: FerretDB applies a few dozen events a second: the main group's ~5000 events need minutes
MONGO_DRAIN = 300.0
MONGO = [c for c in CLASSES if c.id in schema.MONGO_CLASSES]


def _cases(classes: list[DiffClass]) -> list[object]:
    return [pytest.param(cls, seed, id=f"{cls.id}-seed{seed}")
            for seed in SEEDS for cls in classes if cls.group == MAIN or seed == SEEDS[0]]


def _groups() -> list[object]:
    pairs = dict.fromkeys((cls.group, seed) for seed in SEEDS for cls in CLASSES
                          if cls.group == MAIN or seed == SEEDS[0])
    return [pytest.param(g, s, id=f"{g}-seed{s}") for g, s in pairs]


class Runs:
    """Each (group, seed) run once, with only the classes the selected tests ask for."""

    def __init__(self, stack: Stack, wanted: dict[tuple[str, int], list[DiffClass]]) -> None:
        self.stack = stack
        self.wanted = wanted
        self.done: dict[tuple[str, int], RunOutcome] = {}

    def get(self, group: str, seed: int, target: str = "postgres") -> RunOutcome:
        key = (group, seed) if target == "postgres" else (f"{target}:{group}", seed)
        if key not in self.done:
            if target == "postgres":
                config = RunConfig(seed=seed, group=group, rows=ROWS, operations=OPERATIONS,
                                   seconds=SECONDS, classes=self.wanted.get(key)
                                   or [c for c in CLASSES if c.group == group])
            else:
                config = RunConfig(seed=seed, group=group, rows=MONGO_ROWS,
                                   operations=MONGO_OPERATIONS, seconds=MONGO_SECONDS,
                                   drain_timeout=MONGO_DRAIN, target=target,
                                   classes=self.wanted.get(key)
                                   or [c for c in MONGO if c.group == group])
            self.done[key] = run(self.stack, config)
        return self.done[key]


@pytest.fixture(scope="module")
def runs(stack: Stack, request: pytest.FixtureRequest) -> Iterator[Runs]:
    wanted: dict[tuple[str, int], list[DiffClass]] = {}
    for item in request.session.items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        module = getattr(item, "module", None)
        if module is not None and module.__name__ == __name__:
            if isinstance(params.get("cls"), DiffClass):  # not an empty parametrization
                cls, seed = params["cls"], params["seed"]
                group = cls.group if "mongodb" not in item.name else f"mongodb:{cls.group}"
                wanted.setdefault((group, seed), [])
                if cls not in wanted[(group, seed)]:
                    wanted[(group, seed)].append(cls)
            elif isinstance(params.get("group"), str):  # the run check alone: every class
                wanted.setdefault((params["group"], params["seed"]), [])
    for key, classes in wanted.items():
        if not classes:
            wanted[key] = [c for c in CLASSES if c.group == key[0]]
    yield Runs(stack, wanted)


def _reproduce(cls: DiffClass, seed: int) -> str:
    return (f"\nreproduce: MIGWATCH_DIFF_SEEDS={seed} MIGWATCH_DIFF_CLASSES={cls.id} "
            f".venv/bin/python -m pytest tests/integration/test_cdc_differential.py")


@pytest.mark.parametrize(("cls", "seed"), _cases(ORDINARY))
def test_class_lands_exactly(runs: Runs, cls: DiffClass, seed: int) -> None:
    outcome = runs.get(cls.group, seed)
    result = outcome.classes[cls.id]
    if not result.equal or result.preflight:
        pytest.fail(f"{cls.about}\n{result.describe()}\n{outcome.summary()}"
                    f"{_reproduce(cls, seed)}", pytrace=False)


@pytest.mark.parametrize(("cls", "seed"), _cases(ORDINARY))
def test_validator_agrees_with_comparator(runs: Runs, cls: DiffClass, seed: int) -> None:
    outcome = runs.get(cls.group, seed)
    result = outcome.classes[cls.id]
    disagreements = result.disagreements()
    if disagreements:
        pytest.fail("migwatch's validator and the independent comparator disagree:\n"
                    + "\n".join(disagreements) + f"\n{result.describe()}"
                    + _reproduce(cls, seed), pytrace=False)


@pytest.mark.parametrize(("cls", "seed"), _cases(LIMITS))
def test_limit_holds_its_contract(runs: Runs, cls: DiffClass, seed: int) -> None:
    assert cls.limit is not None
    outcome = runs.get(cls.group, seed)
    result = outcome.classes[cls.id]
    broken = result.failures()
    if broken:
        pytest.fail(f"{cls.about}\ncontract ({cls.limit.kind}): {cls.limit.pg}\n"
                    f"{result.describe()}\n{outcome.summary()}{_reproduce(cls, seed)}",
                    pytrace=False)


@pytest.mark.parametrize(("group", "seed"), _groups())
def test_run_kept_its_applier_through_a_rebalance(runs: Runs, group: str, seed: int) -> None:
    outcome = runs.get(group, seed)
    problems = list(outcome.errors)
    if outcome.applier_error:
        problems.append(f"the applier crashed: {outcome.applier_error}")
    if outcome.second_applier_error:
        problems.append(f"the second applier crashed: {outcome.second_applier_error}")
    if outcome.max_members < 2:
        problems.append(f"no rebalance: the group never had 2 members "
                        f"(at most {outcome.max_members})")
    if not outcome.topic_events:
        problems.append("no change events reached Kafka")
    if problems:
        pytest.fail("\n".join(problems) + "\n" + outcome.summary(), pytrace=False)


def _mongo_cases(limits: bool) -> list[object]:
    return [pytest.param(cls, SEEDS[0], id=f"{cls.id}-seed{SEEDS[0]}") for cls in MONGO
            if (cls.limit is not None) == limits]


@pytest.mark.parametrize(("cls", "seed"), _mongo_cases(limits=False))
def test_mongodb_class_lands_as_documented(runs: Runs, cls: DiffClass, seed: int) -> None:
    outcome = runs.get(cls.group, seed, target="mongodb")
    result = outcome.classes[cls.id]
    if result.lands_problems():
        pytest.fail(f"MongoDB target, {cls.about}\ncontract: {cls.mongo or 'as documented'}\n"
                    f"{result.describe()}\n{outcome.summary()}{_reproduce(cls, seed)} -k mongodb",
                    pytrace=False)


@pytest.mark.parametrize(("cls", "seed"), _mongo_cases(limits=False))
def test_mongodb_validator_agrees(runs: Runs, cls: DiffClass, seed: int) -> None:
    outcome = runs.get(cls.group, seed, target="mongodb")
    result = outcome.classes[cls.id]
    disagreements = result.disagreements()
    if disagreements:
        pytest.fail("MongoDB target: migwatch's validator and the independent comparator "
                    "disagree:\n" + "\n".join(disagreements) + f"\n{result.describe()}",
                    pytrace=False)


@pytest.mark.parametrize(("cls", "seed"), _mongo_cases(limits=True))
def test_mongodb_limit_holds_its_contract(runs: Runs, cls: DiffClass, seed: int) -> None:
    assert cls.limit is not None
    outcome = runs.get(cls.group, seed, target="mongodb")
    result = outcome.classes[cls.id]
    broken = result.failures()
    if broken:
        pytest.fail(f"MongoDB target, {cls.about}\ncontract ({cls.limit.kind}): "
                    f"{cls.limit.mongo}\n{result.describe()}\n{outcome.summary()}"
                    f"{_reproduce(cls, seed)} -k mongodb", pytrace=False)
