"""The written contracts of Debezium's limits (types.LimitCase), checked exactly.

A limit class holds values Debezium does not carry. It passes only when its tables differ from
the source precisely as docs/types.md says — every documented row differs in the documented way,
no other row differs — and migwatch's validator reports the difference:

    reported   (PostgreSQL) every differing row is a changed row whose source value is outside
               the domain, that the limit alters (`altered`, by the row's workload history),
               and whose target value is `lands_as(source)`; every such source row differs;
               no dead letters; the validator says different with the comparator's
               missing/extra/changed counts
    refused    (PostgreSQL) every differing row holds a refused value on the source (and is one
               `altered` picks, unless `others_exact` is off) and is missing on the target or
               keeps an earlier, unmangled value; every such source row differs; every dead
               letter of the table names the column, at least one per differing row; the
               validator says different with the comparator's counts
    pre-flight a limit that says so is refused by `preflight.preflight` naming the column; the
               others are not refused there (on either target: the MongoDB contract refuses
               the same two types)
    MongoDB    rows outside the limit's domain are set aside by the comparator (compare_mongo's
               `aside`), the others must land exactly; a set-aside row the limit alters (by
               the row's history) is held as `mongo_lands_as` says (reported), the others are
               dead-lettered naming the column (`others_exact` off: only those `altered` picks);
               the validator says different — set-aside rows the target lacks counted missing,
               those it holds changed unless they landed exactly — or stops with an error
               quoting a refused value or naming the column. A limit whose MongoDB contract is
               exact (`mongo_exact`: array bounds, which MongoDB arrays do not have) must land
               exactly, with no dead letter and the validator saying equal

The values compared are the comparator's (compare.py, compare_mongo.py): no migwatch code.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import TYPE_CHECKING

from tests.differential.compare import TableComparison
from tests.differential.types import REFUSED, REPORTED, LimitCase

if TYPE_CHECKING:
    from tests.differential.run import ClassOutcome

COLUMN = "v"  # a limit table's column under test (schema._limit_classes)
SHOWN = 3     # offending rows quoted per kind of problem


def names_column(text: str, column: str) -> bool:
    """Whether a pre-flight failure or a reason names the column as a whole word (`v (bit
    varying)`, `column 'v'`, `"dot.col"`)."""
    return re.search(r"(?<![\w.$])" + re.escape(column) + r"(?![\w.])", text) is not None


def check(outcome: ClassOutcome, limit: LimitCase, target: str) -> list[str]:
    """What in `outcome` breaks the limit's written contract (nothing: it held)."""
    problems = [f"run: {e}" for e in outcome.run_errors]
    # pre-flight refuses the same limits on both targets (no MongoDB mapping for them either)
    named = [p for p in outcome.preflight if names_column(p.split(": ", 1)[-1], COLUMN)]
    if limit.preflight and not named:
        problems.append(f"pre-flight does not refuse the column {COLUMN!r} "
                        f"({limit.types}); its refusals: {outcome.preflight or 'none'}")
    elif not limit.preflight and outcome.preflight:
        problems.append(f"pre-flight refuses: {'; '.join(outcome.preflight)}")
    for c in outcome.comparisons:
        if c.error:
            problems.append(f"{c.table}: cannot compare: {c.error}")
            continue
        if target == "postgres":
            problems += _check_pg(outcome, limit, c)
        else:
            problems += _check_mongo(outcome, limit, c)
    return problems


def _quote(rows: list[str]) -> str:
    return "; ".join(rows[:SHOWN]) + (f"; … ({len(rows)} rows)" if len(rows) > SHOWN else "")


def _history(outcome: ClassOutcome, table: str, key: str) -> list[str]:
    return outcome.history.get(table, {}).get(key, [])


def _alters(limit: LimitCase, outcome: ClassOutcome, table: str, key: str) -> bool:
    """Whether the limit alters this row, by what the workload did to it."""
    return limit.altered is None or limit.altered(_history(outcome, table, key))


def _named_dead_letters(outcome: ClassOutcome, table: str) -> tuple[int, list[str]]:
    """(dead letters naming the column, reasons that do not name it)."""
    letters = outcome.dead_letters.get(table, Counter())
    named = sum(n for reason, n in letters.items() if f"column '{COLUMN}'" in reason)
    other = [reason for reason in letters if f"column '{COLUMN}'" not in reason]
    return named, other


