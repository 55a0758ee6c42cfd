"""ResumableASHA: Ray Tune restores trials but not ASHA's rungs (ray-project/ray#30838); the rungs are rebuilt
from the trials' result.json, in the order the results were reported, so a restarted grid promotes and stops
exactly as the killed one would have."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from rft_fast.grid.asha import ResumableASHA, reported


def trial(tmp_path: Path, trial_id: str, history: list[tuple[int, float, int]]) -> SimpleNamespace:
    """A restored trial whose folder holds result.json lines (epoch, val_loss, timestamp)."""
    folder = tmp_path / trial_id
    folder.mkdir()
    lines = [json.dumps({"training_iteration": t, "val_loss": v, "timestamp": ts}) for t, v, ts in history]
    (folder / "result.json").write_text("\n".join(lines) + ('\n{"training_it' if history else ""))  # a torn line
    return SimpleNamespace(trial_id=trial_id, path=str(folder), storage=SimpleNamespace(trial_dir_name=trial_id))


def schedulers(cls):
    return cls(metric="val_loss", mode="min", max_t=4, grace_period=1, reduction_factor=2)


def test_reported_skips_a_line_torn_by_a_kill(tmp_path):
    t = trial(tmp_path, "a", [(1, 0.5, 10), (2, 0.4, 20)])
    assert [r["training_iteration"] for r in reported(t.path)] == [1, 2]
    assert reported(None) == [] and reported(tmp_path / "missing") == []


def test_rungs_are_rebuilt_so_a_worse_trial_is_stopped_after_a_restart(tmp_path):
    a = trial(tmp_path, "a", [(1, 1.0, 10), (2, 0.8, 30)])
    b = trial(tmp_path, "b", [(1, 2.0, 20)])
    c = trial(tmp_path, "c", [])  # fresh: nothing reported yet
    new, plain = schedulers(ResumableASHA), schedulers(ASHAScheduler)
    for scheduler in (new, plain):
        for t in (a, b, c):
            scheduler.on_trial_add(None, t)
    new.choose_trial_to_run(SimpleNamespace(get_trials=lambda: [], _trials=[]))  # the replay point
    rungs = dict(new.rungs())
    assert rungs[1] == {"a": -1.0, "b": -2.0} and rungs[2] == {"a": -0.8}
    worse = {"training_iteration": 1, "val_loss": 3.0}
    assert plain.on_trial_result(None, c, worse) == TrialScheduler.CONTINUE  # Ray's own: empty rungs
    assert new.on_trial_result(None, c, worse) == TrialScheduler.STOP


def test_a_decision_to_stop_made_before_the_kill_is_kept(tmp_path):
    # a reached rung 1 first (continued), then b reached it worse: ASHA stopped b, but the kill came before Tune
    # saved b as terminated, so b is restored as unfinished and reports epoch 2.
    a = trial(tmp_path, "a", [(1, 1.0, 10)])
    b = trial(tmp_path, "b", [(1, 2.0, 20)])
    scheduler = schedulers(ResumableASHA)
    for t in (b, a):  # Tune re-adds trials in any order: the replay follows the results' timestamps
        scheduler.on_trial_add(None, t)
    assert scheduler.on_trial_result(None, a, {"training_iteration": 2, "val_loss": 0.9}) == TrialScheduler.CONTINUE
    assert scheduler.on_trial_result(None, b, {"training_iteration": 2, "val_loss": 1.9}) == TrialScheduler.STOP


def test_the_budget_left_survives_a_kill_and_a_restore_from_an_older_snapshot(tmp_path):
    import pickle
    import time

    from rft_fast.grid.budget import PersistentBudget

    path = tmp_path / "budget.json"
    budget = PersistentBudget(10.0, path)
    snapshot = pickle.dumps(budget)  # Tune's experiment snapshot, taken early
    assert not budget.stop_all()  # the first call starts the clock (Tune leaves set-up out)
    time.sleep(1.1)  # the file is written at most once a second (WRITE_EVERY_S)
    assert not budget.stop_all()
    spent = 10.0 - budget.left()
    assert 1.1 <= spent < 5.0
    # killed here; the restore brings the old snapshot (10 s left) back, the file knows better
    restored = pickle.loads(snapshot)
    assert restored.left() == pytest.approx(budget.left(), abs=1e-6)
    assert PersistentBudget(10.0, path).left() == pytest.approx(budget.left(), abs=1e-6)
    spent_out = PersistentBudget(0.5, tmp_path / "other.json")
    spent_out.stop_all()
    time.sleep(0.6)
    assert spent_out.stop_all() and spent_out.left() == 0.0
