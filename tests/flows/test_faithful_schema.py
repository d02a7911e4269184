"""A faithful target schema, through the migrate stage: an application-like schema — bigserial
and identity keys, defaults (one calling a function of its own, one from a shared sequence), an
enum, domains with checks, a collation, an extension's type (citext), a
check constraint, a unique expression index, a foreign key with ON DELETE CASCADE, a trigger
and a comment — arrives whole: `pg_dump --schema-only` of the tables is the same on both sides,
the constraints hold on the target, inserts that rely on defaults work once the sequences are
set, and rows written to both tables in one source transaction land whatever order their
topics are read in (the applier writes as `session_replication_role = replica`)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import psycopg
import pytest

from flows.migrate import migrate
from migwatch import capture, processes
from migwatch.config import MigrationSpec
from migwatch.stack import Stack
from migwatch.stack.base import PG_BIN
from tests.conftest import PgDatabase, make_spec
from tests.flows.test_cdc_apply_flow import wait_for, write_spec
from tests.flows.test_migrate_flow import cleanup  # noqa: F401 - a fixture

pytestmark = pytest.mark.usefixtures("prefect_harness")

APP = """
CREATE EXTENSION IF NOT EXISTS citext;
CREATE SCHEMA app;
CREATE COLLATION app.ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false);
CREATE TYPE app.mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN app.code_d AS text CHECK (VALUE ~ '^C-');
CREATE DOMAIN app.posint AS integer CHECK (VALUE > 0);
CREATE FUNCTION app.default_code() RETURNS text LANGUAGE sql
    AS $$ SELECT 'C-' || lpad((floor(random() * 1000))::int::text, 3, '0') $$;
CREATE SEQUENCE app.shared_seq;
CREATE TABLE app.accounts (
    id bigserial PRIMARY KEY,
    email citext NOT NULL,
    nick text COLLATE app.ci,
    m app.mood DEFAULT 'ok',
    code app.code_d DEFAULT app.default_code(),
    n app.posint,
    created timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT email_not_blank CHECK (email <> '')
);
CREATE UNIQUE INDEX accounts_email_lower ON app.accounts (lower(email::text));
COMMENT ON TABLE app.accounts IS 'who buys';
CREATE TABLE app.orders (
    id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id bigint NOT NULL REFERENCES app.accounts (id) ON DELETE CASCADE,
    ref int NOT NULL DEFAULT nextval('app.shared_seq'),
    md app.mood,
    total numeric(10,2) CHECK (total >= 0),
    doubled numeric GENERATED ALWAYS AS (total * 2) STORED
);
CREATE INDEX orders_account ON app.orders (account_id);
CREATE FUNCTION app.touch() RETURNS trigger LANGUAGE plpgsql
    AS $$ BEGIN NEW.total := coalesce(NEW.total, 0); RETURN NEW; END $$;
CREATE TRIGGER orders_touch BEFORE INSERT ON app.orders FOR EACH ROW EXECUTE FUNCTION app.touch();
INSERT INTO app.accounts (email, nick, n) SELECT 'u' || g || '@example.com', 'N' || g, g
    FROM generate_series(1, 200) g;
INSERT INTO app.orders (account_id, md, total) SELECT 1 + g % 200, 'happy', g
    FROM generate_series(1, 500) g;
