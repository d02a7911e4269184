"""Which source schema changes a target follows by itself (additive) and which stop a table."""

from __future__ import annotations

import pytest

from migwatch.schema_changes import (
    ADDED,
    CHANGED,
    DROPPED,
    NOT_NULL,
    NULLABLE,
    WIDENED,
    TableStopped,
    differences,
    widens,
)


@pytest.mark.parametrize(("old", "new", "ok"), [
    ("character varying(5)", "character varying(50)", True),
    ("character varying(50)", "character varying(5)", False),
    ("character varying(5)", "text", True),
    ("character varying(5)", "character varying", True),
    ("text", "character varying(5)", False),
    ("smallint", "integer", True), ("integer", "bigint", True), ("bigint", "integer", False),
    ("numeric(10,2)", "numeric(12,2)", True), ("numeric(10,2)", "numeric(12,3)", False),
    ("numeric(10,2)", "numeric", True), ("numeric", "numeric(10,2)", False),
    ("real", "double precision", True), ("double precision", "real", False),
    ("timestamp(3) without time zone", "timestamp(6) without time zone", True),
    ("timestamp(6) without time zone", "timestamp(3) without time zone", False),
    ("timestamp(3) without time zone", "timestamp(6) with time zone", False),
    ("integer[]", "bigint[]", True), ("integer[]", "bigint", False),
    ("integer", "text", False), ("text", "integer", False),
])
def test_a_type_widens_only_when_every_old_value_stays_as_it_is(
        old: str, new: str, ok: bool) -> None:
    assert widens(old, new) is ok


def test_differences_compare_the_source_with_what_the_target_holds() -> None:
    source = {"id": ("integer", True), "a": ("text", False), "b": ("bigint", False),
              "c": ("integer", True), "n": ("text", True), "e": ("character varying(9)", False)}
    target = {"id": ("integer", True), "a": ("text", True), "b": ("integer", False),
              "n": ("text", False), "e": ("character varying(3)", False),
              "gone": ("text", False)}
    got = {(c.column, c.kind) for c in differences(source, target)}
    assert got == {("a", NULLABLE), ("b", WIDENED), ("c", ADDED), ("n", NOT_NULL),
                   ("e", WIDENED), ("gone", DROPPED)}
    assert [c.kind for c in differences({"x": ("integer", False)}, {"x": ("text", False)})] \
        == [CHANGED]
    assert differences(source, source) == []


def test_a_stopped_table_names_itself_and_every_change() -> None:
    refused = [c for c in differences({"id": ("integer", True)},
                                      {"id": ("integer", True), "gone": ("text", False)})]
    err = TableStopped("public.t", refused)
    assert "table public.t: column 'gone' dropped on the source" in str(err)
    assert "versioned migration" in str(err)
