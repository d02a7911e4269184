"""What each target engine needs of its own, one module per engine (see `mongo_values`)."""
