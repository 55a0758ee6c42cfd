"""The results store: one SQLite file that every evaluation writes its measurements to (rft_fast.results.measurement
describes a row, rft_fast.results.schema the tables), shared by any number of processes, crash-safe."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rft_fast.files import TMP_SUFFIX, clean_orphans
from rft_fast.results import schema
from rft_fast.results.measurement import KEY_FIELDS, Measurement, Stage, canonical_json, now, validated_key
from rft_fast.results.schema import SCHEMA_VERSION, SQLITE_HEADER, STAGE_STATUSES
from rft_fast.results.threats import (
    MODES,
    NO_MODE,
    SIGMA_PREFIX,
    check_text,
    smoothing_mode,
    smoothing_sigma,
    stored_threats,
)


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
                head = f.read(len(SQLITE_HEADER))
            if head != SQLITE_HEADER:
                what = "an empty file" if not head else "not an SQLite database"
                raise ValueError(
                    f"{self.path} is {what}, not a results store (a store is never empty on disk: was "
                    "it truncated or overwritten?); it is left as it is: move it away to start a new store"
                )
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
            schema.create(db)
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
                    schema.create(self._db)
        version = self._db.execute("SELECT MAX(version) FROM schema_version").fetchone()[0]
        if version in schema.MIGRATIONS:
            self._migrate()
            version = self._db.execute("SELECT MAX(version) FROM schema_version").fetchone()[0]
        if version != SCHEMA_VERSION:
            newer = ": it was written by a newer rft_fast, upgrade" if (version or 0) > SCHEMA_VERSION else ""
            raise ValueError(
                f"{self.path} has results schema version {version}, this rft_fast reads version {SCHEMA_VERSION}{newer}"
            )
        if schema.needs_widening(self._db):  # a threat registered since the table was made
            with self._write():
                if schema.needs_widening(self._db):
                    schema.rebuild_measurements(self._db)

    def _migrate(self) -> None:
        """Brings an older store up to SCHEMA_VERSION in one transaction (all or nothing; re-checked under the
        write lock, as another process may have just migrated it)."""
        with self._write():
            version = self._db.execute("SELECT MAX(version) FROM schema_version").fetchone()[0]
            while version in schema.MIGRATIONS:
                version = schema.MIGRATIONS[version](self._db)
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
                self._db.execute(schema.upsert(), tuple(schema.encode(c, getattr(m, c)) for c in schema.COLUMNS))
                count += 1
        return count

    @staticmethod
    def where(filters: Mapping[str, Any], allowed: tuple[str, ...] = KEY_FIELDS) -> tuple[str, list[Any]]:
        """An SQL condition (never empty: 'TRUE' without filters) and its arguments for equality `filters`."""
        unknown = sorted(set(filters) - set(allowed))
        if unknown:
            raise ValueError(f"unknown filter(s) {unknown}; filter on {allowed}")
        threats = stored_threats()
        if filters.get("threat", threats[0]) not in threats:
            raise ValueError(f"threat: must be one of {threats}, got {filters['threat']!r}")
        if filters.get("mode", NO_MODE) not in MODES + (NO_MODE,):
            try:
                filters = {**filters, "mode": smoothing_mode(smoothing_sigma(filters["mode"]))}
            except ValueError:
                raise ValueError(
                    f"mode: must be one of {MODES + (NO_MODE,)} or '{SIGMA_PREFIX}<sigma>', got {filters['mode']!r}"
                ) from None
        clause = " AND ".join(f"{k} = ?" for k in filters) or "TRUE"
        return clause, [schema.encode(k, v) for k, v in filters.items()]

    def select(self, where: str, args: list[Any]) -> list[Measurement]:
        """The measurements matching an SQL condition (`where`'s output, extended), in key order. Rows of a threat
        not registered in this process (a plugin's, not imported) are not read: they need their key rule."""
        known = "threat IN (" + ", ".join("?" * len(stored_threats())) + ")"
        sql = f"SELECT * FROM measurements WHERE ({where}) AND {known} {schema.order_by()}"
        return [schema.decode(r) for r in self._db.execute(sql, [*args, *stored_threats()])]

    def query(self, **filters: Any) -> list[Measurement]:
        """Measurements whose key columns equal `filters` (None matches a field that is None), in key order."""
        return self.select(*self.where(filters))

    def has(self, **key: Any) -> bool:
        """Whether a measurement with exactly this key exists (the grid skips finished work with it). Takes the
        key fields (eps / corruption / severity default to None, mode to '-'), e.g. `has(**m.key())`."""
        where, args = self.where(validated_key(**key))
        return self._db.execute(f"SELECT 1 FROM measurements WHERE {where}", args).fetchone() is not None

    def delete(self, **filters: Any) -> int:
        """Deletes the measurements matching `filters` (at least one: never the whole store by accident)."""
        if not filters:
            raise ValueError("delete: give at least one filter")
        where, args = self.where(filters)
        with self._write():
            return self._db.execute(f"DELETE FROM measurements WHERE {where}", args).rowcount

    def summary(
        self, mode: str = "standard", eps: Mapping[str, float] | None = None, *, by_n: bool = True, **filters: Any
    ) -> list[dict[str, Any]]:
        """The wide rows of rft_fast.results.summary.summary (clean, Linf, L2, L1, common per model)."""
        from rft_fast.results.summary import summary

        return summary(self, mode, eps, by_n=by_n, **filters)

    def set_stage(
        self, config: str, stage: str, status: str, reason: str = "", detail: Mapping[str, Any] | None = None
    ) -> Stage:
        """Records the outcome of one stage of a grid configuration, replacing an earlier one."""
        record = Stage(
            check_text("config", config), check_text("stage", stage), status, reason, dict(detail or {}), now()
        )
        if status not in STAGE_STATUSES:
            raise ValueError(f"status: must be one of {STAGE_STATUSES}, got {status!r}")
        if (status == "failed") != bool(reason):
            raise ValueError(f"reason: a failed stage needs its reason, a done one none; got {reason!r}")
        with self._write():
            self._db.execute(
                "INSERT OR REPLACE INTO stages VALUES (?, ?, ?, ?, ?, ?)",
                (config, stage, status, reason, canonical_json(record.detail, "detail"), record.timestamp),
            )
        return record

    def stages(self, config: str | None = None, status: str | None = None) -> list[Stage]:
        """The recorded stages (of one configuration, of one status), ordered by configuration then time."""
        where, args = [], []
        for name, value in (("config", config), ("status", status)):
            if value is not None:
                where.append(f"{name} = ?")
                args.append(value)
        sql = f"SELECT * FROM stages WHERE {' AND '.join(where) or 'TRUE'} ORDER BY config, timestamp, stage"
        return [
            Stage(r["config"], r["stage"], r["status"], r["reason"], json.loads(r["detail"]), r["timestamp"])
            for r in self._db.execute(sql, args)
        ]

    def stage(self, config: str, stage: str) -> Stage | None:
        """The record of one stage, or None."""
        return next((s for s in self.stages(config) if s.stage == stage), None)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
