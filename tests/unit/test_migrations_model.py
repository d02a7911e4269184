"""Versions, discovery, checksums and plans of versioned migrations — no server needed."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from migwatch.errors import ConfigError, MigrationChanged, MigrationFailed, PermanentError
from migwatch.migrations import (
    HistoryRow,
    State,
    Version,
    checksum,
    discover,
    plan_down,
    plan_repair,
    plan_up,
    status,
)


def write(folder: Path, name: str, text: str = "SELECT 1;") -> Path:
    path = folder / name
    path.write_text(text)
    return path


def applied(mig, status_: str = "success", in_tx: bool = True,
            checksum_: str | None = None) -> HistoryRow:
    return HistoryRow(str(mig.version), mig.description, mig.script,
                      checksum_ or mig.checksum, datetime.now(UTC), 5, status_, "me@here",
                      in_tx)


@pytest.mark.parametrize("text,parts", [("1", (1,)), ("1.10", (1, 10)), ("1_10", (1, 10)),
                                        ("V2.0.3", (2, 0, 3)), ("007", (7,))])
def test_version_parses_numeric_parts(text: str, parts: tuple[int, ...]) -> None:
    assert Version.parse(text).parts == parts


@pytest.mark.parametrize("bad", ["", "1.", "1..2", "a1", "1-2", "1.x"])
def test_version_rejects_non_numeric(bad: str) -> None:
    with pytest.raises(ConfigError):
        Version.parse(bad)


def test_versions_compare_as_numbers_not_text() -> None:
    texts = ["1.10", "1.9", "2", "1", "1.2", "1.9.1", "10"]
    ordered = [str(v) for v in sorted(Version.parse(t) for t in texts)]
    assert ordered == ["1", "1.2", "1.9", "1.9.1", "1.10", "2", "10"]
    assert Version.parse("1") == Version.parse("1.0")
    assert Version.parse("1_10") == Version.parse("1.10")
    assert Version.parse("1.10") > Version.parse("1.9")


def test_checksum_is_sha256_of_the_bytes(tmp_path: Path) -> None:
    path = write(tmp_path, "V1__a.sql", "CREATE TABLE t (id int);\n")
    assert checksum(path) == hashlib.sha256(b"CREATE TABLE t (id int);\n").hexdigest()
    before = checksum(path)
    path.write_text("CREATE TABLE t (id int); \n")  # one space more
    assert checksum(path) != before


def test_discover_orders_by_version_and_pairs_undo_scripts(tmp_path: Path) -> None:
    for name in ["V1.10__ten.sql", "V1.9__nine.sql", "V2__add_index.sql", "V1__init.sql",
                 "U2__add_index.sql", "README.md", "notes.txt"]:
        write(tmp_path, name)
    found = discover(tmp_path, "sql")
    assert [str(m.version) for m in found] == ["1", "1.9", "1.10", "2"]
    assert found[-1].description == "add index"
    assert found[-1].undo_path == tmp_path / "U2__add_index.sql"
    assert found[0].undo_path is None


def test_discover_mongo_modules_ignores_helpers(tmp_path: Path) -> None:
    write(tmp_path, "V1__backfill.py", "def up(db, s, p): pass\ndef down(db, s, p): pass\n")
    write(tmp_path, "__init__.py", "")
    write(tmp_path, "V2__other.sql")  # not a MongoDB script
    assert [m.script for m in discover(tmp_path, "mongodb")] == ["V1__backfill.py"]


@pytest.mark.parametrize("names,needle", [
    (["V1__a.sql", "V1.0__b.sql"], "appears twice"),
    (["V1_a.sql"], "looks like a migration"),
    (["V1__a.sql", "U2__b.sql"], "has no V script"),
])
def test_discover_refuses_ambiguous_folders(tmp_path: Path, names: list[str],
                                            needle: str) -> None:
    for name in names:
        write(tmp_path, name)
    with pytest.raises(ConfigError, match=needle) as err:
        discover(tmp_path, "sql")
    assert err.value.field == "migrations.folder"


def test_discover_refuses_undo_files_for_mongodb(tmp_path: Path) -> None:
    write(tmp_path, "U1__a.py")
    write(tmp_path, "V1__a.py")
    with pytest.raises(ConfigError, match="define"):
        discover(tmp_path, "mongodb")


def test_discover_names_a_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        discover(tmp_path / "nope", "sql")


@pytest.fixture
def four(tmp_path: Path):
    for name in ["V1__a.sql", "V1.9__b.sql", "V1.10__c.sql", "V2__d.sql", "U2__d.sql"]:
        write(tmp_path, name, f"-- {name}\n")
    return discover(tmp_path, "sql")


def test_plan_up_runs_pending_in_order_and_stops_at_target(four) -> None:
    history = [applied(four[0])]
    assert [s.version for s in plan_up(four, history)] == ["1.9", "1.10", "2"]
    assert [s.version for s in plan_up(four, history, Version.parse("1.10"))] == ["1.9", "1.10"]
    assert plan_up(four, [applied(m) for m in four]) == []


def test_plan_up_refuses_a_changed_script_naming_it(four) -> None:
    history = [applied(four[0]), applied(four[1], checksum_="0" * 64)]
    with pytest.raises(MigrationChanged) as err:
        plan_up(four, history)
    assert err.value.changed == [("1.9", str(four[1].path))]
    assert "V1.9__b.sql" in str(err.value)


def test_plan_up_retries_a_rolled_back_failure_but_not_a_partial_one(four) -> None:
    rolled_back = [applied(four[0]), applied(four[1], "failed", in_tx=True)]
    assert [s.version for s in plan_up(four, rolled_back)] == ["1.9", "1.10", "2"]
    partial = [applied(four[0]), applied(four[1], "failed", in_tx=False)]
    with pytest.raises(MigrationFailed, match=r"migration 1\.9 \(V1\.9__b\.sql\).*repair") as err:
        plan_up(four, partial)
    assert err.value.version == "1.9"  # a failure like any other (CLI exit 1), not bad input


def test_plan_up_refuses_out_of_order(four) -> None:
    with pytest.raises(PermanentError, match="out-of-order"):
        plan_up(four, [applied(four[0]), applied(four[2])])


def test_plan_down_needs_undo_scripts_for_sql(four) -> None:
    everything = [applied(m) for m in four]
    assert [s.version for s in plan_down(four, everything, "sql")] == ["2"]
    with pytest.raises(PermanentError, match="1.10.*no undo script"):
        plan_down(four, everything, "sql", Version.parse("1"))
    # the same folder as MongoDB modules would need no undo files
    assert [s.version for s in plan_down(four, everything, "mongodb", Version.parse("1"))] == \
        ["2", "1.10", "1.9"]
    assert plan_down(four, [], "sql") == []


def test_status_names_every_state(four) -> None:
    history = [applied(four[0]), applied(four[1], checksum_="0" * 64),
               applied(four[2], "failed"),
               HistoryRow("0.5", "gone", "V0.5__gone.sql", "x", None, 1, "success", "me", True)]
    rows = {r.version: r.state for r in status(four, history)}
    assert rows == {"0.5": State.MISSING, "1": State.APPLIED, "1.9": State.CHANGED,
                    "1.10": State.FAILED, "2": State.PENDING}
    assert [r.version for r in status(four, history)] == ["0.5", "1", "1.9", "1.10", "2"]


def test_plan_repair_accepts_checksums_and_clears_failures(four) -> None:
    history = [applied(four[0]), applied(four[1], checksum_="0" * 64),
               applied(four[2], "failed")]
    plan = plan_repair(four, history)
    assert plan.to_dict() == {"checksums_accepted": ["1.9"], "failed_cleared": ["1.10"]}


def test_importing_the_core_does_not_import_prefect() -> None:
    code = ("import sys, migwatch.migrations, migwatch.targets.postgres.migrations, "
            "migwatch.targets.mongo.migrations; print('prefect' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("hello,expected", [
    # a replica set member and a mongos with sessions: transactions
    ({"isWritablePrimary": True, "setName": "rs0", "logicalSessionTimeoutMinutes": 30}, True),
    ({"isWritablePrimary": True, "msg": "isdbgrid", "logicalSessionTimeoutMinutes": 30}, True),
    # a standalone mongod: sessions but no transactions
    ({"isWritablePrimary": True, "logicalSessionTimeoutMinutes": 30}, False),
    # a replica set without sessions (very old or misconfigured)
    ({"isWritablePrimary": True, "setName": "rs0"}, False),
    # FerretDB 1.x on SQLite: neither
    ({"isWritablePrimary": True, "maxWireVersion": 21}, False),
])
def test_transactions_are_used_only_where_hello_offers_them(hello: dict, expected: bool) -> None:
    from migwatch.targets.mongo.migrations import transactions_in

    assert transactions_in(hello) is expected
