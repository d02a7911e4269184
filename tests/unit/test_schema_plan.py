"""Which entries of a source's schema dump a set of tables needs — the dump's own dependency graph
(`pg_restore -l -v`), walked up (what an entry needs) and down (what belongs to a table) —
and the rewriting of pg_restore's SQL (foreign keys NOT VALID, renamed tables)."""

from __future__ import annotations

from migwatch.targets.postgres.schema import not_valid_foreign_keys, parse_toc, plan, renamed

#: `pg_restore -l -v` of a schema with an enum, two domains, a function default, a trigger
#: function, a bigserial, a shared sequence, an identity column, a unique expression index, a
#: foreign key, a comment, and a table (`other`) the spec leaves out
TOC = """3381; 0 0 ENCODING - ENCODING 
3382; 0 0 STDSTRINGS - STDSTRINGS 
3383; 0 0 SEARCHPATH - SEARCHPATH 
3384; 1262 363632 DATABASE - appx migwatch
844; 1247 363634 TYPE public mood migwatch
851; 1247 363645 DOMAIN public mood_d migwatch
;	depends on: 844
847; 1247 363642 DOMAIN public posint migwatch
220; 1255 363646 FUNCTION public default_code() migwatch
221; 1255 363684 FUNCTION public trg() migwatch
216; 1259 363649 TABLE public accounts migwatch
;	depends on: 844 220 844 847
3385; 0 0 COMMENT public TABLE accounts migwatch
;	depends on: 216
215; 1259 363648 SEQUENCE public accounts_id_seq migwatch
;	depends on: 216
3386; 0 0 SEQUENCE OWNED BY public accounts_id_seq migwatch
;	depends on: 215
214; 1259 363647 SEQUENCE public shared_seq migwatch
218; 1259 363663 TABLE public orders migwatch
;	depends on: 214 851
217; 1259 363662 SEQUENCE public orders_id_seq migwatch
;	depends on: 218
219; 1259 363679 TABLE public other migwatch
3219; 2604 363652 DEFAULT public accounts id migwatch
;	depends on: 215 216 216
3229; 2606 363660 CONSTRAINT public accounts accounts_pkey migwatch
;	depends on: 216
3232; 2606 363672 CONSTRAINT public orders orders_pkey migwatch
;	depends on: 218
3234; 2606 363683 CONSTRAINT public other other_pkey migwatch
;	depends on: 219
3227; 1259 363661 INDEX public accounts_email_lower migwatch
;	depends on: 216 216
3230; 1259 363678 INDEX public orders_account migwatch
;	depends on: 218
3236; 2620 363685 TRIGGER public orders t migwatch
;	depends on: 218 221
3235; 2606 363673 FK CONSTRAINT public orders orders_account_id_fkey migwatch
;	depends on: 218 3229 216
"""
ACCOUNTS, ORDERS, OTHER = 363649, 363663, 363679
PKS = {363660, 363672, 363683}


def kinds(entries: tuple) -> list[str]:
    return [" ".join(e.line.split(" ")[3:-1]) for e in entries]


def test_the_closure_of_two_tables_is_what_they_need_and_what_belongs_to_them() -> None:
    p = plan(parse_toc(TOC), [ACCOUNTS, ORDERS], PKS)
    assert kinds(p.pre) == [  # in the archive's order: pg_dump sorted it by dependencies
        "TYPE public mood", "DOMAIN public mood_d", "DOMAIN public posint",
        "FUNCTION public default_code()", "FUNCTION public trg()", "TABLE public accounts",
        "COMMENT public TABLE accounts", "SEQUENCE public accounts_id_seq",
        "SEQUENCE OWNED BY public accounts_id_seq", "SEQUENCE public shared_seq",
        "TABLE public orders", "SEQUENCE public orders_id_seq", "DEFAULT public accounts id",
        "CONSTRAINT public accounts accounts_pkey", "CONSTRAINT public orders orders_pkey"]
    assert kinds(p.post) == [
        "INDEX public accounts_email_lower", "INDEX public orders_account",
        "TRIGGER public orders t", "FK CONSTRAINT public orders orders_account_id_fkey"]
    assert p.left_out == ()


def test_a_table_alone_leaves_out_what_needs_a_table_outside_the_spec() -> None:
    p = plan(parse_toc(TOC), [ORDERS], PKS)
    assert "TABLE public accounts" not in kinds(p.pre)
    assert "TYPE public mood" in kinds(p.pre)  # through the domain mood_d
    assert "FUNCTION public default_code()" not in kinds(p.pre)  # accounts' only
    assert p.left_out == ("FK CONSTRAINT public orders orders_account_id_fkey (needs TABLE "
                          "public accounts, which the spec does not migrate)",)
    assert kinds(p.post) == ["INDEX public orders_account", "TRIGGER public orders t"]


def test_the_database_and_its_settings_are_never_restored() -> None:
    p = plan(parse_toc(TOC), [OTHER], PKS)
    assert kinds(p.pre) == ["TABLE public other", "CONSTRAINT public other other_pkey"]
    assert p.post == ()


def test_foreign_keys_are_made_not_valid_and_nothing_else() -> None:
    text = ("ALTER TABLE ONLY public.orders\n    ADD CONSTRAINT orders_pkey PRIMARY KEY (id);\n"
            "ALTER TABLE ONLY public.orders\n    ADD CONSTRAINT fk FOREIGN KEY (a) REFERENCES "
            "public.accounts(id) ON DELETE CASCADE;\n")
    out = not_valid_foreign_keys(text)
    assert "PRIMARY KEY (id);" in out
    assert "ON DELETE CASCADE NOT VALID;" in out
    assert not_valid_foreign_keys(out) == out


def test_a_renamed_table_is_renamed_wherever_it_stands_as_a_whole_name() -> None:
    text = ("CREATE TABLE public.orders (id int);\n"
            "ALTER SEQUENCE public.orders_id_seq OWNED BY public.orders.id;\n"
            "CREATE INDEX i ON public.orders USING btree (a);\n"
            "CREATE TABLE public.orders_archive (id int);\n"
            "COMMENT ON TABLE x.public.orders IS 'kept';\n")
    out = renamed(text, {"public.orders": '"shop"."orders2"'})
    assert out.splitlines() == [
        'CREATE TABLE "shop"."orders2" (id int);',
        'ALTER SEQUENCE public.orders_id_seq OWNED BY "shop"."orders2".id;',
        'CREATE INDEX i ON "shop"."orders2" USING btree (a);',
        "CREATE TABLE public.orders_archive (id int);",
        "COMMENT ON TABLE x.public.orders IS 'kept';"]


def test_a_source_newer_than_the_installed_pg_dump_is_refused_naming_both() -> None:
    """The real pg_dump the stack installs (15) against a source's reported version: one it
    can dump passes, a newer major is a ConfigError naming both versions and the fix."""
    import pytest

    from migwatch.errors import ConfigError
    from migwatch.targets.postgres.schema import check_client

    check_client(150018)
    check_client(140011)
    with pytest.raises(ConfigError) as refused:
        check_client(170002)
    assert "pg_dump 15 cannot dump a PostgreSQL 17 source" in str(refused.value)
    assert "postgresql-client-17" in str(refused.value)
