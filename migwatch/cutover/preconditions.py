"""What must hold before the cutover freezes anything; each failure is one reason, all listed.

- the migration's latest report is GO and younger than `cutover.max_report_age_seconds`;
- its schema check passed (equal, or not applicable to the target engine);
- every lag measured now is at or under its `caught_up` threshold, the connector runs, the
  applier is in its group and no table is stopped at a schema change;
- no index of the target tables is INVALID;
- the freeze can work: migwatch may change the database's settings and end sessions, and no
  application shares migwatch's role (its writes would go on through the freeze).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from migwatch import measures
from migwatch.config import MigrationSpec
from migwatch.connectors import postgres as pg
from migwatch.cutover import freeze
from migwatch.errors import MigwatchError
from migwatch.lag.formatting import format_value
from migwatch.lag.model import CONSUMER_LAG, EVENT_TIME_LAG
from migwatch.report.model import Report
from migwatch.targets import engine_for

_SCHEMA_OK = ("equal", "not applicable")


def report_reasons(report: Report | None, max_age: float, now: datetime | None = None
                   ) -> list[str]:
    """Why the report does not allow a cutover (none when it is a recent GO)."""
    if report is None:
        return ["no report for this migration: run the pipeline (or `migwatch report`) first"]
    out: list[str] = []
    if not report.verdict.go:
        out.append("the latest report is NO-GO: " + "; ".join(report.verdict.reasons[:5]))
    finished = report.finished_at if report.finished_at.tzinfo else \
        report.finished_at.replace(tzinfo=UTC)
    age = ((now or datetime.now(UTC)) - finished).total_seconds()
    if age > max_age:
        out.append(f"the latest report is {age:.0f}s old, older than "
                   f"cutover.max_report_age_seconds ({max_age:g}s): report again")
    check = report.schema_check
    if check is None or check.status not in _SCHEMA_OK:
        out.append("the schema check did not pass: "
                   + ("it did not run" if check is None else check.status))
    return out


def load_report(run_folder: Path) -> Report | None:
    path = run_folder / "report.json"
    if not path.is_file():
        return None
    return Report.model_validate_json(path.read_text())


def lag_reasons(spec: MigrationSpec, sample: measures.Sample) -> list[str]:
    """Each lag over its caught_up threshold (or unknown), a connector not running, an applier
    out of its group, a table stopped at a schema change."""
    out: list[str] = []
    for measure, threshold in spec.monitor.thresholds.items():
        value = sample.value(measure)
        if value is None:
            if measure in (EVENT_TIME_LAG, CONSUMER_LAG):
                out.append(f"{measure}: unknown now")
            continue
        if value > threshold.caught_up:
            out.append(f"{measure} is {format_value(measure, value)}, over its caught_up "
                       f"threshold {format_value(measure, threshold.caught_up)}")
    if sample.connector_state != "RUNNING":
        out.append(f"the connector is {sample.connector_state or 'unknown'}, not RUNNING")
    if sample.applier_alive is False:
        out.append("the applier has no member in its consumer group")
    out += [f"{t.table} is stopped at a schema change" for t in sample.stopped_tables]
    out += [f"cannot tell: {p}" for p in sample.problems if "heartbeat" not in p]
    return out


def freeze_reasons(spec: MigrationSpec) -> list[str]:
    """Whether the built-in freeze can run here and would stop every application write."""
    settings = spec.cutover.freeze
    if not settings.read_only:
        return []
    out: list[str] = []
    with pg.connect_endpoint(spec.source, "source", autocommit=True,
                             application=freeze.APPLICATION) as conn, \
            pg.translated("source: freeze pre-flight"):
        row = conn.execute(
            "SELECT r.rolsuper OR d.datdba = r.oid, "
            "r.rolsuper OR pg_has_role(r.oid, 'pg_signal_backend', 'MEMBER') "
            "FROM pg_roles r, pg_database d "
            "WHERE r.rolname = current_user AND d.datname = current_database()").fetchone()
        owner, signal = (bool(row[0]), bool(row[1])) if row else (False, False)
        if not owner:
            out.append("the freeze sets default_transaction_read_only on the source database: "
                       f"role {spec.source.user!r} must own it (or be superuser)")
        if settings.terminate_sessions and not signal:
            out.append("ending the application's sessions needs pg_signal_backend: "
                       f"GRANT pg_signal_backend TO {spec.source.user}")
        if freeze.read_only_setting(conn):
            out.append("the source database is read-only already (default_transaction_"
                       "read_only): a cutover that did not finish? `migwatch cutover SPEC "
                       "--migration-id ID --undo-freeze` puts its settings back")
        shared = freeze.shared_role_sessions(conn, freeze.exempt_roles(spec))
        if shared:
            out.append("an application shares an exempt role, so its writes would go on "
                       "through the freeze: " + ", ".join(s.describe() for s in shared[:5])
                       + " — give the application its own role")
    return out


def check(spec: MigrationSpec, migration_id: str, run_folder: Path) -> list[str]:
    """Every reason the cutover may not start now ([] when it may)."""
    reasons = report_reasons(load_report(run_folder), spec.cutover.max_report_age_seconds)
    try:
        reasons += lag_reasons(spec, measures.poll(spec, migration_id))
    except MigwatchError as exc:
        reasons.append(f"cannot measure the lags: {exc}")
    try:
        invalid = engine_for(spec).invalid_indexes()
        reasons += [f"index INVALID on the target: {i}" for i in invalid]
    except MigwatchError as exc:
        reasons.append(f"cannot read the target's indexes: {exc}")
    try:
        reasons += freeze_reasons(spec)
    except MigwatchError as exc:
        reasons.append(f"cannot check the freeze on the source: {exc}")
    return reasons
