"""Target engines: everything that differs between a PostgreSQL and a MongoDB target lives in
one package per engine behind one interface (`base.Target`), chosen once from the spec here.

    postgres/   engine.py (the Target), writer.py, positions.py, migrations.py
    mongo/      engine.py, values.py (the value form), writer.py, positions.py, validation.py,
                migrations.py
Adding an engine: see `base.py`.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from migwatch.config import MigrationSpec
    from migwatch.targets.base import Target

#: `Endpoint.kind` → the engine's Target class ("module:Class", imported when first chosen, so
#: a PostgreSQL migration never loads the MongoDB driver's code paths and no engine imports
#: another)
ENGINES = {
    "postgres": "migwatch.targets.postgres.engine:PostgresTarget",
    "mongodb": "migwatch.targets.mongo.engine:MongoTarget",
}


def engine_for(spec: MigrationSpec) -> Target:
    """The engine of the spec's target."""
    module, _, name = ENGINES[spec.target.kind].partition(":")
    cls: type[Target] = getattr(import_module(module), name)
    return cls(spec)
