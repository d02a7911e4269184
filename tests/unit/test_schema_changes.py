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


def test_the_latest_record_of_a_table_says_whether_it_is_stopped() -> None:
    from migwatch.schema_changes import (
        ACCEPTED,
        CONTINUED,
        FOLLOWED,
        STOPPED,
        ColumnChange,
        SchemaChange,
        stopped_tables,
    )

    gone = (ColumnChange("gone", DROPPED, None, "text"),)
    history = [SchemaChange(1, "public.a", STOPPED, gone), SchemaChange(2, "public.b", FOLLOWED),
               SchemaChange(3, "public.a", ACCEPTED, gone), SchemaChange(4, "public.c", STOPPED),
               SchemaChange(5, "public.a", CONTINUED, gone)]
    assert set(stopped_tables(history)) == {"public.c"}
    # accepted, not continued yet: still stopped (the applier may stop it again)
    assert set(stopped_tables(history[:3])) == {"public.a"}
    assert "'gone' dropped" in history[0].describe()
    assert ColumnChange.from_dict(gone[0].to_dict()) == gone[0]


def test_accepting_a_stop_removes_the_target_columns_it_made_stale() -> None:
    from migwatch.resuming import stale_columns
    from migwatch.schema_changes import STOPPED, ColumnChange, SchemaChange

    stop = SchemaChange(1, "public.t", STOPPED, (
        ColumnChange("gone", DROPPED, None, "text"), ColumnChange("n", CHANGED, "text", "integer"),
        ColumnChange("new", ADDED, "text"), ColumnChange("w", WIDENED, "bigint", "integer"),
        ColumnChange("z", NULLABLE, "text", "text")))
    assert stale_columns(stop) == ("gone", "n", "w")
