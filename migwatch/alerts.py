"""Prometheus alert rules for a migration: lag warn/critical, error rate, stalled, DLQ growth,
slot retention, consumer lag.

Thresholds come from the spec's monitor section when one is given (the defaults otherwise), so
alerts fire where the monitor's own verdicts do. Every alert is grouped `by (migration_id)` and
carries that label and a one-line summary; no URL, no credential. `render_rules()` gives the YAML
that `promtool check rules` and Prometheus read.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from migwatch import metrics, promql
from migwatch.config import (
    MigrationSpec,
    MonitorSpec,
    StackSettings,
    Threshold,
    check_migration_id,
)
from migwatch.errors import ConfigError, PermanentError, TransientError

# Go templates Prometheus expands in annotations
ID = "{{ $labels.migration_id }}"
VALUE = "{{ $value | humanize }}"
VALUE_DURATION = "{{ $value | humanizeDuration }}"
VALUE_BYTES = "{{ $value | humanize1024 }}B"
RUNBOOK = f"migwatch check --migration-id {ID} --max-lag <seconds>"

#: a slot retaining this share of its limit is a blocking risk (the source may run out of disk):
#: the critical slot alert fires there, and the report's verdict is no-go there
SLOT_RISK_FRACTION = 0.8


def data_lag_threshold(monitor: MonitorSpec) -> Threshold:
    """Thresholds of `migration_data_lag_seconds`, the larger of event-time and end-to-end lag:
    it warns as soon as either measure would, and is caught up only when both are."""
    a = monitor.thresholds["event_time_lag_seconds"]
    b = monitor.thresholds["end_to_end_lag_seconds"]
    return Threshold(
        warn=min(a.warn, b.warn),
        critical=min(a.critical, b.critical),
        caught_up=min(max(a.caught_up, b.caught_up), min(a.warn, b.warn)),
    )


@dataclass(frozen=True)
class RuleOptions:
    """How long a condition must hold before firing, and the windows the rules look back over."""

    lag_for: str = "1m"
    stalled_for: str = "5m"
    window: str = "5m"
    dlq_for: str = "0s"


def _duration_ok(value: str) -> str:
    if not re.fullmatch(r"(\d+(ms|s|m|h|d))+", value):
        raise ValueError(f"{value!r} is not a Prometheus duration")
    return value


def alert_rules(
    spec: MigrationSpec | None = None,
    migration_id: str | None = None,
    options: RuleOptions | None = None,
) -> dict[str, Any]:
    """The rule file as a mapping: one group; scoped to `migration_id` when given."""
    o = options or RuleOptions()
    for d in (o.lag_for, o.stalled_for, o.window, o.dlq_for):
        _duration_ok(d)
    monitor = spec.monitor if spec is not None else MonitorSpec()
    lag = data_lag_threshold(monitor)
    slot = monitor.thresholds["slot_wal_bytes"]
    consumer = monitor.thresholds["consumer_lag_messages"]
    slot_limit = float(monitor.slot_wal_limit_bytes or slot.critical)

    match: dict[str, str] = {}
    if migration_id is not None:
        match["migration_id"] = check_migration_id(migration_id)

    def sel(metric: Any) -> str:
        return promql.selector(metric, **match)

    def per_id(func: str, metric: Any) -> str:
        return f"{func} {promql.by(metric, 'migration_id')} ({sel(metric)})"

    def inc(metric: Any) -> str:
        return f"sum {promql.by(metric, 'migration_id')} (increase({sel(metric)}[{o.window}]))"

    data_lag = per_id("max", metrics.MIGRATION_DATA_LAG)
    errors, events = inc(metrics.MIGRATION_ERRORS), inc(metrics.CDC_EVENTS)
    slot_risk = SLOT_RISK_FRACTION * slot_limit
    rules = [
        _alert(
            "MigrationLagWarning",
            f"{data_lag} > {_num(lag.warn)}",
            o.lag_for,
            "warning",
            f"data lag of migration {ID} is {VALUE_DURATION}, over {_num(lag.warn)}s",
        ),
        _alert(
            "MigrationLagCritical",
            f"{data_lag} > {_num(lag.critical)}",
            o.lag_for,
            "critical",
            f"data lag of migration {ID} is {VALUE_DURATION}, over {_num(lag.critical)}s",
        ),
        # share of failed operations among all (errors + applied events); with no events at
        # all, errors alone count (x * 0 keeps the migration_id label for the `or`)
        _alert(
            "MigrationErrorRate",
            f"({errors}) / ((({events}) or ({errors}) * 0) + ({errors})) "
            f"> {_num(monitor.error_rate_threshold)}",
            "0s",
            "critical",
            f"{{{{ $value | humanizePercentage }}}} of migration {ID}'s operations failed "
            f"over the last {o.window} (threshold {monitor.error_rate_threshold:.2%})",
        ),
        _alert(
            "MigrationStalled",
            f"{data_lag} > {_num(lag.caught_up)}"
            f" unless on (migration_id) ({inc(metrics.MIGRATION_ROWS)} > 0)"
            f" unless on (migration_id) ({events} > 0)",
            o.stalled_for,
            "critical",
            f"migration {ID} lags {VALUE_DURATION} and wrote no row nor applied any event "
            f"for {o.window}",
        ),
        _alert(
            "MigrationDeadLetters",
            f"{inc(metrics.DLQ_EVENTS)} > 0",
            o.dlq_for,
            "warning",
            f"{VALUE} event(s) of migration {ID} went to the dead-letter topic over the last "
            f"{o.window}",
        ),
        _alert(
            "MigrationSlotRetentionWarning",
            f"{per_id('max', metrics.SLOT_RETAINED_WAL)} > {_num(slot.warn)}",
            o.lag_for,
            "warning",
            f"the replication slot of migration {ID} retains {VALUE_BYTES} of WAL on the source",
        ),
        _alert(
            "MigrationSlotRetentionCritical",
            f"{per_id('max', metrics.SLOT_RETAINED_WAL)} > {_num(slot_risk)}",
            o.lag_for,
            "critical",
            f"the replication slot of migration {ID} retains {VALUE_BYTES} of WAL, over "
            f"{SLOT_RISK_FRACTION:.0%} of its limit: the source may run out of disk or lose "
            "the slot",
        ),
        _alert(
            "MigrationTableStopped",
            f"max {promql.by(metrics.TABLE_STOPPED, 'migration_id', 'table_name')} "
            f"({sel(metrics.TABLE_STOPPED)}) > 0",
            "0s",
            "critical",
            f"table {{{{ $labels.table_name }}}} of migration {ID} stopped: the source's schema "
            "changed in a way its target does not follow by itself; apply the same change to "
            "the target (a versioned migration) and it continues",
        ),
        _alert(
            "MigrationConsumerLag",
            f"{per_id('sum', metrics.CDC_CONSUMER_LAG)} > {_num(consumer.warn)}",
            o.lag_for,
            "warning",
            f"the applier of migration {ID} is {VALUE} messages behind",
        ),
    ]
    group = "migwatch" + (f"-{migration_id}" if migration_id else "")
    return {"groups": [{"name": group, "rules": rules}]}


def _num(value: float) -> str:
    """A threshold as PromQL reads it, exact (no `1.07374e+09` for 1 GiB)."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _alert(name: str, expr: str, for_: str, severity: str, summary: str) -> dict[str, Any]:
    rule: dict[str, Any] = {"alert": name, "expr": expr}
    if for_ not in ("0s", "0m", "0"):
        rule["for"] = for_
    rule["labels"] = {"severity": severity, "team": "migwatch"}
    rule["annotations"] = {"summary": summary, "runbook": RUNBOOK}
    return rule


