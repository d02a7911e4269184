"""MongoDB backend: Python modules `V<version>__<description>.py` with `up` and `down`.

Each module defines `up(db, session, progress)` and `down(db, session, progress)`: `db` is the
target database, `session` the transaction's session or None, and `progress(collection, count)`
counts the documents the step touched. History is the collection `migwatch_schema_history`
(`_id` = version), the lock a document in `migwatch_schema_lock`.

Transactions are feature-detected: a replica set or a sharded cluster with sessions runs each
step and its history document in one transaction; a server without them (FerretDB, a standalone
mongod) runs the step directly and records `in_transaction: false`, so a failure there may leave
part of the step applied — the failed row then blocks `up` until someone looks and runs `repair`.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

from pymongo import MongoClient, ReturnDocument
from pymongo import errors as mongoerr
from pymongo.database import Database

from migwatch.config import Endpoint
from migwatch.connectors import mongo
from migwatch.migrations._backend import LockAttempt, LockInfo, Progress, ScriptFailed
from migwatch.migrations._model import HistoryRow, Kind, RepairPlan, Step

HISTORY_COLLECTION = "migwatch_schema_history"
LOCK_COLLECTION = "migwatch_schema_lock"
LOCK_ID = "migrations"

def _translated(what: str) -> Any:
    """Errors of migrations (user code) keep the server's first line: it says what went wrong."""
    return mongo.translated(what, detail=True)


def supports_transactions(client: MongoClient) -> bool:
    """True on a replica set or mongos with sessions; FerretDB and standalones have none."""
    return transactions_in(client.admin.command("hello"))


def transactions_in(hello: dict[str, Any]) -> bool:
    """Whether a server's `hello` reply offers multi-document transactions: a replica set
    member (`setName`) or a mongos (`msg: isdbgrid`) that also has sessions."""
    clustered = "setName" in hello or hello.get("msg") == "isdbgrid"
    return clustered and hello.get("logicalSessionTimeoutMinutes") is not None


def load_module(path: Path, version: str) -> ModuleType:
    """Import a migration module from its file, without adding it to `sys.modules`."""
    name = f"migwatch_migration_v{version.replace('.', '_')}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path.name}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for fn in ("up", "down"):
        if not callable(getattr(module, fn, None)):
            raise AttributeError(f"{path.name} defines no {fn}(db, session, progress)")
    return module


def _row(doc: dict[str, Any]) -> HistoryRow:
    return HistoryRow(
        version=doc["_id"], description=doc.get("description", ""),
        script=doc.get("script", ""), checksum=doc.get("checksum", ""),
        applied_at=doc.get("applied_at"), duration_ms=int(doc.get("duration_ms", 0)),
        status=doc.get("status", "failed"), applied_by=doc.get("applied_by", ""),
        in_transaction=bool(doc.get("in_transaction", False)), error_type=doc.get("error_type"),
    )


def _doc(row: HistoryRow) -> dict[str, Any]:
    return {"_id": row.version, "description": row.description, "script": row.script,
            "checksum": row.checksum, "applied_at": row.applied_at,
            "duration_ms": row.duration_ms, "status": row.status, "applied_by": row.applied_by,
            "in_transaction": row.in_transaction, "error_type": row.error_type}


