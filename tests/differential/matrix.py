"""The docs/types.md matrices (types, limits of Debezium, key shapes and names), rendered from the
harness's own lists (types.py, schema.py), so the documentation and what the harness iterates
cannot drift apart (tests/differential/
test_matrix.py checks the file).

    .venv/bin/python -m tests.differential.matrix            # print the matrices
    .venv/bin/python -m tests.differential.matrix --write    # rewrite them in docs/types.md
"""

from __future__ import annotations

import sys
from pathlib import Path

from tests.differential.schema import CLASS_FAILS, CLASS_MONGO_FAILS, CLASSES, MONGO_CLASSES
from tests.differential.types import (
    LIMITS,
    MONGO_OBSERVED_AT,
    PG_OBSERVED_AT,
    TYPES,
    limit_mongo_today,
    limit_pg_today,
    mongo_today,
    pg_today,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "types.md"
MARKS = {
    "types": ("<!-- types:start (generated: python -m tests.differential.matrix --write) -->",
              "<!-- types:end -->"),
    "limits": ("<!-- limits:start (generated: python -m tests.differential.matrix --write) -->",
               "<!-- limits:end -->"),
    "classes": ("<!-- classes:start (generated: python -m tests.differential.matrix --write) -->",
                "<!-- classes:end -->"),
}


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _mongo_status() -> str:
    return f"status today, MongoDB{f' ({MONGO_OBSERVED_AT})' if MONGO_OBSERVED_AT else ''}"


def render_types() -> str:
    lines = [f"| family | type | class | PostgreSQL target | status today, PostgreSQL "
             f"({PG_OBSERVED_AT}) | MongoDB target | {_mongo_status()} |",
             "|---|---|---|---|---|---|---|"]
    for c in TYPES:
        lines.append(f"| {c.family} | `{c.sql_type}` | `{c.class_id}` | {_cell(c.pg)} | "
                     f"{_cell(pg_today(c))} | {_cell(c.mongo)} | {_cell(mongo_today(c))} |")
    return "\n".join(lines)


def render_limits() -> str:
    lines = [f"| class | values | contract, PostgreSQL target | status today, PostgreSQL "
             f"({PG_OBSERVED_AT}) | contract, MongoDB target | {_mongo_status()} |",
             "|---|---|---|---|---|---|"]
    for c in LIMITS:
        types = ", ".join(f"`{t}`" for t in c.types.split(", "))
        run = c.class_id in MONGO_CLASSES
        lines.append(f"| `{c.class_id}` | {types}: {_cell(c.about)} | {_cell(c.pg)} | "
                     f"{_cell(limit_pg_today(c))} | "
                     f"{_cell(c.mongo if run else 'not run on MongoDB')} | "
                     f"{_cell(limit_mongo_today(c, run))} |")
    return "\n".join(lines)


def render_classes() -> str:
    lines = [f"| class | what | run group | status today, PostgreSQL ({PG_OBSERVED_AT}) | "
             f"contract, MongoDB target | {_mongo_status()} |", "|---|---|---|---|---|---|"]
    for c in CLASSES:
        if c.kind in ("type", "limit"):
            continue
        run = c.id in MONGO_CLASSES and MONGO_OBSERVED_AT
        mongo = CLASS_MONGO_FAILS.get(c.id, "PASS") if run else "not run yet"
        lines.append(f"| `{c.id}` | {_cell(c.about)} | {c.group} | "
                     f"{_cell(CLASS_FAILS.get(c.id, 'PASS'))} | {_cell(c.mongo)} | "
                     f"{_cell(mongo)} |")
    return "\n".join(lines)


RENDER = {"types": render_types, "limits": render_limits, "classes": render_classes}


def documented(text: str, which: str) -> str:
    start, end = MARKS[which]
    return text[text.index(start) + len(start):text.index(end)].strip()


def write(path: Path = DOC) -> None:
    text = path.read_text()
    for which, (start, end) in MARKS.items():
        head = text.index(start) + len(start)
        text = text[:head] + "\n" + RENDER[which]() + "\n" + text[text.index(end):]
    path.write_text(text)


if __name__ == "__main__":
    if "--write" in sys.argv[1:]:
        write()
        print(f"wrote the matrices in {DOC}")
    else:
        print("\n\n".join(render() for render in RENDER.values()))
