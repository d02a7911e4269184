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
from flows.validate import validate
from migwatch import capture, processes, sequences
from migwatch.config import MigrationSpec, MigrationsSpec
from migwatch.migrations import run_up
from migwatch.stack import Stack
from migwatch.stack.base import PG_BIN
from migwatch.validation.model import ValidationResult
from migwatch.validation.run import check_schema
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
    reader = f"mw_reader_{migration_id[-8:]}"  # a role the source has and the target lacks
    with source_db.connect() as conn:
        conn.execute(APP)
        conn.execute(f"CREATE ROLE {reader}; GRANT SELECT ON app.accounts TO {reader}")
    try:
        spec = make_spec(source_db, target_db, TABLES, stack,
                         snapshot={"timeout_seconds": 300, "poll_interval_seconds": 1,
                                   "index_workers": 2})
        cleanup.append(spec)
        out = migrate(write_spec(spec, tmp_path / "spec.yaml"), migration_id)
    finally:
        with source_db.connect() as conn:
            conn.execute(f"REVOKE ALL ON app.accounts FROM {reader}; DROP ROLE {reader}")

    finished = out["schema"]["finished"]
    assert finished["left_out"] == []
    # every object built has its time; the missing role is named with what it had
    assert set(finished["built"]) <= set(finished["seconds"]), finished
    assert [r.split(" (")[0] for r in finished["roles_missing"]] == [
        f"role {reader} does not exist on the target"], finished["roles_missing"]
    assert "SELECT on app.accounts" in finished["roles_missing"][0]
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
    check_the_schema_check(spec, migration_id, target_db, tmp_path)
    processes.stop_applier(migration_id)
    assert capture.connector_status(spec, migration_id).running


def foreign_keys_valid(db: PgDatabase) -> list[tuple[str, bool]]:
    with db.connect() as c:
        return [(r[0], bool(r[1])) for r in c.execute(
            "SELECT conname, convalidated FROM pg_constraint WHERE contype = 'f' AND "
            "connamespace = 'app'::regnamespace ORDER BY 1").fetchall()]


def check_the_schema_check(spec: MigrationSpec, migration_id: str, target_db: PgDatabase,
                           tmp_path: Path) -> None:
    """The validate stage's schema check: equal after the load (the NOT VALID foreign key is
    validated once the tables are proven equal — read from the catalog here); each kind of
    change made on the target afterwards is named as the object it is; one a migration applied
    on the target declares does not block."""
    wait_for(lambda: validate(str(tmp_path / "spec.yaml"), migration_id)["status"] == "equal",
             120, "validation equal, schema check included")
    out = validate(str(tmp_path / "spec.yaml"), migration_id)
    schema = out["schema"]
    assert schema["status"] == "equal" and schema["differences"] == [], schema
    assert schema["objects"] >= 30, schema  # columns, constraints, indexes, types, functions…
    assert foreign_keys_valid(target_db) == [("orders_account_id_fkey", True)]

    folder = tmp_path / "migrations"
    folder.mkdir()
    (folder / "V1__note.sql").write_text(
        "-- migwatch: schema-difference COLUMN app.orders.note\n"
        "ALTER TABLE app.orders ADD COLUMN note text;\n")
    spec2 = spec.model_copy(update={"migrations": MigrationsSpec(folder=str(folder))})
    assert run_up(spec2).versions_done == ["1"]
    with target_db.connect() as conn:
        conn.execute("""
            DROP INDEX app.orders_account;
            ALTER TABLE app.accounts ALTER COLUMN m SET DEFAULT 'sad';
            ALTER TYPE app.mood ADD VALUE 'meh';
            CREATE OR REPLACE FUNCTION app.default_code() RETURNS text LANGUAGE sql
                AS $$ SELECT 'C-000' $$;
            ALTER TABLE app.orders DROP CONSTRAINT orders_total_check;
            ALTER DOMAIN app.posint DROP CONSTRAINT posint_check;
            ALTER SEQUENCE app.shared_seq INCREMENT 5;
            ALTER TABLE app.accounts ALTER COLUMN nick TYPE varchar(40);
            DROP TRIGGER orders_touch ON app.orders;
        """)
    result = ValidationResult(migration_id=migration_id, source="", target="",
                              started_at="")
    check = check_schema(spec2, result)
    found = {(d.object, d.kind) for d in check.differences}
    assert found == {
        ("INDEX app.orders_account", "missing"),
        ("COLUMN app.accounts.m", "differs"),
        ("TYPE app.mood", "differs"),
        ("FUNCTION app.default_code()", "differs"),
        ("CONSTRAINT app.orders.orders_total_check", "missing"),
        ("DOMAIN app.posint", "differs"),
        ("SEQUENCE app.shared_seq", "differs"),
        ("COLUMN app.accounts.nick", "differs"),
        ("TRIGGER app.orders.orders_touch", "missing"),
    }, found
    assert [(d.object, d.declared_by) for d in check.declared] == [
        ("COLUMN app.orders.note", "V1__note.sql")]
    assert check.status == "different"


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


