"""The results store: every measurement of every fine-tuned model (clean, AutoAttack Linf / L2 / L1 in mode
"standard" or "fast", common corruptions, randomized-smoothing certified accuracy "smoothing-L2" per sigma and
radius, and any threat registered since) in one crash-safe, concurrently writable SQLite file, plus the CSV /
JSON / table exports behind `rft-fast results`.

Modules: threats (the threat registry: each threat's names, run function, key rule and expected rows),
measurement (the row records), schema (tables, generated constraints, migrations), store (the connection,
locking, put / query), summary (the study's wide rows), export, importing."""

from rft_fast.results.export import format_table, to_csv, to_json
from rft_fast.results.measurement import KEY_FIELDS, MODEL_FIELDS, Measurement, Stage, canonical_json
from rft_fast.results.schema import SCHEMA_VERSION
from rft_fast.results.store import Store
from rft_fast.results.threats import (
    ATTACK_MODES,
    ATTACKS,
    LEVEL,
    MODES,
    NAMED,
    NO_MODE,
    POSITIVE_EPS,
    RADIUS_OR_NONE,
    SIGMA_MODE,
    SMOOTHING,
    STUDY_CORRUPTION,
    STUDY_SEVERITY,
    Domain,
    KeyRule,
    RowKey,
    ThreatSpec,
    expected_rows,
    register_threat,
    smoothing_mode,
    smoothing_sigma,
    stage_of,
    stored_threats,
    threat_specs,
    unregister_threat,
)

THREATS = stored_threats()  # the built-in threats' stored names; stored_threats() includes any registered since

__all__ = [
    "Store",
    "Measurement",
    "Stage",
    "THREATS",
    "ATTACKS",
    "MODES",
    "NO_MODE",
    "SMOOTHING",
    "KEY_FIELDS",
    "MODEL_FIELDS",
    "SCHEMA_VERSION",
    "STUDY_CORRUPTION",
    "STUDY_SEVERITY",
    "canonical_json",
    "smoothing_mode",
    "smoothing_sigma",
    "to_csv",
    "to_json",
    "format_table",
    "ThreatSpec",
    "KeyRule",
    "Domain",
    "RowKey",
    "register_threat",
    "unregister_threat",
    "threat_specs",
    "stored_threats",
    "expected_rows",
    "stage_of",
    "POSITIVE_EPS",
    "RADIUS_OR_NONE",
    "ATTACK_MODES",
    "SIGMA_MODE",
    "NAMED",
    "LEVEL",
]
