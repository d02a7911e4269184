DROP TABLE IF EXISTS public.order_status_labels;
