"""The store's tables and their history: the `measurements` table, whose per-threat CHECK constraints are
generated from the registered threats' key rules (rft_fast.results.threats), the grid's `stages` table, the
encoding of a row into its columns, and the migrations from older schema versions.

SQLite's UNIQUE treats NULLs as distinct, so the "none" values of eps / corruption / severity are stored as
sentinels (-1.0 / '' / 0) in NOT NULL columns and mapped back to None in Python: the primary key really is
unique. For the built-in threats the generated table is exactly the one rft_fast has always written.

Schema history: 1 (clean, Linf, L2, L1, corruption); 2 adds smoothing-L2; 3 adds `stages`. An older file is
migrated in place on first open (one transaction: tables rebuilt or added, rows copied, version set). A threat
registered later (a plugin's) widens the threat CHECK: a file whose table does not accept a registered threat
gets its table rebuilt the same way on open, rows copied; a table is never narrowed.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Callable
from dataclasses import fields
from typing import Any

from rft_fast.results.measurement import KEY_FIELDS, Measurement, canonical_json
from rft_fast.results.threats import (
    NONE_CORRUPTION,
    NONE_DOMAINS,
    NONE_EPS,
    NONE_SEVERITY,
    ThreatSpec,
    stored_threats,
    threat_specs,
)

SCHEMA_VERSION = 3
SQLITE_HEADER = b"SQLite format 3\x00"  # the first 16 bytes of every SQLite database file
STAGE_STATUSES = ("done", "failed")
COLUMNS = tuple(f.name for f in fields(Measurement))
_NONE = {"eps": NONE_EPS, "corruption": NONE_CORRUPTION, "severity": NONE_SEVERITY}
_LEAD = {
    name: f"    {name:<10} {kind:<7} NOT NULL CHECK ("
    for name, kind in (
        ("threat", "TEXT"),
        ("eps", "REAL"),
        ("corruption", "TEXT"),
        ("severity", "INTEGER"),
        ("mode", "TEXT"),
    )
}

STAGES_SCHEMA = f"""
CREATE TABLE stages (
    config    TEXT NOT NULL CHECK (config != ''),
    stage     TEXT NOT NULL CHECK (stage != ''),
    status    TEXT NOT NULL CHECK (status IN {STAGE_STATUSES}),
    reason    TEXT NOT NULL CHECK ((status = 'failed') = (reason != '')),
    detail    TEXT NOT NULL,  -- JSON
    timestamp TEXT NOT NULL,  -- UTC ISO-8601
    PRIMARY KEY (config, stage)
)
"""


def _names(threats: list[str]) -> str:
    return "(" + ", ".join(f"'{t}'" for t in threats) + ")"


def _is(threats: list[str]) -> str:
    return f"threat = '{threats[0]}'" if len(threats) == 1 else f"threat IN {_names(threats)}"


def _groups(specs: list[ThreatSpec], column: str) -> dict[str, list[str]]:
    """SQL condition -> the threats whose rows use `column` under it (registration order; unused: left out)."""
    groups: dict[str, list[str]] = {}
    for spec in specs:
        domain = getattr(spec.key, column)
        if domain != NONE_DOMAINS[column]:
            groups.setdefault(domain.sql, []).append(spec.threat)
    return groups


def _indented(sql: str, indent: int) -> str:
    return sql.replace("\n", "\n" + " " * indent)


def _check(specs: list[ThreatSpec], column: str) -> str:
    """The CHECK condition of one key column: each group's condition for its threats, the sentinel otherwise."""
    groups, none = _groups(specs, column), NONE_DOMAINS[column].sql
    lead = len(_LEAD[column])
    if not groups:
        return none
    if column == "corruption" and len(groups) == 1:  # one rule: the column is set exactly for its threats
        ((sql, threats),) = groups.items()
        return f"({_is(threats)}) = ({sql})"
    if column == "severity" and all(len(t) == 1 for t in groups.values()):  # CASE on the threat's value
        pad = lead + len("CASE threat ")
        cases = [f"WHEN '{t[0]}' THEN {_indented(sql, pad + 5)}" for sql, t in groups.items()]
        return "CASE threat " + ("\n" + " " * pad).join(cases + [f"ELSE {none} END"])
    pad = lead + len("CASE ")
    cases = [f"WHEN {_is(t)} THEN {_indented(sql, pad + 5)}" for sql, t in groups.items()]
    return "CASE " + ("\n" + " " * pad).join(cases + [f"ELSE {none} END"])