def _check_pg(outcome: ClassOutcome, limit: LimitCase, c: TableComparison) -> list[str]:
    problems: list[str] = []
    source = {k: cols.get(COLUMN) for k, cols in c.source_values.items()}
    diffs = {d.key: d for d in c.first}
    if len(diffs) != c.missing + c.extra + c.changed:
        problems.append(f"{c.table}: {len(diffs)} differences described of "
                        f"{c.missing + c.extra + c.changed}")
    unexplained: list[str] = []
    for key, d in diffs.items():
        src = source.get(key)
        tgt = d.columns.get(COLUMN, (None, None))[1]
        why = ""
        if d.kind == "extra":
            why = "extra on the target"
        elif not limit.holds_outside(src):
            why = f"its source value {src!r} is inside the carried domain"
        elif not _alters(limit, outcome, c.table, key):
            if limit.others_exact:
                why = (f"the contract says this row lands exactly (workload: "
                       f"{' → '.join(_history(outcome, c.table, key))})")
        elif limit.kind == REPORTED:
            expected = limit.lands_as(src) if limit.lands_as and src is not None else None
            if d.kind != "changed":
                why = f"{d.kind} (the contract: the row lands, altered)"
            elif set(d.columns) != {COLUMN} or tgt != expected:
                why = (f"target {tgt!r}, the contract says {expected!r}"
                       + (f"; other columns differ: {sorted(set(d.columns) - {COLUMN})}"
                          if set(d.columns) - {COLUMN} else ""))
        elif d.kind == "changed" and tgt is not None and limit.mangled and limit.mangled(tgt):
            why = f"the target holds a mangled value {tgt!r} instead of refusing it"
        if why:
            unexplained.append(f"{d.kind} key={key} source={src!r}: {why}")
    if unexplained:
        problems.append(f"{c.table}: differences the contract does not explain: "
                        + _quote(unexplained))
    # the converse: every row the contract says cannot land as it is does differ
    landed = [f"key={k} source={v!r} (workload: {' → '.join(_history(outcome, c.table, k))})"
              for k, v in sorted(source.items())
              if limit.holds_outside(v) and k not in diffs
              and _alters(limit, outcome, c.table, k)]
    if landed:
        problems.append(f"{c.table}: rows the contract says Debezium does not carry landed "
                        "exactly (the contract is out of date): " + _quote(landed))
    if not diffs:
        problems.append(f"{c.table}: no row differs, so the contract was not exercised "
                        f"({c.source_rows} source rows)")
    named, other = _named_dead_letters(outcome, c.table)
    if limit.kind == REFUSED:
        if other:
            problems.append(f"{c.table}: dead letters that do not name column {COLUMN!r}: "
                            + _quote(other))
        if named < len(diffs):
            problems.append(f"{c.table}: {len(diffs)} rows refused, {named} dead letters name "
                            f"column {COLUMN!r}")
    elif named or other:
        problems.append(f"{c.table}: {named + len(other)} dead letters, but the contract says "
                        "the values land altered")
    verdict = outcome.validator.get(c.table, "not validated")
    counts = outcome.validator_counts.get(c.table)
    if not verdict.startswith("different") or counts != (c.missing, c.extra, c.changed):
        problems.append(f"{c.table}: the validator says {verdict}; the comparator: missing "
                        f"{c.missing}, extra {c.extra}, changed {c.changed}")
    return problems


def _check_mongo(outcome: ClassOutcome, limit: LimitCase, c: TableComparison) -> list[str]:
    problems: list[str] = []
    if c.missing or c.extra or c.changed:
        problems.append(f"{c.table}: in-domain rows differ: " + _quote(
            [d.describe() for d in c.first]))
    named, other = _named_dead_letters(outcome, c.table)
    verdict = outcome.validator.get(c.table, "not validated")
    if limit.mongo_exact:
        exercised = [k for k, cols in c.source_values.items()
                     if limit.holds_outside(cols.get(COLUMN))]
        if not exercised:
            problems.append(f"{c.table}: no row holds a value the limit is about, so the "
                            "contract was not exercised")
        if named or other:
            problems.append(f"{c.table}: {named + len(other)} dead letters, but the contract "
                            "says the values land exactly: " + _quote(other))
        if not verdict.startswith("equal") and not (c.missing or c.extra or c.changed):
            problems.append(f"{c.table}: the validator says {verdict}, the comparator equal "
                            "(false NO-GO)")
        return problems
    altered: list[str] = []
    lettered = 0
    for key, (raw, held) in sorted(c.refused_values.items()):
        picked = _alters(limit, outcome, c.table, key)
        alters = limit.kind == REPORTED and limit.mongo_lands_as is not None and picked
        value = None if held is None else held.get(COLUMN)
        if alters:
            expected = limit.mongo_lands_as(raw) if limit.mongo_lands_as else None
            if held is None or value != expected:
                altered.append(f"key={key} source={raw!r}: target "
                               f"{'nothing' if held is None else repr(value)}, the contract "
                               f"says {expected!r}")
        else:
            if limit.others_exact or picked:
                lettered += 1
            if held is not None and limit.mangled and limit.mangled(json.dumps(value)):
                altered.append(f"key={key}: the target holds a mangled value {value!r}")
    if altered:
        problems.append(f"{c.table}: refused rows not as the contract says: " + _quote(altered))
    if named < lettered:
        problems.append(f"{c.table}: {lettered} rows must be dead-lettered, {named} dead "
                        f"letters name column {COLUMN!r}")
    if not c.refused:
        problems.append(f"{c.table}: no row holds a value the limit is about, so the contract "
                        "was not exercised")
    kept = sum(1 for _, h in c.refused_values.values() if h is not None)
    exact = len(c.refused_exact)
    expected = (c.missing + len(c.refused_values) - kept, c.extra, c.changed + kept - exact)
    if verdict.startswith("different"):
        if outcome.validator_counts.get(c.table) != expected:
            problems.append(f"{c.table}: the validator says {verdict}; expected missing/extra/"
                            f"changed {expected[0]}/{expected[1]}/{expected[2]} (refused rows "
                            f"{len(c.refused_values)}, {kept} of them on the target, {exact} "
                            "of those exact)")
    elif not (verdict.startswith("error") and (names_column(verdict, COLUMN) or any(
            isinstance(raw, str) and raw in verdict for raw, _ in c.refused_values.values()))):
        problems.append(f"{c.table}: the validator says {verdict}, neither different nor an "
                        "error naming a refused value or the column")
    return problems
