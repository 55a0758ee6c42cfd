"""The results store: one SQLite file that every evaluation writes its measurements to.

A measurement is one number (an accuracy) under one threat for one fine-tuned model. Its key is the model
(run_id, dataset, backbone, loss, protocol, hparams) plus the threat (threat, eps, corruption, severity, mode);
writing a key again replaces the row, so re-running a grid after a crash never duplicates work. SQLite's UNIQUE
treats NULLs as distinct, so the "none" values of eps / corruption / severity are stored as sentinels
(-1.0 / '' / 0) in NOT NULL columns and mapped back to None in Python: the primary key really is unique.

Randomized smoothing ("smoothing-L2", rft_fast.eval.smoothing) fits the same key: one row per (sigma, radius).
  eps        the certified L2 radius r >= 0 (accuracy = certified accuracy at r: correct and certified at >= r);
             None for the smoothed classifier's Monte-Carlo accuracy (no abstention, no certificate)
  mode       "sigma=<sigma>" (smoothing_mode(sigma), the noise level; e.g. "sigma=0.25"), so sigmas never mix
  versions   must hold "smoothing": {"sigma", "n0", "n", "alpha", ...}: the CERTIFY parameters (recorded, not
             keyed: re-certifying with other n0 / n / alpha replaces the row). The row's own `n` counts images.
Attack rows keep eps > 0 and mode "standard" | "fast"; clean and corruption rows eps None and mode "-".

Stages (table `stages`): what the grid did per configuration, so a rerun resumes at the finest grain and the
report shows failures. Key (config, stage): config is the grid's "backbone|loss|protocol|dataset" key, stage is
"tune" or a threat; status "done" | "failed" with its reason; detail is JSON (for "tune": the chosen trial,
its checkpoint, run id, hparams and trial counts). Writing a stage again replaces it.

Schema history: 1 (clean, Linf, L2, L1, corruption); 2 adds smoothing-L2; 3 adds `stages`. An older file is
migrated in place on first open (one transaction: tables rebuilt or added, rows copied, version set).
"""
from __future__ import annotations

import json
import math
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from numbers import Integral, Real
from pathlib import Path
from typing import Any

from rft_fast.files import TMP_SUFFIX, clean_orphans

SMOOTHING = "smoothing-L2"
THREATS = ("clean", "Linf", "L2", "L1", "corruption", SMOOTHING)
ATTACKS = ("Linf", "L2", "L1")
MODES = ("standard", "fast")  # AutoAttack standard vs APGD-CE + APGD-T: attack rows only
NO_MODE = "-"  # the mode of clean and corruption rows
SIGMA_PREFIX = "sigma="  # the mode of smoothing rows: "sigma=0.25"
STUDY_CORRUPTION, STUDY_SEVERITY = "study", 3  # the study's aggregate: 11 corruption types at severity 3

MODEL_FIELDS = ("run_id", "dataset", "backbone", "loss", "protocol", "hparams")
KEY_FIELDS = MODEL_FIELDS + ("threat", "eps", "corruption", "severity", "mode")
SCHEMA_VERSION = 3
_SQLITE_HEADER = b"SQLite format 3\x00"  # the first 16 bytes of every SQLite database file
STAGE_STATUSES = ("done", "failed")

# Sentinels for the key columns whose Python value is None (see the module docstring).
_NONE_EPS, _NONE_CORRUPTION, _NONE_SEVERITY = -1.0, "", 0