def render_rules(rules: dict[str, Any]) -> str:
    return yaml.safe_dump(rules, sort_keys=False, width=1000)


def rules_file_name(migration_id: str | None = None) -> str:
    return f"migwatch-{migration_id}.yml" if migration_id else "migwatch.yml"


def check_rules_file(path: Path) -> None:
    """`promtool check rules` when promtool is installed; a refusal is a ConfigError quoting it."""
    promtool = shutil.which("promtool")
    if promtool is None:
        return
    res = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    if res.returncode != 0:
        raise ConfigError(
            f"promtool refused {path.name}: {(res.stdout + res.stderr).strip()}", field="rules"
        )


def install_rules(
    text: str, file_name: str, settings: StackSettings | None = None, reload: bool = True
) -> Path:
    """Put a rule file in the local stack's Prometheus rules folder and make Prometheus load it.

    The file is checked with promtool before it goes live, and written under a temporary name
    first, so Prometheus never reads a half-written or broken file."""
    s = settings or StackSettings()
    rules_dir = s.state_dir / "prometheus" / "rules"
    rules_dir.mkdir(parents=True, exist_ok=True)
    tmp = rules_dir / f".{file_name}.tmp"
    tmp.write_text(text)
    try:
        check_rules_file(tmp)
    except ConfigError:
        tmp.unlink(missing_ok=True)
        raise
    target = rules_dir / file_name
    tmp.rename(target)
    if reload:
        reload_prometheus(s)
    return target


def reload_prometheus(settings: StackSettings | None = None) -> None:
    """POST /-/reload to the stack's Prometheus; an unreachable one is a TransientError."""
    import requests

    from migwatch.stack import Stack

    try:
        Stack(settings or StackSettings(), echo=lambda _m: None).reload("prometheus")
    except requests.HTTPError as exc:
        raise PermanentError(f"Prometheus refused to reload its rules: {exc}") from exc
    except requests.RequestException as exc:
        raise TransientError(f"Prometheus unreachable for reload: {type(exc).__name__}") from exc
