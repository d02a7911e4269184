"""The report of one migration run: its figures, the go/no-go verdict and how it was reached.

    decide(...)                      the verdict: one reason per blocking problem (pure)
    table_figures(spec, ...)         per-table figures from the stages' plain results
    build_report(...)                a JSON-ready `Report` with its verdict
    collect_series / series_from_samples / merge_series   the run's lag, throughput, progress
    render_json / render_markdown / render_html           the report presented

Modules: `model` (the pydantic models and `scrub`), `verdict` (`decide`), `build` (assembly from
stage results), `series` (time series from Prometheus or the monitor's samples), `render` (JSON,
markdown, plain table rows), `html_page` (the offline HTML page with its charts).

Nothing secret enters a report: endpoints only in their redacted form, free text (error messages,
gate reasons, notes) scrubbed of URL passwords, `password=`/`token=` pairs and bearer tokens.
"""

from __future__ import annotations

from migwatch.report.build import (
    build_report,
    schema_change_record,
    slot_retention,
    table_figures,
)
from migwatch.report.html_page import render_html
from migwatch.report.model import (
    LagMeasure,
    Report,
    RunError,
    SchemaChangeRecord,
    SequenceFigures,
    SeriesData,
    SlotRetention,
    TableFigures,
    TimeSeries,
    scrub,
)
from migwatch.report.render import (
    load_json,
    render_json,
    render_markdown,
    sequence_rows,
    table_rows,
)
from migwatch.report.series import collect_series, merge_series, series_from_samples
from migwatch.report.verdict import decide

__all__ = [
    "LagMeasure",
    "Report",
    "RunError",
    "SchemaChangeRecord",
    "SequenceFigures",
    "SeriesData",
    "SlotRetention",
    "TableFigures",
    "TimeSeries",
    "build_report",
    "collect_series",
    "decide",
    "load_json",
    "merge_series",
    "render_html",
    "render_json",
    "render_markdown",
    "schema_change_record",
    "scrub",
    "sequence_rows",
    "series_from_samples",
    "slot_retention",
    "table_figures",
    "table_rows",
]
