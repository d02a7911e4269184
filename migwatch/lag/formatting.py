"""Evaluations as people read them: values with units, status rows, the one-line summary.

One place for the wording, so the CLI, the Prefect artifacts, notifications and the gate's
failure messages say the same thing the same way.
"""

from __future__ import annotations

from migwatch.lag.model import Evaluation, Level


def format_value(measure: str, value: float | None) -> str:
    """A value with its unit: `12.3 s`, `1,234 msgs`, `64.0 MiB`; `?` when unknown."""
    if value is None:
        return "?"
    if measure.endswith("_seconds"):
        return format_duration(value)
    if measure.endswith("_bytes"):
        return format_bytes(value)
    return f"{value:,.0f} msgs"


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60)} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60)} min"


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n:,.1f} TiB"  # pragma: no cover


def status_rows(ev: Evaluation) -> list[dict[str, str]]:
    """One row per measure — measure, value, threshold, state, ETA — for tables and artifacts."""
    rows = []
    for m in ev.measures.values():
        if m.level is Level.OK:
            # under warn but not yet under caught_up: behind, within bounds
            state = "caught up" if m.caught_up else ("unknown" if m.value is None else "behind")
            threshold = f"caught_up {format_value(m.name, m.caught_up_threshold)}"
        else:
            state = m.level.value
            threshold = f"{m.level.value} {format_value(m.name, m.threshold)}"
        eta = "-" if m.caught_up else ("?" if m.eta_seconds is None
                                       else format_duration(m.eta_seconds))
        rows.append({"measure": m.name, "value": format_value(m.name, m.value),
                     "threshold": threshold, "state": state, "eta": eta})
    return rows
