"""The grid on Ray Tune: one Tuner per configuration with ASHA over function trainables, then the best
trial's checkpoint through evaluation into the results store. Every Ray call of the project lives here.

Nothing is lost: a configuration whose evaluation rows are all in the store is skipped; an interrupted one
resumes from Tune's experiment state (trials continue from their last per-epoch checkpoint, which `fit`
restores exactly); evaluation rows are upserts, so a rerun never duplicates them. A diverged trial raises
inside its trainable, so Tune marks it failed with the reason, and the grid goes on.
"""
from __future__ import annotations

import math
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from rft_fast import data
from rft_fast.eval import EvalSettings, RunInfo, evaluate
from rft_fast.grid.spec import Config, GridSpec, SearchDim, expand, search_space
from rft_fast.results import SMOOTHING, Store, smoothing_mode
from rft_fast.train import TrainConfig, fit, load_trained

TUNE_DIR = "tune"


@dataclass
class ConfigOutcome:
    """What happened to one configuration: "skipped" (already in the store), "done" or "failed" (no trial
    finished; `message` says why)."""

    key: str
    status: str
    best_metric: float | None = None
    best_hparams: dict[str, Any] | None = None
    trials: int = 0
    failed_trials: int = 0
    seconds: float = 0.0
    message: str = ""


def _trainable(params: dict[str, Any]) -> None:
    """A Tune function trainable: one `fit` run, reporting each epoch's metrics with a checkpoint."""
    from ray import tune

    run_dir = Path(tune.get_context().get_trial_dir()) / "run"
    run_dir.mkdir(parents=True, exist_ok=True)
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
    if result.status == "diverged":
        raise RuntimeError(f"trial diverged: {result.message}")


def _tune_dim(dim: SearchDim) -> Any:
    from ray import tune

    if dim.kind == "loguniform":
        return tune.loguniform(dim.low, dim.high)
    if dim.kind == "uniform":
        return tune.uniform(dim.low, dim.high)
    if dim.kind == "choice":
        return tune.choice(list(dim.values))
    return dim.values[0]


def _reason(error: BaseException) -> str:
    """The exception line of a trial's error: Ray wraps it in a traceback whose first line names the actor."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


def _name(config: Config) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", config.key)


def _done(store: Store, config: Config, spec: GridSpec) -> bool:
    """Whether every evaluation row the spec asks for is in the store for this configuration."""
    rows = store.query(backbone=config.backbone, dataset=config.dataset, loss=config.loss, protocol=config.protocol_label)
    have = {(m.threat, m.mode) for m in rows if m.threat != "corruption" or m.corruption == "study"}
    want = set()
    for threat in spec.eval.threats:
        if threat == "corruptions":
            want.add(("corruption", "-"))
        elif threat == SMOOTHING:
            want |= {(SMOOTHING, smoothing_mode(s)) for s in EvalSettings().smoothing_sigmas}
        else:
            want.add((threat, spec.eval.mode if threat in ("Linf", "L2", "L1") else "-"))
    return want <= have


def _tuner(spec: GridSpec, config: Config, storage: Path):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    fields = config.train_fields(spec)
    max_t = spec.asha.max_t or TrainConfig(**fields).num_epochs
    gpus = spec.resources.gpus_per_trial if torch.cuda.is_available() else 0
    trainable = tune.with_resources(_trainable, {"cpu": spec.resources.cpus_per_trial, "gpu": gpus})
    path = storage / _name(config)
    if tune.Tuner.can_restore(str(path)):
        return tune.Tuner.restore(str(path), trainable, resume_unfinished=True, resume_errored=False)
    space = {"fields": fields, "hparams": {d.name: _tune_dim(d) for d in search_space(spec, config)}}
    return tune.Tuner(
        trainable,
        param_space=space,
        tune_config=tune.TuneConfig(
            metric=spec.asha.metric, mode=spec.asha.mode,
            scheduler=ASHAScheduler(max_t=max_t, grace_period=spec.asha.grace_period, reduction_factor=spec.asha.reduction_factor),
            num_samples=spec.num_samples if spec.num_samples is not None else -1,
            time_budget_s=spec.budget_minutes * 60,
        ),
        run_config=tune.RunConfig(
            name=_name(config), storage_path=str(storage), verbose=0,
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            failure_config=tune.FailureConfig(max_failures=0),
        ),
    )


def _tune_and_evaluate(spec: GridSpec, config: Config, storage: Path, store: Store, progress: bool) -> ConfigOutcome:
    t0 = time.perf_counter()
    grid = _tuner(spec, config, storage).fit()
    failed = sum(1 for r in grid if r.error is not None)
    finished = [r for r in grid if r.checkpoint is not None and r.metrics and spec.asha.metric in r.metrics
                and math.isfinite(r.metrics[spec.asha.metric])]
    if not finished:
        errors = "; ".join(_reason(r.error) for r in grid if r.error is not None)[:500]
        return ConfigOutcome(config.key, "failed", trials=len(grid), failed_trials=failed,
                             seconds=time.perf_counter() - t0, message=errors or "no trial reported a finite metric")
    sign = 1 if spec.asha.mode == "min" else -1
    best = min(finished, key=lambda r: sign * r.metrics[spec.asha.metric])
    with best.checkpoint.as_directory() as folder:
        model, train_config = load_trained(Path(folder) / "checkpoint.pt", "cuda" if torch.cuda.is_available() else "cpu")
    splits = data.build(train_config.dataset, train_config.data_root, image_size=train_config.image_size)
    run = RunInfo(train_config.run_id(), config.dataset, config.backbone, config.loss, config.protocol_label,
                  train_config.hparams())
    settings = EvalSettings(threats=spec.eval.threats, n=spec.eval.n, mode=spec.eval.mode,
                            corruption_setting=spec.eval.corruption_setting,
                            cache_dir=str(Path(spec.out_dir) / "corruption-cache"))
    evaluate(model, splits.test, run, settings, store=store, progress=progress,
             source_key={"dataset": config.dataset, "split": "test", "image_size": train_config.image_size})
    hparams = {k: best.config["hparams"][k] for k in best.config["hparams"]}
    return ConfigOutcome(config.key, "done", best.metrics[spec.asha.metric], hparams, len(grid), failed,
                         time.perf_counter() - t0)


def run_grid(
    spec: GridSpec,
    *,
    address: str | None = None,
    progress: bool = False,
    on_config: Callable[[int, int, ConfigOutcome], None] | None = None,
) -> list[ConfigOutcome]:
    """Runs every configuration of `spec` not yet in its store: tune with ASHA on Ray (local by default, or the
    cluster at `address`), evaluate the best trial, store the rows. on_config(i, n, outcome) after each."""
    import ray

    configs = expand(spec)
    storage = (Path(spec.out_dir) / TUNE_DIR).resolve()
    # Tune snapshots the experiment state at every trial checkpoint (num_to_keep=1): that is what makes a killed
    # grid resumable, so its warning that these snapshots are frequent is noise here.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # "local" starts a private Ray instance even when another one runs on this machine; a cluster is opt-in.
    ray.init(address=address or "local", include_dashboard=False, ignore_reinit_error=True, log_to_driver=False,
             configure_logging=False)
    outcomes = []
    try:
        with Store(spec.store) as store:
            for i, config in enumerate(configs):
                if _done(store, config, spec):
                    outcome = ConfigOutcome(config.key, "skipped")
                else:
                    outcome = _tune_and_evaluate(spec, config, storage, store, progress)
                outcomes.append(outcome)
                if on_config is not None:
                    on_config(i, len(configs), outcome)
    finally:
        if address is None:
            ray.shutdown()
    return outcomes
