"""pytest-benchmark suites; run with `.venv/bin/pytest bench` (not part of the test command)."""
