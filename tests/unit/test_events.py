"""Reading events into changes when the source's schema moves: the catalog is read again for a
field the applier does not know or a column a whole row leaves out — once per shape, not for
every event of a column Debezium always leaves out — and events written before a column was
added keep the target's value for it."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from migwatch.config import TableSpec
from migwatch.connectors.postgres import Column, TableInfo
from migwatch.decoding import UNCHANGED, SkipEvent
from migwatch.events import EventReader

T = TableSpec(source="public.t")


def reader(*columns: Column) -> EventReader:
    r = EventReader([T], SimpleNamespace(applies_keyless=True, label="PostgreSQL"))  # type: ignore[arg-type]
    r.set_table("public.t", TableInfo("public", "t", columns, ("id",)))
    return r


def record(after: dict[str, Any], op: str = "c") -> Any:
    value = {"op": op, "after": after, "source": {"schema": "public", "table": "t", "lsn": 1}}
    return SimpleNamespace(value=orjson.dumps(value), headers=None, topic="x", partition=0,
                           offset=0)


def test_a_column_always_left_out_reads_the_catalog_once_per_shape() -> None:
    r = reader(Column("id", "integer", True), Column("iv", "interval[]", False))
    calls: list[str] = []
    r.on_schema_change = lambda table: calls.append(table) is None and False
    for _ in range(3):
        with pytest.raises(SkipEvent, match="'iv' is not in the event"):
            r.decode(record({"id": 1}))
    assert calls == ["public.t"]


def test_an_unknown_field_follows_the_new_definition_and_older_events_keep_values() -> None:
    r = reader(Column("id", "integer", True), Column("a", "text", False))
    new = TableInfo("public", "t", (Column("id", "integer", True), Column("a", "text", False),
                                    Column("b", "integer", False)), ("id",))

    def changed(table: str) -> bool:
        r.set_table(table, new)
        return True

    r.on_schema_change = changed
    ch = r.decode(record({"id": 1, "a": "x", "b": 7}))
    assert ch is not None and ch.row == {"id": 1, "a": "x", "b": 7}
    # an event written before the column was added leaves it out: the row keeps its value
    older = r.decode(record({"id": 2, "a": "y"}))
    assert older is not None and older.row == {"id": 2, "a": "y", "b": UNCHANGED}


def test_a_value_its_column_type_cannot_read_reads_the_catalog_then_follows_the_new_type() -> None:
    r = reader(Column("id", "integer", True), Column("n", "integer", False))
    new = TableInfo("public", "t", (Column("id", "integer", True), Column("n", "text", False)),
                    ("id",))
    calls: list[str] = []

    def changed(table: str) -> bool:
        calls.append(table)
        r.set_table(table, new)
        return True

    r.on_schema_change = changed
    ch = r.decode(record({"id": 1, "n": "word"}))
    assert ch is not None and ch.row == {"id": 1, "n": "word"} and calls == ["public.t"]


@pytest.mark.parametrize(("column", "value"), [
    (Column("n", "bigint", False), "7"), (Column("n", "boolean", False), 1),
    (Column("n", "character varying(5)", False), 5), (Column("n", "integer[]", False), ["7"]),
])
def test_a_value_in_another_json_type_than_its_column_is_no_value_of_it(
        column: Column, value: Any) -> None:
    r = reader(Column("id", "integer", True), column)
    calls: list[str] = []
    r.on_schema_change = lambda table: calls.append(table) is None and False  # nothing changed
    for _ in range(2):
        with pytest.raises(SkipEvent, match="column 'n': a JSON"):
            r.decode(record({"id": 1, "n": value}))
    assert calls == ["public.t"]  # once per column, not per event


def test_events_written_before_a_column_was_dropped_land_without_it() -> None:
    r = reader(Column("id", "integer", True), Column("a", "text", False),
               Column("gone", "text", False))
    r.set_table("public.t", TableInfo("public", "t", (Column("id", "integer", True),
                                                      Column("a", "text", False)), ("id",)))
    r.on_schema_change = lambda table: pytest.fail("the dropped column is known")
    older = r.decode(record({"id": 1, "a": "x", "gone": "g"}))
    assert older is not None and older.row == {"id": 1, "a": "x"}


def test_a_field_the_source_no_longer_has_is_left_out_not_dead_lettered() -> None:
    """A column added and dropped again before its events were read: the source's catalog has
    it no more, the target never had it — the rest of the row lands."""
    r = reader(Column("id", "integer", True), Column("a", "text", False))
    calls: list[str] = []
    r.on_schema_change = lambda table: calls.append(table) is None and False  # nothing new
    ch = r.decode(record({"id": 1, "a": "x", "brief": "gone since"}))
    assert ch is not None and ch.row == {"id": 1, "a": "x"} and calls == ["public.t"]
    again = r.decode(record({"id": 2, "a": "y", "brief": "z"}))
    assert again is not None and again.row == {"id": 2, "a": "y"} and calls == ["public.t"]
