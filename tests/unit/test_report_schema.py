"""The schema check in the report: a difference no migration declares is a reason for NO-GO
naming the object, as is a check that failed or was not run; declared differences and the
check's notes only warn; markdown and HTML show the differences."""

from __future__ import annotations

from migwatch import report as R
from migwatch.report.model import SchemaCheckFigures
from tests.unit.test_report import go_inputs, sample_report


def check(**over: object) -> SchemaCheckFigures:
    data: dict[str, object] = {"status": "equal", "objects": 12}
    data.update(over)
    return SchemaCheckFigures.model_validate(data)


def diff(obj: str, kind: str = "missing", by: str = "") -> dict[str, str]:
    return {"object": obj, "kind": kind, "source": "CREATE INDEX x ON app.t (a)",
            "target": "", "declared_by": by}


def test_an_equal_schema_passes_its_check() -> None:
    v = R.decide(**go_inputs(), schema_check=check())  # type: ignore[arg-type]
    assert v.go and v.checks[-1].name == "schema" and v.checks[-1].passed
    assert "12 object(s)" in v.checks[-1].detail


def test_each_undeclared_difference_is_a_reason_naming_its_object() -> None:
    v = R.decide(**go_inputs(), schema_check=check(  # type: ignore[arg-type]
        status="different", differences=[diff("INDEX app.t_a"), diff("TYPE app.mood",
                                                                      "differs")]))
    assert not v.go
    assert v.reasons == ["schema: INDEX app.t_a missing on the target",
                         "schema: TYPE app.mood differs on the target"]


def test_many_differences_are_named_up_to_ten_then_counted() -> None:
    many = [diff(f"INDEX app.i{n}") for n in range(13)]
    v = R.decide(**go_inputs(), schema_check=check(status="different",  # type: ignore[arg-type]
                                                   differences=many))
    assert len(v.reasons) == 11 and v.reasons[-1] == "schema: 3 more object(s) differ"


def test_declared_differences_and_notes_only_warn() -> None:
    v = R.decide(**go_inputs(), schema_check=check(  # type: ignore[arg-type]
        declared=[diff("COLUMN app.t.note", "extra", "V2__note.sql")],
        warnings=["FK CONSTRAINT app.o.fk is NOT VALID on the target"]))
    assert v.go
    assert "schema: COLUMN app.t.note extra, declared by V2__note.sql" in v.warnings
    assert "schema: FK CONSTRAINT app.o.fk is NOT VALID on the target" in v.warnings


def test_a_check_that_failed_or_was_not_run_blocks() -> None:
    v = R.decide(**go_inputs(), schema_check=check(  # type: ignore[arg-type]
        status="error", error="pg_dump failed: password=hunter2 refused"))
    assert not v.go and v.reasons[0].startswith("schema check could not run: pg_dump failed")
    assert "hunter2" not in " ".join(v.reasons)
    v = R.decide(**go_inputs(), schema_check=check(status="not checked"))  # type: ignore[arg-type]
    assert not v.go and "schema not checked" in v.reasons[0]


def test_the_report_shows_the_differences_in_markdown_and_html() -> None:
    rep = sample_report(schema_check={"status": "different", "objects": 9,
                                      "differences": [diff("INDEX app.t_a")],
                                      "declared": [diff("COLUMN app.t.note", "extra",
                                                        "V2__note.sql")]})
    assert not rep.verdict.go
    md = R.render_markdown(rep)
    assert "**Schema.** different: 9 object(s) compared, 1 differ, 1 declared" in md
    assert "| INDEX app.t_a | missing | CREATE INDEX x ON app.t (a) | — |  |" in md
    assert "| COLUMN app.t.note | extra |" in md and "V2__note.sql |" in md
    html = R.render_html(rep)
    assert 'data-object="INDEX app.t_a" data-kind="missing"' in html
    assert 'id="schema-note" data-status="different"' in html
    again = R.load_json(R.render_json(rep))
    assert again.schema_check == rep.schema_check
