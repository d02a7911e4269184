"""PostgreSQL → MongoDB (FerretDB) validation also ends in bounded time: documents whose `_id`
lies beyond either end of the source's keys, and dense differences.

A MongoDB side is never bisected (it cannot digest sub-ranges cheaply): one pass buckets every
document by the source's range bounds — the first and last ranges are unbounded, so they hold
keys past the source's ends — and one more pass keeps the documents of the differing ranges,
which are compared row by row. No step repeats, whatever the differences.
"""

from __future__ import annotations

from typing import Any

from pymongo import MongoClient

from migwatch.stack import Stack
from migwatch.validation import DIFFERENT, CompareOptions, validate_table
from tests.conftest import PgDatabase, make_spec, mongo_endpoint
from tests.integration.test_validation_bounded import within
from tests.integration.validation_helpers import fill_mongo

ROWS = 3000


def test_documents_beyond_both_ends_and_dense_differences(
        stack: Stack, source_db: PgDatabase, mongo_db: str) -> None:
    with source_db.connect() as conn:
        conn.execute("CREATE TABLE public.items (id bigint PRIMARY KEY, label text NOT NULL)")
        conn.execute("INSERT INTO public.items SELECT 10 * g, 'item ' || g "
                     "FROM generate_series(1, %s) g", [ROWS])
    fill_mongo(source_db.dsn, stack.address("ferretdb"), mongo_db, ["public.items"])
    client: Any = MongoClient(stack.address("ferretdb"))
    try:
        coll = client[mongo_db]["items"]
        coll.update_many({"_id": {"$mod": [70, 0]}}, {"$set": {"label": "changed"}})  # 1 in 7
        coll.delete_many({"_id": {"$mod": [110, 0]}})  # 1 in 11 (1 in 77 was changed)
        extra = [{"_id": -i, "label": "old"} for i in range(500)] + [
            {"_id": 10 * ROWS + 1 + i, "label": "old"} for i in range(500)]
        coll.insert_many(extra)
    finally:
        client.close()
    spec = make_spec(source_db, mongo_endpoint(stack, mongo_db), ["public.items"], stack,
                     validation={"chunk_rows": 400})
    opts = CompareOptions(chunk_rows=400, moving_source=False)
    r, took = within(120, lambda: validate_table(spec, spec.tables[0], opts))
    print(f"\nMongoDB target: {r.mismatched_rows} differing rows in {took:.1f} s")
    assert r.error is None, r.error
    assert r.status == DIFFERENT
    keys = range(10, 10 * ROWS + 1, 10)
    missing = [k for k in keys if k % 110 == 0]
    changed = [k for k in keys if k % 70 == 0 and k % 110 != 0]
    assert (r.missing, r.extra, r.changed) == (len(missing), 1000, len(changed))
