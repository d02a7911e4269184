"""Names DBAs give tables, through everything capture builds from them: the include-list regexes
(Java regex semantics, Debezium's comma-split list), the spec's quoted form, the topics Debezium
names (as seen on the real stack), and the target DDL (quoted names, collations, the
replica-identity-index key)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from migwatch import names
from migwatch.capture import captured_tables, include_list, table_regex
from migwatch.config import MigrationSpec, parse_spec, qualified
from migwatch.connectors.postgres import (
    KEY_REPLICA_IDENTITY_INDEX,
    Column,
    TableInfo,
    create_table_sql,
)
from tests.unit.test_capture_config import debezium_entries, matches

MID = "abc-123"

#: (schema, table) pairs PostgreSQL accepts and a DBA may well have
ODD = [
    ("Sales Dept.", 'we"ird na.me'),
    ("Sales Dept.", "a,b"),
    ("public", "a+b"),
    ("public", "x(1)"),
    ("public", "price$"),
    ("public", "$"),
    ("public", "select"),
    ("Public", "MixedCase"),
    ("public", "Tä b€"),
    ("ünï", "日本語"),
    ("public", "back\\slash"),
    ("public", "ends\\"),
    ("public", "comma\\,escaped"),
    ("public", " padded "),
    ("public", "tab\there"),
    ("public", "a|b"),
    ("public", "[x]{2}^"),
    ("public", "dot.star.*"),
    ("public", "(?i)x"),
    ("public", "emoji😀"),
    ("public", "#&~-"),
]


def spec(tables: list[Any]) -> MigrationSpec:
    return parse_spec({
        "source": {"kind": "postgres", "port": 5432, "database": "shop"},
        "target": {"kind": "postgres", "port": 5433, "database": "shop2"},
        "tables": tables,
    })


def raw(schema: str, table: str) -> str:
    return f"{schema}.{table}"  # what Debezium matches the include list against


def test_each_odd_name_matches_only_itself_after_debezium_splits_the_list() -> None:
    value = ",".join(table_regex(s, t) for s, t in ODD)
    entries = debezium_entries(value)
    assert len(entries) == len(ODD)  # no comma inside a name splits its entry
    wanted = [raw(s, t) for s, t in ODD]
    for entry, name in zip(entries, wanted, strict=True):
        assert entry == entry.strip()  # Debezium trims entries: nothing of the name is lost
        assert matches(entry, name), (entry, name)
        assert not [w for w in wanted if w != name and matches(entry, w)], entry
        # case, and the dot between schema and table, are exact
        assert not matches(entry, name.swapcase()) or name.swapcase() == name
        assert not matches(entry, raw(*ODD[0]) + "x")


@pytest.mark.parametrize(("schema", "table", "lookalike"), [
    ("public", "a+b", "public.aab"),
    ("public", "x(1)", "public.x1"),
    ("public", "dot.star.*", "public.dotXstarXanything"),
    ("Sales Dept.", "a,b", "Sales Dept.a"),
    ("public", "$", "public."),
    ("public", "a|b", "public.a"),
    ("public", "(?i)x", "public.X"),
    ("public", "select", "publicXselect"),
])
def test_metacharacters_are_literal(schema: str, table: str, lookalike: str) -> None:
    [entry] = debezium_entries(table_regex(schema, table))
    assert matches(entry, raw(schema, table))
    assert not matches(entry, lookalike)


def test_escapes_are_valid_java_too() -> None:
    # Java rejects a backslash before a letter that is not an escape it knows; only
    # non-alphanumeric characters are ever escaped, and spaces become \x20
    for schema, table in ODD:
        entry = table_regex(schema, table)
        body = entry[len("(?-i:"):-1]
        escaped = re.findall(r"\\(.)", body.replace("\\\\", ""))
        assert all(not ch.isalnum() or ch == "x" for ch in escaped), (entry, escaped)
        assert " " not in entry


def test_the_spec_include_list_keeps_order_and_ends_with_the_heartbeat_table() -> None:
    # written in the spec's form (a part with a dot or a quote quoted), matched raw
    s = spec([qualified(schema, table) for schema, table in ODD])
    assert captured_tables(s) == [*ODD, ("public", "migwatch_heartbeat")]
    entries = debezium_entries(include_list(s))
    assert len(entries) == len(ODD) + 1
    for entry, (schema, table) in zip(entries, [*ODD, ("public", "migwatch_heartbeat")],
                                      strict=True):
        assert matches(entry, f"{schema}.{table}")


def test_topic_names_are_debeziums_as_seen_on_the_stack() -> None:
    # topics Debezium 3.6 created for these tables (tests/integration/test_preflight_shapes.py)
    seen = {("Sales Dept.", "a,b"): "Sales_Dept..a_b",
            ("Sales Dept.", 'we"ird na.me'): "Sales_Dept..we_ird_na.me",
            ("public", "Tä b€"): "public.T__b_",
            ("public", "x(1)$"): "public.x_1__",
            ("public", "back\\slash"): "public.back_slash",
            ("public", "MixedCase"): "public.MixedCase"}
    for (schema, table), topic in seen.items():
        assert names.table_topic(MID, qualified(schema, table)) == f"migwatch.{MID}.{topic}"


def test_target_ddl_quotes_names_keeps_collations_and_keys_by_the_identity_index() -> None:
    info = TableInfo(
        schema="Sales Dept.", name='we"ird', primary_key=("code", "n"),
        columns=(Column("code", "text", True, collation=("pg_catalog", "C")),
                 Column("n", "integer", True),
                 Column("Label", "character varying(20)", False,
                        collation=("my schema", 'fr"FR'))),
        replica_identity="i", key_source=KEY_REPLICA_IDENTITY_INDEX,
        identity_index=("code", "n"))
    ddl = create_table_sql(info, "Tgt Schema", "t,1").as_string(None)
    assert ddl == (
        'CREATE TABLE IF NOT EXISTS "Tgt Schema"."t,1" ('
        '"code" text COLLATE "pg_catalog"."C" NOT NULL, "n" integer NOT NULL, '
        '"Label" character varying(20) COLLATE "my schema"."fr""FR", '
        'PRIMARY KEY ("code", "n"))')
