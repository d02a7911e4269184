"""The workload's reproducibility, without servers: what happens to a table follows from the
seed and the table alone, so replaying one class (MIGWATCH_DIFF_CLASSES) replays exactly what it
saw among all the others."""

from __future__ import annotations

from tests.differential import schema
from tests.differential.workload import Workload

PER_WEIGHT = 2500 / schema.CATALOGUE_WEIGHT


def _draws(work: Workload, qualified: str, table: schema.TableDef, n: int = 30) -> list[object]:
    work.rng = work.rngs[qualified]
    return [work._value(c) for _ in range(n) for c in table.columns] + [
        work._new_key(table) for _ in range(5)]


def test_a_table_gets_the_same_operations_and_values_alone_or_among_all() -> None:
    table = schema.BY_ID["type-timestamptz3"].tables[0]
    everything = [t for c in schema.CLASSES if c.group == schema.MAIN for t in c.tables]
    among, alone = Workload(everything, 7), Workload([table], 7)
    count = [t.qualified for t in among.plan(PER_WEIGHT)].count(table.qualified)
    assert count == len(alone.plan(PER_WEIGHT)) == round(PER_WEIGHT * table.weight)
    assert _draws(among, table.qualified, table) == _draws(alone, table.qualified, table)


def test_another_seed_draws_other_values() -> None:
    table = schema.BY_ID["type-text"].tables[0]
    assert _draws(Workload([table], 1), table.qualified, table) != _draws(
        Workload([table], 2), table.qualified, table)


def test_heavier_tables_get_more_operations() -> None:
    toast = schema.BY_ID["type-toast_text"].tables[0]
    plain = schema.BY_ID["type-text"].tables[0]
    slots = [t.qualified for t in Workload([toast, plain], 3).plan(PER_WEIGHT)]
    assert slots.count(toast.qualified) == round(PER_WEIGHT * 4) > slots.count(plain.qualified)
    assert slots.count(plain.qualified) == round(PER_WEIGHT)
