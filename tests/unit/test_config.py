"""The spec model: valid specs load, bad ones name the field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from migwatch.config import check_migration_id, load_spec, parse_spec, pg_name, postgres_conninfo
from migwatch.errors import ConfigError

BASE = {
    "source": {"kind": "postgres", "port": 15432, "database": "shop", "user": "u",
               "password": {"env": "SRC_PW"}},
    "target": {"kind": "postgres", "port": 15433, "database": "shop", "user": "u",
               "password": {"env": "SRC_PW"}},
    "tables": ["customers", "public.ProductReviews"],
}


def test_minimal_spec_loads_with_defaults() -> None:
    spec = parse_spec(BASE)
    assert [t.source for t in spec.tables] == ["public.customers", "public.ProductReviews"]
    assert spec.tables[1].name == "ProductReviews"
    assert spec.monitor.thresholds["event_time_lag_seconds"].warn == 60
    assert spec.dlq_topic("abc") == "migwatch.abc.dlq"


@pytest.mark.parametrize("patch, field", [
    ({"tables": []}, "tables"),
    ({"tables": ["a.b.c"]}, "tables[0].source"),
    ({"source": {**BASE["source"], "port": 0}}, "source.port"),
    ({"source": {**BASE["source"], "password": "hunter2"}}, "source.password"),
    ({"monitor": {"thresholds": {"event_time_lag_seconds": {"warn": 10, "critical": 5,
                                                           "caught_up": 1}}}},
     "monitor.thresholds.event_time_lag_seconds"),
    ({"monitor": {"thresholds": {"bogus": {"warn": 1, "critical": 2, "caught_up": 0}}}},
     "monitor.thresholds"),
    ({"kafka": {"bootstrap_servers": "x", "nope": 1}}, "kafka.nope"),
])
def test_bad_field_is_named(patch: dict, field: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_spec({**BASE, **patch})
    assert err.value.field == field
    assert "hunter2" not in str(err.value)


def test_missing_env_password_names_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SRC_PW", raising=False)
    spec = parse_spec(BASE)
    with pytest.raises(ConfigError) as err:
        postgres_conninfo(spec.source, "source")
    assert err.value.field == "source.password" and "SRC_PW" in str(err.value)


def test_password_is_url_quoted_and_never_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SRC_PW", "p@ss:w/rd")
    spec = parse_spec(BASE)
    assert "p%40ss%3Aw%2Frd" in postgres_conninfo(spec.source, "source")
    assert "p@ss" not in repr(spec) and "p@ss" not in spec.source.redacted()


@pytest.mark.parametrize("mid", ["", "A1", "-x", "a" * 41, "a_b", "a b"])
def test_bad_migration_ids(mid: str) -> None:
    with pytest.raises(ConfigError) as err:
        check_migration_id(mid)
    assert err.value.field == "migration_id"


def test_pg_name_from_commit_sha() -> None:
    assert pg_name("3f2a-9c") == "migwatch_3f2a_9c"


def test_load_spec_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_spec(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("source: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_spec(bad)


def test_a_relative_migrations_folder_is_taken_from_the_spec_file(tmp_path: Path) -> None:
    folder = tmp_path / "specs" / "sql"
    folder.mkdir(parents=True)
    spec_file = tmp_path / "specs" / "spec.yaml"
    spec_file.write_text(yaml.safe_dump({**BASE, "migrations": {"folder": "sql"}}))
    assert load_spec(spec_file).migrations.folder == str(folder.resolve())
    spec_file.write_text(yaml.safe_dump({**BASE, "migrations": {"folder": str(folder)}}))
    assert load_spec(spec_file).migrations.folder == str(folder)


def test_the_example_spec_in_deployments_is_valid() -> None:
    spec = load_spec(Path(__file__).parents[2] / "deployments" / "shop.yaml")
    assert [t.source for t in spec.tables][-1] == "public.ProductReviews"
    assert spec.source.password is not None and spec.source.password.env
    assert Path(spec.migrations.folder).is_dir()


def test_stack_folders_are_absolute_so_no_command_reads_them_as_options(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from migwatch.config import StackSettings

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MIGWATCH_STATE_DIR", "-state")
    s = StackSettings()
    assert s.state_dir == tmp_path / "-state" and s.state_dir.is_absolute()


@pytest.mark.parametrize(("text", "schema", "table", "canonical"), [
    ("orders", "public", "orders", "public.orders"),
    ("Sales Dept.Tä b", "Sales Dept", "Tä b", "Sales Dept.Tä b"),
    ('"my.schema"."a ""quoted"" name"', "my.schema", 'a "quoted" name', None),
    ('"x.y"', "public", "x.y", 'public."x.y"'),
])
def test_any_name_postgres_accepts_can_be_named_in_the_spec(
        text: str, schema: str, table: str, canonical: str | None) -> None:
    from migwatch.config import TableSpec

    t = TableSpec(source=text)
    assert (t.schema_name, t.name) == (schema, table)
    assert t.source == (canonical or text)
    assert TableSpec(source=t.source).source == t.source  # the canonical form reads back


@pytest.mark.parametrize("text", ["a.b.c", '"open', "a.", 'a"b.c', ""])
def test_a_malformed_table_name_is_refused_naming_it(text: str) -> None:
    from migwatch.config import TableSpec

    with pytest.raises(ValueError):
        TableSpec(source=text)


@pytest.mark.parametrize("topic", ["has space", "x" * 250, "", "tab\tbed"])
def test_a_dead_letter_topic_kafka_would_refuse_is_refused_in_the_spec(topic: str) -> None:
    from migwatch.config import KafkaSpec

    with pytest.raises(ValueError, match="not a Kafka topic name"):
        KafkaSpec(dlq_topic=topic)
