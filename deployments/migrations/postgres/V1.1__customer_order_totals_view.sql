-- Per-customer totals for reporting on the target. A view holds no data, so it never drifts
-- from the CDC-fed orders table, and it does not block the applier's upserts, deletes or
-- truncates.
CREATE OR REPLACE VIEW public.customer_order_totals AS
SELECT o.customer_id,
       count(*)          AS orders,
       sum(o.total)      AS total_spent,
       max(o.placed_at)  AS last_order_at
FROM public.orders AS o
GROUP BY o.customer_id;
