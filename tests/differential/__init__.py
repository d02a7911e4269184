"""A randomized differential harness for the CDC path: PostgreSQL source → Debezium → Kafka →
migwatch's applier → target, proven by a comparator that shares no code with the applier or the
validator.

    types.py     every PostgreSQL type the applier should carry, with its edge values and what
                 was observed today per target, and the limits of Debezium (values it does not
                 carry, each with its written contract) — the one source of truth for
                 docs/types.md
    schema.py    the classes under test (one table per type, key shape or naming hazard), their
                 DDL, and the run groups that isolate a class which crashes the applier
    workload.py  the seeded random workload: initial rows (the snapshot), then inserts, updates
                 (TOAST left untouched, primary keys changed), deletes and truncates
    compare.py   the independent comparator: PostgreSQL computes every row's text on both sides
                 (timetz at UTC, the documented normal form)
    compare_mongo.py  its MongoDB side: both sides re-encoded by the documented contract
    run.py       one differential run: databases, connector, applier (plus a second one joining
                 mid-stream to force a rebalance), workload, drain, comparator, validator
    limits.py    a limit class's check: its tables differ exactly as its contract says, refused
                 values are dead-lettered naming the column, the validator reports the rows
    matrix.py    renders docs/types.md's matrices from types.py and schema.py
    test_*.py    pure unit tests: the doc matches the lists; type classes hold only carried
                 values; the limit check fails on every broken contract; the workload is
                 reproducible

Used by tests/integration/test_cdc_differential.py (CI budget) and bench/cdc_differential.py
(long runs).
"""
