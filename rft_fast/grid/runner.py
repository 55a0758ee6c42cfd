"""The grid on Ray Tune: one Tuner per configuration with ASHA over function trainables, then the best
trial's checkpoint through evaluation into the results store. Every Ray call of the project lives here.

Nothing is lost, nothing is done twice. Each configuration goes through stages recorded in the store
(`Store.set_stage`): "tune" (the chosen trial, its checkpoint, run id and trial counts) and one per threat.
A rerun never re-tunes a configuration whose "tune" stage is done, and evaluates only the threats whose rows
are not in the store for that run. An interrupted tuning resumes from Tune's experiment state (trials continue
from their last per-epoch checkpoint, which `fit` restores exactly; ASHA's rungs are rebuilt by ResumableASHA;
the time budget is a PersistentBudget, so a restart gets only what was left). A configuration whose tuning or
evaluation raises is recorded as failed with its reason and the grid goes on; a threat that fails does not stop
the others.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from rft_fast.eval.entry import default_device, evaluate_checkpoint, reason
from rft_fast.grid.spec import Config, GridSpec, SearchDim, expand, search_space, validate
from rft_fast.grid.status import TUNE_STAGE, eval_settings, missing_threats, run_info, still_valid, trial_fields
from rft_fast.grid.validation import fetch_missing
from rft_fast.results import Store, stage_of
from rft_fast.train import TrainConfig, fit

TUNE_DIR = "tune"
BUDGET_FILE = "budget.json"  # the tuning seconds left, in each configuration's Tune folder
TRIAL_STATES = ("finished", "stopped", "errored", "not started")
SCRATCH = "rft-fast-trials"  # under the temporary folder: the trials' working copies (see _trainable)


@dataclass
class ConfigOutcome:
    """What happened to one configuration: "skipped" (nothing left to do), "done", or "failed" (`message` says
    why; `failures` maps each failed stage to its reason). trials counts TRIAL_STATES of this run's tuning."""

    key: str
    status: str
    best_metric: float | None = None
    best_hparams: dict[str, Any] | None = None
    trials: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    message: str = ""
    failures: dict[str, str] = field(default_factory=dict)
    resumed: bool = False


def _trainable(params: dict[str, Any]) -> None:
    """A Tune function trainable: one `fit` run, reporting each epoch's metrics with a checkpoint.

    fit works in a scratch folder outside the trial's folder (params["scratch"]/<trial id>, on the node's local
    disk): Tune copies each epoch's checkpoint into the trial's checkpoint_N/, the one copy kept; a trial
    folder of ours would be synced to the storage as a second copy. A restored trial starts from Tune's copy."""
    from ray import tune

    run_dir = Path(params.get("scratch") or Path(tempfile.gettempdir()) / SCRATCH) / tune.get_context().get_trial_id()
    shutil.rmtree(run_dir, ignore_errors=True)  # left by an attempt that was killed
    run_dir.mkdir(parents=True)
    try:
        restored = tune.get_checkpoint()
        if restored is not None:
            with restored.as_directory() as folder:
                for name in ("checkpoint.pt", "metrics.jsonl"):
                    if (Path(folder) / name).is_file():
                        shutil.copy2(Path(folder) / name, run_dir / name)
        config = TrainConfig(**params["fields"], **params["hparams"], out_dir=str(run_dir))

        def report(metrics: dict[str, Any]) -> None:
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(str(run_dir)))

        result = fit(config, callback=report, resume=True)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    if result.status == "diverged":
        raise RuntimeError(f"trial diverged: {result.message}")


def _scratch(config: Config) -> Path:
    """The local folder the configuration's trials work in (see _trainable)."""
    return Path(tempfile.gettempdir()) / SCRATCH / _name(config)


def _tune_dim(dim: SearchDim) -> Any:
    from ray import tune

    if dim.kind == "loguniform":
        return tune.loguniform(dim.low, dim.high)
    if dim.kind == "uniform":
        return tune.uniform(dim.low, dim.high)
    if dim.kind == "choice":
        return tune.choice(list(dim.values))
    return dim.values[0]


def _traceback(error: BaseException) -> str:
    """The error's traceback (its last 4,000 characters), kept in the failed stage's detail."""
    return "".join(traceback.format_exception(error))[-4000:]


def _name(config: Config) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", config.key)


