"""Alert rules: thresholds from the spec, migration scoping, and promtool's own check and unit
tests (alerts/migwatch_rules_test.yml) run over the generated file."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from migwatch import alerts, promql
from migwatch.config import parse_spec
from migwatch.errors import ConfigError

PROMTOOL = "/usr/bin/promtool"
RULES_TEST = Path(__file__).parent / "alerts" / "migwatch_rules_test.yml"


def spec(**monitor: Any) -> Any:
    return parse_spec(
        {
            "source": {"kind": "postgres", "port": 15432, "database": "a"},
            "target": {"kind": "postgres", "port": 15433, "database": "b"},
            "tables": ["t"],
            "monitor": monitor,
        }
    )


def rules_by_name(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    (group,) = doc["groups"]
    return {r["alert"]: r for r in group["rules"]}


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def test_every_condition_has_a_rule_with_severity_and_migration_id() -> None:
    rules = rules_by_name(alerts.alert_rules())
    assert set(rules) == {
        "MigrationLagWarning",
        "MigrationLagCritical",
        "MigrationErrorRate",
        "MigrationStalled",
        "MigrationDeadLetters",
        "MigrationSlotRetentionWarning",
        "MigrationSlotRetentionCritical",
        "MigrationConsumerLag",
        "MigrationTableStopped",
    }
    for r in rules.values():
        assert r["labels"]["severity"] in ("warning", "critical")
        assert "by (migration_id)" in r["expr"] or "by (migration_id, " in r["expr"]
        assert "{{ $labels.migration_id }}" in r["annotations"]["summary"]


def test_rules_name_only_metrics_migwatch_exports() -> None:
    exported = promql.exported_names()
    assert {"migration_data_lag_seconds", "migwatch_dlq_events_total"} <= exported
    rules = rules_by_name(alerts.alert_rules())
    assert {"MigrationLagCritical", "MigrationStalled", "MigrationDeadLetters"} <= set(rules)
    for r in rules.values():
        names = promql.metric_names(r["expr"])
        assert names and names <= exported, (r["alert"], names - exported)


def test_thresholds_come_from_the_spec() -> None:
    s = spec(
        thresholds={
            "event_time_lag_seconds": {"warn": 30, "critical": 90, "caught_up": 2},
            "end_to_end_lag_seconds": {"warn": 45, "critical": 120, "caught_up": 3},
            "slot_wal_bytes": {"warn": 1000, "critical": 5000, "caught_up": 10},
        },
        error_rate_threshold=0.05,
        slot_wal_limit_bytes=10_000,
    )
    rules = rules_by_name(alerts.alert_rules(s))
    # data lag is the larger of both measures: it warns when either would
    assert rules["MigrationLagWarning"]["expr"].endswith("> 30")
    assert rules["MigrationLagCritical"]["expr"].endswith("> 90")
    assert " > 3 unless" in rules["MigrationStalled"]["expr"]
    assert rules["MigrationErrorRate"]["expr"].endswith("> 0.05")
    assert rules["MigrationSlotRetentionWarning"]["expr"].endswith("> 1000")
    assert rules["MigrationSlotRetentionCritical"]["expr"].endswith("> 8000")  # 80% of 10000


def test_scoped_rules_select_one_migration_and_are_named_after_it() -> None:
    doc = alerts.alert_rules(migration_id="run-42")
    assert doc["groups"][0]["name"] == "migwatch-run-42"
    for r in doc["groups"][0]["rules"]:
        assert 'migration_id="run-42"' in r["expr"]
    assert alerts.rules_file_name("run-42") == "migwatch-run-42.yml"
    with pytest.raises(ConfigError):
        alerts.alert_rules(migration_id="Bad_Id")


def test_no_url_or_credential_in_rules() -> None:
    text = alerts.render_rules(alerts.alert_rules())
    assert "://" not in text and "password" not in text.lower()


def test_promtool_checks_the_generated_rules(tmp_path: Path) -> None:
    path = tmp_path / "migwatch.yml"
    path.write_text(alerts.render_rules(alerts.alert_rules()))
    res = promtool("check", "rules", str(path), cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS: 9 rules found" in res.stdout
    alerts.check_rules_file(path)  # migwatch's own guard agrees


def test_check_rules_file_refuses_a_broken_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text("groups:\n- name: x\n  rules:\n  - alert: X\n    expr: sum(\n")
    with pytest.raises(ConfigError, match="promtool refused bad.yml"):
        alerts.check_rules_file(bad)


def test_promtool_unit_tests_pass_on_the_generated_rules(tmp_path: Path) -> None:
    shutil.copy(RULES_TEST, tmp_path / RULES_TEST.name)
    (tmp_path / "migwatch.yml").write_text(alerts.render_rules(alerts.alert_rules()))
    res = promtool("test", "rules", RULES_TEST.name, cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr


def test_promtool_unit_tests_catch_a_changed_threshold(tmp_path: Path) -> None:
    """The promtool tests can fail: warn raised to 100 s, lag of 70 s no longer warns."""
    shutil.copy(RULES_TEST, tmp_path / RULES_TEST.name)
    raised = spec(
        thresholds={
            "event_time_lag_seconds": {"warn": 100, "critical": 300, "caught_up": 5},
            "end_to_end_lag_seconds": {"warn": 100, "critical": 300, "caught_up": 10},
        }
    )
    (tmp_path / "migwatch.yml").write_text(alerts.render_rules(alerts.alert_rules(raised)))
    res = promtool("test", "rules", RULES_TEST.name, cwd=tmp_path)
    assert res.returncode != 0
    assert "alertname: MigrationLagWarning" in res.stdout + res.stderr


def test_rule_file_is_plain_yaml_prometheus_reads() -> None:
    doc = yaml.safe_load(alerts.render_rules(alerts.alert_rules()))
    assert doc == alerts.alert_rules()
