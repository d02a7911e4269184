"""docs/types.md and the harness agree: the matrices there are exactly what the harness's own
lists render, and every type and class the harness iterates is documented (pure, no servers)."""

from __future__ import annotations

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
    assert set(schema.CLASS_FAILS) | set(schema.CLASS_MONGO_FAILS) | set(
        schema.MONGO_CLASSES) <= {c.id for c in schema.CLASSES}
    # a MongoDB status is only written for a type the MongoDB run covers
    covered = {c.removeprefix("type-") for c in schema.MONGO_CLASSES if c.startswith("type-")}
    assert set(types.MONGO_TODAY) == covered


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
