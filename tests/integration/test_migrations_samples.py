"""The sample migration folders in deployments/migrations/ on throw-away targets.

PostgreSQL: a target database whose shop tables were made by `migwatch.workload.init` (as the
migrate stage makes them from the source); MongoDB: a fresh FerretDB database. Both check that
the applier's writes into the shop tables still work once the samples ran.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import pytest
from pymongo import MongoClient

from migwatch import workload
from migwatch.batches import Batch
from migwatch.config import MigrationSpec, TableSpec, parse_spec
from migwatch.connectors import postgres as pg
from migwatch.metrics import REGISTRY
from migwatch.migrations import State, run_down, run_status, run_up
from migwatch.stack import Stack
from migwatch.targets.mongo.writer import MongoWriter
from migwatch.targets.postgres.writer import PostgresWriter
from tests.conftest import PgDatabase, mongo_endpoint

SAMPLES = Path(__file__).resolve().parents[2] / "deployments" / "migrations"


def spec_for(target: dict, folder: Path) -> MigrationSpec:
    return parse_spec({
        "source": {"kind": "postgres", "port": 15432, "database": "unused"},
        "target": target, "tables": ["public.orders"],
        "migrations": {"folder": str(folder), "lock_timeout_seconds": 10},
    })


def orders_info(db: PgDatabase) -> pg.TableInfo:
    with db.connect() as conn:
        info = pg.describe_table(conn, "public", "orders")
    assert info is not None
    return info


def order(i: int, customer: int) -> dict:
    return {"id": i, "customer_id": customer, "status": "paid", "total": Decimal("12.50"),
            "placed_at": dt.datetime(2025, 5, 1, 12, tzinfo=dt.UTC), "shipped_at": None,
            "note": "from cdc"}


def test_postgres_samples_on_a_shop_target_keep_cdc_writes_working(target_db: PgDatabase) -> None:
    counts = workload.init(target_db.dsn, size=500)
    spec = spec_for(target_db.endpoint(), SAMPLES / "postgres")

    result = run_up(spec)
    assert result.versions_done == ["1", "1.1", "2"]
    assert all(o.in_transaction for o in result.outcomes)
    assert {r.state for r in run_status(spec).rows} == {State.APPLIED}
    with target_db.connect() as conn:
        index = conn.execute("SELECT indexdef FROM pg_indexes WHERE schemaname = 'public' "
                             "AND indexname = 'orders_customer_id_idx'").fetchone()
        assert index is not None and "(customer_id)" in index[0]
        assert conn.execute("SELECT sum(orders) FROM public.customer_order_totals"
                            ).fetchone()[0] == counts["orders"]
        assert conn.execute("SELECT count(*) FROM public.order_status_labels").fetchone()[0] == 4

    # the applier's upsert, delete and truncate still apply to the shop table
    info = orders_info(target_db)
    table = TableSpec(source="public.orders")
    writer = PostgresWriter(spec, "t-samples", {"public.orders": info}, [table])
    try:
        batch = Batch()
        new_customer = 10**9  # no shop order has it yet
        batch.upserts["public.orders"] = {(1,): order(1, new_customer),
                                          (10**6,): order(10**6, new_customer)}
        batch.deletes["public.orders"] = {(2,)}
        writer.apply(batch)
        with target_db.connect() as conn:
            assert conn.execute("SELECT orders, total_spent FROM public.customer_order_totals "
                                "WHERE customer_id = %s", [new_customer]).fetchone() == \
                (2, Decimal("25.00"))
            assert conn.execute("SELECT count(*) FROM public.orders").fetchone()[0] == \
                counts["orders"]  # one added, one deleted
        truncate = Batch()
        truncate.truncates.add("public.orders")
        writer.apply(truncate)
    finally:
        writer.close()
    with target_db.connect() as conn:
        assert conn.execute("SELECT count(*) FROM public.customer_order_totals").fetchone()[0] == 0

    # every sample has an undo file: all of them revert, leaving the shop tables as they were
    reverted = run_down(spec, target_version="0")
    assert reverted.versions_done == ["2", "1.1", "1"]
    with target_db.connect() as conn:
        assert conn.execute("SELECT to_regclass('public.customer_order_totals'), "
                            "to_regclass('public.orders_customer_id_idx'), "
                            "to_regclass('public.order_status_labels'), "
                            "to_regclass('public.orders') IS NOT NULL").fetchone() == \
            (None, None, None, True)
        columns = [r[0] for r in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = 'public' "
            "AND table_name = 'orders' ORDER BY ordinal_position")]
    assert columns == [c.name for c in info.columns]  # no shop column added, dropped or renamed
    assert run_up(spec).versions_done == ["1", "1.1", "2"]


def docs(version: str) -> float:
    return REGISTRY.get_sample_value("mongodb_migration_documents_total",
                                     {"version": version,
                                      "collection": "migwatch_shop_regions"}) or 0.0


def test_mongodb_samples_on_a_fresh_database(stack: Stack, mongo_db: str,
                                             target_db: PgDatabase) -> None:
    spec = spec_for(mongo_endpoint(stack, mongo_db), SAMPLES / "mongodb")
    db = MongoClient(stack.address("ferretdb"), tz_aware=True)[mongo_db]
    before = {v: docs(v) for v in ["1.1", "2"]}

    result = run_up(spec)
    assert result.versions_done == ["1", "1.1", "2"]
    assert not any(o.in_transaction for o in result.outcomes)  # FerretDB has none
    assert [o.documents for o in result.outcomes] == \
        [{}, {"migwatch_shop_regions": 4}, {"migwatch_shop_regions": 4}]
    assert {v: docs(v) - before[v] for v in before} == {"1.1": 4, "2": 4}
    assert db.orders.index_information()["orders_customer_id"]["key"] == [("customer_id", 1)]
    assert {d["_id"]: d["currency"] for d in db.migwatch_shop_regions.find()} == \
        {"eu": "EUR", "uk": "GBP", "us": "USD", "jp": "JPY"}

    # the applier's writes into the indexed orders collection still apply
    workload.init(target_db.dsn, size=0)  # the shop's real definition of orders
    info = orders_info(target_db)
    writer = MongoWriter(spec, "t-samples", {"public.orders": info},
                         [TableSpec(source="public.orders")])
    try:
        batch = Batch()
        # total left NULL: numeric → Decimal128 is the applier's concern, not the samples'
        batch.upserts["public.orders"] = {(i,): {**order(i, 7), "total": None} for i in (1, 2, 3)}
        writer.apply(batch)
        gone = Batch()
        gone.deletes["public.orders"] = {(2,)}
        writer.apply(gone)
    finally:
        writer.close()
    assert sorted(d["_id"] for d in db.orders.find({"customer_id": 7})) == [1, 3]

    # down reverts newest first: currency unset, regions removed, index dropped; orders stay
    reverted = run_down(spec, target_version="0")
    assert reverted.versions_done == ["2", "1.1", "1"]
    assert reverted.outcomes[0].documents == {"migwatch_shop_regions": 4}
    assert db.migwatch_shop_regions.count_documents({}) == 0
    assert "orders_customer_id" not in db.orders.index_information()
    assert db.orders.count_documents({}) == 2
    assert {r.state for r in run_status(spec).rows} == {State.PENDING}


@pytest.mark.parametrize("kind", ["postgres", "mongodb"])
def test_sample_folders_hold_only_well_named_scripts(kind: str) -> None:
    from migwatch.migrations import discover

    found = discover(SAMPLES / kind, "sql" if kind == "postgres" else "mongodb")
    assert [str(m.version) for m in found] == ["1", "1.1", "2"]
    if kind == "postgres":
        assert all(m.undo_path is not None for m in found)
        for m in found:  # additive only: never drop, rename or alter a shop table's columns
            text = m.path.read_text().lower()
            assert "alter table" not in text and "drop " not in text and "rename" not in text
