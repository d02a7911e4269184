"""Adding a table to a running migration, the parts that need no server: which names Debezium's
incremental snapshot can hold, how the signal names a table, and reading Debezium's
notification that a table was read to its end."""

from __future__ import annotations

import orjson
import pytest

from migwatch.capture import debezium_table_id, snapshot_name_ok
from migwatch.config import TableSpec
from migwatch.following import IncrementalSnapshots


@pytest.mark.parametrize(("schema", "table", "ok"), [
    ("public", "orders", True), ("public", "AddedLäter", True), ("public", "表", True),
    ("public", "a-b", True), ("public", "a$b,c'd", True),
    ("public", "Added Later", False), ("My Schema", "t", False), ("public", "a.b", False),
    ("public", 'we"ird', False), ("public", "tab\tbed", False),
])
def test_only_names_debezium_reads_back_unquoted_can_be_added_later(
        schema: str, table: str, ok: bool) -> None:
    assert snapshot_name_ok(schema, table) is ok


def test_the_signal_names_a_table_quoted_so_it_matches_no_other() -> None:
    assert debezium_table_id("public", "AddedLäter") == '"public"."AddedLäter"'
    assert debezium_table_id("public", 'a"b') == '"public"."a""b"'


def notice(kind: str, table: str, status: str = "SUCCEEDED",
           aggregate: str = "Incremental Snapshot") -> bytes:
    return orjson.dumps({"id": "x", "type": kind, "aggregate_type": aggregate,
                         "additional_data": {"scanned_collection": table, "status": status,
                                             "total_rows_scanned": "3"}})


def test_a_table_scan_completed_notification_names_the_spec_table() -> None:
    s = IncrementalSnapshots("m", [TableSpec(source='"public"."AddedLäter"'),
                                   TableSpec(source="public.b")])
    assert s.scanned(notice("TABLE_SCAN_COMPLETED", "public.AddedLäter")) == "public.AddedLäter"
    assert s.scanned(notice("TABLE_SCAN_COMPLETED", "public.b")) == "public.b"
    assert s.scanned(notice("TABLE_SCAN_COMPLETED", "public.other")) is None
    assert s.scanned(notice("IN_PROGRESS", "public.b")) is None
    assert s.scanned(notice("TABLE_SCAN_COMPLETED", "public.b", status="EMPTY")) == "public.b"
    assert s.scanned(notice("TABLE_SCAN_COMPLETED", "public.b", status="SQL_EXCEPTION")) is None
    assert s.scanned(notice("TABLE_SCAN_COMPLETED", "public.b", aggregate="Initial Snapshot")) \
        is None
    assert s.scanned(b"not json") is None and s.scanned(None) is None
