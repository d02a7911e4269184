"""The schema check's pure part: pg_dump text split into named objects, renamed tables named
as the source's, NOT VALID foreign keys, declarations by migrations, and the comparison."""

from __future__ import annotations

from migwatch.validation.model import DIFFERENT, EQUAL, SchemaCheck, ValidationResult
from migwatch.validation.schema_check import (
    Objects,
    Rename,
    compare,
    declarations,
    markdown_lines,
    split_dump,
)

DUMP = """--
-- PostgreSQL database dump
--

\\restrict abc

SET statement_timeout = 0;
SELECT pg_catalog.set_config('search_path', '', false);

--
-- Name: accounts; Type: TABLE; Schema: app; Owner: -
--

CREATE TABLE app.accounts (
    id bigint NOT NULL,
    "Email; Type: x" text COLLATE app.ci,
    m app.mood DEFAULT 'ok'::app.mood,
    CONSTRAINT email_not_blank CHECK (("Email; Type: x" <> ''::text))
);


--
-- Name: TABLE accounts; Type: COMMENT; Schema: app; Owner: -
--

COMMENT ON TABLE app.accounts IS 'who buys';


--
-- Name: accounts accounts_pkey; Type: CONSTRAINT; Schema: app; Owner: -
--

ALTER TABLE ONLY app.accounts
    ADD CONSTRAINT accounts_pkey PRIMARY KEY (id);


--
-- Name: accounts_m; Type: INDEX; Schema: app; Owner: -
--

CREATE INDEX accounts_m ON app.accounts USING btree (m);


--
-- Name: orders orders_account_fkey; Type: FK CONSTRAINT; Schema: app; Owner: -
--

ALTER TABLE ONLY app.orders
    ADD CONSTRAINT orders_account_fkey FOREIGN KEY (account_id) REFERENCES app.accounts(id);

\\unrestrict abc
"""


def test_a_dump_splits_into_named_objects_a_table_column_by_column() -> None:
    objs = split_dump(DUMP).definitions
    assert sorted(objs) == [
        "COLUMN app.accounts.Email; Type: x",
        "COLUMN app.accounts.id",
        "COLUMN app.accounts.m",
        "COMMENT ON TABLE app.accounts",
        "CONSTRAINT app.accounts.accounts_pkey",
        "CONSTRAINT app.accounts.email_not_blank",
        "FK CONSTRAINT app.orders.orders_account_fkey",
        "INDEX app.accounts_m",
        "TABLE app.accounts",
    ]
    assert objs["COLUMN app.accounts.m"] == "m app.mood DEFAULT 'ok'::app.mood"
    assert objs["TABLE app.accounts"] == "CREATE TABLE app.accounts (\n);"
    assert "restrict" not in "".join(objs.values()) and "SET " not in "".join(objs.values())


def test_a_renamed_table_is_named_as_the_source_names_it() -> None:
    """Moved to another schema and renamed: its columns, constraints, comment and index (which
    lives in the table's schema) are named as on the source; the foreign key that references
    it is compared with the reference written as the source's."""
    lines = []
    for line in DUMP.replace("app.accounts", '"Shop"."Accounts"').splitlines():
        if line.startswith("-- Name: ") and "orders" not in line:
            line = line.replace("Name: accounts;", "Name: Accounts;").replace(
                "Name: accounts ", "Name: Accounts ").replace(
                "TABLE accounts;", "TABLE Accounts;").replace("Schema: app", "Schema: Shop")
        lines.append(line)
    rename = Rename(source_schema="app", source_name="accounts", target_schema="Shop",
                    target_name="Accounts", source_qualified="app.accounts",
                    target_qualified='"Shop"."Accounts"')
    assert split_dump("\n".join(lines), [rename]).definitions == split_dump(DUMP).definitions
    assert split_dump("\n".join(lines)).definitions != split_dump(DUMP).definitions


def test_a_not_valid_foreign_key_equals_a_valid_one_with_a_warning() -> None:
    target = DUMP.replace("REFERENCES app.accounts(id);", "REFERENCES app.accounts(id) NOT VALID;")
    check = compare(split_dump(DUMP), split_dump(target), {})
    assert check.status == EQUAL and check.differences == []
    assert any("orders_account_fkey is NOT VALID" in w for w in check.warnings)


def test_each_difference_is_named_with_its_kind() -> None:
    source = Objects({"INDEX app.a": "x", "TYPE app.t": "ENUM ('a')", "COLUMN app.t.c": "c int"})
    target = Objects({"TYPE app.t": "ENUM ('a', 'b')", "COLUMN app.t.c": "c int",
                      "FUNCTION app.f()": "body"})
    check = compare(source, target, {})
    assert check.status == DIFFERENT and check.objects == 4
    assert {(d.object, d.kind) for d in check.differences} == {
        ("INDEX app.a", "missing"), ("TYPE app.t", "differs"), ("FUNCTION app.f()", "extra")}


def test_a_declared_difference_does_not_block_and_names_its_migration() -> None:
    source = Objects({"COLUMN app.t.c": "c int"})
    target = Objects({"COLUMN app.t.c": "c int", "COLUMN app.t.note": "note text",
                      "INDEX app.t_note": "CREATE INDEX …"})
    text = ("-- add a note\n-- migwatch: schema-difference COLUMN app.t.*\n"
            "ALTER TABLE app.t ADD note text;\n")
    assert declarations(text) == ["COLUMN app.t.*"]
    check = compare(source, target, {"V2__note.sql": declarations(text)})
    assert [d.object for d in check.differences] == ["INDEX app.t_note"]
    assert [(d.object, d.declared_by) for d in check.declared] == [
        ("COLUMN app.t.note", "V2__note.sql")]
    check = compare(source, target, {"V2__note.sql": ["COLUMN app.t.*", "INDEX app.t_*"]})
    assert check.status == EQUAL and len(check.declared) == 2
    assert declarations("# migwatch: schema-difference INDEX x\n") == ["INDEX x"]


def test_a_foreign_key_to_a_table_not_migrated_is_a_warning() -> None:
    source = Objects({"FK CONSTRAINT app.o.o_fk": "ALTER …"})
    check = compare(source, Objects(), {}, outside={"FK CONSTRAINT app.o.o_fk": "it references x"})
    assert check.status == EQUAL and check.warnings == [
        "FK CONSTRAINT app.o.o_fk is not on the target: it references x"]


def test_the_result_keeps_its_schema_check_and_a_difference_makes_it_different() -> None:
    result = ValidationResult(migration_id="m", source="s", target="t", started_at="now")
    assert result.status == EQUAL
    result.schema = compare(Objects({"INDEX app.a": "x"}), Objects(), {})
    assert result.status == DIFFERENT and result.exit_code == 1
    again = ValidationResult.from_dict(result.to_dict())
    assert isinstance(again.schema, SchemaCheck) and again.schema.differences[0].object == \
        "INDEX app.a"
    lines = "\n".join(markdown_lines(again.schema))
    assert "| INDEX app.a | missing | x | — |" in lines
