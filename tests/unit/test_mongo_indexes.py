"""The source's unique keys planned as MongoDB unique indexes, without servers: which carry over
(on which field paths, with which filter for nullable columns), which `_id` holds already, and
which are left out, each with why. On the real stack: tests/flows/test_mongo_unique_keys.py."""

from __future__ import annotations

from migwatch.batches import Batch, Change
from migwatch.config import TableSpec
from migwatch.connectors.postgres import Column, TableInfo
from migwatch.targets.mongo.indexes import Plan, SourceUnique, plan
from migwatch.targets.mongo.values import DocumentForm

COLUMNS = (Column("id", "integer", True), Column("part", "text", True),
           Column("code", "text", True), Column("email", "text", False),
           Column("n", "numeric(10,2)", False), Column("at", "timestamp with time zone", True),
           Column("at3", "timestamp(3) without time zone", True),
           Column("tags", "text[]", True), Column("doc", "jsonb", True),
           Column("tz", "time with time zone", True), Column("u", "uuid", False))


def planned(uniques: list[SourceUnique], key: tuple[str, ...] = ("id",),
            decimal128: bool = True, json_strings: tuple[str, ...] = ()) -> Plan:
    info = TableInfo("public", "t", COLUMNS, key)
    form = DocumentForm(info, decimal128=decimal128, json_string_columns=json_strings)
    return plan("public.t", info, form, uniques)


def test_not_null_columns_carry_over_named_as_on_the_source() -> None:
    p = planned([SourceUnique("t_code_key", ("code",), constraint=True),
                 SourceUnique("t_code_part", ("code", "part"), descending=(False, True))])
    assert [(i.name, i.keys, i.partial_filter) for i in p.create] == [
        ("t_code_key", (("code", 1),), None),
        ("t_code_part", (("code", 1), ("part", -1)), None)]
    assert p.create[0].what == "unique constraint t_code_key"
    assert not p.left_out and not p.covered


def test_nullable_columns_index_only_documents_holding_values() -> None:
    p = planned([SourceUnique("t_email_n", ("email", "n", "code"))])
    [index] = p.create
    assert index.partial_filter == {"email": {"$type": "string"}, "n": {"$type": "decimal"}}
    assert index.nullable == ("email", "n")
    # numeric on a server without Decimal128 is an exact decimal string
    [index] = planned([SourceUnique("t_n", ("n",))], decimal128=False).create
    assert index.partial_filter == {"n": {"$type": "string"}}
    # NULLS NOT DISTINCT: null is one value on both sides, no filter
    [index] = planned([SourceUnique("t_email", ("email",),
                                    nulls_not_distinct=True)]).create
    assert index.partial_filter is None


def test_key_columns_live_in_id_and_a_key_inside_the_index_is_held_by_id() -> None:
    p = planned([SourceUnique("t_id_code", ("code", "id")),
                 SourceUnique("t_part_code", ("part", "code"))], key=("id", "part"))
    assert p.covered == []
    assert [i.keys for i in p.create] == [
        (("code", 1), ("_id.id", 1)), (("_id.part", 1), ("code", 1))]
    p = planned([SourceUnique("t_id_code", ("code", "id")),
                 SourceUnique("t_replica", ("id",))])
    assert not p.create and len(p.covered) == 2
    assert "held by _id" in p.covered[0]


def test_what_cannot_mean_the_same_is_left_out_with_why() -> None:
    p = planned([SourceUnique("t_expr", ("code", None), expression=True),
                 SourceUnique("t_partial", ("code",), partial=True),
                 SourceUnique("t_deferred", ("code",), constraint=True, deferrable=True),
                 SourceUnique("t_broken", ("code",), valid=False),
                 SourceUnique("t_at", ("at",)),
                 SourceUnique("t_tags", ("tags",)),
                 SourceUnique("t_doc", ("doc",)),
                 SourceUnique("t_tz", ("tz",)),
                 SourceUnique("t_gone", ("generated_col",))])
    assert not p.create
    reasons = dict(line.split(": not carried — ", 1)
                   for line in p.left_out)
    assert "expression" in reasons["unique index t_expr of public.t"]
    assert "partial index" in reasons["unique index t_partial of public.t"]
    assert "DEFERRABLE" in reasons["unique constraint t_deferred of public.t"]
    assert "not valid" in reasons["unique index t_broken of public.t"]
    assert "milliseconds" in reasons["unique index t_at of public.t"]
    assert "each element" in reasons["unique index t_tags of public.t"]
    assert "doubles" in reasons["unique index t_doc of public.t"]
    assert "UTC" in reasons["unique index t_tz of public.t"]
    assert "generated" in reasons["unique index t_gone of public.t"]
    assert len(reasons) == 9


def test_exact_forms_carry_over() -> None:
    p = planned([SourceUnique("t_at3", ("at3",)), SourceUnique("t_u", ("u",)),
                 SourceUnique("t_doc", ("doc",))], json_strings=("doc",))
    assert [i.name for i in p.create] == ["t_at3", "t_u", "t_doc"]
    assert p.create[1].partial_filter == {"u": {"$type": "binData"}}


def test_a_batch_keeps_each_keyed_change_in_source_order_from_its_last_truncate() -> None:
    table = TableSpec(source="public.t")
    b = Batch()

    def add(op: str, key: int, code: str | None = None) -> None:
        b.add(Change(table, op, (key,), None if op == "d" else {"id": key, "code": code}, 0,
                     None, "false"))

    add("u", 1, "x")
    add("t", 0)
    add("u", 1, "tmp")
    add("u", 2, "a")
    add("d", 3)
    add("u", 1, "b")
    assert [(k, r and r["code"]) for k, r in b.steps["public.t"]] == [
        ((1,), "tmp"), ((2,), "a"), ((3,), None), ((1,), "b")]
    assert b.upserts["public.t"][(1,)]["code"] == "b"
