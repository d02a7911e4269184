"""Key ranges of a table to load: whatever the key's type and values (negative numbers, text
with quotes, backslashes, collation-sorted letters, uuids, timestamps, numerics, dates, a
composite key), the ranges cover every row exactly once — checked by counting each range's rows
with the range's own condition and comparing the sum and the union with the table (plain SQL)."""

from __future__ import annotations

import pytest
from psycopg import sql

from migwatch.config import TableSpec
from migwatch.connectors import postgres as pg
from migwatch.load.ranges import KeyRange, plan, ranges_wanted
from tests.conftest import PgDatabase

KEYS = {
    "int": ("id bigint PRIMARY KEY", "g - 2500"),
    "text": ("id text COLLATE \"en-US-x-icu\" PRIMARY KEY",
             "(ARRAY['a', 'B', 'ä', 'z''q', 'x\\y', 'É', ' '])[g % 7 + 1] || g"),
    "uuid": ("id uuid PRIMARY KEY", "md5(g::text)::uuid"),
    "timestamptz": ("id timestamptz PRIMARY KEY",
                    "timestamptz '2001-02-03 04:05:06.789+05' + g * interval '1 hour 7.5 s'"),
    "numeric": ("id numeric PRIMARY KEY", "g / 7.0 - 100"),
    "date": ("id date PRIMARY KEY", "date '1999-12-31' + g"),
    "float": ("id double precision PRIMARY KEY", "g / 3.0::float8"),
    "composite": ("id int, sub text, PRIMARY KEY (id, sub)", "g % 100"),
}


@pytest.mark.parametrize("kind", sorted(KEYS))
def test_the_ranges_cover_every_row_once(source_db: PgDatabase, kind: str) -> None:
    column, value = KEYS[kind]
    extra = ", g::text" if kind == "composite" else ""
    with source_db.connect() as conn:
        conn.execute(f"CREATE TABLE public.k ({column}, v int)")
        conn.execute(f"INSERT INTO public.k SELECT {value}{extra}, g "
                     "FROM generate_series(1, 5000) g")
        conn.execute("ANALYZE public.k")
    table = TableSpec(source="public.k")
    with source_db.connect() as conn:
        conn.autocommit = True
        info = pg.describe_table(conn, "public", "k")
        assert info is not None
        ranges = plan(conn, table, info, 5000, 1000)
        assert len(ranges) == ranges_wanted(5000, 1000) == 5
        assert ranges[0].low is None and ranges[-1].high is None
        counts = [_count(conn, r) for r in ranges]
        ids = [_ids(conn, r) for r in ranges]
    assert sum(counts) == 5000, counts
    assert len(set().union(*ids)) == 5000  # no row in two ranges, none left out
    if kind != "composite":  # 100 distinct first-column values share 5000 rows there
        assert min(counts) > 400, counts  # the sample spread them


def test_a_small_or_keyless_table_stays_whole(source_db: PgDatabase) -> None:
    with source_db.connect() as conn:
        conn.execute("CREATE TABLE public.nokey (v int)")
        conn.execute("CREATE TABLE public.few (id int PRIMARY KEY)")
        conn.execute("INSERT INTO public.nokey SELECT generate_series(1, 5000)")
        conn.execute("INSERT INTO public.few VALUES (1), (2)")
    with source_db.connect() as conn:
        conn.autocommit = True
        for name, estimate in (("nokey", 5000), ("few", 5000), ("few", 10)):
            info = pg.describe_table(conn, "public", name)
            assert info is not None
            assert plan(conn, TableSpec(source=f"public.{name}"), info, estimate, 1000) == []


def _count(conn: object, r: KeyRange) -> int:
    row = conn.execute(sql.SQL("SELECT count(*) FROM public.k WHERE {}").format(  # type: ignore[attr-defined]
        r.condition())).fetchone()
    return int(row[0])


def _ids(conn: object, r: KeyRange) -> set[str]:
    return {x[0] for x in conn.execute(sql.SQL(  # type: ignore[attr-defined]
        "SELECT k::text FROM public.k k WHERE {}").format(r.condition())).fetchall()}
