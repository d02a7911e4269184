"""docs/types.md and the harness agree: the matrices there are exactly what the harness's own
lists render, and every type and class the harness iterates is documented (pure, no servers)."""

from __future__ import annotations

import random

import pytest

from tests.differential import matrix, schema, types


@pytest.mark.parametrize("which", sorted(matrix.MARKS))
def test_docs_matrix_is_what_the_harness_iterates(which: str) -> None:
    documented = matrix.documented(matrix.DOC.read_text(), which)
    assert documented == matrix.RENDER[which](), (
        f"docs/types.md ({which}) differs from tests/differential: run "
        "`.venv/bin/python -m tests.differential.matrix --write`")


def test_every_class_is_documented_once_and_every_status_names_a_known_class() -> None:
    text = matrix.DOC.read_text()
    tables = "\n".join(matrix.documented(text, which) for which in matrix.MARKS)
    for c in schema.CLASSES:
        assert tables.count(f"`{c.id}`") == 1, c.id
    slugs = {t.slug for t in types.TYPES}
    assert set(types.PG_FAILS) <= slugs
    assert set(types.VALIDATOR_NOTES) <= slugs
    limits = {c.slug for c in types.LIMITS}
    assert set(types.LIMIT_PG_FAILS) | set(types.LIMIT_MONGO_FAILS) <= limits
    assert set(schema.CLASS_FAILS) | set(schema.CLASS_MONGO_FAILS) | set(
        schema.MONGO_CLASSES) <= {c.id for c in schema.CLASSES}
    # a MongoDB status is only written for a type the MongoDB run covers, once it ran
    covered = {c.removeprefix("type-") for c in schema.MONGO_CLASSES if c.startswith("type-")}
    assert set(types.MONGO_TODAY) <= covered
    assert types.MONGO_OBSERVED_AT or not (types.MONGO_TODAY or types.LIMIT_MONGO_FAILS
                                           or schema.CLASS_MONGO_FAILS)


def test_classes_cover_every_family_and_have_unique_tables() -> None:
    tables = [t.qualified for c in schema.CLASSES for t in c.tables]
    assert len(tables) == len(set(tables))
    assert len({c.id for c in schema.CLASSES}) == len(schema.CLASSES)
    # precisions 0..6 of every time type, each its own class
    for family in ("timestamp", "timestamptz", "time", "timetz"):
        assert {f"type-{family}{p}" for p in range(7)} <= set(schema.BY_ID)
    assert {c.group for c in schema.CLASSES} == set(schema.GROUPS)


def test_selection_by_prefix_and_exact_name() -> None:
    assert {c.id for c in schema.select("type-toast_text$")} == {"type-toast_text"}
    assert {c.id for c in schema.select("type-toast_text")} == {"type-toast_text",
                                                                "type-toast_text_array"}
    assert len(schema.select("")) == len(schema.CLASSES)
    assert schema.select("nothing-like-this") == []


def test_every_limit_has_a_class_and_a_written_contract() -> None:
    for lim in types.LIMITS:
        cls = schema.BY_ID[lim.class_id]
        assert cls.kind == "limit" and cls.limit is lim
        assert len(cls.tables) == len(lim.columns)
        assert lim.kind in (types.REPORTED, types.REFUSED)
        if lim.kind == types.REPORTED:
            assert lim.pg.startswith("not carried by Debezium: ") and lim.lands_as is not None
            assert "no false GO" in lim.pg
        else:
            assert lim.pg.startswith("refused: ") and "naming the column" in lim.pg
        if lim.class_id in schema.MONGO_CLASSES:
            assert lim.mongo != "not run on MongoDB"
            assert (lim.kind == types.REFUSED or lim.mongo_lands_as is not None
                    or lim.mongo_exact)


def _drawn(values: tuple[str, ...], gen: types.Gen, seed: str, n: int = 300) -> list[str]:
    rng = random.Random(seed)
    return [v for v in [*values, *(gen(rng) for _ in range(n))] if v is not None]


def test_limit_values_are_outside_the_domain_and_type_values_inside() -> None:
    """A limit class holds only values its limit is about; a type class it covers holds none
    of them in what the snapshot reads (stream-only edges are the stream's by design)."""
    for lim in types.LIMITS:
        for col in lim.columns:
            for v in _drawn(col.edges, col.gen, lim.slug):
                assert lim.outside(v), (lim.class_id, v)
        for slug in lim.covers:
            case = next(t for t in types.TYPES if t.slug == slug)
            for v in _drawn(case.edges, case.gen, slug):
                assert not lim.outside(v), (case.class_id, lim.class_id, v)
            for v in case.stream_edges:  # only where the stream carries what the snapshot not
                assert lim.altered is not None and lim.outside(v), (case.class_id, v)
                assert not lim.altered(["initial", "update(v)"]) and lim.altered(["initial"])


def test_documented_landing_forms() -> None:
    multidim, bounds = types.BY_LIMIT["limit-array_multidim"], types.BY_LIMIT[
        "limit-array_lower_bound"]
    assert multidim.lands_as is not None and bounds.lands_as is not None
    assert multidim.lands_as("{{1,2},{3,4}}") == "{NULL,NULL}"
    assert multidim.lands_as('[0:1][1:1]={{"a,}"},{NULL}}') == "{NULL,NULL}"
    assert multidim.lands_as("{{{1}},{{2}},{{3}}}") == "{NULL,NULL,NULL}"
    assert bounds.lands_as("[0:2]={1,2,3}") == "{1,2,3}"
    assert bounds.lands_as('[-3:-2]={"[1:2]={x}",NULL}') == '{"[1:2]={x}",NULL}'
