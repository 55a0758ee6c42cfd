"""The results store: every measurement of every fine-tuned model (clean, AutoAttack Linf / L2 / L1 in mode
"standard" or "fast", common corruptions, randomized-smoothing certified accuracy "smoothing-L2" per sigma and
radius) in one crash-safe, concurrently writable SQLite file, plus the CSV / JSON / table exports behind
`rft-fast results`."""
from rft_fast.results.export import format_table, to_csv, to_json
from rft_fast.results.store import (
    ATTACKS, KEY_FIELDS, MODES, SCHEMA_VERSION, SMOOTHING, THREATS, Measurement, Stage, Store, smoothing_mode, smoothing_sigma,
)

__all__ = ["Store", "Measurement", "Stage", "THREATS", "ATTACKS", "MODES", "SMOOTHING", "KEY_FIELDS", "SCHEMA_VERSION",
           "smoothing_mode", "smoothing_sigma", "to_csv", "to_json", "format_table"]
