"""PromQL built from the metric objects in `migwatch.metrics`, never from retyped strings.

A selector names the metric as Prometheus stores it (a counter `migration_rows` is exported as
`migration_rows_total`) and refuses a label the metric does not declare, so a renamed metric or
label breaks here, at build time, instead of silently drawing an empty panel.
"""

from __future__ import annotations

import re
from typing import Any

from migwatch.metrics import REGISTRY


def name(metric: Any) -> str:
    """The name a metric's main series carry in Prometheus (`_total` for counters)."""
    base = str(metric._name)
    return f"{base}_total" if metric._type == "counter" else base


def label_names(metric: Any) -> tuple[str, ...]:
    return tuple(metric._labelnames)


def quote(value: str) -> str:
    """A PromQL string literal."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def selector(metric: Any, suffix: str = "", **matchers: str) -> str:
    """`name{label="v"}`; a value starting with `=~` is a regex match (`=~$migration_id`)."""
    unknown = sorted(set(matchers) - set(label_names(metric)))
    if unknown:
        raise ValueError(f"{name(metric)} has no label(s) {unknown}")
    parts = []
    for label, value in matchers.items():
        if value.startswith("=~"):
            parts.append(f"{label}=~{quote(value[2:])}")
        else:
            parts.append(f"{label}={quote(value)}")
    metric_name = (str(metric._name) + suffix) if suffix else name(metric)
    return metric_name + ("{" + ",".join(parts) + "}" if parts else "")


def by(metric: Any, *labels: str) -> str:
    """`by (a, b)` with each label checked against the metric's declared labels."""
    unknown = sorted(set(labels) - set(label_names(metric)))
    if unknown:
        raise ValueError(f"{name(metric)} has no label(s) {unknown}")
    return "by (" + ", ".join(labels) + ")"


def exported_names() -> frozenset[str]:
    """Every series name migwatch's registry can export (with `_total`, `_bucket`, ...)."""
    return frozenset(REGISTRY._names_to_collectors)


_KEYWORDS = frozenset(
    (
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "and",
        "or",
        "unless",
        "offset",
        "bool",
        "inf",
        "nan",
    )
)


def metric_names(expr: str) -> set[str]:
    """The metric names an expression reads (functions, keywords, labels and literals removed):
    what a test compares with `exported_names()`."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    s = re.sub(r"\{[^}]*\}", " ", s)
    s = re.sub(r"\[[^\]]*\]", " ", s)
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    names = set()
    for m in re.finditer(r"(?<![0-9A-Za-z_.:])[a-zA-Z_:][a-zA-Z0-9_:]*", s):
        word = m.group()
        if s[m.end() :].lstrip().startswith("(") or word.lower() in _KEYWORDS:
            continue
        names.add(word)
    return names
