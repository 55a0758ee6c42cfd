"""The grid end to end on Ray Tune (CPU, the built-in digits dataset): ASHA trials -> best checkpoint ->
AutoAttack + corruptions -> store -> report, and a grid killed with SIGKILL mid-run, rerun: nothing lost,
nothing duplicated, finished configurations not redone, the interrupted one resumed from Tune's state."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from helpers import ROOT

from rft_fast.results import Store

QUICK = ROOT / "examples" / "quick.yaml"
THREATS = ("clean", "Linf")  # L2 / L1 AutoAttack cost minutes on CPU; tests/test_eval.py covers them
# timm's test ViT (0.3M parameters, 6 blocks of width 64, 16-pixel patches): AutoAttack's 100-step attacks, which
# dominate these tests on a CPU, cost a third of what they cost on deit_tiny; the grid's behaviour does not depend
# on the backbone (`make demo` runs examples/quick.yaml's). It resolves to timm's default tag.
BACKBONE, NAME = "test_vit", "test_vit.r160_in1k"
pytestmark = pytest.mark.filterwarnings("ignore")


def small_spec(
    tmp_path: Path, backbones: list[str] | None = None, epochs: int = 2, threats: tuple[str, ...] = THREATS
) -> Path:
    """examples/quick.yaml, shrunk to fit CI: one small backbone (BACKBONE unless `backbones`), fewer batches, a
    2-step attack, 16 evaluation images."""
    spec = yaml.safe_load(QUICK.read_text())
    spec["backbones"] = backbones if backbones is not None else [BACKBONE]
    spec["fixed"].update(
        epochs=epochs, batch_size=32, effective_batch=32, max_batches=2, attack_steps=2, val_steps=2, val_samples=32
    )
    spec["budget_minutes"] = 10
    spec["eval"].update(n=16, threats=[*threats, "corruptions"])
    spec["store"], spec["out_dir"] = "runs/results.sqlite", "runs"
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "rft_fast.cli", *args]


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def rows(store: Path) -> list[dict]:
    with Store(store) as s:
        return [m.__dict__ for m in s.query()]


def trial_results(experiment: Path) -> dict[str, list[dict]]:
    """Per Tune trial folder: the metrics it reported, in order."""
    out = {}
    for result in experiment.glob("*/result.json"):
        out[result.parent.name] = [json.loads(line) for line in result.read_text().splitlines() if line.strip()]
    return out


def check_config_rows(found: list[dict], keys: set[tuple[str, str]], threats: tuple[str, ...] = THREATS) -> None:
    """Each configuration: one run id, clean + AutoAttack rows (fast mode) + the study's corruption rows."""
    for backbone, loss in keys:
        mine = [r for r in found if (r["backbone"], r["loss"]) == (backbone, loss)]
        assert len({r["run_id"] for r in mine}) == 1, f"{backbone} {loss}: evaluated under several run ids"
        assert {r["threat"] for r in mine} == set(threats) | {"corruption"}
        for r in mine:
            assert 0.0 <= r["accuracy"] <= 1.0
            if r["threat"] in ("Linf", "L2", "L1"):
                assert r["mode"] == "fast" and r["n"] == 16
        study = [r for r in mine if r["threat"] == "corruption" and r["corruption"] == "study"]
        assert len(study) == 1 and study[0]["n"] == 16