_SCHEMA = f"""
CREATE TABLE measurements (
    run_id     TEXT    NOT NULL,
    dataset    TEXT    NOT NULL,
    backbone   TEXT    NOT NULL,
    loss       TEXT    NOT NULL,
    protocol   TEXT    NOT NULL,
    hparams    TEXT    NOT NULL,  -- canonical JSON (sorted keys, compact)
    threat     TEXT    NOT NULL CHECK (threat IN {THREATS}),
    eps        REAL    NOT NULL CHECK (CASE WHEN threat IN {ATTACKS} THEN eps > 0
                                            WHEN threat = '{SMOOTHING}' THEN eps >= 0 OR eps = {_NONE_EPS}
                                            ELSE eps = {_NONE_EPS} END),
    corruption TEXT    NOT NULL CHECK ((threat = 'corruption') = (corruption != '')),
    severity   INTEGER NOT NULL CHECK (CASE threat WHEN 'corruption' THEN severity BETWEEN 1 AND 5
                                                   ELSE severity = {_NONE_SEVERITY} END),
    mode       TEXT    NOT NULL CHECK (CASE WHEN threat IN {ATTACKS} THEN mode IN {MODES}
                                            WHEN threat = '{SMOOTHING}' THEN mode LIKE '{SIGMA_PREFIX}%'
                                                 AND CAST(substr(mode, {len(SIGMA_PREFIX) + 1}) AS REAL) > 0
                                            ELSE mode = '{NO_MODE}' END),
    accuracy   REAL    NOT NULL CHECK (accuracy BETWEEN 0 AND 1),
    n          INTEGER NOT NULL CHECK (n >= 1),
    seconds    REAL    NOT NULL CHECK (seconds >= 0),
    versions   TEXT    NOT NULL,  -- JSON
    timestamp  TEXT    NOT NULL,  -- UTC ISO-8601
    PRIMARY KEY ({", ".join(KEY_FIELDS)})
)
"""


