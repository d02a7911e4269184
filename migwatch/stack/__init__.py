"""The local stack: every server migwatch needs, installed from package registries and run on
127.0.0.1 under one state folder — so tests and the demo use real servers without Docker."""

from migwatch.stack.manager import COMPONENTS, ComponentStatus, Stack

__all__ = ["COMPONENTS", "ComponentStatus", "Stack"]
