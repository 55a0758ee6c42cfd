"""The tuning time budget, kept across kills: Tune's TimeoutStopper saves what is left only with its experiment
snapshots, which come as rarely as its checkpoint period allows, so a killed grid got back the time since the
last snapshot. `PersistentBudget` writes what is left to a file at most once a second and, restored from a
snapshot, takes the smaller of the two: a kill returns at most a second of the budget.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from ray.tune.stopper import TimeoutStopper

WRITE_EVERY_S = 1.0


class PersistentBudget(TimeoutStopper):
    """TimeoutStopper(seconds) whose remaining budget also lives in `path` (JSON {"left_s": ...})."""

    def __init__(self, seconds: float, path: str | Path) -> None:
        super().__init__(seconds)
        self._path = str(path)
        self._written = 0.0
        self._load()

    def _load(self) -> None:
        try:
            left = float(json.loads(Path(self._path).read_text())["left_s"])
        except (OSError, ValueError, KeyError, TypeError):
            return
        self._budget = min(self._budget, left)

    def _save(self) -> None:
        tmp = f"{self._path}.tmp"
        Path(self._path).parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "w") as f:
            json.dump({"left_s": max(0.0, self._budget), "budget_s": self._timeout_seconds}, f)
        os.replace(tmp, self._path)

    def left(self) -> float:
        """Seconds of tuning left."""
        return max(0.0, self._budget)

    def stop_all(self) -> bool:
        stop = super().stop_all()
        now = time.monotonic()
        if stop or now - self._written >= WRITE_EVERY_S:
            self._written = now
            self._save()
        return stop

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        self._written = 0.0
        self._load()