def _tuner(spec: GridSpec, config: Config, storage: Path):
    from ray import tune
    from ray.tune.search.basic_variant import BasicVariantGenerator

    from rft_fast.grid.asha import ResumableASHA
    from rft_fast.grid.budget import PersistentBudget

    fields = trial_fields(spec, config)
    max_t = _max_t(spec, config)
    gpus = spec.resources.gpus_per_trial if torch.cuda.is_available() else 0
    trainable = tune.with_resources(_trainable, {"cpu": spec.resources.cpus_per_trial, "gpu": gpus})
    path = storage / _name(config)
    if tune.Tuner.can_restore(str(path)):
        return tune.Tuner.restore(str(path), trainable, resume_unfinished=True, resume_errored=False), True
    space = {
        "fields": fields,
        "hparams": {d.name: _tune_dim(d) for d in search_space(spec, config)},
        "scratch": str(_scratch(config)),
    }
    (path / BUDGET_FILE).unlink(missing_ok=True)  # left by an experiment Tune cannot restore: a fresh budget
    tuner = tune.Tuner(
        trainable,
        param_space=space,
        tune_config=tune.TuneConfig(
            metric=spec.asha.metric,
            mode=spec.asha.mode,
            scheduler=ResumableASHA(
                max_t=max_t,
                grace_period=min(spec.asha.grace_period, max_t),
                reduction_factor=spec.asha.reduction_factor,
            ),
            search_alg=BasicVariantGenerator(random_state=spec.seed),
            num_samples=spec.num_samples if spec.num_samples is not None else -1,
        ),
        run_config=tune.RunConfig(
            name=_name(config),
            storage_path=str(storage),
            verbose=0,
            stop=PersistentBudget(spec.budget_minutes * 60, path / BUDGET_FILE),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            failure_config=tune.FailureConfig(max_failures=0),
        ),
    )
    return tuner, False


def _max_t(spec: GridSpec, config: Config) -> int:
    """ASHA's max_t: the spec's, else the configuration's epochs."""
    return spec.asha.max_t or TrainConfig(**trial_fields(spec, config)).num_epochs


def count_trials(results: list[Any], max_t: int, num_samples: int | None) -> dict[str, int]:
    """Trials by what happened: finished (reached max_t), stopped (reported, stopped early by ASHA or the
    budget), errored, not started (never reported: created but not run, or never created within the budget)."""
    counts = dict.fromkeys(TRIAL_STATES, 0)
    for r in results:
        epochs = (r.metrics or {}).get("training_iteration", 0)
        if r.error is not None:
            counts["errored"] += 1
        elif epochs >= max_t:
            counts["finished"] += 1
        elif epochs > 0:
            counts["stopped"] += 1
        else:
            counts["not started"] += 1
    if num_samples is not None:
        counts["not started"] += max(0, num_samples - len(results))
    return counts


def _tune(spec: GridSpec, config: Config, storage: Path, store: Store, outcome: ConfigOutcome) -> dict[str, Any] | None:
    """Runs (or resumes) the configuration's Tune experiment; records and returns the "tune" stage's detail,
    or records the failure and returns None."""
    tuner, outcome.resumed = _tuner(spec, config, storage)
    try:
        grid = list(tuner.fit())
    finally:  # no trial runs now: what is left in the scratch folder (a killed trial's copy) is an orphan
        shutil.rmtree(_scratch(config), ignore_errors=True)
    outcome.trials = count_trials(grid, _max_t(spec, config), spec.num_samples)
    finished = [
        r
        for r in grid
        if r.checkpoint is not None
        and r.metrics
        and spec.asha.metric in r.metrics
        and math.isfinite(r.metrics[spec.asha.metric])
    ]
    if not finished:
        errors = "; ".join(dict.fromkeys(reason(r.error) for r in grid if r.error is not None))[:500]
        store.set_stage(
            config.key, TUNE_STAGE, "failed", errors or "no trial reported a finite metric", {"trials": outcome.trials}
        )
        return None
    sign = 1 if spec.asha.mode == "min" else -1
    best = min(finished, key=lambda r: sign * r.metrics[spec.asha.metric])
    checkpoint = Path(best.checkpoint.path) / "checkpoint.pt"
    train_config = TrainConfig(**best.config["fields"], **best.config["hparams"])
    detail = {
        "checkpoint": str(checkpoint),
        "trial": Path(best.path).name,
        "metric": best.metrics[spec.asha.metric],
        "run_id": train_config.run_id(),
        "hparams": dict(best.config["hparams"]),
        "trials": outcome.trials,
    }
    store.set_stage(config.key, TUNE_STAGE, "done", detail=detail)
    return detail


