"""The built-in freeze on the real source: new sessions of the application's roles read-only,
migwatch's and exempt roles still writing, the application's open sessions ended — and the
undo puts every setting back exactly as it was, an explicit one included. An application
sharing migwatch's role is refused before anything is frozen."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from migwatch.cutover import freeze, preconditions
from migwatch.stack import Stack
from tests.conftest import PgDatabase, make_spec, short_id


@pytest.fixture
def roles(stack: Stack, source_db: PgDatabase) -> Iterator[dict[str, str]]:
    """Two login roles: the application's and an exempt one (a batch job); their DSNs."""
    made = {"app": short_id("app"), "batch": short_id("batch")}
    with source_db.connect() as conn:
        conn.execute("CREATE TABLE public.t (id int PRIMARY KEY, n int)")
        conn.execute("INSERT INTO public.t VALUES (1, 0)")
        for role in made.values():
            conn.execute(sql.SQL("CREATE ROLE {r} LOGIN PASSWORD 'pw'; GRANT ALL ON public.t "
                                 "TO {r}").format(r=sql.Identifier(role)))
    yield {k: f"host=127.0.0.1 port={source_db.port} dbname={source_db.name} user={r} "
              f"password=pw application_name={k}" for k, r in made.items()} | \
        {f"{k}_role": r for k, r in made.items()}
    admin = stack.pg_dsn("source", "postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                     "WHERE usename = ANY(%s)", [list(made.values())])
    with source_db.connect() as conn:
        conn.execute("SET default_transaction_read_only = off")
        for role in made.values():
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
    with psycopg.connect(admin, autocommit=True) as conn:
        for role in made.values():
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def writes(dsn: str) -> bool:
    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
            conn.execute("UPDATE public.t SET n = n + 1")
        return True
    except psycopg.errors.ReadOnlySqlTransaction:
        return False


def settings(source_db: PgDatabase) -> set[tuple[str, str]]:
    with source_db.connect() as conn:
        found = conn.execute(
            "SELECT coalesce(r.rolname, '-'), unnest(s.setconfig) FROM pg_db_role_setting s "
            "JOIN pg_database d ON d.oid = s.setdatabase LEFT JOIN pg_roles r "
            "ON r.oid = s.setrole WHERE d.datname = current_database()").fetchall()
    return {(str(r), str(c)) for r, c in found}


def test_the_freeze_stops_the_application_only_and_its_undo_restores_every_setting(
        stack: Stack, source_db: PgDatabase, target_db: PgDatabase,
        roles: dict[str, str]) -> None:
    with source_db.connect() as conn:  # an explicit setting the undo must keep
        conn.execute(sql.SQL("ALTER DATABASE {} SET default_transaction_read_only = off")
                     .format(sql.Identifier(source_db.name)))
        conn.execute(sql.SQL("ALTER DATABASE {} SET work_mem = '8MB'")
                     .format(sql.Identifier(source_db.name)))
    before = settings(source_db)
    spec = make_spec(source_db, target_db, ["public.t"], stack,
                     cutover={"freeze": {"exempt_roles": [roles["batch_role"]]}})
    open_app = psycopg.connect(roles["app"], autocommit=True)
    frozen = freeze.freeze(spec, terminate=True, terminate_timeout=5)
    try:
        assert [s.split(",")[0] for s in frozen.terminated] == [
            f"pid {open_app.info.backend_pid} ({roles['app_role']}"]
        with pytest.raises(psycopg.OperationalError):  # its session was ended
            open_app.execute("SELECT 1")
        assert not writes(roles["app"])  # a new session of the application is read-only
        assert writes(roles["batch"])  # an exempt role keeps writing
        assert writes(source_db.dsn)  # migwatch's role too
        assert freeze.is_read_only(spec)
    finally:
        freeze.thaw(spec, frozen)
        open_app.close()
    assert writes(roles["app"])
    assert settings(source_db) == before
    assert not freeze.is_read_only(spec)


def test_an_application_sharing_migwatchs_role_is_refused_before_any_freeze(
        stack: Stack, source_db: PgDatabase, target_db: PgDatabase) -> None:
    spec = make_spec(source_db, target_db, ["public.t"], stack)
    with source_db.connect() as conn:
        conn.execute("CREATE TABLE public.t (id int PRIMARY KEY)")
    assert preconditions.freeze_reasons(spec) == []
    shared = psycopg.connect(source_db.dsn + " application_name=shop-web", autocommit=True)
    try:
        reasons = preconditions.freeze_reasons(spec)
    finally:
        shared.close()
    assert len(reasons) == 1 and "shares an exempt role" in reasons[0]
    assert "shop-web" in reasons[0] and "give the application its own role" in reasons[0]
    assert not freeze.is_read_only(spec)


def test_an_invalid_index_on_the_target_refuses_the_cutover(
        stack: Stack, source_db: PgDatabase, target_db: PgDatabase) -> None:
    with target_db.connect() as conn:
        conn.execute('CREATE TABLE public."Tab" (id int PRIMARY KEY, code text)')
        conn.execute("INSERT INTO public.\"Tab\" VALUES (1, 'a'), (2, 'a')")
        with pytest.raises(psycopg.errors.UniqueViolation):  # leaves the index INVALID
            conn.execute('CREATE UNIQUE INDEX CONCURRENTLY "Tab code" ON public."Tab" (code)')
    spec = make_spec(source_db, target_db, ["public.Tab"], stack)
    from migwatch.targets import engine_for

    assert engine_for(spec).invalid_indexes() == ["public.Tab: Tab code"]
