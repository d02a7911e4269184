"""Helpers for the validation tests: copy tables from source to target, fill MongoDB."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from migwatch.connectors.postgres import SOURCE_SESSION, create_table_sql, describe_table
from migwatch.targets.mongo.values import DocumentForm, supports_decimal128


def copy_tables(source_dsn: str, target_dsn: str, tables: list[str]) -> None:
    """Create each `schema.table` on the target from the source's definition and COPY its rows."""
    with psycopg.connect(source_dsn) as src, psycopg.connect(target_dsn) as tgt:
        for qualified in tables:
            schema, name = qualified.split(".")
            info = describe_table(src, schema, name)
            assert info is not None, qualified
            tgt.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
            tgt.execute(create_table_sql(info, schema, name))
            ident = sql.Identifier(schema, name)
            with src.cursor().copy(sql.SQL("COPY {} TO STDOUT (FORMAT binary)").format(ident)) \
                    as out, tgt.cursor().copy(
                        sql.SQL("COPY {} FROM STDIN (FORMAT binary)").format(ident)) as into:
                for chunk in out:
                    into.write(chunk)
        tgt.commit()


def fill_mongo(source_dsn: str, mongo_uri: str, database: str, tables: list[str],
               json_string_columns: dict[str, tuple[str, ...]] | None = None) -> dict[str, int]:
    """Write each source table into a collection, mapped exactly as the applier maps rows."""
    from pymongo import MongoClient

    client: Any = MongoClient(mongo_uri)
    decimal128 = supports_decimal128(client.admin.command("buildInfo"))
    counts = {}
    try:
        with psycopg.connect(source_dsn) as src:
            for qualified in tables:
                schema, name = qualified.split(".")
                info = describe_table(src, schema, name)
                assert info is not None
                form = DocumentForm(info, decimal128=decimal128, json_string_columns=(
                    json_string_columns or {}).get(qualified, ()))
                src.execute(SOURCE_SESSION)
                cur = src.cursor(row_factory=psycopg.rows.dict_row)
                rows = cur.execute(sql.SQL("SELECT {} FROM {}").format(
                    form.select_list(), sql.Identifier(schema, name))).fetchall()
                docs = [form.document(dict(zip(form.columns, r.values(), strict=True)))
                        for r in rows]
                if docs:
                    client[database][name].insert_many(docs)
                counts[qualified] = len(docs)
    finally:
        client.close()
    return counts