def _run_config(spec: GridSpec, config: Config, storage: Path, store: Store, progress: bool) -> ConfigOutcome:
    t0 = time.perf_counter()
    outcome = ConfigOutcome(config.key, "done")
    tuned = store.stage(config.key, TUNE_STAGE)
    fresh = tuned is None or tuned.status != "done" or not still_valid(spec, config, tuned.detail)
    if fresh:
        try:
            detail = _tune(spec, config, storage, store, outcome)
        except Exception as error:  # noqa: BLE001 - recorded; the grid goes on with the next configuration
            store.set_stage(config.key, TUNE_STAGE, "failed", reason(error), {"traceback": _traceback(error)})
            detail = None
        if detail is None:
            why = store.stage(config.key, TUNE_STAGE).reason
            return ConfigOutcome(
                config.key,
                "failed",
                trials=outcome.trials,
                seconds=time.perf_counter() - t0,
                message=why,
                failures={TUNE_STAGE: why},
                resumed=outcome.resumed,
            )
    else:
        detail = tuned.detail
        outcome.trials = dict(detail.get("trials", {}))
    outcome.best_metric, outcome.best_hparams = detail["metric"], detail["hparams"]
    failures: dict[str, str] = {}
    try:
        train_config, run = run_info(spec, config, detail)
        settings = eval_settings(spec, spec.eval.threats)
        todo = missing_threats(store, run, settings)
        if not todo and not fresh:
            outcome.status = "skipped"
        if todo:

            def failed(threat: str, error: Exception) -> None:
                failures[threat] = reason(error)
                store.set_stage(config.key, threat, "failed", failures[threat], {"traceback": _traceback(error)})

            def measured(m: Any) -> None:
                stage = stage_of(m.threat)
                if stage in failures:
                    return
                previous = store.stage(config.key, stage)
                if previous is not None and previous.status == "failed":
                    store.set_stage(config.key, stage, "done", detail={"run_id": run.run_id})

            evaluate_checkpoint(
                detail["checkpoint"],
                eval_settings(spec, todo),
                store,
                run=run,
                data_root=train_config.data_root,
                device=default_device(),
                progress=progress,
                on_result=measured,
                on_failure=failed,
            )
    except Exception as error:  # noqa: BLE001 - e.g. an unreadable checkpoint: recorded, the grid goes on
        failures["evaluate"] = reason(error)
        store.set_stage(config.key, "evaluate", "failed", failures["evaluate"], {"traceback": _traceback(error)})
    else:
        previous = store.stage(config.key, "evaluate")
        if previous is not None and previous.status == "failed":  # an earlier unreadable checkpoint, say
            store.set_stage(config.key, "evaluate", "done", detail={"run_id": run.run_id})
    outcome.seconds = time.perf_counter() - t0
    if failures:
        outcome.status, outcome.failures = "failed", failures
        outcome.message = "; ".join(f"{stage}: {text}" for stage, text in failures.items())
    return outcome


def _quiet_ray(local: bool) -> None:
    """Ray's start-up notices (token auth, Tune's experiment box and TensorBoard hint into Ray's temporary
    folder) say nothing about where our results are; the CLI prints that line itself. Token auth guards a
    shared cluster; the private local instance (local=True) runs without it."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the legacy reporter prints nothing at verbose=0
    if local:
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    # Tune snapshots the experiment state at every trial checkpoint (num_to_keep=1): that is what makes a killed
    # grid resumable, so its warning that these snapshots are frequent is noise here.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    warnings.filterwarnings("ignore", module=r"ray(\.|$)")


def _check_resources(spec: GridSpec, available: dict[str, float]) -> None:
    """A trial asking for more CPUs or GPUs than the cluster has would wait out the whole budget: refuse it now."""
    need = {
        "CPU": spec.resources.cpus_per_trial,
        "GPU": spec.resources.gpus_per_trial if torch.cuda.is_available() else 0,
    }
    short = [
        f"{kind.lower()}s_per_trial is {value:g} but the Ray cluster has {available.get(kind, 0):g} {kind}"
        for kind, value in need.items()
        if value and available.get(kind, 0) < value
    ]
    if short:
        raise ValueError("resources: " + "; ".join(short))


def run_grid(
    spec: GridSpec,
    *,
    address: str | None = None,
    progress: bool = False,
    on_config: Callable[[int, int, ConfigOutcome], None] | None = None,
) -> list[ConfigOutcome]:
    """Runs what is left of every configuration of `spec`: tune with ASHA on Ray (local by default, or the
    cluster at `address`), evaluate the chosen trial's missing threats, store rows and stages. on_config(i, n,
    outcome) after each. One configuration's failure is recorded and the rest still run."""
    import ray

    if spec.download:
        fetch_missing(spec)  # datasets already under their roots are left as they are
    problems = validate(spec)  # everything checkable before Ray starts: a typo never waits out a budget
    if problems:
        raise ValueError("; ".join(problems))
    configs = expand(spec)
    storage = (Path(spec.out_dir) / TUNE_DIR).resolve()
    _quiet_ray(local=address is None)
    # "local" starts a private Ray instance even when another one runs on this machine; a cluster is opt-in.
    ray.init(
        address=address or "local",
        include_dashboard=False,
        ignore_reinit_error=True,
        log_to_driver=False,
        configure_logging=False,
    )
    outcomes = []
    try:
        _check_resources(spec, ray.cluster_resources())
        with Store(spec.store) as store:
            for i, config in enumerate(configs):
                outcome = _run_config(spec, config, storage, store, progress)
                outcomes.append(outcome)
                if on_config is not None:
                    on_config(i, len(configs), outcome)
    finally:
        if address is None:
            ray.shutdown()
    return outcomes
