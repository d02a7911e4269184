"""Each event's own definition (`event_schema`): the fields of its row with their source types,
and the signatures that compare them with the catalog's — spelled as Debezium 3.6 sends them
(observed on the stack: snapshot events qualify and quote a type outside `public`, streamed ones
do not; an unconstrained numeric has length 0 in the snapshot, 131089 when streamed)."""

from __future__ import annotations

import orjson
import pytest

from migwatch.event_schema import (
    catalog_signature,
    event_signature,
    row_fields,
    type_name,
    typmod_of,
)


def envelope(*fields: tuple[str, str, int | None, int | None]) -> bytes:
    def field(name: str, typ: str, length: int | None, scale: int | None) -> dict[str, object]:
        params = {"__debezium.source.column.type": typ, "__debezium.source.column.name": name}
        if length is not None:
            params["__debezium.source.column.length"] = str(length)
        if scale is not None:
            params["__debezium.source.column.scale"] = str(scale)
        return {"field": name, "type": "string", "optional": True, "parameters": params}

    row = {"type": "struct", "fields": [field(*f) for f in fields], "field": "after"}
    return orjson.dumps({"type": "struct", "fields": [
        {**row, "field": "before"}, row, {"type": "struct", "field": "source", "fields": []}]})


def test_row_fields_read_each_columns_source_type_length_and_scale() -> None:
    got = row_fields(envelope(("id", "INT4", 10, 0), ("v", "VARCHAR", 10, 0),
                              ("n", "NUMERIC", 12, 3), ("c", '"S2"."COLOR"', 2147483647, 0)))
    assert got is not None
    assert [(f.name, f.type, f.length, f.scale) for f in got] == [
        ("id", "INT4", 10, 0), ("v", "VARCHAR", 10, 0), ("n", "NUMERIC", 12, 3),
        ("c", '"S2"."COLOR"', 2147483647, 0)]


def test_an_envelope_without_source_types_has_no_definition() -> None:
    plain = orjson.dumps({"type": "struct", "fields": [{"field": "after", "type": "struct",
                                                        "fields": [{"field": "id",
                                                                    "type": "int32"}]}]})
    assert row_fields(plain) is None


@pytest.mark.parametrize(("typname", "typmod", "debezium", "length", "scale"), [
    ("int4", -1, "INT4", 10, 0),
    ("varchar", 14, "VARCHAR", 10, 0),
    ("varchar", -1, "VARCHAR", 2147483647, 0),
    ("bpchar", 7, "BPCHAR", 3, 0),
    ("numeric", (10 << 16 | 2) + 4, "NUMERIC", 10, 2),
    ("numeric", -1, "NUMERIC", 0, None),       # unconstrained, in a snapshot event
    ("numeric", -1, "NUMERIC", 131089, 0),     # unconstrained, streamed
    ("timestamp", 3, "TIMESTAMP", 26, 3),
    ("timestamp", -1, "TIMESTAMP", 29, 6),
    ("timestamptz", 2, "TIMESTAMPTZ", 31, 2),
    ("bit", 5, "BIT", 5, 0),
    ("_numeric", (5 << 16 | 1) + 4, "_NUMERIC", 5, 1),
    ("color", -1, '"S2"."COLOR"', 2147483647, 0),
    ("color", -1, "COLOR", 2147483647, 0),
    ("int8", -1, "BIGSERIAL", 19, 0),          # a snapshot event's name for a serial column
    ("int4", -1, "SERIAL", 10, 0),
])
def test_the_catalogs_column_and_the_events_field_have_one_signature(
        typname: str, typmod: int, debezium: str, length: int, scale: int | None) -> None:
    assert catalog_signature(typname, typmod) == event_signature(debezium, length, scale)


@pytest.mark.parametrize(("before", "after"), [
    (("VARCHAR", 10, 0), ("VARCHAR", 20, 0)),
    (("INT4", 10, 0), ("TEXT", 2147483647, 0)),
    (("NUMERIC", 10, 2), ("NUMERIC", 12, 3)),
    (("TIMESTAMP", 26, 3), ("TIMESTAMP", 29, 6)),
    (("INT4", 10, 0), ("INT8", 19, 0)),
])
def test_a_changed_type_changes_the_signature(before: tuple[str, int, int],
                                              after: tuple[str, int, int]) -> None:
    assert event_signature(*before) != event_signature(*after)


@pytest.mark.parametrize(("typname", "typmod"), [
    ("varchar", 14), ("varchar", -1), ("numeric", (12 << 16 | 3) + 4), ("numeric", -1),
    ("timestamp", 3), ("timestamp", -1), ("bit", 5), ("_bpchar", 7), ("int4", -1)])
def test_a_signature_gives_back_the_catalogs_modifier(typname: str, typmod: int) -> None:
    sig = catalog_signature(typname, typmod)
    assert catalog_signature(typname, typmod_of(sig)) == sig


def test_type_names_lose_schema_and_quotes() -> None:
    assert type_name('"S2"."COLOR"') == "COLOR"
    assert type_name("_INT4") == "_INT4"
    assert type_name("public.mood") == "MOOD"
