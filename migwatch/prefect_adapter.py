"""Adapting to Prefect: the one core module (with `notifications.py`) allowed to import Prefect.

Imports happen inside functions, so importing the core never imports Prefect.
"""

from __future__ import annotations

from typing import Any

from migwatch.errors import ConfigError


def load_secret(block_name: str, field: str) -> str:
    """Value of the Prefect Secret block `block_name`; a missing block names `field`."""
    try:
        from prefect.blocks.system import Secret

        block: Any = Secret.load(block_name)  # sync here: called outside any event loop
        value = block.get()
    except ValueError as exc:
        raise ConfigError(f"Prefect Secret block {block_name!r} not found", field=field) from exc
    except Exception as exc:  # the Prefect API may be unreachable
        raise ConfigError(f"cannot load Prefect Secret block {block_name!r}: "
                          f"{type(exc).__name__}", field=field) from exc
    return str(value)


class _TypedErrorsWithoutTraceback:
    """A console-handler filter: a record carrying one of migwatch's own errors keeps its
    message (which names what is wrong) but not the traceback — a user who gave a wrong setting
    needs the one line, not the stack. The API handler runs first and still keeps it whole."""

    def filter(self, record: Any) -> bool:
        from migwatch.errors import MigwatchError

        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, MigwatchError):
            record.exc_info = None
            record.exc_text = None
        return True


def quiet_typed_tracebacks() -> None:
    """Keep tracebacks of migwatch's typed errors off Prefect's console output (idempotent)."""
    import logging

    from prefect.logging.handlers import PrefectConsoleHandler

    loggers = [logging.getLogger(), *(logging.getLogger(name) for name in
                                      list(logging.root.manager.loggerDict))]
    for logger in loggers:
        for handler in getattr(logger, "handlers", ()):
            if isinstance(handler, PrefectConsoleHandler) and not any(
                    isinstance(f, _TypedErrorsWithoutTraceback) for f in handler.filters):
                handler.addFilter(_TypedErrorsWithoutTraceback())
