"""Backfill `currency` on every shop region that has none, from its country."""

from __future__ import annotations

from typing import Any

COLLECTION = "migwatch_shop_regions"
CURRENCY = {"DE": "EUR", "GB": "GBP", "US": "USD", "JP": "JPY"}
BACKFILLED = "currency_backfilled"  # marks what `down` may undo


def up(db: Any, session: Any, progress: Any) -> None:
    touched = 0
    for doc in db[COLLECTION].find({"currency": {"$exists": False}}, session=session):
        currency = CURRENCY.get(doc.get("country", ""), "EUR")
        result = db[COLLECTION].update_one(
            {"_id": doc["_id"], "currency": {"$exists": False}},
            {"$set": {"currency": currency, BACKFILLED: True}}, session=session)
        touched += result.modified_count
    progress(COLLECTION, touched)


def down(db: Any, session: Any, progress: Any) -> None:
    result = db[COLLECTION].update_many({BACKFILLED: True},
                                        {"$unset": {"currency": "", BACKFILLED: ""}},
                                        session=session)
    progress(COLLECTION, result.modified_count)
