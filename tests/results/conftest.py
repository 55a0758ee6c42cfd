"""tests/results: the SQLite store (schema, migrations, locking), import, atomic files."""
