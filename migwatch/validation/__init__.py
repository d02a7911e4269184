"""Validation: does the target hold the source's data? Located, CDC-aware, engine-neutral.

    validate(spec, migration_id)         compare every table → ValidationResult
    revalidate(spec, migration_id, res)  re-check pending ranges once the applier passed them
    run_expectations(spec, ...)          Great Expectations suites on PostgreSQL targets

Modules: `canonical` (value forms equal across engines), `base` (the side interface),
`postgres` and `mongo` (one per engine: dialect builds SQL, side does I/O), `compare` (range
digests and bisection), `model` (the result as plain data), `expectations` (GX).
"""

from __future__ import annotations

from migwatch.validation.compare import CompareOptions
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
from migwatch.validation.run import applied_lsn, result_path, revalidate, validate, validate_table

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
    "result_path",
    "revalidate",
    "validate",
    "validate_table",
]
