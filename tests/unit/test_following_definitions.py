"""How an event's definition is taken when the target or the source has moved on since the
event was written (`following._held_wider`, `following._behind`): pure, no servers."""

from __future__ import annotations

from migwatch.connectors.postgres import Column, TableInfo
from migwatch.following import _behind, _held_wider


def table(*columns: tuple[str, str]) -> TableInfo:
    return TableInfo("public", "t", tuple(Column(n, t, n == "id") for n, t in columns), ("id",))


def types(info: TableInfo) -> dict[str, str]:
    return {c.name: c.type for c in info.columns}


def test_a_type_the_target_already_widens_is_kept() -> None:
    event = table(("id", "integer"), ("v", "character varying(10)"), ("n", "integer"))
    target = table(("id", "integer"), ("v", "text"), ("n", "integer"))
    assert types(_held_wider(event, target)) == {"id": "integer", "v": "text", "n": "integer"}


def test_a_narrower_target_is_not_taken() -> None:
    event = table(("id", "integer"), ("v", "text"))
    target = table(("id", "integer"), ("v", "character varying(10)"))
    assert types(_held_wider(event, target))["v"] == "text"


def test_a_type_the_source_widened_since_is_taken_at_once_and_filled() -> None:
    event = table(("id", "integer"), ("b", "integer"))
    now = table(("id", "integer"), ("b", "bigint"))
    got, no_fill = _behind(event, now)
    assert types(got)["b"] == "bigint" and no_fill == {}


def test_a_column_dropped_or_changed_since_is_not_filled_from_the_source() -> None:
    event = table(("id", "integer"), ("gone", "text"), ("n", "integer"))
    now = table(("id", "integer"), ("n", "text"))
    got, no_fill = _behind(event, now)
    assert types(got) == {"id": "integer", "gone": "text", "n": "integer"}
    assert no_fill == {"gone": None, "n": None}
