"""The PostgreSQL target engine (see `migwatch.targets.base` for what each method is for)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql

from migwatch import names, sequences
from migwatch.batches import SourceRows
from migwatch.config import TableSpec, postgres_conninfo, split_qualified
from migwatch.connectors import postgres as pg
from migwatch.errors import PermanentError, TargetNotEmpty
from migwatch.targets.base import Emptied, Target, TargetSession
from migwatch.targets.postgres.positions import PostgresSession, clear_positions
from migwatch.targets.postgres.writer import PostgresWriter, may_set_replica_role

if TYPE_CHECKING:
    from migwatch.load.ranges import KeyRange
    from migwatch.validation.model import SchemaCheck


class PostgresTarget(Target):
    kind = "postgres"
    label = "PostgreSQL"
    migrations_label = "SQL"
    migrations_kind = "sql"
    applies_keyless = True
    creates_tables = True
    runs_expectations = True
    loads = True

    def table_name(self, table: TableSpec) -> str:
        return table.target_name

    def session(self, application: str, timeout_ms: int | None = None) -> TargetSession:
        return PostgresSession(self.spec, application)

    def ping(self) -> None:
        with pg.connect_endpoint(self.endpoint, "target", autocommit=True) as conn, \
                pg.translated(f"target ({self.endpoint.redacted()})"):
            conn.execute("SELECT 1")

    def privilege_problems(self) -> list[str]:
        """Owner of what it writes: CREATE on the database for its `migwatch` schema (or that
        schema's ownership), and per table the ownership of an existing target table (rows are
        written and its columns follow the source's) or CREATE on the schema it goes in."""
        with pg.connect_endpoint(self.endpoint, "target", autocommit=True) as conn, \
                pg.translated(f"target ({self.endpoint.redacted()}): privileges"):
            row = conn.execute("SELECT current_user, rolsuper FROM pg_roles "
                               "WHERE rolname = current_user").fetchone()
            if row is None or row[1]:
                return []
            user, problems = row[0], []
            fires = self._what_would_fire()
            if fires and not may_set_replica_role(conn):
                problems.append(
                    f"target: user {user!r} may not set session_replication_role, and the "
                    f"tables have {', '.join(fires)} that replicated rows must not fire "
                    "(they arrive in per-table order): GRANT SET ON PARAMETER "
                    f"session_replication_role TO {user} (PostgreSQL 15+)")
            own_schema = conn.execute(
                "SELECT pg_has_role(current_user, nspowner, 'USAGE') FROM pg_namespace "
                "WHERE nspname = %s", [names.POSITION_SCHEMA]).fetchone()
            if own_schema is None and not _scalar(
                    conn, "SELECT has_database_privilege(current_database(), 'CREATE')"):
                problems.append(f"target: user {user!r} lacks CREATE on the database (it "
                                f"creates the {names.POSITION_SCHEMA!r} schema)")
            elif own_schema is not None and not own_schema[0]:
                problems.append(f"target: user {user!r} does not own schema "
                                f"{names.POSITION_SCHEMA!r}")
            for t in self.spec.tables:
                schema, name = t.target_parts
                owned = conn.execute(
                    "SELECT pg_has_role(current_user, c.relowner, 'USAGE') FROM pg_class c "
                    "JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE n.nspname = %s AND c.relname = %s", [schema, name]).fetchone()
                if owned is not None and not owned[0]:
                    problems.append(f"target table {t.target_name}: user {user!r} does not "
                                    "own it (it writes its rows and follows the source's "
                                    "schema changes)")
                elif owned is None and not _scalar(conn, sql.SQL(
                        "SELECT CASE WHEN EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = "
                        "{s}) THEN has_schema_privilege({s}, 'CREATE') ELSE "
                        "has_database_privilege(current_database(), 'CREATE') END").format(
                            s=sql.Literal(schema))):
                    problems.append(f"target table {t.target_name}: user {user!r} lacks CREATE "
                                    f"on schema {schema!r} to create it")
            return problems

    def sequence_values(self, wanted: Sequence[tuple[str, str]],
                        application: str = "migwatch",
                        ) -> dict[tuple[str, str], sequences.SequenceSide]:
        with pg.connect_endpoint(self.endpoint, "target", autocommit=True,
                                 application=application) as conn, \
                pg.translated(f"target ({self.endpoint.redacted()}): sequences"):
            return sequences.sides(conn, wanted)

    def set_sequences(self, values: Mapping[tuple[str, str], int],
                      application: str = "migwatch") -> list[str]:
        """`setval(seq, value, true)` for each, in one transaction: the next value follows it."""
        done: list[str] = []
        with pg.connect_endpoint(self.endpoint, "target", application=application) as conn, \
                pg.translated(f"target ({self.endpoint.redacted()}): set sequences"):
            for (schema_name, name), value in sorted(values.items()):
                conn.execute("SELECT setval(%s::regclass, %s, true)",
                             [sql.Identifier(schema_name, name).as_string(conn), value])
                done.append(f"{schema_name}.{name} = {value}")
            conn.commit()
        return done

    def load_table(self, migration_id: str, table: TableSpec, info: pg.TableInfo,
                   source: Any, empty_first: bool, key_range: KeyRange | None = None,
                   resumed: bool = False,
                   on_rows: Callable[[int, int], None] | None = None) -> int:
        from migwatch.targets.postgres.load import copy_into

        # a range is one transaction with its record: a cut-off one left nothing to replace
        return copy_into(self.endpoint, migration_id, table, info, source, empty_first,
                         key_range, on_rows)

    def load_plan(self, migration_id: str, table: str) -> list[KeyRange]:
        from migwatch.targets.postgres.load import read_plan

        return read_plan(self.endpoint, migration_id, table)

    def save_load_plan(self, migration_id: str, table: str, ranges: list[KeyRange]) -> None:
        from migwatch.targets.postgres.load import save_plan

        save_plan(self.endpoint, migration_id, table, ranges)

    def finish_load(self, migration_id: str, table: str, rows: int) -> None:
        from migwatch.targets.postgres.load import finish

        finish(self.endpoint, migration_id, table, rows)

    def invalid_indexes(self) -> list[str]:
        tables = [t.target_parts for t in self.spec.tables]
        with pg.connect_endpoint(self.endpoint, "target", autocommit=True) as conn, \
                pg.translated(f"target ({self.endpoint.redacted()}): indexes"):
            rows = conn.execute(
                "SELECT n.nspname, c.relname, i.relname FROM pg_index x "
                "JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class c ON c.oid = x.indrelid "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "JOIN unnest(%s::text[], %s::text[]) w(s, t) ON w.s = n.nspname "
                "AND w.t = c.relname WHERE NOT x.indisvalid ORDER BY 1, 2, 3",
                [[t[0] for t in tables], [t[1] for t in tables]]).fetchall()
        return [f"{s_}.{t}: {i}" for s_, t, i in rows]

    def _what_would_fire(self) -> list[str]:
        """The source tables' foreign keys and triggers, as the target will have them."""
        with pg.connect_endpoint(self.spec.source, "source", autocommit=True) as src, \
                pg.translated("source: foreign keys and triggers"):
            oids = []
            for t in self.spec.tables:
                row = src.execute("SELECT to_regclass(%s)::oid", [
                    sql.Identifier(t.schema_name, t.name).as_string(src)]).fetchone()
                if row and row[0]:
                    oids.append(int(row[0]))
            fks = src.execute("SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND "
                              "conrelid = ANY(%s) AND confrelid = ANY(%s)",
                              [oids, oids]).fetchone()
            triggers = src.execute("SELECT count(*) FROM pg_trigger WHERE NOT tgisinternal "
                                   "AND tgrelid = ANY(%s)", [oids]).fetchone()
        out = []
        if fks and fks[0]:
            out.append(f"{fks[0]} foreign key(s)")
        if triggers and triggers[0]:
            out.append(f"{triggers[0]} trigger(s)")
        return out

    def make_fresh(self, migration_id: str, reset: bool) -> Emptied:
        with pg.connect_endpoint(self.endpoint, "target") as conn, \
                pg.translated("target: check target tables"):
            present = [(t.target_name, sql.Identifier(*t.target_parts))
                       for t in self.spec.tables if pg.table_exists(conn, *t.target_parts)]
            full = [name for name, ident in present if (conn.execute(sql.SQL(
                "SELECT EXISTS (SELECT 1 FROM {})").format(ident)).fetchone() or (False,))[0]]
            if full and not reset:
                raise TargetNotEmpty(migration_id, full)
            if reset and present:  # one statement: foreign keys between them are no obstacle
                conn.execute(sql.SQL("TRUNCATE {}").format(
                    sql.SQL(", ").join(ident for _, ident in present)))
            removed = clear_positions(conn, migration_id)
            conn.commit()
        return Emptied(tuple(full), tuple(name for name, _ in present) if reset else (),
                       removed)

    def forget_columns(self, table: TableSpec, columns: Sequence[str]) -> list[str]:
        """`ALTER TABLE … DROP COLUMN` of those the table has, in one transaction (a view or
        a constraint of the user's that depends on one refuses it, naming it)."""
        with pg.connect_endpoint(self.endpoint, "target") as conn, \
                pg.translated(f"target: remove columns of {table.target_name}"):
            info = pg.describe_table(conn, *table.target_parts)
            held = [c for c in columns if info is not None and
                    any(col.name == c for col in info.columns)]
            for c in held:
                conn.execute(sql.SQL("ALTER TABLE {} DROP COLUMN {}").format(
                    sql.Identifier(*table.target_parts), sql.Identifier(c)))
            conn.commit()
        return held

    def prepare_schema(self, tables: Sequence[tuple[TableSpec, pg.TableInfo]],
                       heartbeat: tuple[str, str]) -> tuple[list[str], list[str]]:
        """The missing tables and everything they need, restored from the source's own
        `pg_dump` (`schema.py`: its pre-data closure and primary keys), in one transaction;
        the heartbeat table beside them."""
        created: list[str] = []
        present: list[str] = []
        beat_schema, beat_table = heartbeat
        with pg.connect_endpoint(self.endpoint, "target") as tgt, \
                pg.translated("target: create tables"):
            missing = []
            for table, _ in tables:
                schema, name = split_qualified(table.target_name)
                if pg.table_exists(tgt, schema, name):
                    present.append(table.target_name)
                else:
                    missing.append(table)
            if missing:
                self._restore(tgt, missing, post=False)
                created += [t.target_name for t in missing]
            beat = f"{beat_schema}.{beat_table}"
            if beat not in created + present:
                if pg.table_exists(tgt, beat_schema, beat_table):
                    present.append(beat)
                else:
                    for stmt in pg.heartbeat_table_sql(beat_schema, beat_table):
                        tgt.execute(stmt)
                    created.append(beat)
            tgt.commit()
        return created, present

    def finish_schema(self, progress: Callable[[int, int, str], None] | None = None,
                      ) -> dict[str, Any]:
        """After the load: what the tables' dump holds for after the data that the target
        does not have yet — secondary and unique indexes first, `snapshot.index_workers` at a
        time, each on its own connection and in its own transaction (a rerun skips those
        made); then unique constraints, foreign keys (`NOT VALID`) and triggers in the dump's
        order in one transaction — then ANALYZE of every table (statistics are not dumped).
        `progress(done, total, object)` after each; each object's seconds are returned."""
        from migwatch.targets.postgres import schema

        seconds: dict[str, float] = {}
        with pg.connect_endpoint(self.endpoint, "target") as tgt, \
                pg.translated("target: indexes, constraints, triggers"):
            text, left_out = self._script(tgt, list(self.spec.tables), post=True)
            tgt.commit()  # the schemas, for the index builders' connections
            objects = schema.pieces(text)
            preamble = [p for p in objects if p[0] == "preamble"]
            indexes = [p for p in objects if p[0].startswith("INDEX ")]
            rest = [p for p in objects if p not in preamble and p not in indexes]
            total, done = len(indexes) + len(rest), [0]

            def one_done(what: str) -> None:
                done[0] += 1
                if progress is not None:
                    progress(done[0], total, what)

            built = self._build_indexes(preamble, indexes, seconds, one_done)
            built += schema.run_pieces(tgt, preamble + rest, seconds, one_done)
            tgt.commit()
            tgt.autocommit = True
            tgt.execute("RESET ALL")
            for t in self.spec.tables:
                started = time.monotonic()
                tgt.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(*t.target_parts)))
                seconds[f"ANALYZE {t.target_name}"] = round(time.monotonic() - started, 3)
        return {"built": built, "left_out": left_out, "seconds": seconds,
                "analyzed": [t.target_name for t in self.spec.tables],
                "roles_missing": self._roles_missing()}

    def _roles_missing(self) -> list[str]:
        """Roles the source's tables are owned by or grant to that the target lacks, each with
        what it had (ownership and grants are not restored: `--no-owner --no-acl`)."""
        from migwatch.targets.postgres import schema

        with pg.connect_endpoint(self.spec.source, "source", autocommit=True) as src, \
                pg.connect_endpoint(self.endpoint, "target", autocommit=True) as tgt, \
                pg.translated("roles of the source's tables"):
            oids = schema.table_oids(src, self.spec.tables).values()
            granted = schema.granted_roles(src, list(oids))
            present = {r[0] for r in tgt.execute(
                "SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)", [list(granted)])}
        return [f"role {role} does not exist on the target (on the source: "
                f"{', '.join(what)}); ownership and grants are not restored — make them on "
                "the target or in a versioned migration"
                for role, what in granted.items() if role not in present and role != "PUBLIC"]

    def _build_indexes(self, preamble: list[tuple[str, str]], indexes: list[tuple[str, str]],
                       seconds: dict[str, float],
                       on_done: Callable[[str], None]) -> list[str]:
        """Each index in its own transaction and connection, `snapshot.index_workers` at a
        time (CREATE INDEX takes a SHARE lock: builds on one table do not wait for each
        other); `on_done` is called from this thread. The first failure, naming its index,
        stops the others from starting."""
        from migwatch.targets.postgres import schema

        def build(item: tuple[str, str]) -> dict[str, float]:
            mine: dict[str, float] = {}
            with pg.connect_endpoint(self.endpoint, "target", autocommit=True) as conn, \
                    pg.translated("target: build indexes"):
                schema.run_pieces(conn, [*preamble, item], mine)
            return mine

        made: list[str] = []
        workers = min(self.spec.snapshot.index_workers, len(indexes)) or 1
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mw-index") as pool:
            futures = {pool.submit(build, item): item[0] for item in indexes}
            try:
                for f in as_completed(futures):
                    seconds.update(f.result())
                    made.append(futures[f])
                    on_done(futures[f])
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise
        return [what for what, _ in indexes if what in made]

    def _script(self, tgt: Any, tables: Sequence[TableSpec],
                post: bool) -> tuple[str, list[str]]:
        """The pre-data (or post-data) closure of `tables` from a fresh dump of the source as
        SQL, without what the target has already, renamed tables named as on the target; the
        schemas it needs are made (in `tgt`'s transaction). Returns (SQL, left out)."""
        from migwatch.targets.postgres import schema

        with pg.connect_endpoint(self.spec.source, "source", autocommit=True) as src, \
                pg.translated("source: describe the schema"), schema.workdir() as tmp:
            schema.check_client(src.info.server_version)
            dump_file = schema.dump(self.spec.source, Path(tmp), schema.unreadable(src))
            oids = schema.with_partitions(src, schema.table_oids(src, tables).values())
            entries = schema.toc(dump_file)
            planned = schema.plan(entries, oids, schema.key_oids(src, oids))
            chosen = [e for e in (planned.post if post else planned.pre)
                      if not schema.exists_on_target(src, tgt, e, self.spec.tables)]
            # schemas: made here if missing (the dump's CREATE SCHEMA has no IF NOT EXISTS),
            # those of the renamed tables' targets too
            schemas = {t.target_parts[0] for t in tables} | {
                schema.schema_name(src, e.oid) for e in chosen if e.desc == "SCHEMA"}
            chosen = [e for e in chosen if e.desc != "SCHEMA"]
            names = schema.moved_names(src, tgt, self.spec.tables)
            text = schema.script(dump_file, chosen, Path(tmp))
        if post:
            text = schema.not_valid_foreign_keys(text)
        for name in sorted(schemas):
            tgt.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(name)))
        # a table the spec renames gets its target name in every statement that names it
        return schema.renamed(text, names), list(planned.left_out)

    def _restore(self, tgt: Any, tables: Sequence[TableSpec],
                 post: bool) -> tuple[list[str], list[str]]:
        """Restore the pre-data (or post-data) closure of `tables` in `tgt`'s transaction;
        returns (objects made, left out)."""
        from migwatch.targets.postgres import schema

        text, left_out = self._script(tgt, tables, post)
        return schema.run_script(tgt, text), left_out

    def check_schema(self, declared: Mapping[str, Iterable[str]]) -> SchemaCheck:
        from migwatch.validation import pg_schema

        return pg_schema.check(self.spec, declared)

    def validate_foreign_keys(self) -> tuple[list[str], list[str]]:
        """`ALTER TABLE … VALIDATE CONSTRAINT` for each foreign key of the target tables left
        NOT VALID whose source twin is valid (it takes no lock that stops the applier; a lock
        it waits for over 10 s leaves it for the next run)."""
        done: list[str] = []
        failed: list[str] = []
        tables = [t.target_parts for t in self.spec.tables]
        with pg.connect_endpoint(self.endpoint, "target", autocommit=True,
                                 application=names.VALIDATE_APPLICATION) as tgt, \
                pg.translated("target: validate foreign keys"):
            tgt.execute("SET lock_timeout = '10s'")
            rows = tgt.execute(
                "SELECT n.nspname, c.relname, con.conname FROM pg_constraint con "
                "JOIN pg_class c ON c.oid = con.conrelid JOIN pg_namespace n "
                "ON n.oid = c.relnamespace JOIN unnest(%s::text[], %s::text[]) w(s, t) "
                "ON w.s = n.nspname AND w.t = c.relname WHERE con.contype = 'f' "
                "AND NOT con.convalidated ORDER BY 1, 2, 3",
                [[t[0] for t in tables], [t[1] for t in tables]]).fetchall()
            for schema_name, table, name in rows:
                what = f"{schema_name}.{table}.{name}"
                try:
                    tgt.execute(sql.SQL("ALTER TABLE {} VALIDATE CONSTRAINT {}").format(
                        sql.Identifier(schema_name, table), sql.Identifier(name)))
                    done.append(what)
                except psycopg.Error as exc:
                    failed.append(f"{what}: {pg.translate(exc, 'target')}")
        return done, failed

    def writer(self, migration_id: str, infos: dict[str, pg.TableInfo],
               tables: list[TableSpec], keyless: set[str],
               source_rows: SourceRows | None) -> PostgresWriter:
        return PostgresWriter(self.spec, migration_id, infos, tables, keyless,
                              source_rows=source_rows)

    def open_validation(self, table: TableSpec, source: Any, info: pg.TableInfo,
                        result: Any, closers: list[Callable[[], None]],
                        on_rows: Callable[[int], None] | None, keep_limit: int,
                        ) -> tuple[Any, Any]:
        """Both tables hashed in their own database (`hash_record_extended`), on the columns
        both have; the column set and type differences go into the result."""
        from migwatch.validation.kinds import MICROSECONDS, column_kind
        from migwatch.validation.postgres import (
            PostgresDialect,
            PostgresSide,
            collations,
            describe,
            open_connection,
        )

        tconn = open_connection(
            postgres_conninfo(self.endpoint, "target", names.VALIDATE_APPLICATION), "target",
            self.spec.validation.statement_timeout_seconds)
        closers.append(tconn.close)
        tinfo = describe(tconn, table.target_name, "target")
        columns = [c.name for c in info.columns]
        pk = list(info.primary_key)
        tnames = {c.name for c in tinfo.columns}
        missing = [c for c in columns if c not in tnames]
        extra = [c.name for c in tinfo.columns if c.name not in set(columns)]
        if missing:
            result.schema_differences.append(f"column set: missing on target {missing}")
        if extra:
            result.schema_differences.append(f"column set: extra on target {extra}")
        if any(k in missing for k in pk):
            raise PermanentError(f"target {table.target_name}: primary-key column missing")
        common = [c for c in columns if c in tnames]
        for c in common:
            st, tt = info.column(c).type, tinfo.column(c).type
            if column_kind(st) != column_kind(tt):
                result.warnings.append(f"column {c}: type {st} on source, {tt} on target")
        result.method = "hash_record_extended over primary-key ranges, in both databases"
        result.precision = MICROSECONDS
        return (PostgresSide(source, PostgresDialect(info, common, pk,
                                                     *collations(source, info, "source")),
                             "source"),
                PostgresSide(tconn, PostgresDialect(tinfo, common, pk,
                                                    *collations(tconn, tinfo, "target")),
                             "target"))

    def migrations_backend(self) -> Any:
        from migwatch.targets.postgres.migrations import PostgresBackend

        return PostgresBackend.from_endpoint(self.endpoint)


def _scalar(conn: Any, query: Any) -> Any:
    row = conn.execute(query).fetchone()
    return row[0] if row else None
