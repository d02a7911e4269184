"""The Debezium connector config built from a spec: names, defaults, include-list escaping,
overrides, and secrets kept out of everything that can be shown."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import pytest

from migwatch import names
from migwatch.config import MigrationSpec, parse_spec
from migwatch.connector_config import (
    connector_config,
    heartbeat_query,
    heartbeat_table,
    include_list,
    properties_escape,
    redacted_config,
    secret_file,
    write_secret_file,
)
from migwatch.connectors.connect import REDACTED, redact, scrub
from migwatch.errors import ConfigError

PASSWORD = "s3cr3t-Pa55,word"
MID = "abc-123"


def spec(tables: list[Any], **extra: Any) -> MigrationSpec:
    data: dict[str, Any] = {
        "source": {"kind": "postgres", "host": "db.example", "port": 5433, "database": "shop",
                   "user": "cdc", "password": {"env": "TEST_CAPTURE_PW"}},
        "target": {"kind": "postgres", "port": 5434, "database": "shop2"},
        "tables": tables,
        "connect": {"heartbeat_interval_ms": 1500},
    }
    data.update(extra)
    return parse_spec(data)


@pytest.fixture(autouse=True)
def _password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_CAPTURE_PW", PASSWORD)


def debezium_entries(value: str) -> list[str]:
    """Split a Debezium regex list as Debezium does: on commas not escaped, `\\,` kept as `,`."""
    parts, current, i = [], "", 0
    while i < len(value):
        if value[i] == "\\" and i + 1 < len(value):
            current += value[i:i + 2]
            i += 2
            continue
        if value[i] == ",":
            parts.append(current)
            current = ""
        else:
            current += value[i]
        i += 1
    parts.append(current)
    return [p.strip().replace("\\,", ",") for p in parts if p.strip()]


def matches(pattern: str, table: str) -> bool:
    # Debezium compiles each entry case-insensitively and requires a full match
    return re.fullmatch(pattern, table, flags=re.IGNORECASE) is not None


def test_names_and_defaults_come_from_the_spec_and_the_migration_id() -> None:
    config = connector_config(spec(["public.customers"]), MID)
    assert config["connector.class"] == "io.debezium.connector.postgresql.PostgresConnector"
    assert config["plugin.name"] == "pgoutput"
    assert (config["database.hostname"], config["database.port"]) == ("db.example", "5433")
    assert (config["database.user"], config["database.dbname"]) == ("cdc", "shop")
    # a reference Connect's FileConfigProvider resolves, never the password itself
    assert config["database.password"] == (
        f"${{file:{secret_file(spec(['public.customers']), MID)}:database.password}}")
    assert PASSWORD not in json.dumps(config)
    assert config["topic.prefix"] == names.topic_prefix(MID) == "migwatch.abc-123"
    assert config["slot.name"] == config["publication.name"] == "migwatch_abc_123"
    assert config["publication.autocreate.mode"] == "filtered"
    assert config["snapshot.mode"] == "no_data"  # the COPY load is the default
    assert config["heartbeat.interval.ms"] == "1500"
    assert config["skipped.operations"] == "none"
    assert config["decimal.handling.mode"] == "string"
    assert config["binary.handling.mode"] == "bytes"  # the only mode that marks unchanged bytea
    assert config["tombstones.on.delete"] == "true"
    assert config["value.converter.schemas.enable"] == "true"  # each event's own definition
    assert config["column.propagate.source.type"] == ".*"
    assert config["value.converter.replace.null.with.default"] == "false"
    assert all(isinstance(v, str) for v in config.values())


def test_include_list_matches_exactly_each_table_and_the_heartbeat_table() -> None:
    tables = ["public.customers", "public.ProductReviews", "sales.order$items", "odd.a+b(c)",
              "x.with,comma", "x.with space"]
    entries = debezium_entries(include_list(spec(tables)))
    assert len(entries) == len(tables) + 1
    wanted = [*tables, "public.migwatch_heartbeat"]
    for entry, table in zip(entries, wanted, strict=True):
        assert matches(entry, table), (entry, table)
        others = [t for t in wanted if t != table]
        assert not any(matches(entry, t) for t in others)
    # `.` is literal, and case matters even though Debezium matches case-insensitively
    reviews = entries[1]
    assert not matches(reviews, "public.productreviews")
    assert not matches(reviews, "publicXProductReviews")
    assert not matches(entries[0], "public.customersX")


def test_heartbeat_table_is_listed_once_even_when_the_spec_includes_it() -> None:
    s = spec(["public.migwatch_heartbeat", "public.customers"])
    assert len(debezium_entries(include_list(s))) == 2


def test_heartbeat_query_upserts_this_migrations_row_with_quoted_names() -> None:
    s = spec(["public.customers"], monitor={"heartbeat_table": 'Ops.be"at'})
    assert heartbeat_table(s) == ("Ops", 'be"at')
    query = heartbeat_query(s, MID)
    assert query.startswith('INSERT INTO "Ops"."be""at" (migration_id, beat_at, writer)')
    assert "VALUES ('abc-123', now(), 'debezium')" in query
    assert "ON CONFLICT (migration_id) DO UPDATE" in query
    assert connector_config(s, MID)["heartbeat.action.query"] == query


def test_a_malformed_heartbeat_table_names_the_field() -> None:
    with pytest.raises(ConfigError) as err:
        heartbeat_table(spec(["t"], monitor={"heartbeat_table": "a.b.c"}))
    assert err.value.field == "monitor.heartbeat_table"


def test_overrides_are_applied_last_and_win() -> None:
    s = spec(["public.customers"], connect={"overrides": {
        "value.converter.schemas.enable": "true", "snapshot.mode": "no_data", "extra.key": "1"}})
    config = connector_config(s, MID)
    assert config["value.converter.schemas.enable"] == "true"
    assert config["snapshot.mode"] == "no_data"
    assert config["extra.key"] == "1"


def test_the_redacted_form_never_shows_the_password(caplog: pytest.LogCaptureFixture) -> None:
    shown = redacted_config(spec(["public.customers"]), MID)
    assert shown["database.password"] == REDACTED
    assert PASSWORD not in repr(shown) and PASSWORD not in str(shown)
    with caplog.at_level(logging.INFO):
        logging.getLogger("migwatch.test").info("connector config %s", shown)
    assert "database.password" in caplog.text and PASSWORD not in caplog.text
    # everything else is shown as is
    full = connector_config(spec(["public.customers"]), MID)
    assert {k: v for k, v in shown.items() if k != "database.password"} == \
        {k: v for k, v in full.items() if k != "database.password"}


def test_redact_and_scrub_cover_every_secret_looking_key() -> None:
    config = {"database.password": "p1", "sasl.jaas.token": "p2", "database.user": "cdc"}
    assert redact(config) == {"database.password": REDACTED, "sasl.jaas.token": REDACTED,
                              "database.user": "cdc"}
    assert scrub("login p1 failed, p2 too", ["p1", "p2", ""]) == \
        f"login {REDACTED} failed, {REDACTED} too"


def test_a_missing_password_variable_names_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TEST_CAPTURE_PW")
    with pytest.raises(ConfigError) as err:  # when the connector's password file is written
        write_secret_file(spec(["public.customers"]), MID)
    assert err.value.field == "source.password"


def test_a_remote_connect_gets_the_specs_own_reference_and_no_file_is_written(
        tmp_path: Path) -> None:
    s = spec(["public.customers"], connect={"password_reference": "${vault:secret/shop:pw}",
                                            "secrets_dir": str(tmp_path)})
    assert connector_config(s, MID)["database.password"] == "${vault:secret/shop:pw}"
    assert write_secret_file(s, MID) is False
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("reference", ["hunter2", "${}", "$file:a:b}", "", "${vault:a} and more"])
def test_a_password_reference_must_be_a_reference(reference: str) -> None:
    with pytest.raises(ConfigError) as err:
        spec(["public.customers"], connect={"password_reference": reference})
    assert err.value.field == "connect.password_reference"
    assert "hunter2" not in str(err.value)


def test_the_secret_file_is_the_owners_only_and_rewritten_only_when_the_password_changes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = spec(["public.customers"], connect={"secrets_dir": str(tmp_path)})
    assert write_secret_file(s, MID) is True
    path = secret_file(s, MID)
    assert path.parent == tmp_path and oct(path.stat().st_mode & 0o777) == "0o600"
    assert path.read_text() == f"database.password={properties_escape(PASSWORD)}\n"
    assert write_secret_file(s, MID) is False  # unchanged: no restart needed
    monkeypatch.setenv("TEST_CAPTURE_PW", "rotated")
    assert write_secret_file(s, MID) is True


@pytest.mark.parametrize(("value", "escaped"), [
    ("plain-Pa55", "plain-Pa55"),
    ("a=b:c#d!e", "a\\=b\\:c\\#d\\!e"),
    (" lead and trail ", "\\ lead and trail "),
    ("back\\slash", "back\\\\slash"),
    ("tab\tnl\n", "tab\\tnl\\n"),
    ("äé€", "\\u00e4\\u00e9\\u20ac"),
    ("😀", "\\ud83d\\ude00"),
])
def test_a_password_is_written_as_java_properties_read_it(value: str, escaped: str) -> None:
    assert properties_escape(value) == escaped


def test_a_load_by_copy_leaves_debezium_to_stream_only() -> None:
    debezium = spec(["public.t"], snapshot={"method": "debezium"})
    assert connector_config(debezium, MID)["snapshot.mode"] == "initial"
    copied = spec(["public.t"])
    assert connector_config(copied, MID)["snapshot.mode"] == "no_data"
    mongo = spec(["public.t"], snapshot={"method": "copy"},
                 target={"kind": "mongodb", "port": 27017, "database": "shop2"})
    assert connector_config(mongo, MID)["snapshot.mode"] == "no_data"
