"""What every target engine provides: the one interface the stages talk to.

migwatch decides which engine a migration's target is once (`migwatch.targets.engine_for`) and
from then on asks the engine — never branches on the target's kind — for:

    session(application)      a connection that reads and clears the applier's stored positions
                              and offsets, and reads the heartbeat row (monitor, revalidation)
    ping()                    whether the target answers (pre-flight)
    table_problems(info, t)   what the engine cannot hold of a source table (pre-flight)
    make_fresh(mid, reset)    refuse (or empty) target tables holding rows before a fresh load
    forget_columns(t, cols)   remove columns from a target table (a stopped change accepted)
    prepare_schema(infos)     create what the tables need before the load (DDL, or nothing)
    writer(...)               the applier's writer: applies a Batch with its position and offsets
    open_validation(...)      both sides of one table for the comparison
    migrations_backend()      the versioned-migrations backend
    sequence_values(names)    the target's sequences of those names (None: it keeps none)
    set_sequences(values)     the cutover sets them from the source's ([] when none kept)
    invalid_indexes()         indexes left INVALID on the target tables (cutover refuses)
    load_table(...)           the initial load straight from the source (`loads`), with
                              load_plan/save_load_plan/finish_load for key ranges

To add an engine: a package beside `postgres/` and `mongo/` with a `Target` subclass that
implements every abstract method here, its writer (the `Writer` protocol) and its session, and
one line in `migwatch.targets.ENGINES`; the spec's `Endpoint.kind` names it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from kafka import TopicPartition
from psycopg import sql

from migwatch.batches import Batch, SourceRows
from migwatch.config import MigrationSpec, TableSpec
from migwatch.connectors import postgres as pg
from migwatch.schema_changes import ColumnChange, SchemaChange

if TYPE_CHECKING:
    from migwatch.load.ranges import KeyRange
    from migwatch.sequences import SequenceSide
    from migwatch.validation.model import SchemaCheck


@dataclass(frozen=True)
class Position:
    """One position row: how far the applier got for a table (or '*', every table)."""

    table_name: str
    source_ts_ms: int | None = None
    lsn: int | None = None
    events: int = 0
    snapshot_rows: int = 0
    snapshot_done: bool = False
    dlq_events: int = 0
    #: when the applier last wrote the row (epoch seconds, the target's clock)
    updated_at: float | None = None


@dataclass(frozen=True)
class Emptied:
    """What `Target.make_fresh` found and did: tables holding rows, tables emptied, position
    rows removed."""

    non_empty: tuple[str, ...] = ()
    emptied: tuple[str, ...] = ()
    positions: int = 0


class Writer(Protocol):
    """The applier's writer for one engine (one connection, one batch at a time)."""

    @property
    def broken(self) -> bool:
        """The connection is gone: a failure seen on it says nothing about the data."""
        ...

    def stored_offsets(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        """The next offsets the target has applied, of `partitions` (absent: none yet)."""
        ...

    def apply(self, batch: Batch) -> None:
        """Apply a batch with its position and offsets; StaleBatch when it starts at or below
        what the target applied; PermanentError when a change in it cannot land."""
        ...

    def apply_one(self, batch: Batch) -> None:
        """Apply a batch of one change (after a batch failed: one by one)."""
        ...

    def abandon(self) -> None:
        """Forget a batch that failed half way (before applying its changes one by one)."""
        ...

    def target_row(self, table: str, op: str, key: tuple[Any, ...], row: dict[str, Any],
                   old_key: tuple[Any, ...] | None) -> dict[str, Any]:
        """A decoded row as this engine stores it (raise UnsupportedValue naming the column
        when it cannot): called as each event is decoded, so a value the target cannot hold
        dead-letters its own event."""
        ...

    def source_select(self, table: str, columns: Sequence[str]) -> sql.Composable:
        """The select list (table alias `t`) reading the source's current values of `columns`
        in the form this writer takes them."""
        ...

    def evolve(self, table: str, info: pg.TableInfo,
               fills: Mapping[str, str | None]) -> list[ColumnChange]:
        """Follow the source's new definition `info` of `table` where it is additive
        (`schema_changes`); TableStopped where it is not. `fills`: per added column, the text
        of the value the source gave its existing rows (None: no value known — NULL, no
        backfill from the source's current values). Returns the changes followed."""
        ...

    def record_schema_change(self, record: SchemaChange) -> None:
        """Append `record` to the migration's schema-change history on the target."""
        ...

    def close(self) -> None: ...


class TargetSession(ABC):
    """One connection to the target for reading (and clearing) what the applier stored."""

    @abstractmethod
    def positions(self, migration_id: str, tables: Sequence[str] | None = None,
                  ) -> dict[str, Position]:
        """The migration's position rows (only `tables` when given) by table; {} before any."""

    @abstractmethod
    def stored_offsets(self, migration_id: str, topic: str) -> dict[int, int]:
        """The next offset applied per partition of `topic`."""

    @abstractmethod
    def heartbeat_at(self, migration_id: str, beat: TableSpec) -> float | None:
        """`beat_at` (epoch seconds) of the migration's heartbeat row, if there."""

    @abstractmethod
    def clear_positions(self, migration_id: str) -> int:
        """Remove the migration's stored positions, offsets and schema-change history; how
        many were removed."""

    @abstractmethod
    def clear_table_positions(self, migration_id: str, tables: Sequence[str]) -> int:
        """Remove the position rows of `tables` (a table added again starts its load afresh);
        how many were removed."""

    @abstractmethod
    def schema_changes(self, migration_id: str) -> list[SchemaChange]:
        """The migration's schema-change history, oldest first."""

    @abstractmethod
    def record_schema_change(self, migration_id: str, record: SchemaChange) -> None:
        """Append `record` to the history (`resume-table` records what the user accepted)."""

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> TargetSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Target(ABC):
    """A migration's target engine (see the module doc)."""

    kind: ClassVar[str]            # the spec's `target.kind`
    label: ClassVar[str]           # how people name it: "PostgreSQL", "MongoDB"
    migrations_kind: ClassVar[str]  # the versioned migrations it runs: "sql", "mongodb"
    migrations_label: ClassVar[str]  # and how people name them: "SQL", "MongoDB"
    #: tables without a key can be applied (in source order); else they are refused
    applies_keyless: ClassVar[bool]
    #: the user's Great Expectations suites run against it
    runs_expectations: ClassVar[bool]
    #: `prepare_schema` creates tables from the source's definitions (read only then)
    creates_tables: ClassVar[bool]
    #: what validation says of its comparison, once per result (None: nothing to say)
    validation_note: ClassVar[str | None] = None
    #: `load_table` loads a table straight from the source (`snapshot.method: copy`); else
    #: the initial load is Debezium's snapshot
    loads: ClassVar[bool] = False

    def __init__(self, spec: MigrationSpec) -> None:
        self.spec = spec
        self.endpoint = spec.target

    @abstractmethod
    def table_name(self, table: TableSpec) -> str:
        """The name the table has on this target (a qualified table, a collection)."""

    @abstractmethod
    def session(self, application: str, timeout_ms: int | None = None) -> TargetSession:
        """A connection for reading positions, offsets and the heartbeat."""

    @abstractmethod
    def ping(self) -> None:
        """Raise a MigwatchError when the target does not answer."""

    def table_problems(self, info: pg.TableInfo, table: TableSpec) -> list[str]:
        """What this engine cannot hold of a source table, each naming what and why."""
        return []

    def finish_schema(self, progress: Callable[[int, int, str], None] | None = None,
                      ) -> dict[str, Any]:
        """After the initial load: what the target builds once the data is in (indexes,
        constraints, statistics), calling `progress(done, total, object)` after each; the
        default builds nothing."""
        return {"built": [], "left_out": [], "analyzed": []}

    def privilege_problems(self) -> list[str]:
        """The privileges the migration needs on this target that its user lacks, each naming
        the privilege and the object (docs/privileges.md)."""
        return []

    def check_schema(self, declared: Mapping[str, Iterable[str]]) -> SchemaCheck:
        """The validate stage's schema check: the target's definitions of the spec's tables and
        what they depend on, against the source's, by code that shares nothing with what
        created them; `declared`: per migration, the objects it differs on deliberately. The
        default: not applicable (an engine without table definitions)."""
        from migwatch.validation.model import NOT_APPLICABLE, SchemaCheck

        return SchemaCheck(status=NOT_APPLICABLE,
                           method=f"a {self.label} target keeps no table definitions")

    def validate_foreign_keys(self) -> tuple[list[str], list[str]]:
        """Validate the foreign keys created NOT VALID for the load, once the data is proven
        equal: (validated, could not be — each with why). The default has none."""
        return [], []

    def sequence_values(self, wanted: Sequence[tuple[str, str]],
                        application: str = "migwatch",
                        ) -> dict[tuple[str, str], SequenceSide] | None:
        """Each of the `wanted` sequences (schema, name) the target has, as it has it (one it
        lacks is absent); None when the engine keeps no sequences — the source's values then
        have nothing to be set on at cutover. The default keeps none."""
        return None

    def set_sequences(self, values: Mapping[tuple[str, str], int],
                      application: str = "migwatch") -> list[str]:
        """Set each target sequence (schema, name) so its next value follows the given one
        (the cutover); returns what was set, as `schema.name = value`. The default keeps no
        sequences and sets none."""
        return []

    def load_table(self, migration_id: str, table: TableSpec, info: pg.TableInfo,
                   source: Any, empty_first: bool, key_range: KeyRange | None = None,
                   resumed: bool = False,
                   on_rows: Callable[[int, int], None] | None = None) -> int:
        """Load `table` — or its `key_range` — from `source` (a source connection inside the
        load's transaction, its snapshot set) and record it where the snapshot follower reads
        it: the table loaded, or the range done in its plan (`empty_first`: empty the table
        first; `resumed`: a range a cut-off load may have begun). `on_rows(rows, bytes)` hears
        of the rows as they go. Returns the rows loaded. Only engines with `loads` implement
        it, with the three below."""
        raise NotImplementedError(f"a {self.label} target is not loaded straight from the "
                                  "source")

    def load_plan(self, migration_id: str, table: str) -> list[KeyRange]:
        """The key ranges stored for `table` by `save_load_plan` ([]: loaded whole)."""
        raise NotImplementedError(self.label)

    def save_load_plan(self, migration_id: str, table: str, ranges: list[KeyRange]) -> None:
        raise NotImplementedError(self.label)

    def finish_load(self, migration_id: str, table: str, rows: int) -> None:
        """Record a table loaded range by range as loaded (its snapshot rows, done)."""
        raise NotImplementedError(self.label)

    def invalid_indexes(self) -> list[str]:
        """Indexes of the target tables left INVALID (a failed concurrent build): a cutover
        onto them would serve queries without them. The default has none."""
        return []

    @abstractmethod
    def make_fresh(self, migration_id: str, reset: bool) -> Emptied:
        """Before a fresh load: TargetNotEmpty naming the target tables that hold rows, unless
        `reset` (then they are emptied); the migration's stored positions go either way."""

    @abstractmethod
    def forget_columns(self, table: TableSpec, columns: Sequence[str]) -> list[str]:
        """Remove `columns` from the target's copy of `table` (those it holds; which, in
        order): what `migwatch resume-table --accept` does for a change the applier stopped
        at — the applier then follows the source's definition, filling a column the source
        still has from the source's current values."""

    @abstractmethod
    def prepare_schema(self, tables: Sequence[tuple[TableSpec, pg.TableInfo]],
                       heartbeat: tuple[str, str]) -> tuple[list[str], list[str]]:
        """Create what the tables (and the heartbeat table) need; (created, already present)."""

    @abstractmethod
    def writer(self, migration_id: str, infos: dict[str, pg.TableInfo],
               tables: list[TableSpec], keyless: set[str],
               source_rows: SourceRows | None) -> Writer:
        """The applier's writer."""

    @abstractmethod
    def open_validation(self, table: TableSpec, source: Any, info: pg.TableInfo,
                        result: Any, closers: list[Callable[[], None]],
                        on_rows: Callable[[int], None] | None, keep_limit: int,
                        ) -> tuple[Any, Any]:
        """(source side, target side) of one table for `validation.compare` (`source` is the
        open source connection, `info` its table; `result` the TableResult to describe)."""

    @abstractmethod
    def migrations_backend(self) -> Any:
        """The `migrations.Backend` of this target."""