"""
TABLES = ["app.accounts", "app.orders"]


def schema_dump(db: PgDatabase, password: str) -> str:
    """`pg_dump --schema-only` of the two tables, without what differs by database anyway."""
    done = subprocess.run([str(PG_BIN / "pg_dump"), "--schema-only", "--no-owner",
                           "--no-acl", "-t", "app.accounts", "-t", "app.orders",
                           "-h", "127.0.0.1", "-p", str(db.port), "-U", "migwatch", db.name],
                          capture_output=True, text=True, check=True,
                          env={"PGPASSWORD": password, "PATH": "/usr/bin:/bin"})
    lines = [ln for ln in done.stdout.splitlines()
             if ln.strip() and not ln.startswith(("--", "\\restrict", "\\unrestrict"))]
    return "\n".join(lines)


def test_an_application_schema_arrives_whole(
        stack: Stack, source_db: PgDatabase, target_db: PgDatabase, migration_id: str,
        cleanup: list[MigrationSpec], tmp_path: Path) -> None:  # noqa: F811
    with source_db.connect() as conn:
        conn.execute(APP)
    spec = make_spec(source_db, target_db, TABLES, stack,
                     snapshot={"timeout_seconds": 300, "poll_interval_seconds": 1})
    cleanup.append(spec)
    out = migrate(write_spec(spec, tmp_path / "spec.yaml"), migration_id)

    finished = out["schema"]["finished"]
    assert finished["left_out"] == []
    assert {"INDEX app.accounts_email_lower", "INDEX app.orders_account",
            "FK CONSTRAINT app.orders orders_account_id_fkey",
            "TRIGGER app.orders orders_touch"} <= set(finished["built"]), finished
    password = stack.s.pg_password.get_secret_value()
    source_text, target_text = schema_dump(source_db, password), schema_dump(target_db, password)
    # the foreign key is NOT VALID on the target until it is validated (the rows arrived in
    # per-table order); everything else is the same, statement by statement
    assert target_text.replace(" NOT VALID;", ";") == source_text

    with target_db.connect() as conn:  # the constraints hold
        for bad in ("INSERT INTO app.accounts (email, n) VALUES ('', 1)",
                    "INSERT INTO app.accounts (email, n) VALUES ('x@y', -1)",
                    "INSERT INTO app.accounts (email, n) VALUES ('U1@EXAMPLE.COM', 1)",
                    "INSERT INTO app.orders (account_id, total) VALUES (999999, 1)",
                    "INSERT INTO app.orders (account_id, total) VALUES (1, -5)"):
            with pytest.raises(psycopg.errors.IntegrityError):
                conn.execute(bad)
        # the sequences as the cutover sets them; then inserts that rely on defaults work
        for seq, value in [("app.accounts_id_seq", 200), ("app.orders_id_seq", 500),
                           ("app.shared_seq", 500)]:
            conn.execute("SELECT setval(%s, %s)", [seq, value])
        row = conn.execute("INSERT INTO app.accounts (email, n) VALUES ('new@example.com', 7) "
                           "RETURNING id, m, code, created IS NOT NULL").fetchone()
        assert row is not None and row[0] == 201 and row[1] == "ok"
        assert re.fullmatch(r"C-\d{3}", row[2]) and row[3]
        order = conn.execute("INSERT INTO app.orders (account_id) VALUES (201) "
                             "RETURNING id, ref, total, doubled").fetchone()
        assert order == (501, 501, 0, 0)  # identity, shared sequence, trigger, generated
        conn.execute("DELETE FROM app.accounts WHERE id = 201")  # ON DELETE CASCADE
        assert conn.execute("SELECT count(*) FROM app.orders WHERE id = 501").fetchone() == (0,)
        assert conn.execute("SELECT obj_description('app.accounts'::regclass)"
                            ).fetchone() == ("who buys",)

    # an order and its new account in one source transaction: whichever topic the applier
    # reads first, both land (no foreign key or trigger fires on replicated rows)
    with source_db.connect() as conn, conn.transaction():
        for i in range(20):
            conn.execute("INSERT INTO app.accounts (email, n) VALUES (%s, 1)",
                         [f"late{i}@example.com"])
            conn.execute("INSERT INTO app.orders (account_id, total) VALUES "
                         "(currval('app.accounts_id_seq'), 1)")

    def counts(db: PgDatabase) -> tuple[int, int]:
        with db.connect() as c:
            row = c.execute("SELECT (SELECT count(*) FROM app.accounts WHERE email LIKE "
                            "'late%'), (SELECT count(*) FROM app.orders o JOIN app.accounts a "
                            "ON a.id = o.account_id WHERE a.email LIKE 'late%')").fetchone()
        return (int(row[0]), int(row[1])) if row else (0, 0)

    wait_for(lambda: counts(target_db) == (20, 20), 90, "the late rows applied")
    processes.stop_applier(migration_id)
    assert capture.connector_status(spec, migration_id).running


def test_unique_swaps_and_a_cascading_truncate_land_without_dead_letters(
        stack: Stack, source_db: PgDatabase, target_db: PgDatabase, migration_id: str,
        cleanup: list[MigrationSpec], tmp_path: Path) -> None:  # noqa: F811
    """Two rows swapping a unique value (through a third, as the source must) inside one batch:
    the set-based upsert trips the unique index, the batch is applied again change by change
    in source order, and nothing is dead-lettered. A `TRUNCATE … CASCADE` of a referenced table
    arrives as one event per table, each on its own topic: each table is emptied on its own
    (the referenced one by DELETE, as TRUNCATE alone is refused) and rows written after it
    stay."""
    with source_db.connect() as conn:
        conn.execute("CREATE TABLE public.parent (id int PRIMARY KEY, code text NOT NULL UNIQUE);"
                     "CREATE TABLE public.child (id int PRIMARY KEY, parent_id int NOT NULL "
                     "REFERENCES public.parent (id));"
                     "INSERT INTO public.parent SELECT g, 'c' || g FROM generate_series(1, 50) g;"
                     "INSERT INTO public.child SELECT g, g FROM generate_series(1, 50) g")
    tables = ["public.parent", "public.child"]
    spec = make_spec(source_db, target_db, tables, stack,
                     snapshot={"timeout_seconds": 300, "poll_interval_seconds": 1})
    cleanup.append(spec)
    migrate(write_spec(spec, tmp_path / "spec.yaml"), migration_id)

    def rows(db: PgDatabase) -> list[tuple]:
        with db.connect() as c:
            return c.execute("SELECT 'p', id, code FROM public.parent UNION ALL "
                             "SELECT 'c', id, parent_id::text FROM public.child ORDER BY 1, 2"
                             ).fetchall()

    with source_db.connect() as conn, conn.transaction():
        for a, b in [(1, 2), (3, 4), (5, 6)]:
            conn.execute("UPDATE public.parent SET code = 'tmp' WHERE id = %s", [a])
            conn.execute("UPDATE public.parent SET code = %s WHERE id = %s", [f"c{a}", b])
            conn.execute("UPDATE public.parent SET code = %s WHERE id = %s", [f"c{b}", a])
    wait_for(lambda: rows(target_db) == rows(source_db), 90, "the swaps applied")
    with source_db.connect() as conn:
        conn.execute("TRUNCATE public.parent CASCADE")
        conn.execute("INSERT INTO public.parent VALUES (100, 'after')")
        conn.execute("INSERT INTO public.child VALUES (100, 100)")
    wait_for(lambda: rows(target_db) == rows(source_db), 90, "the truncate and later rows")
    assert rows(target_db) == [("c", 100, "100"), ("p", 100, "after")]
    assert dead_letters(stack, spec.dlq_topic(migration_id)) == 0


def dead_letters(stack: Stack, topic: str) -> int:
    """Records on the dead-letter topic (0 when it was never made)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=stack.address("kafka"), group_id=None)
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        ends = consumer.end_offsets([TopicPartition(topic, p) for p in parts]) if parts else {}
    finally:
        consumer.close()
    return sum(ends.values())
