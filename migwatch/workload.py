"""The sample shop workload: a schema with every type a migration must carry, and a writer.

`init` builds customers, products, orders, order_items (composite key) and "ProductReviews"
(a name that needs quoting) with numeric, text, jsonb, timestamptz, bytea, boolean, NULL and
non-ASCII values, generated inside the server (fast for millions of rows). `run` drives inserts,
updates (one of which changes a primary key) and deletes at a rate, for a time, and counts them.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from migwatch.connectors.postgres import connect, translated

SHOP_TABLES = ("public.customers", "public.products", "public.orders", "public.order_items",
               "public.ProductReviews")

# share of the total size per table
_SHARES = {"customers": 0.10, "products": 0.02, "orders": 0.30, "order_items": 0.50,
           "ProductReviews": 0.08}

_DDL = """
DROP TABLE IF EXISTS public.order_items, public.orders, public.products, public.customers,
    public."ProductReviews";
CREATE TABLE public.customers (
    id bigint PRIMARY KEY,
    email text NOT NULL,
    full_name text,
    is_active boolean NOT NULL,
    profile jsonb,
    created_at timestamptz NOT NULL
);
CREATE TABLE public.products (
    sku text PRIMARY KEY,
    name text NOT NULL,
    price numeric(12,2) NOT NULL,
    weight_kg numeric,
    attributes jsonb,
    image bytea,
    discontinued boolean
);
CREATE TABLE public.orders (
    id bigint PRIMARY KEY,
    customer_id bigint NOT NULL,
    status text NOT NULL,
    total numeric(14,2),
    placed_at timestamptz NOT NULL,
    shipped_at timestamptz,
    note text
);
CREATE TABLE public.order_items (
    order_id bigint NOT NULL,
    line_no integer NOT NULL,
    sku text NOT NULL,
    qty integer NOT NULL,
    unit_price numeric(12,2) NOT NULL,
    PRIMARY KEY (order_id, line_no)
);
CREATE TABLE public."ProductReviews" (
    id bigint PRIMARY KEY,
    sku text NOT NULL,
    "Rating" smallint NOT NULL,
    body text,
    created_at timestamptz NOT NULL
);
"""

_NAMES = ["Zoë Ångström", "Ōsaka 商店", "José Müller", "Łukasz Żółć", "Aiko 東京", "Renée 🚀",
          "Plain Name", "O'Brien \"quoted\""]


def _fill_sql(counts: dict[str, int]) -> list[tuple[str, dict[str, int]]]:
    names = "ARRAY[" + ",".join(sql.quote(n) for n in _NAMES) + "]::text[]"
    return [
        ("""INSERT INTO public.customers
            SELECT g, 'user' || g || '@example.com',
                   CASE WHEN mod(g, 17) = 0 THEN NULL WHEN mod(g, 13) = 0 THEN ''
                        ELSE (""" + names + """)[1 + mod(g, 8)] || ' ' || g END,
                   mod(g, 5) <> 0,
                   CASE WHEN mod(g, 11) = 0 THEN NULL
                        ELSE jsonb_build_object('tier', mod(g, 3),
                                                'tags', jsonb_build_array('a', mod(g, 7)),
                                                'ß', 'straße') END,
                   timestamptz '2024-01-01 00:00:00+00'
                       + (g * interval '37 seconds 123457 microseconds')
            FROM generate_series(1, %(n)s) g""", {"n": counts["customers"]}),
        ("""INSERT INTO public.products
            SELECT 'SKU-' || lpad(g::text, 7, '0'), 'Product ' || g || ' — ünïcode',
                   round((mod(g, 1000)) + (mod(g, 100)) / 100.0, 2),
                   CASE WHEN mod(g, 9) = 0 THEN NULL ELSE (mod(g, 50)) / 3.0 END,
                   jsonb_build_object('color', (ARRAY['red','green','blue'])[1 + mod(g, 3)],
                                      'dims', jsonb_build_array(mod(g, 10), 1.5, NULL)),
                   CASE WHEN mod(g, 4) = 0 THEN NULL ELSE decode(md5(g::text), 'hex') END,
                   CASE WHEN mod(g, 7) = 0 THEN NULL ELSE mod(g, 2) = 0 END
            FROM generate_series(1, %(n)s) g""", {"n": counts["products"]}),
        ("""INSERT INTO public.orders
            SELECT g, 1 + mod(g, %(c)s), (ARRAY['new','paid','shipped','done'])[1 + mod(g, 4)],
                   round((mod(g, 5000)) * 1.37, 2),
                   timestamptz '2024-06-01 12:00:00+00'
                       + (g * interval '11 seconds 500001 microseconds'),
                   CASE WHEN mod(g, 3) = 0 THEN NULL
                        ELSE timestamptz '2024-06-02 08:00:00+02' + (g * interval '13 seconds') END,
                   CASE WHEN mod(g, 6) = 0 THEN NULL WHEN mod(g, 6) = 1 THEN ''
                        ELSE 'note ' || g END
            FROM generate_series(1, %(n)s) g""", {"n": counts["orders"], "c": counts["customers"]}),
        ("""INSERT INTO public.order_items
            SELECT 1 + mod(g - 1, %(o)s), 1 + (g - 1) / %(o)s,
                   'SKU-' || lpad((1 + mod(g, %(p)s))::text, 7, '0'), 1 + mod(g, 5),
                   round(mod(g, 300) + 0.99, 2)
            FROM generate_series(1, %(n)s) g""",
         {"n": counts["order_items"], "o": counts["orders"], "p": counts["products"]}),
        ("""INSERT INTO public."ProductReviews"
            SELECT g, 'SKU-' || lpad((1 + mod(g, %(p)s))::text, 7, '0'), 1 + mod(g, 5),
                   CASE WHEN mod(g, 10) = 0 THEN NULL ELSE 'Great ★★★★ product, ñ ' || g END,
                   timestamptz '2025-01-01 00:00:00+00' + (g * interval '1 minute')
            FROM generate_series(1, %(n)s) g""", {"n": counts["ProductReviews"],
                                                  "p": counts["products"]}),
    ]


def table_sizes(size: int) -> dict[str, int]:
    """How many rows each table gets for a total `size` (every table at least 10)."""
    return {t: max(10, int(size * share)) for t, share in _SHARES.items()}


def init(conninfo: str, size: int = 100_000) -> dict[str, int]:
    """(Re)create the shop schema and fill it; returns rows per table."""
    counts = table_sizes(size)
    with connect(conninfo, "workload source") as conn, translated("workload init"):
        conn.execute(_DDL)
        for stmt, params in _fill_sql(counts):
            conn.execute(stmt, params)  # type: ignore[arg-type]
        conn.execute("ANALYZE")
        conn.commit()
    return counts


@dataclass
class WorkloadResult:
    """What `run` did, by operation (insert/update/delete/pk_change) and table."""

    operations: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    @property
    def total(self) -> int:
        return sum(self.operations.values())


def run(conninfo: str, rate: float = 50.0, duration: float = 30.0, seed: int = 7,
        max_operations: int | None = None,
        on_progress: Callable[[WorkloadResult], None] | None = None) -> WorkloadResult:
    """Write to the shop tables at about `rate` operations/s for `duration` seconds."""
    rng = random.Random(seed)
    result = WorkloadResult()
    start = time.monotonic()
    with connect(conninfo, "workload source", autocommit=True) as conn, translated("workload run"):
        next_order = _max(conn, "orders", "id") + 1
        next_review = _max(conn, "ProductReviews", "id") + 1
        n_customers = max(1, _max(conn, "customers", "id"))
        n_products = max(1, _count(conn, "products"))
        i = 0
        while time.monotonic() - start < duration:
            if max_operations is not None and result.total >= max_operations:
                break
            i += 1
            _one_operation(conn, rng, i, result, next_order, next_review, n_customers, n_products)
            next_order += 1
            next_review += 1
            if on_progress and i % 100 == 0:
                on_progress(result)
            target = start + result.total / rate
            pause = target - time.monotonic()
            if pause > 0:
                time.sleep(pause)
    result.seconds = time.monotonic() - start
    return result


def _max(conn: psycopg.Connection, table: str, col: str) -> int:
    row = conn.execute(sql.SQL("SELECT coalesce(max({}), 0) FROM {}").format(
        sql.Identifier(col), sql.Identifier("public", table))).fetchone()
    return int(row[0]) if row else 0


def _count(conn: psycopg.Connection, table: str) -> int:
    row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(
        sql.Identifier("public", table))).fetchone()
    return int(row[0]) if row else 0


def _one_operation(conn: psycopg.Connection, rng: random.Random, i: int, result: WorkloadResult,
                   order_id: int, review_id: int, n_customers: int, n_products: int) -> None:
    kind = i % 10
    with conn.transaction():
        if kind in (0, 1, 2):  # new order with two items
            conn.execute(
                "INSERT INTO orders VALUES (%s, %s, 'new', %s, now(), NULL, %s)",
                [order_id, rng.randint(1, n_customers), round(rng.uniform(1, 999), 2),
                 rng.choice([None, "", "expédition ✈", "rush"])],
            )
            for line in (1, 2):
                conn.execute(
                    "INSERT INTO order_items VALUES (%s, %s, %s, %s, %s)",
                    [order_id, line, f"SKU-{rng.randint(1, n_products):07d}", rng.randint(1, 4),
                     round(rng.uniform(0.5, 99), 2)],
                )
            result.operations["insert:orders"] += 1
            result.operations["insert:order_items"] += 2
        elif kind in (3, 4):  # order status moves on
            conn.execute(
                "UPDATE orders SET status = 'shipped', shipped_at = now(), total = total + 0.01 "
                "WHERE id = (SELECT id FROM orders WHERE status <> 'shipped' "
                "ORDER BY id DESC LIMIT 1)"
            )
            result.operations["update:orders"] += 1
        elif kind == 5:  # customer profile and name change
            cid = rng.randint(1, n_customers)
            conn.execute(
                "UPDATE customers SET profile = coalesce(profile, '{}'::jsonb) || "
                "jsonb_build_object('visits', %s::int, 'ünï', 'çødé'), full_name = %s "
                "WHERE id = %s",
                [i, rng.choice(["Zoë Q", None, "", "新しい名前"]), cid],
            )
            result.operations["update:customers"] += 1
        elif kind == 6:  # a primary-key change: renumber an order line
            row = conn.execute(
                "UPDATE order_items SET line_no = line_no + 100 WHERE (order_id, line_no) = "
                "(SELECT order_id, line_no FROM order_items WHERE line_no < 100 "
                "ORDER BY order_id DESC LIMIT 1) RETURNING order_id"
            ).fetchone()
            if row:
                result.operations["pk_change:order_items"] += 1
        elif kind == 7:  # a review, then some deletes
            conn.execute(
                'INSERT INTO "ProductReviews" VALUES (%s, %s, %s, %s, now())',
                [review_id, f"SKU-{rng.randint(1, n_products):07d}", rng.randint(1, 5), "👍 ok"],
            )
            result.operations["insert:ProductReviews"] += 1
        elif kind == 8:
            cur = conn.execute(
                'DELETE FROM "ProductReviews" WHERE id = (SELECT min(id) FROM "ProductReviews")'
            )
            result.operations["delete:ProductReviews"] += cur.rowcount
        else:
            cur = conn.execute(
                "DELETE FROM order_items WHERE (order_id, line_no) = (SELECT order_id, line_no "
                "FROM order_items ORDER BY order_id, line_no LIMIT 1)"
            )
            result.operations["delete:order_items"] += cur.rowcount
            conn.execute(
                "UPDATE products SET price = price + 1, "
                "attributes = attributes || '{\"sale\": true}'"
                " WHERE sku = %s", [f"SKU-{rng.randint(1, n_products):07d}"]
            )
            result.operations["update:products"] += 1
