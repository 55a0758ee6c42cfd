"""Where a configuration of a grid stands against the store, without Ray: its trials' fields, the threats still
to measure, the evaluation settings the spec measures with, and the dry run's done / partial / stale / failed /
new. The runner acts on the same answers."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from rft_fast.eval import EvalSettings, RunInfo
from rft_fast.grid.spec import Config, GridSpec
from rft_fast.results import Store, expected_rows, stage_of
from rft_fast.train import TrainConfig

TUNE_STAGE = "tune"


def trial_fields(spec: GridSpec, config: Config) -> dict[str, Any]:
    """The TrainConfig fields of every trial: the configuration's, with the spec's seed unless fixed sets one."""
    searched = {d.name for d in spec.search}
    return {**({} if "seed" in searched else {"seed": spec.seed}), **config.train_fields(spec)}


def missing_threats(store: Store, run: RunInfo, settings: EvalSettings, n: int | None = None) -> list[str]:
    """The threats of `settings` whose rows for `run` are not all in the store, measured exactly as settings
    would measure them (same eps, mode, severity and EvalSettings.identity(): requested n, subset seed, seed;
    and, when given, `n` images): what an evaluation still has to measure. A row of other settings is stale.
    Each threat's rows are its registry entry's expected rows for `settings` (rft_fast.results.threats)."""
    identity = settings.identity()
    have = {
        (m.threat, m.eps, m.corruption, m.severity, m.mode)
        for m in store.query(**run.columns())
        if m.versions.get("eval") == identity and (n is None or m.n == n)
    }
    return [t for t in settings.threats if not expected_rows(t, settings) <= have]


def eval_settings(spec: GridSpec, threats: list[str] | tuple[str, ...]) -> EvalSettings:
    """The EvalSettings of the spec's `eval:` section measuring `threats`: the section's fields (whatever
    EvalSettings fields it holds), seeded with the spec's seed, corrupted sets cached under out_dir unless the
    section names a cache_dir."""
    section = {f.name: getattr(spec.eval, f.name) for f in dataclasses.fields(spec.eval)}
    section.update(threats=tuple(threats), seed=spec.seed)
    if section.get("cache_dir") is None:
        section["cache_dir"] = str(Path(spec.out_dir) / "corruption-cache")
    return EvalSettings(**section)


def still_valid(spec: GridSpec, config: Config, detail: dict[str, Any]) -> bool:
    """Whether a recorded tuning still stands: its checkpoint is there and the spec would give the chosen trial
    the same run id (a spec whose fixed fields changed needs a new tuning)."""
    try:
        same = TrainConfig(**trial_fields(spec, config), **detail["hparams"]).run_id() == detail["run_id"]
    except (KeyError, TypeError, ValueError):
        return False
    return same and Path(detail["checkpoint"]).is_file()


def run_info(spec: GridSpec, config: Config, detail: dict[str, Any]) -> tuple[TrainConfig, RunInfo]:
    """The chosen trial's TrainConfig and the RunInfo its rows are stored under."""
    train_config = TrainConfig(**trial_fields(spec, config), **detail["hparams"])
    return train_config, RunInfo(
        train_config.run_id(),
        config.dataset,
        config.backbone,
        config.loss,
        config.protocol_label,
        train_config.hparams(),
    )


CONFIG_STATES = ("done", "partial", "stale", "failed", "new")


def config_status(spec: GridSpec, store: Store, config: Config) -> tuple[str, str]:
    """(state, why) of one configuration against the store, without running anything (the dry run):
    "done" (every threat measured as the spec measures it: a rerun skips it), "partial" (tuned, threats left),
    "stale" (what is stored was measured under another spec: re-tuned or re-evaluated, never skipped),
    "failed" (its tuning failed: retried), "new"."""
    tuned = store.stage(config.key, TUNE_STAGE)
    if tuned is None:
        return "new", "not tuned yet"
    if tuned.status != "done":
        return "failed", f"tuning failed: {tuned.reason} (retried)"
    if not still_valid(spec, config, tuned.detail):
        if Path(str(tuned.detail.get("checkpoint", ""))).is_file():
            return "stale", "the spec now trains another configuration (other run id): re-tuned"
        return "stale", "the tuned checkpoint is gone: re-tuned"
    _, run = run_info(spec, config, tuned.detail)
    settings = eval_settings(spec, spec.eval.threats)
    todo = missing_threats(store, run, settings)
    if not todo:
        return "done", ""
    stored = {stage_of(m.threat) for m in store.query(run_id=run.run_id, hparams=run.hparams)}
    stale = [t for t in todo if t in stored]
    if stale:
        return "stale", (
            f"{', '.join(stale)} stored under other eval settings (eps, mode, severity, n or seeds): "
            f"re-evaluates {', '.join(todo)}"
        )
    return "partial", f"to evaluate: {', '.join(todo)}"