def measurements_schema(specs: list[ThreatSpec] | None = None) -> str:
    """The CREATE TABLE of `measurements` for the registered threats (or `specs`)."""
    specs = threat_specs() if specs is None else specs
    key = "\n".join(f"{_LEAD[c]}{_check(specs, c)})," for c in ("eps", "corruption", "severity", "mode"))
    return f"""
CREATE TABLE measurements (
    run_id     TEXT    NOT NULL,
    dataset    TEXT    NOT NULL,
    backbone   TEXT    NOT NULL,
    loss       TEXT    NOT NULL,
    protocol   TEXT    NOT NULL,
    hparams    TEXT    NOT NULL,  -- canonical JSON (sorted keys, compact)
{_LEAD["threat"]}threat IN {_names([s.threat for s in specs])}),
{key}
    accuracy   REAL    NOT NULL CHECK (accuracy BETWEEN 0 AND 1),
    n          INTEGER NOT NULL CHECK (n >= 1),
    seconds    REAL    NOT NULL CHECK (seconds >= 0),
    versions   TEXT    NOT NULL,  -- JSON
    timestamp  TEXT    NOT NULL,  -- UTC ISO-8601
    PRIMARY KEY ({", ".join(KEY_FIELDS)})
)
"""


def order_by() -> str:
    """Rows in key order, threats in registration order, each threat's own order (smoothing: by sigma) first."""
    threats = " ".join(f"WHEN '{t}' THEN {i}" for i, t in enumerate(stored_threats()))
    own = [f"CASE WHEN {_is([s.threat])} THEN {s.key.mode.order} END" for s in threat_specs() if s.key.mode.order]
    return ", ".join(
        [
            "ORDER BY run_id, dataset, backbone, loss, protocol, hparams",
            f"CASE threat {threats} END",
            *own,
            "eps, mode, corruption, severity",
        ]
    )


def upsert() -> str:
    return (
        f"INSERT INTO measurements ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))}) "
        f"ON CONFLICT ({', '.join(KEY_FIELDS)}) DO UPDATE SET "
        + ", ".join(f"{c} = excluded.{c}" for c in COLUMNS if c not in KEY_FIELDS)
    )


def encode(name: str, value: Any) -> Any:
    """A value as stored in its column (hparams / versions as canonical JSON, None as the column's sentinel)."""
    if name in ("hparams", "versions"):
        return canonical_json(value, name)
    if value is None and name in _NONE:
        return _NONE[name]
    return value


def decode(row: sqlite3.Row) -> Measurement:
    return Measurement(
        **{
            **{k: row[k] for k in row.keys()},
            "hparams": json.loads(row["hparams"]),
            "versions": json.loads(row["versions"]),
            **{k: None if row[k] == sentinel else row[k] for k, sentinel in _NONE.items()},
        }
    )


def create(db: sqlite3.Connection) -> None:
    """The tables of a fresh store (inside the caller's transaction)."""
    db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    db.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION,))
    db.execute(measurements_schema())
    db.execute(STAGES_SCHEMA)


def rebuild_measurements(db: sqlite3.Connection) -> None:
    """Recreates `measurements` with the current schema (its CHECKs) and copies every row over."""
    db.execute("ALTER TABLE measurements RENAME TO measurements_old")
    db.execute(measurements_schema())
    db.execute(f"INSERT INTO measurements ({', '.join(COLUMNS)}) SELECT {', '.join(COLUMNS)} FROM measurements_old")
    db.execute("DROP TABLE measurements_old")


def table_threats(db: sqlite3.Connection) -> set[str]:
    """The threat values the file's `measurements` table accepts (its threat CHECK)."""
    row = db.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'measurements'").fetchone()
    match = re.search(r"threat IN \(([^)]*)\)", row[0] if row else "")
    return set(re.findall(r"'([^']*)'", match.group(1))) if match else set()


def needs_widening(db: sqlite3.Connection) -> bool:
    """Whether a registered threat is one the file's table refuses, and every threat it accepts is registered
    (a table is widened, never narrowed: another process may know threats this one does not)."""
    accepted, registered = table_threats(db), set(stored_threats())
    return bool(accepted) and accepted < registered


def _migrate_1_to_2(db: sqlite3.Connection) -> int:
    """Version 2 allows threat smoothing-L2 (eps >= 0, mode 'sigma=...'): SQLite cannot alter CHECKs in place."""
    rebuild_measurements(db)
    return 2


def _migrate_2_to_3(db: sqlite3.Connection) -> int:
    """Version 3 adds the grid's `stages` table; measurements are untouched."""
    db.execute(STAGES_SCHEMA)
    return 3


# from version -> step returning the next version, inside one transaction
MIGRATIONS: dict[int, Callable[[sqlite3.Connection], int]] = {1: _migrate_1_to_2, 2: _migrate_2_to_3}
