"""Validation: does the target hold the source's data? Located, CDC-aware, engine-neutral.

    validate(spec, migration_id)         compare every table → ValidationResult
    revalidate(spec, migration_id, res)  re-check pending rows while the source keeps moving
    run_expectations(spec, res)          Great Expectations suites on PostgreSQL targets
    save_result(res) / load_result(id)   the result file the report stage reads

Modules: `canonical` (value forms equal across engines), `base` (the side interface),
`postgres` and `mongo` (one per engine: dialect builds SQL, side does I/O), `compare` (range
digests and bisection), `recheck` (pending rows re-checked against a moving source), `model`
(the result as plain data), `expectations` (GX).
"""

from __future__ import annotations

from migwatch.validation.compare import CompareOptions
from migwatch.validation.expectations import run_expectations
from migwatch.validation.model import (
    DIFFERENT,
    EQUAL,
    ERROR,
    PENDING,
    RangeCheck,
    RowDiff,
    TableResult,
    ValidationResult,
)
from migwatch.validation.run import (
    applied_lsn,
    load_result,
    result_path,
    revalidate,
    save_result,
    validate,
    validate_table,
)

__all__ = [
    "DIFFERENT",
    "EQUAL",
    "ERROR",
    "PENDING",
    "CompareOptions",
    "RangeCheck",
    "RowDiff",
    "TableResult",
    "ValidationResult",
    "applied_lsn",
    "load_result",
    "result_path",
    "revalidate",
    "run_expectations",
    "save_result",
    "validate",
    "validate_table",
]