class MongoBackend:
    """Versioned migrations on one MongoDB database."""

    kind: Kind = "mongodb"
    counts_documents = True

    def __init__(self, client: MongoClient, database: str, where: str) -> None:
        self._client = client
        self.db: Database = client[database]
        self._where = where
        self._history = self.db[HISTORY_COLLECTION]
        self._lock = self.db[LOCK_COLLECTION]
        with _translated(f"target {where}: hello"):
            self.transactions = supports_transactions(client)

    @classmethod
    def from_endpoint(cls, endpoint: Endpoint) -> MongoBackend:
        client: MongoClient = mongo.client(endpoint, appname="migwatch-migrations",
                                           socket_ms=None)
        try:
            return cls(client, endpoint.database, endpoint.redacted())
        except BaseException:
            client.close()
            raise

    def describe(self) -> str:
        return self._where

    def close(self) -> None:
        self._client.close()

    # ------------------------------------------------------------------ history

    def history(self) -> list[HistoryRow]:
        with _translated(f"target {self._where}: read migration history"):
            return [_row(d) for d in self._history.find()]

    def ensure_storage(self) -> None:
        """Collections appear on first write; the lock's `_id` is already unique."""

    def record(self, row: HistoryRow) -> None:
        with _translated(f"target {self._where}: write migration history"):
            self._history.replace_one({"_id": row.version}, _doc(row), upsert=True)

    def repair(self, plan: RepairPlan) -> None:
        with _translated(f"target {self._where}: repair migration history"):
            for mig in plan.accept_checksums:
                self._history.update_one({"_id": str(mig.version)}, {"$set": {
                    "checksum": mig.checksum, "description": mig.description,
                    "script": mig.script}})
            for row in plan.clear_failed:
                self._history.delete_one({"_id": row.version, "status": "failed"})

    # ------------------------------------------------------------------ running a module

    def execute(self, step: Step, row_for: Callable[..., HistoryRow],
                progress: Progress) -> bool:
        version = step.version
        in_tx = self.transactions
        try:
            module = load_module(step.migration.path, version)
            fn = module.up if step.direction == "up" else module.down
        except Exception as exc:  # a broken module changed nothing
            raise ScriptFailed(type(exc).__name__, str(exc), transient=False,
                               in_transaction=False) from exc
        progress.begin(in_tx)
        try:
            if in_tx:
                with self._client.start_session() as session, session.start_transaction():
                    fn(self.db, session, progress)
                    self._finish(step, row_for(True), session)
            else:
                fn(self.db, None, progress)
                self._finish(step, row_for(False), None)
        except Exception as exc:
            progress.discard()
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise ScriptFailed(type(exc).__name__, first,
                               transient=mongo.is_transient(exc),
                               in_transaction=in_tx) from exc
        progress.commit()
        return in_tx

    def _finish(self, step: Step, row: HistoryRow, session: Any) -> None:
        if step.direction == "up":
            self._history.replace_one({"_id": row.version}, _doc(row), upsert=True,
                                      session=session)
        else:
            self._history.delete_one({"_id": row.version}, session=session)

    # ------------------------------------------------------------------ the lock
    # Expiry uses this machine's clock (UTC): runners on other machines need synchronised clocks.

    def lock_holder(self) -> LockInfo | None:
        with _translated(f"target {self._where}: read migrations lock"):
            doc = self._lock.find_one({"_id": LOCK_ID})
        return LockInfo(doc["owner"], doc.get("acquired_at"), doc.get("expires_at")) \
            if doc else None

    def try_lock(self, owner: str, ttl_seconds: float) -> LockAttempt:
        now = datetime.now(UTC)
        fields = {"owner": owner, "acquired_at": now,
                  "expires_at": now + timedelta(seconds=ttl_seconds)}
        with _translated(f"target {self._where}: take migrations lock"):
            try:
                self._lock.insert_one({"_id": LOCK_ID, **fields})
                return LockAttempt(True)
            except mongoerr.DuplicateKeyError:
                pass
            before = self._lock.find_one_and_update(
                {"_id": LOCK_ID, "$or": [{"owner": owner}, {"expires_at": {"$lt": now}}]},
                {"$set": fields}, return_document=ReturnDocument.BEFORE)
            if before is not None:
                previous = LockInfo(before["owner"], before.get("acquired_at"),
                                    before.get("expires_at"))
                return LockAttempt(True, previous=None if before["owner"] == owner
                                   else previous)
            holder = self.lock_holder()
            return LockAttempt(False, holder=holder)

    def renew_lock(self, owner: str, ttl_seconds: float) -> bool:
        with _translated(f"target {self._where}: renew migrations lock"):
            result = self._lock.update_one(
                {"_id": LOCK_ID, "owner": owner},
                {"$set": {"expires_at": datetime.now(UTC) + timedelta(seconds=ttl_seconds)}})
            return result.matched_count == 1

    def release_lock(self, owner: str) -> None:
        with _translated(f"target {self._where}: release migrations lock"):
            self._lock.delete_one({"_id": LOCK_ID, "owner": owner})