def test_tables_renamed_and_moved_to_another_schema_keep_their_sequences(
        stack: Stack, source_db: PgDatabase, target_db: PgDatabase, migration_id: str,
        cleanup: list[MigrationSpec], tmp_path: Path) -> None:  # noqa: F811
    """A bigserial table moved to another schema (PostgreSQL keeps an owned sequence in its
    table's schema: the sequence moves with it) and an identity table renamed in place: the
    restore makes both, the schema check finds them equal to the source's, the monitor's
    sequence reading finds each sequence on the target, and inserts relying on the defaults
    work there once the sequences are set."""
    with source_db.connect() as conn:
        conn.execute("CREATE SCHEMA app;"
                     "CREATE TABLE app.items (id bigserial PRIMARY KEY, name text NOT NULL "
                     "UNIQUE);"
                     "CREATE TABLE app.events (id int GENERATED BY DEFAULT AS IDENTITY PRIMARY "
                     "KEY, item_id bigint REFERENCES app.items (id), at timestamptz NOT NULL "
                     "DEFAULT now());"
                     "INSERT INTO app.items (name) SELECT 'i' || g FROM generate_series(1, 30) g;"
                     "INSERT INTO app.events (item_id) SELECT 1 + g % 30 FROM "
                     "generate_series(1, 40) g")
    spec = make_spec(source_db, target_db, [
        {"source": "app.items", "target": "Archive.Items"},
        {"source": "app.events", "target": "app.events_v2"}], stack,
        snapshot={"timeout_seconds": 300, "poll_interval_seconds": 1})
    cleanup.append(spec)
    path = write_spec(spec, tmp_path / "spec.yaml")
    migrate(path, migration_id)
    wait_for(lambda: validate(path, migration_id)["status"] == "equal", 120,
             "validation equal, schema check included")
    out = validate(path, migration_id)
    assert out["schema"]["status"] == "equal" and out["schema"]["objects"] >= 10, out["schema"]

    states = {s.sequence: s for s in sequences.read(spec)}
    assert set(states) == {"app.items_id_seq", "app.events_id_seq"}
    assert states["app.items_id_seq"].target is not None  # found in "Archive"
    assert states["app.events_id_seq"].target is not None
    assert states["app.items_id_seq"].source.last_value == 30
    with target_db.connect() as conn:
        assert conn.execute("SELECT pg_get_serial_sequence('\"Archive\".\"Items\"', 'id')"
                            ).fetchone() == ('"Archive".items_id_seq',)
        conn.execute("SELECT setval('\"Archive\".items_id_seq', 30)")
        conn.execute("SELECT setval('app.events_id_seq', 40)")
        row = conn.execute("INSERT INTO \"Archive\".\"Items\" (name) VALUES ('new') RETURNING id"
                           ).fetchone()
        assert row == (31,)
        row = conn.execute("INSERT INTO app.events_v2 (item_id) VALUES (31) RETURNING id"
                           ).fetchone()
        assert row == (41,)
    states = {s.sequence: s for s in sequences.read(spec)}
    assert states["app.items_id_seq"].state == "ok" and states["app.events_id_seq"].state == "ok"
