"""The PostgreSQL target engine: its writer, positions, schema, migrations (`engine.py`)."""
