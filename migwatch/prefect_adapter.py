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
