"""The initial load by COPY, consistent with the change stream (`snapshot.method: copy`).

    1. the publication (the spec's tables and the heartbeat table) — on PostgreSQL 15 it must
       exist before the slot, or decoding fails with "publication does not exist";
    2. the replication slot, created with an exported snapshot on a replication connection that
       stays open and idle until every table's COPY has taken that snapshot (`slot`);
    3. every table copied in that snapshot, `snapshot.copy_workers` at a time, source → target
       (`copy`), each table's rows and completion recorded in the same target transaction as
       its rows — where the snapshot follower reads them;
    4. Debezium started on that slot with `snapshot.mode=no_data`: it streams from the slot's
       consistent point, the very point the exported snapshot shows.

Why nothing is missed or applied twice: the exported snapshot sees exactly the transactions
committed before the slot's consistent point, and the slot decodes exactly those committed
after it. The applier starts once every table is loaded, so no change can reach a table before
its rows. A load that is cut off (its process killed) resumes: tables recorded as loaded stay;
the others are emptied and copied again from a new snapshot — later than the consistent point,
so the slot's replay of changes they already hold is upserts and deletes by key that end in the
source's state (keyless tables are refused: their replay cannot converge).
"""
