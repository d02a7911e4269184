"""The monitor's poll without servers: what the target's schema-change history adds to a sample,
and that failing to read it is a named problem (the readers are replaced; their SQL is tested in
tests/integration)."""

from __future__ import annotations

from typing import Any

import pytest

from migwatch import measures
from migwatch.config import parse_spec
from migwatch.errors import PermanentError, TransientError
from migwatch.lag import StoppedTable
from migwatch.positions import Position
from migwatch.schema_changes import (
    ACCEPTED,
    CONTINUED,
    DROPPED,
    FOLLOWED,
    STOPPED,
    ColumnChange,
    SchemaChange,
)

GONE = (ColumnChange("gone", DROPPED, None, "text"),)
ADDED = (ColumnChange("extra", "added", "integer"),)


def history() -> list[SchemaChange]:
    return [
        SchemaChange(1.0, "public.a", FOLLOWED, ADDED),
        SchemaChange(2.0, "public.t", STOPPED, GONE, "the target refused it (x)"),
        SchemaChange(3.0, "public.u", STOPPED, GONE),
        SchemaChange(4.0, "public.u", ACCEPTED, GONE, "removed from the target: gone"),
        SchemaChange(5.0, "public.u", CONTINUED, GONE),
    ]


def test_stopped_names_each_table_whose_latest_record_is_stopped_with_its_change() -> None:
    assert measures.stopped(history()) == (StoppedTable(
        "public.t", "column 'gone' dropped on the source (the target refused it (x))"),)
    assert measures.stopped([]) == ()


def _offline(*_: Any, **__: Any) -> Any:
    raise TransientError("unreachable")


@pytest.fixture
def spec(monkeypatch: pytest.MonkeyPatch) -> Any:
    """A spec whose every measure but the target's state fails (no server is asked)."""
    for name in ("group_lag", "target_heartbeat", "slot_wal", "connector_state"):
        monkeypatch.setattr(measures, name, _offline)
    return parse_spec({
        "source": {"kind": "postgres", "port": 15432, "database": "shop", "user": "app"},
        "target": {"kind": "postgres", "port": 15433, "database": "shop2", "user": "app"},
        "tables": ["t", "u"],
    })


def test_poll_carries_the_stopped_tables_read_with_the_positions(
        spec: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    every = Position("*", source_ts_ms=1000, events=7)
    monkeypatch.setattr(measures, "applied_state", lambda *_: ({"*": every}, history()))
    sample = measures.poll(spec, "m-1", clock=lambda: 10.0)
    assert [t.table for t in sample.stopped_tables] == ["public.t"]
    assert sample.applied_events == 7  # the positions of the same read
    assert not any(p.startswith("applied position") for p in sample.problems)


def test_a_failed_target_read_is_a_named_problem_and_no_stopped_table(
        spec: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*_: Any) -> Any:
        raise PermanentError("target: read schema changes: permission denied")

    monkeypatch.setattr(measures, "applied_state", fail)
    sample = measures.poll(spec, "m-1", clock=lambda: 10.0)
    assert sample.stopped_tables == () and sample.applied_events is None
    assert ("applied position and schema changes: PermanentError: target: read schema "
            "changes: permission denied") in sample.problems
