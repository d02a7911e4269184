"""Validation of text keys does not depend on collation (PostgreSQL → PostgreSQL, real stack).

Source and target columns order text differently (a linguistic ICU collation on one side, "C" or
the database default on the other): cut points read on one side and bucketed on the other once
landed in the wrong ranges. Both sides now order, cut and bucket keys in one byte order.
"""

from __future__ import annotations

from typing import Any

import pytest
from psycopg import sql

from migwatch.stack import Stack
from migwatch.validation import DIFFERENT, EQUAL, CompareOptions, TableResult, validate_table
from tests.conftest import PgDatabase, make_spec
from tests.integration.test_validation_bounded import within

#: keys linguistic collations and byte order disagree on: case, accents, punctuation, spaces,
#: emoji, scripts
WORDS = ["a", "B", "ä", "Z", "_x", "a b", "ab", "aB", "Ab", "AB", "é", "e", "E", "~", "😀",
         "東京", "zebra", "Zoë", "Äpfel", "apple", "-", "1", "10", "9"]
PER_WORD = 150  # rows per word: 3,600 rows, enough for several levels of bisection

#: options: several bisection levels; the probe-and-merge path (dense differences)
PATHS = {
    "bisect": {"whole_first_rows": 0, "leaf_rows": 8, "fanout": 4},
    "merge": {"leaf_rows": 8},
}


def run_sql(db: PgDatabase, statement: str | sql.Composable, params: Any = None) -> None:
    with db.connect() as conn:
        conn.execute(statement, params)


def create(db: PgDatabase, collation: str | None, composite: bool) -> None:
    coll = sql.SQL(" COLLATE {}").format(sql.Identifier(collation)) if collation else sql.SQL("")
    key = sql.SQL("PRIMARY KEY (w, n)" if composite else "PRIMARY KEY (w)")
    run_sql(db, sql.SQL("CREATE TABLE public.words (w text{} NOT NULL, n int NOT NULL, "
                        "note text, {})").format(coll, key))
    # composite: each word once per n; single: word || n
    fill = ("INSERT INTO public.words SELECT w, g, 'note ' || g FROM unnest(%s::text[]) w, "
            "generate_series(1, %s) g") if composite else (
        "INSERT INTO public.words SELECT w || ' ' || g, g, 'note ' || g "
        "FROM unnest(%s::text[]) w, generate_series(1, %s) g")
    run_sql(db, fill, [WORDS, PER_WORD])
    run_sql(db, "ANALYZE public.words")


def compare(stack: Stack, source_db: PgDatabase, target_db: PgDatabase,
            **options: Any) -> TableResult:
    """The comparison, failing the test past a deadline (mismatched key orders once made the
    bisection cut the same ranges for ever)."""
    spec = make_spec(source_db, target_db, ["public.words"], stack,
                     validation={"chunk_rows": 200, "sample_cap": 50})
    opts = CompareOptions(chunk_rows=200, sample_cap=50, moving_source=False)
    for k, v in options.items():
        setattr(opts, k, v)
    result, _ = within(60, lambda: validate_table(spec, spec.tables[0], opts))
    return result


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("composite", [False, True], ids=["text-key", "text-int-key"])
@pytest.mark.parametrize("collations", [("en-US-x-icu", "C"), ("C", "de-x-icu"),
                                        ("en-US-x-icu", None)],
                         ids=["icu-vs-C", "C-vs-icu", "icu-vs-default"])
def test_text_keys_compare_the_same_whatever_the_collations(
        stack: Stack, source_db: PgDatabase, target_db: PgDatabase,
        collations: tuple[str | None, str | None], composite: bool, path: str) -> None:
    create(source_db, collations[0], composite)
    create(target_db, collations[1], composite)
    options = PATHS[path]

    r = compare(stack, source_db, target_db, **options)
    assert r.error is None, r.error
    assert r.status == EQUAL, (r.missing, r.extra, r.changed, r.sample[:5])
    assert r.source_rows == r.target_rows == len(WORDS) * PER_WORD

    key = (lambda w: (w, 7)) if composite else (lambda w: (f"{w} 7",))
    where = "n = 7 AND w = %s" if composite else "w = %s || ' 7'"
    run_sql(target_db, f"UPDATE public.words SET note = 'changed' WHERE {where}", ["Zoë"])
    run_sql(target_db, f"DELETE FROM public.words WHERE {where}", ["_x"])
    extra = ("INSERT INTO public.words VALUES (%s, 7, 'extra')" if composite
             else "INSERT INTO public.words VALUES (%s || ' 7', 7, 'extra')")
    run_sql(target_db, extra, ["😀😀"])
    run_sql(target_db, extra, ["A"])
    if path == "merge":  # dense: one row in four differs, spread over every word
        run_sql(target_db, "UPDATE public.words SET note = 'dense' WHERE n % 4 = 1")
    r = compare(stack, source_db, target_db, **options)
    assert r.error is None, r.error
    assert r.status == DIFFERENT
    dense = len(WORDS) * len(range(1, PER_WORD + 1, 4)) if path == "merge" else 0
    assert (r.missing, r.extra, r.changed) == (1, 2, 1 + dense)
    located = located_keys(r)
    assert {(kind, k) for kind, k in located if kind != "changed" or k == key("Zoë")} == {
        ("changed", key("Zoë")), ("missing", key("_x")), ("extra", key("😀😀")),
        ("extra", key("A"))}
    assert len(located) == 4 + dense  # every differing row located to its key


def located_keys(r: TableResult) -> set[tuple[str, tuple[Any, ...]]]:
    """(kind, key) of every differing row the result holds by key."""
    out = set()
    for c in r.ranges:
        assert c.row_keys is not None, "every differing row is located by key"
        kinds = ["missing"] * c.missing + ["extra"] * c.extra + ["changed"] * c.changed
        out |= set(zip(kinds, c.decoded_keys(), strict=True))
    return out
