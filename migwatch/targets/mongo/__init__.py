"""The MongoDB target engine: its value form, writer, positions, validation side and migrations
(`engine.py`)."""
