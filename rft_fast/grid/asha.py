"""ASHA that survives a restart: Ray Tune restores trials but not the scheduler's rungs (ray-project/ray#30838),
so after a kill a trial below the pre-kill rung cutoff would be promoted. `ResumableASHA` rebuilds each rung
from the results every trial already reported (its result.json) when Tune re-adds the trial on restore, and a
trial whose replayed history ASHA would have stopped is stopped at its next report.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ray.tune.schedulers import ASHAScheduler, TrialScheduler


def reported(trial_dir: str | Path | None) -> list[dict[str, Any]]:
    """The results a trial reported, in order, read from Tune's result.json in its folder (a line cut short by
    a kill is skipped)."""
    path = Path(trial_dir) / "result.json" if trial_dir else None
    if path is None or not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def _trial_dir(trial: Any) -> str | None:
    """The trial's folder, or None for a trial Tune has not named yet (a fresh one: nothing to replay)."""
    storage = getattr(trial, "storage", None)
    return None if storage is None or storage.trial_dir_name is None else trial.path


class ResumableASHA(ASHAScheduler):
    """ASHAScheduler whose rungs are replayed from the trials' reported results after Tune (re-)adds them.

    The replay runs once all restored trials are in (at the next scheduling step), over every trial's results
    merged in the order they were reported, so each rung decision is the one ASHA made before the kill."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pending: list[Any] = []
        self._to_stop: set[str] = set()

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        super().on_trial_add(tune_controller, trial)
        self._pending.append(trial)

    def _replay(self) -> None:
        trials, self._pending = self._pending, []
        history = [
            (r.get("timestamp", 0), r[self._time_attr], t.trial_id, t, r)
            for t in trials
            for r in reported(_trial_dir(t))
            if self._time_attr in r and self._metric in r
        ]
        for _, t_attr, _, trial, result in sorted(history, key=lambda h: h[:3]):
            if trial.trial_id not in self._trial_info or (t_attr >= self._max_t and self._stop_last_trials):
                continue
            action = self._trial_info[trial.trial_id].on_result(trial, t_attr, self._metric_op * result[self._metric])
            if action == TrialScheduler.STOP:
                self._to_stop.add(trial.trial_id)

    def choose_trial_to_run(self, tune_controller: Any) -> Any:
        self._replay()
        return super().choose_trial_to_run(tune_controller)

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        self._replay()
        action = super().on_trial_result(tune_controller, trial, result)
        if trial.trial_id in self._to_stop:
            self._to_stop.discard(trial.trial_id)
            return TrialScheduler.STOP
        return action

    def rungs(self) -> list[tuple[float, dict[str, float]]]:
        """Each rung's milestone and the (signed) metric recorded per trial id, lowest milestone first."""
        return [(milestone, dict(recorded)) for milestone, recorded in reversed(self._brackets[0]._rungs)]
