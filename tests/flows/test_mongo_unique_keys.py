"""A MongoDB target's unique keys, through the migrate stage on the real stack (FerretDB 1.x): the
source's unique constraints and unique indexes become unique indexes of the collections once the
load is in — on the fields the writer stores (a composite key's column inside `_id`) — and
refuse a duplicate written to the target directly; what cannot mean the same there (a nullable
column on a server without partial indexes, an expression, a partial index, a check constraint)
is named as left out; rows swapping unique values in one source transaction land as the source
holds them, with nothing dead-lettered. The writer's collisions in detail:
tests/integration/test_applier_ferretdb.py; the planning: tests/unit/test_mongo_indexes.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient
from pymongo.errors import DuplicateKeyError

from flows.migrate import migrate
from migwatch import capture
from migwatch.config import MigrationSpec
from migwatch.stack import Stack
from tests.conftest import PgDatabase, make_spec, mongo_endpoint
from tests.flows.test_cdc_apply_flow import wait_for, write_spec
from tests.flows.test_faithful_schema import dead_letters
from tests.flows.test_migrate_flow import cleanup  # noqa: F401 - a fixture

pytestmark = pytest.mark.usefixtures("prefect_harness")

SCHEMA = """
CREATE TABLE public.accounts (
    id int PRIMARY KEY,
    email text NOT NULL UNIQUE,
    region text NOT NULL,
    handle text NOT NULL,
    nick text UNIQUE,
    code text,
    CONSTRAINT accounts_region_handle UNIQUE (region, handle),
    CONSTRAINT accounts_email_not_blank CHECK (email <> '')
);
CREATE UNIQUE INDEX accounts_lower_email ON public.accounts (lower(email));
CREATE UNIQUE INDEX accounts_live_code ON public.accounts (code) WHERE code IS NOT NULL;
CREATE TABLE public.lines (
    order_id int NOT NULL,
    line_no int NOT NULL,
    sku text NOT NULL,
    PRIMARY KEY (order_id, line_no),
    UNIQUE (order_id, sku)
);
INSERT INTO public.accounts SELECT g, 'u' || g || '@example.com', 'r' || g % 3, 'h' || g,
    CASE WHEN g % 2 = 0 THEN 'n' || g END, NULL FROM generate_series(1, 60) g;
INSERT INTO public.lines SELECT o, l, 's' || l FROM generate_series(1, 10) o,
    generate_series(1, 5) l;
