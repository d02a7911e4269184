"""Every Prefect task in `tasks/` has a name of its own and is called from somewhere: two tasks
under one name read as one in the Prefect UI, and a task nothing calls is dead code that drifts."""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path

from prefect import Task

import tasks

ROOT = Path(__file__).resolve().parents[2]


def _tasks() -> list[tuple[str, str, Task]]:  # type: ignore[type-arg]
    found = []
    for mod in pkgutil.iter_modules(tasks.__path__):
        module = importlib.import_module(f"tasks.{mod.name}")
        for attr, value in vars(module).items():
            if isinstance(value, Task) and value.fn.__module__ == module.__name__:
                found.append((module.__name__, attr, value))
    return found


def test_the_catalogue_is_found() -> None:
    names = {f"{m}.{a}" for m, a, _ in _tasks()}
    assert {"tasks.report.push_metrics", "tasks.report.publish_dashboard",
            "tasks.validate.push_metrics"} <= names


def test_task_names_are_unique() -> None:
    seen: dict[str, str] = {}
    clashes = []
    for module, attr, t in _tasks():
        if t.name in seen:
            clashes.append(f"{t.name}: {seen[t.name]} and {module}.{attr}")
        seen.setdefault(t.name, f"{module}.{attr}")
    assert clashes == []


def _imported_names(text: str, module: str) -> set[str]:
    pattern = rf"from {re.escape(module)} import (?:\(([^)]*)\)|([^\n]*))"
    names: set[str] = set()
    for paren, line in re.findall(pattern, text):
        names |= {n.split(" as ")[0].strip() for n in (paren or line).split(",") if n.strip()}
    return names


def test_every_task_is_called_from_a_flow_the_cli_or_another_task() -> None:
    """...or offered for users' own flows in its module's `__all__`."""
    files = [p for d in ("flows", "tasks", "migwatch") for p in (ROOT / d).rglob("*.py")]
    text = {p: p.read_text() for p in files}
    unused = []
    for module, attr, _ in _tasks():
        own = ROOT / (module.replace(".", "/") + ".py")
        elsewhere = any(attr in _imported_names(t, module) or f"{module}.{attr}" in t
                        for p, t in text.items() if p != own)
        inside = re.search(rf"(?<!def ){re.escape(attr)}\(", text[own]) is not None
        public = attr in getattr(importlib.import_module(module), "__all__", ())
        if not (elsewhere or inside or public):
            unused.append(f"{module}.{attr}")
    assert unused == []
