DROP VIEW IF EXISTS public.customer_order_totals;