_STAGES_SCHEMA = f"""
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


@dataclass(frozen=True)
class Stage:
    """One stage of one grid configuration: "tune" or a threat, done or failed (with its reason)."""

    config: str
    stage: str
    status: str
    reason: str = ""
    detail: dict = field(default_factory=dict)
    timestamp: str = ""


def canonical_json(value: Any, name: str) -> str:
    """Sorted keys, no spaces, no NaN: equal dicts give equal strings, so hparams can be part of the key."""
    if not isinstance(value, Mapping):
        raise ValueError(f"{name}: must be a dict, got {type(value).__name__}")
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name}: not JSON-serialisable ({e})") from None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _text(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name}: must be a non-empty string, got {value!r}")
    return value


def _real(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
        raise ValueError(f"{name}: must be a finite number, got {value!r}")
    return float(value)


def _integer(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise ValueError(f"{name}: must be an integer, got {value!r}")
    return int(value)


def smoothing_mode(sigma: float) -> str:
    """The mode of smoothing rows at noise level sigma (> 0): "sigma=0.25" (the float's shortest repr)."""
    if isinstance(sigma, bool) or not isinstance(sigma, Real) or not math.isfinite(sigma) or sigma <= 0:
        raise ValueError(f"sigma: must be a finite number > 0, got {sigma!r}")
    return f"{SIGMA_PREFIX}{float(sigma)!r}"


def smoothing_sigma(mode: str) -> float:
    """The sigma of a smoothing row's mode ("sigma=0.25" -> 0.25); ValueError naming `mode` otherwise."""
    text = mode[len(SIGMA_PREFIX):] if isinstance(mode, str) and mode.startswith(SIGMA_PREFIX) else None
    try:
        sigma = float(text) if text is not None else math.nan
    except ValueError:
        sigma = math.nan
    if not math.isfinite(sigma) or sigma <= 0:
        raise ValueError(f"mode: threat {SMOOTHING} needs mode '{SIGMA_PREFIX}<sigma > 0>' (e.g. "
                         f"{smoothing_mode(0.25)!r}), got {mode!r}")
    return sigma


def _smoothing_params(versions: Mapping[str, Any], mode: str) -> None:
    """A smoothing row's versions must record CERTIFY's parameters, sigma matching the mode."""
    params = versions.get("smoothing")
    if not isinstance(params, Mapping):
        raise ValueError(f"versions: threat {SMOOTHING} needs versions['smoothing'] = {{'sigma', 'n0', 'n', "
                         f"'alpha', ...}} (the CERTIFY parameters), got {params!r}")
    missing = [k for k in ("sigma", "n0", "n", "alpha") if k not in params]
    if missing:
        raise ValueError(f"versions: versions['smoothing'] lacks {missing}")
    for k in ("n0", "n"):
        if isinstance(params[k], bool) or not isinstance(params[k], int) or params[k] < 1:
            raise ValueError(f"versions: versions['smoothing']['{k}'] must be an int >= 1, got {params[k]!r}")
    alpha = params["alpha"]
    if isinstance(alpha, bool) or not isinstance(alpha, Real) or not 0 < alpha < 1:
        raise ValueError(f"versions: versions['smoothing']['alpha'] must be in (0, 1), got {alpha!r}")
    sigma = params["sigma"]
    if isinstance(sigma, bool) or not isinstance(sigma, Real) or float(sigma) != smoothing_sigma(mode):
        raise ValueError(f"versions: versions['smoothing']['sigma'] ({sigma!r}) must equal the mode's ({mode!r})")


def validated_key(run_id: Any, dataset: Any, backbone: Any, loss: Any, protocol: Any, hparams: Any, threat: Any,
                  eps: Any = None, corruption: Any = None, severity: Any = None, mode: Any = NO_MODE) -> dict[str, Any]:
    """The key fields checked and normalised (eps to float, hparams to its JSON round trip); ValueError names
    the offending field. Shared by Measurement and Store.has so both accept exactly the same keys."""
    key: dict[str, Any] = {f: _text(f, v) for f, v in zip(MODEL_FIELDS[:5], (run_id, dataset, backbone, loss, protocol))}
    key["hparams"] = json.loads(canonical_json(hparams, "hparams"))
    if threat not in THREATS:
        raise ValueError(f"threat: must be one of {THREATS}, got {threat!r}")
    key["threat"] = threat
    if threat in ATTACKS:
        if eps is None or _real("eps", eps) <= 0:
            raise ValueError(f"eps: threat {threat} needs eps > 0, got {eps!r}")
        if mode not in MODES:
            raise ValueError(f"mode: threat {threat} needs mode in {MODES}, got {mode!r}")
        key["eps"] = float(eps)
    elif threat == SMOOTHING:
        if eps is not None and _real("eps", eps) < 0:
            raise ValueError(f"eps: threat {threat} needs eps = the certified radius >= 0 (or None for the "
                             f"smoothed accuracy), got {eps!r}")
        key["eps"] = None if eps is None else float(eps)
        mode = smoothing_mode(smoothing_sigma(mode))  # canonical: "sigma=0.250" and "sigma=0.25" are one key
    else:
        if eps is not None:
            raise ValueError(f"eps: must be None for threat {threat}, got {eps!r}")
        if mode != NO_MODE:
            raise ValueError(f"mode: must be {NO_MODE!r} for threat {threat}, got {mode!r}")
        key["eps"] = None
    key["mode"] = mode
    if threat == "corruption":
        key["corruption"] = _text("corruption", corruption)  # non-empty: '' is the sentinel
        if severity is None or not 1 <= _integer("severity", severity) <= 5:
            raise ValueError(f"severity: threat corruption needs severity in 1..5, got {severity!r}")
        key["severity"] = int(severity)
    else:
        for name, value in (("corruption", corruption), ("severity", severity)):
            if value is not None:
                raise ValueError(f"{name}: must be None for threat {threat}, got {value!r}")
        key["corruption"] = key["severity"] = None
    return key


@dataclass(frozen=True)
class Measurement:
    """One accuracy of one fine-tuned model under one threat. Validated on construction; hparams and versions
    are normalised to their JSON round trip, so a measurement equals the copy the store gives back."""

    run_id: str
    dataset: str
    backbone: str
    loss: str
    protocol: str
    hparams: dict
    threat: str
    eps: float | None
    corruption: str | None
    severity: int | None
    mode: str
    accuracy: float
    n: int
    seconds: float
    versions: dict = field(default_factory=dict)
    timestamp: str = field(default_factory=_now)

    def __post_init__(self) -> None:
        values = validated_key(**{f: getattr(self, f) for f in KEY_FIELDS})
        values["accuracy"] = _real("accuracy", self.accuracy)
        if not 0.0 <= values["accuracy"] <= 1.0:
            raise ValueError(f"accuracy: must be in [0, 1], got {self.accuracy!r}")
        values["n"] = _integer("n", self.n)
        if values["n"] < 1:
            raise ValueError(f"n: must be >= 1 images, got {self.n!r}")
        values["seconds"] = _real("seconds", self.seconds)
        if values["seconds"] < 0:
            raise ValueError(f"seconds: must be >= 0, got {self.seconds!r}")
        values["versions"] = json.loads(canonical_json(self.versions, "versions"))
        if values["threat"] == SMOOTHING:
            _smoothing_params(values["versions"], values["mode"])
        try:
            datetime.fromisoformat(self.timestamp)
        except (TypeError, ValueError):
            raise ValueError(f"timestamp: must be ISO-8601, got {self.timestamp!r}") from None
        for name, value in values.items():
            object.__setattr__(self, name, value)

    def key(self) -> dict[str, Any]:
        """The key fields, e.g. for `store.has(**m.key())`."""
        return {f: getattr(self, f) for f in KEY_FIELDS}


def _encode(name: str, value: Any) -> Any:
    """A value as stored in its column (hparams / versions as canonical JSON, None as the column's sentinel)."""
    if name in ("hparams", "versions"):
        return canonical_json(value, name)
    if value is None and name in ("eps", "corruption", "severity"):
        return {"eps": _NONE_EPS, "corruption": _NONE_CORRUPTION, "severity": _NONE_SEVERITY}[name]
    return value


def _decode(row: sqlite3.Row) -> Measurement:
    return Measurement(**{
        **{k: row[k] for k in row.keys()},
        "hparams": json.loads(row["hparams"]),
        "versions": json.loads(row["versions"]),
        "eps": None if row["eps"] == _NONE_EPS else row["eps"],
        "corruption": None if row["corruption"] == _NONE_CORRUPTION else row["corruption"],
        "severity": None if row["severity"] == _NONE_SEVERITY else row["severity"],
    })


_COLUMNS = tuple(f.name for f in fields(Measurement))
_UPSERT = (
    f"INSERT INTO measurements ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))}) "
    f"ON CONFLICT ({', '.join(KEY_FIELDS)}) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in _COLUMNS if c not in KEY_FIELDS)
)
_ORDER = ("ORDER BY run_id, dataset, backbone, loss, protocol, hparams, "
          f"CASE threat {' '.join(f'WHEN {t!r} THEN {i}' for i, t in enumerate(THREATS))} END, "
          f"CASE WHEN threat = '{SMOOTHING}' THEN CAST(substr(mode, {len(SIGMA_PREFIX) + 1}) AS REAL) END, "
          "eps, mode, corruption, severity")


def _rebuild_measurements(db: sqlite3.Connection) -> None:
    """Recreates `measurements` with the current _SCHEMA (its CHECKs) and copies every row over."""
    db.execute("ALTER TABLE measurements RENAME TO measurements_old")
    db.execute(_SCHEMA)
    db.execute(f"INSERT INTO measurements ({', '.join(_COLUMNS)}) SELECT {', '.join(_COLUMNS)} FROM measurements_old")
    db.execute("DROP TABLE measurements_old")


def _migrate_1_to_2(db: sqlite3.Connection) -> int:
    """Version 2 allows threat smoothing-L2 (eps >= 0, mode 'sigma=...'): SQLite cannot alter CHECKs in place."""
    _rebuild_measurements(db)
    return 2


def _migrate_2_to_3(db: sqlite3.Connection) -> int:
    """Version 3 adds the grid's `stages` table; measurements are untouched."""
    db.execute(_STAGES_SCHEMA)
    return 3


_MIGRATIONS = {1: _migrate_1_to_2, 2: _migrate_2_to_3}  # from version -> step returning the next version, inside one transaction


class Store:
    """A SQLite results file shared by any number of processes (e.g. Ray workers).

    WAL lets readers run beside the writer; busy_timeout makes a writer wait for the lock instead of failing;
    every write is one `BEGIN IMMEDIATE` transaction (taking the write lock up front, so two writers never
    deadlock upgrading a read lock). synchronous=FULL fsyncs the WAL at every commit: a measurement costs
    minutes of GPU time and an fsync milliseconds, so a committed result survives even a power loss, not only
    a killed process (which NORMAL already survives).
    """

    def __init__(self, path: str | Path, timeout: float = 60.0) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            raise ValueError(f"{self.path} is a folder, not a results store file")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            self._create(timeout)
        else:  # a store only ever appears complete (_create); SQLite would take a short file for a new database
            with open(self.path, "rb") as f:
                head = f.read(len(_SQLITE_HEADER))
            if head != _SQLITE_HEADER:
                what = "an empty file" if not head else "not an SQLite database"
                raise ValueError(f"{self.path} is {what}, not a results store (a store is never empty on disk: was "
                                 "it truncated or overwritten?); it is left as it is: move it away to start a new store")
        self._db = sqlite3.connect(self.path, isolation_level=None)  # autocommit: transactions are explicit
        self._db.row_factory = sqlite3.Row
        try:
            self._db.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
            self._set_wal(timeout)
            self._db.execute("PRAGMA synchronous = FULL")
            self._init_schema()
        except sqlite3.DatabaseError as error:
            self._db.close()
            raise ValueError(f"{self.path} is not a readable results store (SQLite: {error})") from None
        except BaseException:
            self._db.close()
            raise

    def _create(self, timeout: float) -> None:
        """Builds a fresh store beside `path` and hard-links it into place, so the file never exists half-made
        (a 0-byte or schema-less file at `path` is then someone else's); a concurrent creator's file wins."""
        clean_orphans(self.path.parent, name=self.path.name, min_age_s=60.0)  # creations killed earlier
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{time.monotonic_ns()}{TMP_SUFFIX}")
        db = sqlite3.connect(tmp, isolation_level=None)
        try:
            mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise ValueError(f"{self.path}: SQLite could not switch the file to WAL (journal mode {mode!r})")
            db.execute("BEGIN IMMEDIATE")
            db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
            db.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION,))
            db.execute(_SCHEMA)
            db.execute(_STAGES_SCHEMA)
            db.execute("COMMIT")
            db.close()  # the last connection checkpoints the WAL into the file and removes it
            try:
                os.link(tmp, self.path)
            except FileExistsError:
                pass
        finally:
            db.close()
            for leftover in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
                leftover.unlink(missing_ok=True)

    def _set_wal(self, timeout: float) -> None:
        """Switches the file to WAL (persistent; a no-op once set). The switch needs an exclusive lock and SQLite
        does not run the busy handler for it, so two processes creating one fresh file retry here by hand."""
        deadline = time.monotonic() + timeout
        delay = 0.001
        while True:
            try:
                mode = self._db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            except sqlite3.OperationalError as err:
                if "locked" not in str(err) and "busy" not in str(err) or time.monotonic() > deadline:
                    raise
                time.sleep(delay)
                delay = min(2 * delay, 0.1)
                continue
            if mode.lower() != "wal":
                raise ValueError(f"{self.path}: SQLite could not switch the file to WAL (journal mode {mode!r})")
            return

    def _tables(self) -> set[str]:
        return {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}

    def _init_schema(self) -> None:
        """Creates the schema in a fresh file; refuses a foreign database or one from another schema version.
        An existing store is only read here, so opening one never waits for a writer."""
        if "schema_version" not in self._tables():
            with self._write():  # re-checked under the write lock: another process may have just created it
                tables = self._tables()
                if tables and "schema_version" not in tables:
                    raise ValueError(f"{self.path} is not an rft_fast results store (tables: {sorted(tables)})")
                if not tables:
                    self._db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
                    self._db.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION,))
                    self._db.execute(_SCHEMA)
                    self._db.execute(_STAGES_SCHEMA)
        version = self._db.execute("SELECT MAX(version) FROM schema_version").fetchone()[0]
        if version in _MIGRATIONS:
            self._migrate()
            version = self._db.execute("SELECT MAX(version) FROM schema_version").fetchone()[0]
        if version != SCHEMA_VERSION:
            newer = ": it was written by a newer rft_fast, upgrade" if (version or 0) > SCHEMA_VERSION else ""
            raise ValueError(f"{self.path} has results schema version {version}, this rft_fast reads version "
                             f"{SCHEMA_VERSION}{newer}")

    def _migrate(self) -> None:
        """Brings an older store up to SCHEMA_VERSION in one transaction (all or nothing; re-checked under the
        write lock, as another process may have just migrated it)."""
        with self._write():
            version = self._db.execute("SELECT MAX(version) FROM schema_version").fetchone()[0]
            while version in _MIGRATIONS:
                version = _MIGRATIONS[version](self._db)
                self._db.execute("UPDATE schema_version SET version = ?", (version,))

    @contextmanager
    def _write(self) -> Iterator[None]:
        """One transaction holding the write lock from its start; rolled back on any error, a failed COMMIT too."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise

    def put(self, m: Measurement) -> None:
        """Writes `m`, replacing the row with the same key."""
        self.put_many([m])

    def put_many(self, ms: Iterable[Measurement]) -> int:
        """Writes all of `ms` in one transaction (all or nothing, also if the iterable raises); returns the count."""
        count = 0
        with self._write():
            for m in ms:
                if not isinstance(m, Measurement):
                    raise TypeError(f"put_many: expected Measurement, got {type(m).__name__}")
                self._db.execute(_UPSERT, tuple(_encode(c, getattr(m, c)) for c in _COLUMNS))
                count += 1
        return count

    @staticmethod
    def _where(filters: Mapping[str, Any], allowed: tuple[str, ...] = KEY_FIELDS) -> tuple[str, list[Any]]:
        """An SQL condition (never empty: 'TRUE' without filters) and its arguments for equality `filters`."""
        unknown = sorted(set(filters) - set(allowed))
        if unknown:
            raise ValueError(f"unknown filter(s) {unknown}; filter on {allowed}")
        if filters.get("threat", THREATS[0]) not in THREATS:
            raise ValueError(f"threat: must be one of {THREATS}, got {filters['threat']!r}")
        if filters.get("mode", NO_MODE) not in MODES + (NO_MODE,):
            try:
                filters = {**filters, "mode": smoothing_mode(smoothing_sigma(filters["mode"]))}
            except ValueError:
                raise ValueError(f"mode: must be one of {MODES + (NO_MODE,)} or '{SIGMA_PREFIX}<sigma>', "
                                 f"got {filters['mode']!r}") from None
        clause = " AND ".join(f"{k} = ?" for k in filters) or "TRUE"
        return clause, [_encode(k, v) for k, v in filters.items()]

    def _select(self, where: str, args: list[Any]) -> list[Measurement]:
        return [_decode(r) for r in self._db.execute(f"SELECT * FROM measurements WHERE {where} {_ORDER}", args)]

    def query(self, **filters: Any) -> list[Measurement]:
        """Measurements whose key columns equal `filters` (None matches a field that is None), in key order."""
        return self._select(*self._where(filters))

    def has(self, **key: Any) -> bool:
        """Whether a measurement with exactly this key exists (the grid skips finished work with it). Takes the
        key fields (eps / corruption / severity default to None, mode to '-'), e.g. `has(**m.key())`."""
        where, args = self._where(validated_key(**key))
        return self._db.execute(f"SELECT 1 FROM measurements WHERE {where}", args).fetchone() is not None

    def delete(self, **filters: Any) -> int:
        """Deletes the measurements matching `filters` (at least one: never the whole store by accident)."""
        if not filters:
            raise ValueError("delete: give at least one filter")
        where, args = self._where(filters)
        with self._write():
            return self._db.execute(f"DELETE FROM measurements WHERE {where}", args).rowcount

    def summary(self, mode: str = "standard", eps: Mapping[str, float] | None = None, *, by_n: bool = True,
                **filters: Any) -> list[dict[str, Any]]:
        """One wide row per model and test-subset size n: clean, Linf, L2, L1 (attack rows of `mode` only:
        standard and fast are never mixed), common (corruption 'study' at severity 3) and the eps of each attack
        column; None where missing. Accuracies measured on different n are never put on one row, unless
        by_n=False (the report, which carries each accuracy's own n): then one row per model, "n" None.
        smoothing-L2 rows are not among these columns and never enter it (query(threat="smoothing-L2") lists them).

        A model measured at several eps of one threat is ambiguous: pass `eps={'Linf': 8/255, ...}` to pick,
        else ValueError. `filters` restrict the models (run_id, dataset, backbone, loss, protocol, hparams).
        """
        if mode not in MODES:
            raise ValueError(f"mode: must be one of {MODES}, got {mode!r}")
        unknown = sorted(set(eps or {}) - set(ATTACKS))
        if unknown:
            raise ValueError(f"eps: keys must be among {ATTACKS}, got {unknown}")
        where, args = self._where(filters, MODEL_FIELDS)
        where += (" AND (threat = 'clean' OR (threat = 'corruption' AND corruption = ? AND severity = ?)"
                  f" OR (threat IN {ATTACKS} AND mode = ?" + " AND (threat != ? OR eps = ?)" * len(eps or {}) + "))")
        args += [STUDY_CORRUPTION, STUDY_SEVERITY, mode] + [v for t, e in (eps or {}).items() for v in (t, e)]
        rows: dict[tuple, dict[str, Any]] = {}
        for m in self._select(where, args):
            group = (*(_encode(f, getattr(m, f)) for f in MODEL_FIELDS), m.n if by_n else None)
            row = rows.setdefault(group, {
                **{f: getattr(m, f) for f in MODEL_FIELDS}, "n": group[-1], "mode": mode, "clean": None,
                **{k: None for t in ATTACKS for k in (t, f"{t}_eps")}, "common": None,
            })
            if m.threat in ATTACKS:
                if row[f"{m.threat}_eps"] is not None:
                    raise ValueError(f"{m.threat}: {dict(zip(MODEL_FIELDS, group))} has several eps ("
                                     f"{row[f'{m.threat}_eps']}, {m.eps}); pick one with eps={{{m.threat!r}: ...}}")
                row[f"{m.threat}_eps"] = m.eps
            row["common" if m.threat == "corruption" else m.threat] = m.accuracy
        return list(rows.values())

    def set_stage(self, config: str, stage: str, status: str, reason: str = "",
                  detail: Mapping[str, Any] | None = None) -> Stage:
        """Records the outcome of one stage of a grid configuration, replacing an earlier one."""
        record = Stage(_text("config", config), _text("stage", stage), status, reason, dict(detail or {}), _now())
        if status not in STAGE_STATUSES:
            raise ValueError(f"status: must be one of {STAGE_STATUSES}, got {status!r}")
        if (status == "failed") != bool(reason):
            raise ValueError(f"reason: a failed stage needs its reason, a done one none; got {reason!r}")
        with self._write():
            self._db.execute("INSERT OR REPLACE INTO stages VALUES (?, ?, ?, ?, ?, ?)",
                             (config, stage, status, reason, canonical_json(record.detail, "detail"), record.timestamp))
        return record

    def stages(self, config: str | None = None, status: str | None = None) -> list[Stage]:
        """The recorded stages (of one configuration, of one status), ordered by configuration then time."""
        where, args = [], []
        for name, value in (("config", config), ("status", status)):
            if value is not None:
                where.append(f"{name} = ?")
                args.append(value)
        sql = f"SELECT * FROM stages WHERE {' AND '.join(where) or 'TRUE'} ORDER BY config, timestamp, stage"
        return [Stage(r["config"], r["stage"], r["status"], r["reason"], json.loads(r["detail"]), r["timestamp"])
                for r in self._db.execute(sql, args)]

    def stage(self, config: str, stage: str) -> Stage | None:
        """The record of one stage, or None."""
        return next((s for s in self.stages(config) if s.stage == stage), None)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
