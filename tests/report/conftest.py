"""tests/report: the study report from a store."""
