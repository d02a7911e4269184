-- A lookup table that lives only on the target (it is not among the spec's CDC tables).
CREATE TABLE IF NOT EXISTS public.order_status_labels (
    status text PRIMARY KEY,
    label  text NOT NULL
);
INSERT INTO public.order_status_labels (status, label) VALUES
    ('new', 'New'), ('paid', 'Paid'), ('shipped', 'Shipped'), ('done', 'Delivered')
ON CONFLICT (status) DO NOTHING;