def test_quick_grid_end_to_end_then_report(tmp_path: Path, ray_address: str) -> None:
    # one backbone x two losses: CI runs the whole 4-configuration demo (`make demo`) before the tests
    spec = small_spec(tmp_path)
    done = subprocess.run(
        cli("grid", str(spec), "--address", ray_address),
        cwd=tmp_path,
        env=env(),
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "[2/2]" in done.stdout and done.stdout.rstrip().splitlines()[-2] == "2/2 done, 0 failed"
    assert re.fullmatch(
        r"disk: runs holds \d+ MiB \(Tune logs and checkpoints \d+ MiB\)", done.stdout.rstrip().splitlines()[-1]
    )
    assert "ETA" in done.stdout and "best so far" in done.stdout
    assert "results -> runs/results.sqlite, Tune logs -> runs/tune" in done.stdout
    # honest trial counts: num_samples 2, each either finished both epochs or was stopped by ASHA at the rung
    for line in (line for line in done.stdout.splitlines() if line.startswith("[")):
        counts = re.search(r"trials: (\d+) finished, (\d+) stopped, (\d+) errored, (\d+) not started", line)
        assert counts and sum(map(int, counts.groups())) == 2 and int(counts[1]) >= 1 and counts[3] == counts[4] == "0"
    noise = ("Token authentication", "tensorboard", "Configuration for experiment", "View detailed results")
    assert not [n for n in noise if n in done.stdout + done.stderr], (done.stdout + done.stderr)[-2000:]
    found = rows(tmp_path / "runs" / "results.sqlite")
    keys = {(r["backbone"], r["loss"]) for r in found}
    assert keys == {(NAME, loss) for loss in ("classic_at", "trades")}
    check_config_rows(found, keys)

    # ASHA ran num_samples trials per configuration, each reporting val_loss per epoch, and the evaluated
    # model is the trial with the lowest final val_loss.
    for backbone, loss in keys:
        experiment = tmp_path / "runs" / "tune" / f"{backbone}_{loss}_FFT-5_digits"
        trials = trial_results(experiment)
        assert len(trials) == 2 and all(1 <= len(r) <= 2 for r in trials.values())
        assert all(r[-1]["epoch"] == len(r) and "val_loss" in r[-1] for r in trials.values())
        # one checkpoint copy per trial: Tune's (num_to_keep 1); the trials' working copies are gone
        for trial in (d for d in experiment.iterdir() if d.is_dir()):
            assert [p.parent.name.startswith("checkpoint_") for p in trial.rglob("checkpoint.pt")] == [True]
        best = min(trials.values(), key=lambda r: r[-1]["val_loss"])[-1]["config"]["hparams"]
        stored = next(r["hparams"] for r in found if (r["backbone"], r["loss"]) == (backbone, loss))
        assert {k: stored[k] for k in best} == best

    rerun = subprocess.run(
        cli("grid", str(spec), "--address", ray_address),
        cwd=tmp_path,
        env=env(),
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert rerun.returncode == 0 and rerun.stdout.count(": skipped") == 2, rerun.stdout[-2000:]
    assert rows(tmp_path / "runs" / "results.sqlite") == found

    report = subprocess.run(
        cli("report", "--store", "runs/results.sqlite", "--out", "report", "--mode", "fast"),
        cwd=tmp_path,
        env=env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert report.returncode == 0, report.stderr[-2000:]
    text = (tmp_path / "report" / "report.md").read_text()
    assert "## Borda count" in text and NAME in text
    assert list((tmp_path / "report").glob("*.png"))


def _wait(predicate, proc: subprocess.Popen, what: str, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, f"the grid ended (rc {proc.returncode}) before {what}: {proc.stdout.read()[-3000:]}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def _config_rows(store: Path, loss: str) -> int:
    if not store.is_file():
        return 0
    db = sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=30)
    try:
        return db.execute("SELECT COUNT(*) FROM measurements WHERE loss = ?", (loss,)).fetchone()[0]
    except sqlite3.OperationalError:  # schema not created yet
        return 0
    finally:
        db.close()


def test_grid_killed_mid_run_resumes_without_loss_or_duplicates(tmp_path: Path) -> None:
    # the point is Tune's resume: AutoAttack adds nothing here (the kill-inside-threats test resumes evaluations)
    spec = small_spec(tmp_path, epochs=3, threats=("clean",))
    store = tmp_path / "runs" / "results.sqlite"
    second = tmp_path / "runs" / "tune" / f"{NAME}_trades_FFT-5_digits"
    proc = subprocess.Popen(
        cli("grid", str(spec)),
        cwd=tmp_path,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        # the first configuration is stored whole (the last measurement is the corruption summary) ...
        _wait(lambda: _config_rows(store, "classic_at") > 0 and second.is_dir(), proc, "the first configuration")
        # ... and Tune has saved the second's experiment state and a trial of it has reported an epoch with its
        # checkpoint: kill everything, Ray's processes too.
        _wait(
            lambda: (
                any(second.glob("experiment_state-*.json"))
                and any(second.glob("*/checkpoint_*"))
                and any(p.stat().st_size for p in second.glob("*/result.json"))
            ),
            proc,
            "a checkpoint of the second configuration",
        )
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    first = [r for r in rows(store) if r["loss"] == "classic_at"]
    assert not [r for r in rows(store) if r["loss"] == "trades"], "killed before the second evaluation began"
    trials_before = {d.name for d in second.iterdir() if d.is_dir()}  # Tune may not have written results yet
    assert len(trials_before) >= 1

    rerun = subprocess.run(
        cli("grid", str(spec)), cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=1800
    )
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert "classic_at|FFT-5|digits: skipped" in rerun.stdout and "trades|FFT-5|digits: done" in rerun.stdout
    found = rows(store)
    assert [r for r in found if r["loss"] == "classic_at"] == first  # not re-evaluated: same rows, same times
    check_config_rows(found, {(NAME, loss) for loss in ("classic_at", "trades")}, ("clean",))
    # resumed from Tune's experiment state: the same trials (no fresh search), each with contiguous epochs
    trials_after = trial_results(second)
    assert trials_before <= set(trials_after) and len(trials_after) == 2
    for reported in trials_after.values():
        # no epoch skipped; an epoch reported after Tune's last state snapshot may be reported again on resume
        epochs = sorted({r["epoch"] for r in reported})
        assert epochs == list(range(1, epochs[-1] + 1)) and epochs[-1] <= 3, epochs


def test_an_absurd_learning_rate_is_refused_before_ray_starts(tmp_path: Path) -> None:
    """lr 1e30 (it overflows the first AdamW step) is outside TrainConfig's range: one error line, nothing
    started. Trials that fail at run time are tests/test_grid_failures.py's."""
    spec_path = small_spec(tmp_path)
    spec = yaml.safe_load(spec_path.read_text())
    spec["search"] = {"lr_backbone": {"choice": [1e30]}, "lr_head": 1e30}
    spec_path.write_text(yaml.safe_dump(spec))
    done = subprocess.run(
        cli("grid", str(spec_path)), cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert "error:" in done.stderr and "lr_backbone" in done.stderr and "1e+30" in done.stderr, done.stderr
    assert not (tmp_path / "runs" / "tune").exists() and not (tmp_path / "runs" / "results.sqlite").exists()


def _threat_rows(store: Path) -> dict[str, int]:
    if not store.is_file():
        return {}
    db = sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=30)
    try:
        return dict(db.execute("SELECT threat, COUNT(*) FROM measurements GROUP BY threat").fetchall())
    except sqlite3.OperationalError:  # schema not created yet
        return {}
    finally:
        db.close()


def _run_until(spec: Path, cwd: Path, predicate, what: str) -> None:
    """Starts the grid and SIGKILLs it (Ray's processes too) once predicate() holds."""
    proc = subprocess.Popen(
        cli("grid", str(spec)),
        cwd=cwd,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        _wait(predicate, proc, what)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_grid_killed_inside_and_between_threats_resumes_from_the_first_missing_threat(tmp_path: Path) -> None:
    threats = ("clean", "Linf", "L2", "L1")
    spec = small_spec(tmp_path, threats=threats)
    raw = yaml.safe_load(spec.read_text())
    raw["losses"] = ["classic_at"]
    spec.write_text(yaml.safe_dump(raw))
    store = tmp_path / "runs" / "results.sqlite"
    experiment = tmp_path / "runs" / "tune" / f"{NAME}_classic_at_FFT-5_digits"

    # kill 1: the clean row is stored, AutoAttack Linf is running
    _run_until(spec, tmp_path, lambda: _threat_rows(store).get("clean") == 1, "the clean row")
    first = rows(store)
    trials = trial_results(experiment)
    assert {r["threat"] for r in first} <= {"clean", "Linf"} and len(trials) == 2
    # kill 2: the rerun stores Linf (never re-tuning), then dies inside L2 or just before it
    _run_until(spec, tmp_path, lambda: _threat_rows(store).get("Linf") == 1, "the Linf row")
    second = rows(store)
    assert [r for r in second if r["threat"] == "clean"] == [r for r in first if r["threat"] == "clean"]
    rerun = subprocess.run(
        cli("grid", str(spec)), cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=1800
    )
    assert rerun.returncode == 0 and "classic_at|FFT-5|digits: done" in rerun.stdout, rerun.stdout[-3000:]
    found = rows(store)
    check_config_rows(found, {(NAME, "classic_at")}, threats)
    assert len(found) == len({(r["threat"], r["eps"], r["corruption"]) for r in found})  # nothing twice
    done_before = {(r["threat"], r["eps"]) for r in second}
    assert [r for r in found if (r["threat"], r["eps"]) in done_before] == second  # never recomputed
    assert trial_results(experiment) == trials  # the tuning was not touched after it finished


def test_a_killed_tuning_spends_only_the_budget_that_was_left(tmp_path: Path) -> None:
    spec = small_spec(tmp_path, threats=("clean",))
    raw = yaml.safe_load(spec.read_text())
    budget = 60.0  # killed at 2/3: a rerun that restarted the clock would tune 60 s more, not ~20
    raw.update(losses=["classic_at"], num_samples=None, budget_minutes=budget / 60)
    raw["eval"]["threats"] = ["clean"]
    spec.write_text(yaml.safe_dump(raw))
    experiment = tmp_path / "runs" / "tune" / f"{NAME}_classic_at_FFT-5_digits"

    def reported_after(t0: float) -> bool:
        return any(r["timestamp"] >= t0 for rs in trial_results(experiment).values() for r in rs)

    start = time.time()
    _run_until(
        spec,
        tmp_path,
        lambda: reported_after(start) and time.time() - start > budget * 2 / 3,
        "two thirds of the budget, with a reported epoch",
    )
    restart = time.time()
    left = json.loads((experiment / "budget.json").read_text())["left_s"]  # what the kill left
    reports = sorted(r["timestamp"] for rs in trial_results(experiment).values() for r in rs)
    # The tuning time before the kill was charged: at least the span of the epochs reported (tuning ran through
    # it; timestamps are whole seconds). Not the wall time since start: Ray's start-up, which is not tuning time,
    # took half of it on a loaded CPU.
    assert left <= budget - (reports[-1] - reports[0]) + 1, (left, reports)
    rerun = subprocess.run(
        cli("grid", str(spec)), cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=1800
    )
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    last = max(r["timestamp"] for rs in trial_results(experiment).values() for r in rs)
    # The budget counts tuning time, not Ray's start-up (Tune's TimeoutStopper starts at its first check); what
    # was left at the kill is in budget.json. The rerun's tuning ends within it, plus Ray's start and one epoch
    # in flight (generous: 25 s on a loaded CPU); a restarted clock would run the whole 60 s more.
    assert last - restart <= left + 25, (last - restart, left)


def test_the_same_seed_gives_the_same_trials_and_numbers(tmp_path: Path, ray_address: str) -> None:
    def run(folder: str, seed: int) -> tuple[list[dict], list[dict]]:
        (tmp_path / folder).mkdir()
        spec = small_spec(tmp_path / folder, epochs=1, threats=("clean",))
        raw = yaml.safe_load(spec.read_text())
        raw.update(losses=["classic_at"], seed=seed)
        raw["eval"]["threats"] = ["clean"]
        spec.write_text(yaml.safe_dump(raw))
        done = subprocess.run(
            cli("grid", str(spec), "--address", ray_address),
            cwd=tmp_path / folder,
            env=env(),
            capture_output=True,
            text=True,
            timeout=1800,
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        trials = trial_results(tmp_path / folder / "runs" / "tune" / f"{NAME}_classic_at_FFT-5_digits")
        hparams = sorted((r[-1]["config"]["hparams"] for r in trials.values()), key=json.dumps)
        stored = [
            {k: r[k] for k in ("run_id", "hparams", "threat", "accuracy", "n")}
            for r in rows(tmp_path / folder / "runs" / "results.sqlite")
        ]
        return hparams, stored

    first, again = run("a", 7), run("b", 7)
    # the same sampled trials (unseeded, Tune samples anew each run), trials one at a time, so the same chosen
    # model and the same stored rows
    assert first == again and len(first[0]) == 2
