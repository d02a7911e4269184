"""Sequences: how far a target's value trails the source's, the state and plain rows shown for
each, the catalog rows read into uses (names only ever bound), the report's section and
warnings, and the monitor flow's table artifact."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from migwatch import report as R
from migwatch import sequences as S
from migwatch.config import TableSpec, parse_spec
from migwatch.sequences import SequenceSide, SequenceState, SequenceUse

ORDERS = SequenceUse("public.orders", "public.orders", "id", S.OWNED)


def state(source: int | None, target: int | None | str = None, *, start: int = 1,
          step: int = 1, applicable: bool = True, readable: tuple[bool, bool] = (True, True),
          ) -> SequenceState:
    """`target` "missing": the target has no such sequence."""
    return SequenceState(
        "public", "orders_id_seq", (ORDERS,), SequenceSide(source, start, step, readable[0]),
        None if target == "missing" or not applicable
        else SequenceSide(target, start, step, readable[1]),  # type: ignore[arg-type]
        applicable=applicable)


# ------------------------------------------------------------------------------ behind by
@pytest.mark.parametrize(("source", "target", "start", "step", "behind", "what"), [
    (120, 100, 1, 1, 20, "behind"),
    (120, 120, 1, 1, 0, "ok"),
    (120, 130, 1, 1, 0, "ok"),  # ahead (rows written on the target): not behind
    (120, None, 1, 1, 120, "behind"),  # never called there: it would hand out 1 next
    (104, None, 100, 1, 5, "behind"),  # START 100: 100..104 handed out on the source
    (None, None, 1, 1, 0, "ok"),  # the source never handed one out: nothing to catch up
    (None, 50, 1, 1, 0, "ok"),
    (-30, -10, -1, -1, 20, "behind"),  # descending: the target's -10 trails the source's -30
    (-30, -40, -1, -1, 0, "ok"),
    (-30, None, -1, -1, 30, "behind"),
    (1000, 900, 10, 10, 100, "behind"),  # in the sequence's own units, not steps
])
def test_behind_by_follows_the_direction_and_start_of_the_sequence(
        source: int | None, target: int | None, start: int, step: int, behind: int,
        what: str) -> None:
    s = state(source, target, start=start, step=step)
    assert (s.behind_by, s.state) == (behind, what)


def test_missing_not_applicable_and_not_readable_have_no_behind_by() -> None:
    assert (state(5, "missing").behind_by, state(5, "missing").state) == (None, S.MISSING)
    na = state(5, applicable=False)
    assert (na.behind_by, na.state) == (None, S.NOT_APPLICABLE)
    for readable in ((False, True), (True, False)):
        s = state(None, None, readable=readable)
        assert (s.behind_by, s.state) == (None, S.NOT_READABLE)


# ------------------------------------------------------------------------------ plain forms
def test_plain_form_and_rows_say_why_a_value_is_missing() -> None:
    renamed = SequenceUse("public.notes", "archive.notes", "ref", S.DEFAULT)
    shared = SequenceState("app", "Shared Seq", (ORDERS, renamed), SequenceSide(1234567),
                           SequenceSide(None))
    assert shared.to_dict() == {
        "sequence": "app.Shared Seq",
        "used_by": ["public.orders (id)", "public.notes → archive.notes (ref)"],
        "source_value": 1234567, "target_value": None, "state": S.BEHIND,
        "behind_by": 1234567, "not_readable_on": []}
    rows = S.rows([shared.to_dict(), state(7, "missing").to_dict(),
                   state(7, applicable=False).to_dict(),
                   state(None, 3, readable=(False, True)).to_dict(), state(None, 3).to_dict()])
    assert rows[0] == {"sequence": "app.Shared Seq",
                       "table": "public.orders (id), public.notes → archive.notes (ref)",
                       "source value": "1,234,567", "target value": "never called",
                       "behind by": "1,234,567"}
    assert [(r["source value"], r["target value"], r["behind by"]) for r in rows[1:]] == [
        ("7", "missing", "–"),
        ("7", "n/a", "n/a"),
        ("not readable", "3", "–"),
        ("never called", "3", "0"),
    ]


class FakeConn:
    """Answers the catalog query with given rows and keeps what it was asked."""

    def __init__(self, rows: list[tuple[Any, ...]]) -> None:
        self.rows = rows
        self.asked: list[tuple[str, Any]] = []

    def execute(self, query: str, params: Any) -> FakeConn:
        self.asked.append((query, params))
        return self

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self.rows


def test_uses_bind_the_names_and_count_a_column_once_by_its_strongest_tie() -> None:
    tables = [TableSpec(source='"we.ird"."Or ders"', target="archive.orders"),
              TableSpec(source="public.notes")]
    conn = FakeConn([
        ("we.ird", "Or ders", "id", "app", "orders_id_seq", S.OWNED),
        ("we.ird", "Or ders", "id", "app", "orders_id_seq", S.DEFAULT),  # serial: both ties
        ("public", "notes", "ref", "app", "orders_id_seq", S.DEFAULT),
        ("public", "notes", "id", "public", "notes_id_seq", S.IDENTITY),
    ])

    found = S.uses(conn, tables)

    query, params = conn.asked[0]
    assert params == [["we.ird", "public"], ["Or ders", "notes"]]
    assert "Or ders" not in query and "we.ird" not in query and "notes" not in query
    assert found == {
        ("app", "orders_id_seq"): [
            SequenceUse('"we.ird".Or ders', "archive.orders", "id", S.OWNED),
            SequenceUse("public.notes", "public.notes", "ref", S.DEFAULT)],
        ("public", "notes_id_seq"): [
            SequenceUse("public.notes", "public.notes", "id", S.IDENTITY)],
    }


def test_sides_of_no_sequence_ask_nothing() -> None:
    conn = FakeConn([])
    assert S.sides(conn, []) == {}
    assert conn.asked == []


def test_sequences_module_does_not_import_prefect() -> None:
    code = "import sys, migwatch.sequences; print('prefect' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ------------------------------------------------------------------------------ the report
T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def figures(*states: SequenceState) -> list[dict[str, Any]]:
    return [s.to_dict() for s in states]


def report(**over: Any) -> R.Report:
    args: dict[str, Any] = {
        "migration_id": "seq-1", "started_at": T0, "finished_at": T0 + timedelta(minutes=1),
        "tables": [{"source_table": "public.orders", "target_table": "public.orders",
                    "rows_source": 3, "rows_target": 3, "validation": "equal"}],
        "caught_up": True,
    }
    args.update(over)
    return R.build_report(**args)


def test_sequences_behind_missing_or_unreadable_only_warn() -> None:
    seqs = figures(state(120, 100), state(7, "missing"), state(None, None, readable=(True, False)),
                   state(5, 5))
    rep = report(sequences=seqs)
    assert rep.verdict.go and rep.verdict.reasons == []
    assert rep.verdict.warnings == [
        "1 sequence(s) on the target behind the source: public.orders_id_seq by 20 — "
        "sequence values do not travel with the changes; the cutover sets them",
        "1 sequence(s) the tables use missing on the target: public.orders_id_seq — the "
        "cutover has none to set",
        "1 sequence(s) not readable by the migration's user: public.orders_id_seq (target) — "
        "grant SELECT or USAGE on them to see their values",
    ]
    assert "sequences" not in {c.name for c in rep.verdict.checks}
    assert report(sequences=figures(state(5, 5))).verdict.warnings == []


def test_many_sequences_behind_make_one_warning_naming_the_first_few() -> None:
    seqs = [SequenceState("public", f"s{i}", (ORDERS,), SequenceSide(10 + i), SequenceSide(1))
            for i in range(7)]
    (warning,) = R.decide(caught_up=True, tables=report().tables,
                          sequences=[R.SequenceFigures.model_validate(s.to_dict())
                                     for s in seqs]).warnings
    assert warning.startswith("7 sequence(s) on the target behind the source: public.s0 by 9, "
                              "public.s1 by 10, public.s2 by 11, public.s3 by 12, "
                              "public.s4 by 13 and 2 more — ")


def test_sequences_that_could_not_be_read_warn_with_the_reason_scrubbed() -> None:
    rep = report(sequences_unread="TransientError: source unreachable password=hunter2")
    assert rep.verdict.go
    (warning,) = rep.verdict.warnings
    assert warning.startswith("the sequences could not be read (TransientError: source "
                              "unreachable password=***)")
    assert "hunter2" not in R.render_json(rep) + R.render_markdown(rep) + R.render_html(rep)
    assert "The sequences could not be read" in R.render_html(rep)


def test_the_report_lists_each_sequence_in_markdown_html_and_json() -> None:
    weird = SequenceState("public", "<b>seq</b>", (ORDERS,), SequenceSide(1500),
                          SequenceSide(1000))
    rep = report(sequences=figures(weird, state(5, 5)))
    md, html = R.render_markdown(rep), R.render_html(rep)

    assert "| sequence | used by | source value | target value | behind by | state |" in md
    assert "| public.<b>seq</b> | public.orders (id) | 1,500 | 1,000 | 500 | behind |" in md
    assert "| public.orders_id_seq | public.orders (id) | 5 | 5 | 0 | in step |" in md
    assert "the cutover sets the target's" in md

    assert html.index('id="tables"') < html.index('<table id="sequences">') < \
        html.index("<h2>Over time</h2>")
    row = html.split('<tr data-sequence="public.&lt;b&gt;seq&lt;/b&gt;" data-state="behind">',
                     1)[1].split("</tr>", 1)[0]
    assert "<b>seq</b>" not in html
    assert "<td class=n>1,500</td><td class=n>1,000</td><td class=n>500</td>" in row
    assert '<span class="badge behind">behind</span>' in row

    assert R.load_json(R.render_json(rep)) == rep
    assert [s.sequence for s in rep.sequences] == ["public.<b>seq</b>", "public.orders_id_seq"]


def test_a_mongodb_target_says_not_applicable_and_lists_source_values_only() -> None:
    rep = report(sequences=figures(state(42, applicable=False)))
    md, html = R.render_markdown(rep), R.render_html(rep)
    assert rep.verdict.warnings == []
    assert "**Sequences.** Not applicable to this target: it keeps no sequences" in md
    assert "| public.orders_id_seq | public.orders (id) | 42 | n/a | n/a | n/a |" in md
    assert '<tr data-sequence="public.orders_id_seq" data-state="not_applicable">' in html


def test_no_sequence_is_said_in_a_line_without_a_table() -> None:
    rep = report()
    assert "**Sequences.** The tables use no sequence." in R.render_markdown(rep)
    html = R.render_html(rep)
    assert "<h2>Sequences</h2>" in html and '<table id="sequences">' not in html


def test_a_report_written_before_sequences_existed_still_loads() -> None:
    text = R.render_json(report())
    old = text.replace('"sequences": [],', "").replace('"sequences_unread": null,', "")
    assert '"sequences"' not in old
    assert R.load_json(old).sequences == []


# ------------------------------------------------------------------------------ monitor flow
def test_the_monitor_flow_shows_the_sequences_as_a_table_artifact(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import flows.monitor as flow

    made: list[dict[str, Any]] = []
    monkeypatch.setattr(flow, "create_table_artifact", lambda **kw: made.append(kw))
    board = flow._Board("m-1")

    board.sequences(figures(state(120, 100), state(5, 5)), None)
    board.sequences(figures(state(42, applicable=False)), None)
    board.sequences([], "TransientError: target unreachable")

    assert [m["key"] for m in made] == ["monitor-m-1-sequences"] * 3
    assert made[0]["table"] == [
        {"sequence": "public.orders_id_seq", "table": "public.orders (id)",
         "source value": "120", "target value": "100", "behind by": "20"},
        {"sequence": "public.orders_id_seq", "table": "public.orders (id)",
         "source value": "5", "target value": "5", "behind by": "0"}]
    assert made[0]["description"].startswith("2 sequence(s), 1 behind on the target")
    assert made[1]["description"] == "source values only: the target keeps no sequences"
    assert made[2]["table"] == []
    assert made[2]["description"] == ("sequences could not be read: TransientError: target "
                                      "unreachable")


def test_a_mongodb_spec_reads_no_target() -> None:
    """The MongoDB engine keeps no sequences: nothing is asked of the target."""
    from migwatch.targets import engine_for

    spec = parse_spec({"source": {"kind": "postgres", "port": 15432, "database": "s"},
                       "target": {"kind": "mongodb", "port": 1, "database": "t"},
                       "tables": ["orders"]})
    assert engine_for(spec).sequence_values([("public", "orders_id_seq")]) is None
