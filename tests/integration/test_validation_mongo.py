"""Validation PostgreSQL → MongoDB (FerretDB) on the real stack: documents paged by `_id` and
both as the documents `migwatch.targets.mongo.values` defines, hashed in migwatch.

The target collections are filled with `DocumentForm.document`, exactly what the
applier writes; each test then changes one document in one precise way.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from bson import Binary
from pymongo import MongoClient

from migwatch import workload
from migwatch.config import MigrationSpec
from migwatch.stack import Stack
from migwatch.validation import DIFFERENT, EQUAL, CompareOptions, TableResult, validate
from migwatch.validation.run import validate_table
from tests.conftest import PgDatabase, make_spec, mongo_endpoint
from tests.integration.validation_helpers import fill_mongo

SIZE = 3000
SHOP = list(workload.SHOP_TABLES)


@pytest.fixture
def shop(stack: Stack, source_db: PgDatabase, mongo_db: str) -> Iterator[dict[str, int]]:
    counts = workload.init(source_db.dsn, SIZE)
    fill_mongo(source_db.dsn, stack.address("ferretdb"), mongo_db, SHOP)
    yield counts


@pytest.fixture
def db(stack: Stack, mongo_db: str) -> Iterator[Any]:
    client: Any = MongoClient(stack.address("ferretdb"))
    yield client[mongo_db]
    client.close()


def spec_for(stack: Stack, source_db: PgDatabase, mongo_db: str,
             tables: list[Any] | None = None, **validation: Any) -> MigrationSpec:
    return make_spec(source_db, mongo_endpoint(stack, mongo_db), tables or SHOP, stack,
                     validation={"chunk_rows": 400, **validation})


def one(spec: MigrationSpec, table: str) -> TableResult:
    t = next(t for t in spec.tables if t.source == table)
    opts = CompareOptions(chunk_rows=spec.validation.chunk_rows,
                          sample_cap=spec.validation.sample_cap,
                          show_values=spec.validation.show_values, moving_source=False)
    return validate_table(spec, t, opts)


def test_equal_collections(stack: Stack, source_db: PgDatabase, mongo_db: str,
                           shop: dict[str, int]) -> None:
    result = validate(spec_for(stack, source_db, mongo_db))
    assert result.status == EQUAL, [(t.table, t.status, t.error, t.sample[:3], t.warnings)
                                    for t in result.tables]
    for t in result.tables:
        name = t.table.split(".")[1]
        assert t.source_rows == t.target_rows == shop[name]
        assert t.precision == "milliseconds"
    assert any("millisecond" in n for n in result.notes)
    assert result.table("order_items").primary_key == ["order_id", "line_no"]


def test_differences_located_in_documents(stack: Stack, source_db: PgDatabase, mongo_db: str,
                                          db: Any, shop: dict[str, int]) -> None:
    db.orders.update_one({"_id": 321}, {"$set": {"status": "lost"}})
    db.orders.delete_one({"_id": 654})
    db.orders.insert_one({"_id": 99_999, "customer_id": 1, "status": "new", "total": "1.00",
                          "placed_at": dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
                          "shipped_at": None, "note": None})
    db.orders.update_one({"_id": 12}, {"$set": {"note": ""}})  # NULL on the source
    db.orders.update_one({"_id": 13}, {"$set": {"note": None}})  # '' on the source
    r = one(spec_for(stack, source_db, mongo_db), "public.orders")

    assert r.status == DIFFERENT
    assert (r.missing, r.extra, r.changed) == (1, 1, 3)
    got = {(d.kind, d.key["id"], tuple(d.columns)) for d in r.sample}
    assert got == {("changed", 321, ("status",)), ("missing", 654, ()), ("extra", 99_999, ()),
                   ("changed", 12, ("note",)), ("changed", 13, ("note",))}


def test_timestamps_compare_at_milliseconds(stack: Stack, source_db: PgDatabase, mongo_db: str,
                                            db: Any, shop: dict[str, int]) -> None:
    # orders.placed_at carries microseconds on the source; the documents hold milliseconds
    doc = db.orders.find_one({"_id": 40})
    db.orders.update_one({"_id": 40}, {"$set": {
        "placed_at": doc["placed_at"] + dt.timedelta(milliseconds=1)}})
    r = one(spec_for(stack, source_db, mongo_db), "public.orders")
    assert [(d.key, d.columns) for d in r.sample] == [({"id": 40}, ["placed_at"])]
    assert r.precision == "milliseconds"


def test_composite_keys_bytes_and_json(stack: Stack, source_db: PgDatabase, mongo_db: str,
                                       db: Any, shop: dict[str, int]) -> None:
    db.order_items.update_one({"_id": {"order_id": 9, "line_no": 1}}, {"$set": {"qty": 77}})
    db.order_items.delete_one({"_id": {"order_id": 30, "line_no": 2}})
    image = bytearray(db.products.find_one({"_id": "SKU-0000006"})["image"])
    image[0] ^= 0xFF
    db.products.update_one({"_id": "SKU-0000006"}, {"$set": {"image": Binary(bytes(image))}})
    # key order inside an embedded document does not matter (jsonb semantics)...
    attrs = db.products.find_one({"_id": "SKU-0000007"})["attributes"]
    db.products.update_one({"_id": "SKU-0000007"},
                           {"$set": {"attributes": dict(reversed(list(attrs.items())))}})
    # ...a value inside it does
    db.products.update_one({"_id": "SKU-0000008"}, {"$set": {"attributes.color": "pink"}})
    spec = spec_for(stack, source_db, mongo_db)
    items = one(spec, "public.order_items")
    assert {(d.kind, d.key["order_id"], d.key["line_no"], tuple(d.columns))
            for d in items.sample} == {("changed", 9, 1, ("qty",)), ("missing", 30, 2, ())}
    products = one(spec, "public.products")
    assert {(d.key["sku"], tuple(d.columns)) for d in products.sample} == {
        ("SKU-0000006", ("image",)), ("SKU-0000008", ("attributes",))}


def test_values_shown_when_allowed(stack: Stack, source_db: PgDatabase, mongo_db: str,
                                   db: Any, shop: dict[str, int]) -> None:
    db.customers.update_one({"_id": 3}, {"$set": {"is_active": False}})
    r = one(spec_for(stack, source_db, mongo_db, show_values=True), "public.customers")
    [d] = r.sample
    assert d.columns == ["is_active"]
    assert d.source == {"is_active": "true"} and d.target == {"is_active": "false"}


def test_every_mapped_type_compares_equal(stack: Stack, source_db: PgDatabase,
                                          mongo_db: str) -> None:
    """The canonical text migwatch renders from documents equals PostgreSQL's for every type
    the mapping stores natively — else equal rows would hash differently."""
    with source_db.connect() as conn:
        conn.execute("""CREATE TABLE public.kinds (
            id uuid PRIMARY KEY, f8 double precision, f4 real, n numeric, n2 numeric(12,4),
            ts timestamp, tstz timestamptz, d date, t time, ttz timetz, iv interval,
            b boolean, txt text, vc varchar(20), ch char(5), js json, jb jsonb, by bytea,
            arr int[], tarr text[], narr numeric[], big bigint, small smallint)""")
        conn.execute("""INSERT INTO public.kinds VALUES
          ('00000000-0000-0000-0000-000000000001', 0.1, 1.5, 1.50, 2.5, '2024-02-29 23:59:59.123',
           '2024-01-01 12:00:00.999+02', '2024-12-31', '13:14:15.5', '01:02:03+05:30',
           '1 day 2 hours 3.25 seconds', true, 'ünï "q" (x), \\ end', 'abc', 'ab',
           '{"b": 1, "a": [1, 2.5, "x"]}', '{"k": {"z": null, "y": false}, "kk": 1.25}',
           '\\x00ff10', '{1,2,NULL}', '{"a b",NULL,"",c}', '{1.10,2}', 9007199254740993, -3),
          ('00000000-0000-0000-0000-000000000002', 1e20, -0.0001, 0, 100, '1999-01-01',
           '1970-01-01 00:00:00+00', '0001-01-01', '00:00', '23:59:59-08', '-1 mons',
           false, '', '', '', '[]', '{}', '\\x', '{}', '{}', '{}', 0, 0),
          ('00000000-0000-0000-0000-000000000003', 123456.789, 3.4028235e38,
           -123456789012345678901234567890.123400,
           0.0001, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
           NULL, NULL, NULL, NULL, NULL, NULL)""")
    fill_mongo(source_db.dsn, stack.address("ferretdb"), mongo_db, ["public.kinds"])
    spec = spec_for(stack, source_db, mongo_db, tables=["public.kinds"], show_values=True)
    r = one(spec, "public.kinds")
    assert r.status == EQUAL, [(d.key, d.columns, d.source, d.target) for d in r.sample]
    assert r.source_rows == r.target_rows == 3
    # the rows really were hashed equal, not only confirmed equal value by value
    assert not any("hashed differently" in w for w in r.warnings)


# ----------------------------------------------------------------------------- no false GO
def test_documents_standing_for_no_key_stay_extra_through_revalidation(
        stack: Stack, source_db: PgDatabase, mongo_db: str, db: Any,
        shop: dict[str, int]) -> None:
    """An `_id` no source key maps to (a string where the key is an integer, a uuid stored as
    text) is extra, and stays extra when revalidation recounts: revalidation re-reads keys it
    can read back, never erases what it did not re-read (it made such a table `equal`)."""
    from migwatch.validation import revalidate

    db.orders.insert_many([{"_id": "321", "status": "lost"}, {"_id": {"id": 5}, "n": 1}])
    spec = spec_for(stack, source_db, mongo_db, tables=["public.orders"])
    first = validate(spec, "mw-extra-ids", moving_source=True)
    t = first.table("orders")
    assert (t.status, t.extra, t.missing, t.changed) == (DIFFERENT, 2, 0, 0), t.warnings
    again = revalidate(spec, "mw-extra-ids", first, max_attempts=1, apply_wait_seconds=1.0)
    t = again.table("orders")
    assert (t.status, t.extra) == (DIFFERENT, 2), (t.ranges, t.warnings)
    assert any("stands for no source key" in r.note for r in t.ranges)


def test_a_differing_collection_is_kept_in_memory_only_up_to_locate_limit(
        stack: Stack, source_db: PgDatabase, mongo_db: str, db: Any,
        shop: dict[str, int]) -> None:
    """Every row differs, the locate limit is 500: the target side keeps at most 500 rows of
    the differing ranges (their hashes), the ranges past it are reported unlocated with
    their counts, and the verdict is still `different`."""
    from migwatch.validation.compare import TableComparer
    from migwatch.validation.run import open_table

    db.orders.update_many({}, {"$set": {"status": "everything differs"}})
    spec = spec_for(stack, source_db, mongo_db, tables=["public.orders"])
    table = spec.tables[0]
    opts = CompareOptions(chunk_rows=200, moving_source=False, locate_limit=500)
    result = TableResult(table=table.source, target="orders")
    opened = open_table(spec, table, result, keep_limit=opts.locate_limit)
    kept: list[int] = []
    target = opened.target
    prefetch = target.prefetch

    def watched(ranges: Any) -> None:
        prefetch(ranges)
        kept.append(len(target._rows))  # type: ignore[attr-defined]

    target.prefetch = watched  # type: ignore[method-assign]
    try:
        TableComparer(opened.source, target, result, opts, opened.key_kinds).run()
    finally:
        opened.close()
    result.settle_status()
    assert result.status == DIFFERENT
    assert kept and max(kept) <= 500, kept
    assert any("not located" in w for w in result.warnings)
    assert result.changed <= 500 and result.source_rows == shop["orders"]


def test_pre_flight_refuses_what_a_document_cannot_hold_naming_table_and_column(
        stack: Stack, source_db: PgDatabase, mongo_db: str) -> None:
    from migwatch import preflight
    from migwatch.errors import PreflightError

    with source_db.connect() as conn:
        conn.execute(
            "CREATE TABLE public.keyless (a int, b text);"
            "ALTER TABLE public.keyless REPLICA IDENTITY FULL;"
            'CREATE TABLE public.odd (id int PRIMARY KEY, "a.b" text, "$x" int, shape box, '
            "ok interval);"
            "CREATE TABLE public.jkey (doc jsonb PRIMARY KEY);"
            "CREATE DOMAIN public.when3 AS timestamp(3);"
            "CREATE TYPE public.mood AS ENUM ('ok', 'sad');"
            "CREATE TABLE public.fine (id uuid PRIMARY KEY, w public.when3, m public.mood, "
            "h interval, tz timetz, p point, n numeric, ar int[], j jsonb)")
    spec = spec_for(stack, source_db, mongo_db, tables=[
        "public.keyless", "public.odd", "public.jkey", "public.fine"])
    with pytest.raises(PreflightError) as err:
        preflight.preflight(spec, "mw-preflight-mongo")
    text = " | ".join(err.value.failures)
    assert "table public.keyless: no primary key" in text and "needs a key for _id" in text
    assert "table public.odd: column 'a.b'" in text and "column '$x'" in text
    assert "column 'shape' (box): no MongoDB form for type box" in text
    assert "table public.jkey: column 'doc': a key column of type jsonb" in text
    assert "public.fine" not in text and "'ok'" not in text
