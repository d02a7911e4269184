"""Every kind of malformed change event, one per row: each is refused as a SkipEvent whose
reason class and message name what is wrong (the applier dead-letters it with both, and the
events around it land) — none escapes as another exception, which would stop the applier."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from migwatch.config import TableSpec
from migwatch.connectors.postgres import Column, TableInfo
from migwatch.decoding import SkipEvent
from migwatch.events import OLD_KEY_HEADER, EventReader

T = TableSpec(source="public.t")
SOURCE = {"schema": "public", "table": "t", "lsn": 1, "ts_ms": 1700000000000}


def reader() -> EventReader:
    r = EventReader([T], SimpleNamespace(applies_keyless=True, label="PostgreSQL"))  # type: ignore[arg-type]
    r.set_table("public.t", TableInfo("public", "t", (
        Column("id", "integer", True),
        Column("v", "text", False)), ("id",)))
    return r


def event(value: Any, headers: Any = None) -> Any:
    raw = value if isinstance(value, bytes) else orjson.dumps(value)
    return SimpleNamespace(value=raw, headers=headers, topic="x", partition=0, offset=0)


def ok(**kw: Any) -> dict[str, Any]:
    return {"op": "c", "after": {"id": 1, "v": "a"}, "source": SOURCE, **kw}


CASES: list[tuple[str, Any, Any, str, str]] = [
    ("not JSON", b"{not json", None, "invalid_json", "not JSON"),
    ("not UTF-8", b'{"op": "c", "after": {"v": "\xff"}}', None, "invalid_json", "not JSON"),
    ("nested beyond any row", b"[" * 100_000 + b"]" * 100_000, None, "invalid_json",
     "not JSON"),
    ("empty", b"", None, "invalid_json", "not JSON"),
    ("an array", [1, 2], None, "invalid_envelope", "not an object"),
    ("a string", "op", None, "invalid_envelope", "not an object"),
    ("no source block", {"op": "c", "after": {"id": 1}}, None, "invalid_envelope",
     "no source block"),
    ("source not an object", ok(source="public.t"), None, "invalid_envelope",
     "no source block"),
    ("a table not in the spec", ok(source={**SOURCE, "table": "other"}), None,
     "unknown_table", "'other'"),
    ("no op", {"after": {"id": 1}, "source": SOURCE}, None, "invalid_envelope",
     "unknown op None"),
    ("an unknown op", ok(op="x"), None, "invalid_envelope", "unknown op 'x'"),
    ("an op of another type", ok(op=1), None, "invalid_envelope", "unknown op 1"),
    ("insert without after", {"op": "c", "source": SOURCE}, None, "invalid_envelope",
     "without a row image"),
    ("after not an object", ok(after=[1, "a"]), None, "invalid_envelope",
     "without a row image"),
    ("delete without before", {"op": "d", "after": None, "source": SOURCE}, None,
     "invalid_envelope", "without a row image"),
    ("update without the key", ok(op="u", after={"v": "b"}), None, "invalid_envelope",
     "key column 'id' is not in the event"),
    ("a null key", ok(after={"id": None, "v": "a"}), None, "invalid_envelope",
     "key column 'id' is null"),
    ("a value of another JSON type", ok(after={"id": "one", "v": "a"}), None, "bad_value",
     "'id'"),
    ("a timestamp that is no number", ok(source={**SOURCE, "ts_ms": "yesterday"}), None,
     "invalid_envelope", "ts_ms"),
    ("an old-key header that is not JSON", ok(), [(OLD_KEY_HEADER, b"{nope")],
     "invalid_envelope", OLD_KEY_HEADER),
    ("an old-key header without the key", ok(), [(OLD_KEY_HEADER, b'{"v": "x"}')],
     "invalid_envelope", OLD_KEY_HEADER),
]


@pytest.mark.parametrize(("case", "value", "headers", "reason", "named"), CASES,
                         ids=[c[0] for c in CASES])
def test_a_malformed_event_is_refused_naming_what_is_wrong(
        case: str, value: Any, headers: Any, reason: str, named: str) -> None:
    with pytest.raises(SkipEvent) as err:
        reader().decode(event(value, headers))
    assert err.value.reason == reason, (case, err.value.reason, str(err.value))
    assert named in str(err.value), (case, str(err.value))


def test_a_tombstone_is_no_change_and_no_error() -> None:
    assert reader().decode(SimpleNamespace(value=None, headers=None)) is None


def test_a_well_formed_event_still_reads() -> None:
    change = reader().decode(event(ok()))
    assert change is not None and change.key == (1,) and change.row == {"id": 1, "v": "a"}
