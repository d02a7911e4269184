"""The limit contracts' check (limits.py) fails on every way a limit class can break its written
contract, and passes on the documented one (pure: synthetic outcomes, no servers)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

from tests.differential.compare import RowDiff, TableComparison
from tests.differential.run import ClassOutcome
from tests.differential.types import BY_LIMIT

TABLE = "public.l_x"
BOUNDS = BY_LIMIT["limit-array_lower_bound"]
BC = BY_LIMIT["limit-date_bc_snapshot"]
VARBIT = BY_LIMIT["limit-varbit"]


def _outcome(limit: object, source: Mapping[str, str | None], diffs: list[RowDiff],
             validator: tuple[int, int, int] | None = None,
             history: dict[str, list[str]] | None = None,
             dead: Counter[str] | None = None, preflight: list[str] | None = None,
             ) -> ClassOutcome:
    missing = sum(d.kind == "missing" for d in diffs)
    extra = sum(d.kind == "extra" for d in diffs)
    changed = sum(d.kind == "changed" for d in diffs)
    c = TableComparison(TABLE, len(source), len(source) - missing + extra, missing, extra,
                        changed, diffs)
    c.source_values = {k: {"id": k, "n": "1", "v": v} for k, v in source.items()}
    counts = validator if validator is not None else (missing, extra, changed)
    verdict = "equal" if counts == (0, 0, 0) else (
        f"different (missing {counts[0]}, extra {counts[1]}, changed {counts[2]})")
    return ClassOutcome("limit-x", [c], {TABLE: verdict}, {TABLE: dead} if dead else {}, [], 1,
                        {TABLE: counts}, {TABLE: history or {k: ["initial"] for k in source}},
                        {TABLE: True}, limit, "postgres",  # type: ignore[arg-type]
                        preflight or [])


def _changed(key: str, source: str, target: str | None) -> RowDiff:
    return RowDiff("changed", key, {"v": (source, target)})


def test_the_documented_difference_holds() -> None:
    out = _outcome(BOUNDS, {"[1]": "[0:2]={1,2,3}", "[2]": "{4}"},
                   [_changed("[1]", "[0:2]={1,2,3}", "{1,2,3}")])
    assert out.failures() == []


def test_another_target_value_breaks_it() -> None:
    out = _outcome(BOUNDS, {"[1]": "[0:2]={1,2,3}"}, [_changed("[1]", "[0:2]={1,2,3}", "{1,2}")])
    assert any("the contract says '{1,2,3}'" in p for p in out.failures())


def test_a_row_inside_the_domain_must_not_differ() -> None:
    out = _outcome(BOUNDS, {"[1]": "[0:2]={1,2,3}", "[2]": "{4}"},
                   [_changed("[1]", "[0:2]={1,2,3}", "{1,2,3}"), _changed("[2]", "{4}", "{5}")])
    assert any("inside the carried domain" in p for p in out.failures())


def test_a_value_that_landed_exactly_means_the_contract_is_out_of_date() -> None:
    out = _outcome(BOUNDS, {"[1]": "[0:2]={1,2,3}", "[2]": "[5:5]={9}"},
                   [_changed("[1]", "[0:2]={1,2,3}", "{1,2,3}")])
    assert any("landed exactly" in p for p in out.failures())


def test_the_validator_must_report_the_same_counts() -> None:
    out = _outcome(BOUNDS, {"[1]": "[0:2]={1,2,3}"}, [_changed("[1]", "[0:2]={1,2,3}", "{1,2,3}")],
                   validator=(0, 0, 0))
    assert any("the validator says equal" in p for p in out.failures())


def test_a_snapshot_only_limit_spares_streamed_rows() -> None:
    source = {"[1]": "0044-03-15 BC", "[2]": "0001-01-01 BC"}
    history = {"[1]": ["initial"], "[2]": ["initial", "update-small"]}
    ok = _outcome(BC, source, [_changed("[1]", "0044-03-15 BC", "0044-03-15")], history=history)
    assert ok.failures() == []
    bad = _outcome(BC, source, [_changed("[1]", "0044-03-15 BC", "0044-03-15"),
                                _changed("[2]", "0001-01-01 BC", "0001-01-01")], history=history)
    assert any("lands exactly" in p for p in bad.failures())


REFUSED_AT_PREFLIGHT = [f"table {TABLE}: column(s) v (bit varying): Debezium's change events …"]


def test_a_refused_limit_needs_dead_letters_naming_the_column() -> None:
    diffs = [RowDiff("missing", "[1]", {"v": ("101", None)})]
    named = Counter({"unsupported_value: column 'v': bit varying loses its length": 1})
    assert _outcome(VARBIT, {"[1]": "101"}, diffs, dead=named,
                    preflight=REFUSED_AT_PREFLIGHT).failures() == []
    unnamed = Counter({"apply_failed: something": 1})
    failures = _outcome(VARBIT, {"[1]": "101"}, diffs, dead=unnamed,
                        preflight=REFUSED_AT_PREFLIGHT).failures()
    assert any("do not name column 'v'" in p for p in failures)
    assert any("1 rows refused, 0 dead letters" in p for p in failures)


def test_pre_flight_must_refuse_exactly_the_limits_that_say_so() -> None:
    diffs = [RowDiff("missing", "[1]", {"v": ("101", None)})]
    named = Counter({"unsupported_value: column 'v': bit varying loses its length": 1})
    failures = _outcome(VARBIT, {"[1]": "101"}, diffs, dead=named).failures()
    assert any("pre-flight does not refuse the column 'v'" in p for p in failures)
    out = _outcome(BOUNDS, {"[1]": "[0:2]={1,2,3}"}, [_changed("[1]", "[0:2]={1,2,3}", "{1,2,3}")],
                   preflight=REFUSED_AT_PREFLIGHT)
    assert any(p.startswith("pre-flight refuses") for p in out.failures())


def test_an_unexercised_contract_fails() -> None:
    out = _outcome(BOUNDS, {"[2]": None}, [])
    assert any("not exercised" in p for p in out.failures())


# ----------------------------------------------------------------------------- MongoDB target
FRACTION = BY_LIMIT["limit-timetz_array_fraction"]
NAN = BY_LIMIT["limit-numeric_array_nan"]


def _mongo(limit: object, refused: Mapping[str, tuple[object, Mapping[str, object] | None]],
           validator: str, counts: tuple[int, int, int] = (0, 0, 0),
           history: dict[str, list[str]] | None = None, dead: Counter[str] | None = None,
           texts: Mapping[str, str | None] | None = None, exact: set[str] | None = None,
           ) -> ClassOutcome:
    c = TableComparison(TABLE, 2, 2)
    c.refused = {k: "v: the limit's value" for k in refused}
    c.refused_values = dict(refused)  # type: ignore[arg-type]
    c.refused_exact = exact or set()
    c.source_values = {k: {"v": v} for k, v in (texts or {}).items()}
    return ClassOutcome("limit-x", [c], {TABLE: validator}, {TABLE: dead} if dead else {}, [],
                        1, {TABLE: counts}, {TABLE: history or {k: ["initial"] for k in refused}},
                        {TABLE: False}, limit, "mongodb", [])  # type: ignore[arg-type]


def test_mongo_reported_rows_must_hold_the_documented_form() -> None:
    ok = _mongo(FRACTION, {"[1]": (["03:04:58.123+00"], {"v": ["03:04:58+00"], "n": 1})},
                "different (missing 0, extra 0, changed 1)", (0, 0, 1))
    assert ok.failures() == []
    bad = _mongo(FRACTION, {"[1]": (["03:04:58.123+00"], {"v": ["03:04:58.123+00"], "n": 1})},
                 "different (missing 0, extra 0, changed 1)", (0, 0, 1))
    assert any("not as the contract says" in p for p in bad.failures())
    equal = _mongo(FRACTION, {"[1]": (["03:04:58.123+00"], {"v": ["03:04:58+00"], "n": 1})},
                   "equal")
    assert any("neither different nor an error" in p for p in equal.failures())


def test_mongo_rows_an_update_read_from_the_source_must_be_dead_lettered() -> None:
    history = {"[1]": ["initial"], "[2]": ["initial", "update(v)"]}
    refused = {"[1]": (["NaN"], {"v": None, "n": 1}), "[2]": (["NaN"], {"v": None, "n": 1})}
    named = Counter({"apply_failed: column 'v': numeric NaN cannot be stored": 1})
    ok = _mongo(NAN, refused, "different (missing 0, extra 0, changed 2)", (0, 0, 2), history,
                named)
    assert ok.failures() == []
    silent = _mongo(NAN, refused, "different (missing 0, extra 0, changed 2)", (0, 0, 2),
                    history)
    assert any("1 rows must be dead-lettered, 0 dead letters" in p for p in silent.failures())


def test_mongo_exact_limit_lands_exactly_without_dead_letters() -> None:
    texts = {"[1]": "[0:2]={1,2,3}", "[2]": "{4}"}
    assert _mongo(BOUNDS, {}, "equal", texts=texts).failures() == []
    unexercised = _mongo(BOUNDS, {}, "equal", texts={"[2]": "{4}"}).failures()
    assert any("not exercised" in p for p in unexercised)
    lettered = _mongo(BOUNDS, {}, "equal", texts=texts,
                      dead=Counter({"unsupported_value: column 'v': x": 1})).failures()
    assert any("dead letters" in p for p in lettered)
    no_go = _mongo(BOUNDS, {}, "different (missing 0, extra 0, changed 1)", (0, 0, 1),
                   texts=texts).failures()
    assert any("false NO-GO" in p for p in no_go)


def _refused_table(preflight: list[str], validator: str) -> ClassOutcome:
    c = TableComparison("public.odd", 3, 0, 3)
    return ClassOutcome("name-x", [c], {"public.odd": validator}, {}, [], 1, {}, {}, {}, None,
                        "mongodb", preflight, {"public.odd": ("public.odd", ["dot.col"])})


def test_mongo_table_refused_at_pre_flight_must_name_the_column_and_never_be_equal() -> None:
    named = ["table public.odd: column 'dot.col': its name cannot be a MongoDB field name"]
    error = "error (missing 0, extra 0, changed 0, error PermanentError: column 'dot.col')"
    assert _refused_table(named, error).failures() == []
    assert _refused_table(named, "different (missing 3, extra 0, changed 0)").failures() == []
    assert any("false GO" in p for p in _refused_table(named, "equal").failures())
    assert any("does not refuse" in p for p in _refused_table([], error).failures())
    unnamed = ["table public.odd: no primary key"]
    assert any("without naming column(s) 'dot.col'" in p
               for p in _refused_table(unnamed, error).failures())
