"""Seed `migwatch_shop_regions`, a collection that lives only on the target (not fed by CDC)."""

from __future__ import annotations

from typing import Any

COLLECTION = "migwatch_shop_regions"
REGIONS = [
    {"_id": "eu", "name": "Europe", "country": "DE"},
    {"_id": "uk", "name": "United Kingdom", "country": "GB"},
    {"_id": "us", "name": "United States", "country": "US"},
    {"_id": "jp", "name": "Japan", "country": "JP"},
]


def up(db: Any, session: Any, progress: Any) -> None:
    touched = 0
    for region in REGIONS:
        result = db[COLLECTION].update_one({"_id": region["_id"]}, {"$setOnInsert": region},
                                           upsert=True, session=session)
        touched += 1 if result.upserted_id is not None else 0
    progress(COLLECTION, touched)


def down(db: Any, session: Any, progress: Any) -> None:
    result = db[COLLECTION].delete_many({"_id": {"$in": [r["_id"] for r in REGIONS]}},
                                        session=session)
    progress(COLLECTION, result.deleted_count)
