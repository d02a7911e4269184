"""Index orders by customer_id: the shop looks orders up by customer on its new home.

An index build on an existing collection is not allowed inside a multi-document transaction,
so it runs outside `session`; `create_index` is idempotent, so a retry is harmless. No document
changes, so nothing is counted.
"""

from __future__ import annotations

from typing import Any

INDEX = "orders_customer_id"


def up(db: Any, session: Any, progress: Any) -> None:
    db.orders.create_index([("customer_id", 1)], name=INDEX)


def down(db: Any, session: Any, progress: Any) -> None:
    if INDEX in db.orders.index_information():
        db.orders.drop_index(INDEX)
