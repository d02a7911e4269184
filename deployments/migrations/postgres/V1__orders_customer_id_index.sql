-- The shop looks orders up by customer on its new home; the source has no such index.
-- Additive: CDC keeps upserting into public.orders by its primary key. On a large table this
-- blocks writes while it builds (it runs in the migration's transaction, so no CONCURRENTLY).
-- The schema check then finds an index the source lacks: declared here, it is not a no-go.
-- migwatch: schema-difference INDEX public.orders_customer_id_idx
CREATE INDEX IF NOT EXISTS orders_customer_id_idx ON public.orders (customer_id);