"""
TABLES = ["public.accounts", "public.lines"]


def source_rows(db: PgDatabase) -> dict[str, list[tuple[Any, ...]]]:
    with db.connect() as c:
        return {"accounts": [tuple(r) for r in c.execute(
                    "SELECT id, email, region, handle, nick, code FROM public.accounts "
                    "ORDER BY id").fetchall()],
                "lines": [tuple(r) for r in c.execute(
                    "SELECT order_id, line_no, sku FROM public.lines ORDER BY 1, 2").fetchall()]}


def target_rows(client: MongoClient[Any], database: str) -> dict[str, list[tuple[Any, ...]]]:
    db = client[database]
    return {"accounts": sorted((d["_id"], d["email"], d["region"], d["handle"], d["nick"],
                                d["code"]) for d in db["accounts"].find()),
            "lines": sorted((d["_id"]["order_id"], d["_id"]["line_no"], d["sku"])
                            for d in db["lines"].find())}


def test_unique_keys_become_unique_indexes_and_swaps_land(
        stack: Stack, source_db: PgDatabase, mongo_db: str, migration_id: str,
        cleanup: list[MigrationSpec], tmp_path: Path) -> None:  # noqa: F811
    with source_db.connect() as conn:
        conn.execute(SCHEMA)
    spec = make_spec(source_db, mongo_endpoint(stack, mongo_db), TABLES, stack,
                     snapshot={"timeout_seconds": 300, "poll_interval_seconds": 1})
    cleanup.append(spec)
    out = migrate(write_spec(spec, tmp_path / "spec.yaml"), migration_id)

    finished = out["schema"]["finished"]
    assert sorted(finished["built"]) == [
        "unique index accounts_email_key on accounts",
        "unique index accounts_region_handle on accounts",
        "unique index lines_order_id_sku_key on lines"], finished
    left_out = dict(line.split(": not carried — ", 1) for line in finished["left_out"])
    assert {what: why.split(":")[0].split(" (")[0] for what, why in left_out.items()} == {
        "unique constraint accounts_nick_key of public.accounts": "column(s) nick may hold NULL",
        "unique index accounts_lower_email of public.accounts": "an index on an expression",
        "unique index accounts_live_code of public.accounts": "a partial index",
        "check constraint accounts_email_not_blank of public.accounts":
            "MongoDB checks no SQL expression"}, finished
    again = capture.finish_target_schema(spec)  # a rerun of the stage: nothing new to build
    assert again["built"] == [] and again["left_out"] == finished["left_out"], again

    client: MongoClient[Any] = MongoClient(stack.address("ferretdb"), socketTimeoutMS=30_000)
    try:
        accounts, lines = client[mongo_db]["accounts"], client[mongo_db]["lines"]
        indexes = {**{f"accounts.{n}": i for n, i in accounts.index_information().items()},
                   **{f"lines.{n}": i for n, i in lines.index_information().items()}}
        assert {n: (list(i["key"]), i.get("unique")) for n, i in indexes.items()
                if n.split(".")[1] != "_id_"} == {
            "accounts.accounts_email_key": ([("email", 1)], True),
            "accounts.accounts_region_handle": ([("region", 1), ("handle", 1)], True),
            "lines.lines_order_id_sku_key": ([("_id.order_id", 1), ("sku", 1)], True)}

        # the target refuses what the source would
        for coll, doc in [(accounts, {"_id": 1000, "email": "u1@example.com", "region": "x",
                                      "handle": "new", "nick": None, "code": None}),
                          (accounts, {"_id": 1001, "email": "new@example.com", "region": "r1",
                                      "handle": "h1", "nick": None, "code": None}),
                          (lines, {"_id": {"order_id": 1, "line_no": 99}, "sku": "s1"})]:
            with pytest.raises(DuplicateKeyError):
                coll.insert_one(doc)
        assert accounts.count_documents({"_id": {"$in": [1000, 1001]}}) == 0

        assert target_rows(client, mongo_db) == source_rows(source_db)
        # unique values swapped in one transaction, through a third value (as the source's
        # indexes demand), on a single-column key, a two-column one and one inside `_id`
        with source_db.connect() as conn, conn.transaction():
            for a, b in [(1, 2), (3, 4), (5, 6)]:
                conn.execute("UPDATE public.accounts SET email = 'tmp' WHERE id = %s", [a])
                conn.execute("UPDATE public.accounts SET email = %s WHERE id = %s",
                             [f"u{a}@example.com", b])
                conn.execute("UPDATE public.accounts SET email = %s WHERE id = %s",
                             [f"u{b}@example.com", a])
            conn.execute("UPDATE public.accounts SET handle = 'tmp' WHERE id = 7")
            conn.execute("UPDATE public.accounts SET region = 'r1', handle = 'h7' WHERE id = 10")
            conn.execute("UPDATE public.accounts SET region = 'r1', handle = 'h10' WHERE id = 7")
            conn.execute("UPDATE public.lines SET sku = 'tmp' WHERE order_id = 1 AND line_no = 1")
            conn.execute("UPDATE public.lines SET sku = 's1' WHERE order_id = 1 AND line_no = 2")
            conn.execute("UPDATE public.lines SET sku = 's2' WHERE order_id = 1 AND line_no = 1")
        expected = source_rows(source_db)
        assert expected["accounts"][0][1] == "u2@example.com"  # the swap happened
        wait_for(lambda: target_rows(client, mongo_db) == expected, 90, "the swaps applied")
    finally:
        client.close()
    assert dead_letters(stack, spec.dlq_topic(migration_id)) == 0
