"""fit(config): one robust fine-tuning run, resumable, reporting each epoch's metrics to a callback.

The grid calls the same function as `rft-fast train`. Each epoch: shuffled micro-batches (uint8 until the
device), the criterion under the run's autocast (rft_fast.precision: amp "auto" is bf16 where the device has it
natively), gradients accumulated to the effective batch (loss-scaled under fp16), an optimizer step per group
(under fp16 a step whose gradient is not finite is skipped and counted in "amp_skipped_steps", not a
divergence), the scheduler per epoch, then validation (clean and PGD accuracy, the robust objective), one
JSON line of metrics, an atomic checkpoint, and the callback. A non-finite loss stops the run with status
"diverged" before the optimizer applies it; the last checkpoint stays the last good epoch.

The loop asks no option questions; the objects it calls hold the options. The protocol (rft_fast.train.protocols)
builds the architecture and hands the loop a Stage per phase: trainable parameters and modes, optimizer,
scheduler, criterion and a stepper (rft_fast.train.stepper: plain, or sharpness-aware for the "+grace" losses,
which keeps each micro-batch's attack and shifted view for the gradient at the perturbed weights). The
criterion's `at_step` sets the training attack's radius from a non-constant eps_schedule before each optimizer
step and reports it as the epoch's "attack_eps_now". The checkpoint carries the stage's state: optimizer
(CurvatureSAM's curvature estimates included), scheduler, the criterion's draw counters ("criterion") and
TORA's "tora_phase", and the run's precision ("precision": resolved once, kept on resume) with the loss scaler's
state ("scaler"). With config.compile the passes run a torch.compile of the model (the attacks get it too); the
checkpoint holds the eager model's weights.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from rft_fast import data, models, precision
from rft_fast.attacks import NonFiniteError
from rft_fast.files import clean_orphans
from rft_fast.train import checkpoint
from rft_fast.train.config import TrainConfig
from rft_fast.train.criterion import make_criterion, validation_sums
from rft_fast.train.optim import group_lrs

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"
CONFIG = "config.json"
# Fields that may differ between a run and its resumption: where it runs and with how many loader processes
# (the results do not depend on them). Everything else, epochs included (the cosine schedule spans them), must match.
_RESUME_FREE = {"device", "workers", "out_dir"}

Callback = Callable[[dict[str, Any]], "bool | None"]


@dataclass
class TrainResult:
    """What a run ended with. status: "completed" | "stopped" (the callback asked) | "diverged" (non-finite
    loss; `message` says where)."""

    status: str
    model: nn.Module
    metrics: list[dict[str, Any]] = field(default_factory=list)
    checkpoint: Path | None = None
    message: str = ""


def resolve_device(name: str | None) -> torch.device:
    """The config's device, cuda when None and a GPU is visible; asking for an absent GPU is an error."""
    device = torch.device(name if name is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but no GPU is visible")
    return device


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _micro_batch_sizes(n: int, batch_size: int, max_batches: int | None) -> list[int]:
    sizes = [batch_size] * (n // batch_size) + ([n % batch_size] if n % batch_size else [])
    return sizes[:max_batches] if max_batches is not None else sizes


def _group_sizes(sizes: list[int], accumulation: int) -> list[int]:
    """Samples per optimizer step for each micro-batch (the last group of an epoch may be short), so that
    each micro-batch's loss is weighted by its share of its own group: the gradient is the group's mean."""
    out = []
    for start in range(0, len(sizes), accumulation):
        group = sizes[start : start + accumulation]
        out += [sum(group)] * len(group)
    return out


class _Run:
    """The state of one run: model, the protocol's current stage, data, and the files it writes."""

    def __init__(self, config: TrainConfig, progress: bool) -> None:
        self.config, self.progress = config, progress
        self.device = resolve_device(config.device)
        self.channels_last = config.channels_last if config.channels_last is not None else self.device.type == "cuda"
        models.get(config.backbone)  # an unknown name fails here, before any data is read
        self.splits = data.build(
            config.dataset,
            config.data_root,
            image_size=config.image_size,
            seed=config.split_seed,
            augment_seed=config.seed,
        )
        self.val_set = (
            data.stratified_subset(self.splits.val, config.val_samples, seed=config.split_seed)
            if config.val_samples is not None
            else self.splits.val
        )
        _seed_everything(config.seed)
        model = models.create(
            config.backbone,
            self.splits.num_classes,
            pretrained_path=config.pretrained_path,
            random_init=config.random_init,
            image_size=config.image_size,
            normalization=config.normalization,
        )
        self.recipe = config.protocol_spec.recipe
        model = self.recipe.build(model, config)
        self.model = model.to(
            self.device, memory_format=torch.channels_last if self.channels_last else torch.preserve_format
        )
        # what the training and validation passes (attacks included) call; self.model is what is saved
        self.forward_model = torch.compile(self.model) if config.compile else self.model
        self.set_precision(precision.resolve(config.amp, self.device))
        self.enter(self.recipe.phase(config, 0))
        sizes = _micro_batch_sizes(len(self.splits.train), config.batch_size, config.max_batches)
        self.steps_per_epoch = math.ceil(len(sizes) / config.accumulation)
        self.metrics: list[dict[str, Any]] = []
        self.start_epoch = 0
        self.out = config.output_dir()

    def enter(self, phase: int) -> None:
        """The protocol's stage for `phase`: trainable parameters, a fresh optimizer and schedule, the criterion."""
        self.stage = self.recipe.stage(self.model, self.config, phase, make_criterion(self.config))
        self.stage.stepper.use_scaler(self.scaler)

    def set_precision(self, chosen: precision.Precision) -> None:
        """The run's precision and its loss scaler (enabled under fp16 only), shared by every stage's stepper."""
        self.precision, self.scaler = chosen, chosen.scaler()

    def autocast(self) -> contextlib.AbstractContextManager:
        return self.precision.autocast()

    # ------------------------------------------------------------------ files
    def resume(self) -> None:
        """Restores the last checkpoint in out_dir, if any, after checking it belongs to this config (and
        removes the temporary files of a checkpoint write that a kill interrupted)."""
        if self.out is None:
            return
        if self.out.is_dir():
            clean_orphans(self.out, name=CHECKPOINT)
        if not (self.out / CHECKPOINT).is_file():
            return
        state = checkpoint.load(self.out / CHECKPOINT)
        mine, theirs = self.config.to_dict(), state["config"]
        defaults = TrainConfig.__dataclass_fields__
        # a field the checkpoint lacks was added later: the checkpoint's run had its default
        differ = sorted(k for k in mine if k not in _RESUME_FREE and mine[k] != theirs.get(k, defaults[k].default))
        if differ:
            raise ValueError(
                f"{self.out / CHECKPOINT} belongs to another configuration (fields {differ} differ); use another "
                "out_dir or resume=False"
            )
        self.model.load_state_dict(state["model"])
        self.set_precision(_checkpoint_precision(state, self.config, self.device))
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.stage.stepper.use_scaler(self.scaler)
        if self.recipe.resume_phase(state) != self.stage.phase:
            self.enter(self.recipe.resume_phase(state))
        self.stage.load_state_dict(state)
        self.metrics = state["metrics"]
        self.start_epoch = state["epoch"] + 1
        checkpoint.set_rng_state(state["rng"])
        self._rewrite_metrics()

    def _rewrite_metrics(self) -> None:
        path = self.out / METRICS
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(m) + "\n" for m in self.metrics))
        tmp.replace(path)

    def start_files(self) -> None:
        if self.out is None:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / CONFIG).write_text(json.dumps(self.config.to_dict(), indent=2) + "\n")
        if self.start_epoch == 0:
            (self.out / METRICS).write_text("")

    def record(self, row: dict[str, Any], epoch_done: int | None) -> None:
        """Appends the metrics line; checkpoints when an epoch completed (not after a divergence)."""
        self.metrics.append(row)
        if self.out is None:
            return
        if epoch_done is not None:
            payload = {
                "epoch": epoch_done,
                "config": self.config.to_dict(),
                "num_classes": self.splits.num_classes,
                "classes": list(self.splits.classes),  # evaluation checks its dataset maps labels the same way
                "model": self.model.state_dict(),
                **self.stage.state_dict(),
                "precision": self.precision.record(),
                "scaler": self.scaler.state_dict(),
                "rng": checkpoint.rng_state(),
                "metrics": self.metrics,
            }
            checkpoint.save(self.out / CHECKPOINT, payload)
        with open(self.out / METRICS, "a") as f:
            f.write(json.dumps(row) + "\n")

    # ------------------------------------------------------------------ one epoch
    def train_epoch(self, epoch: int) -> tuple[dict[str, Any], str]:
        """Runs one epoch; returns (metrics, "" or the divergence message)."""
        cfg = self.config
        if self.recipe.phase(cfg, epoch) != self.stage.phase:
            self.enter(self.recipe.phase(cfg, epoch))
        stage, model = self.stage, self.forward_model
        stage.train_mode(self.model)
        skipped = stage.stepper.skipped_steps
        batches = data.train_batches(  # decoded once, augmented on the device (rft_fast.data.cache)
            self.splits.train,
            cfg.batch_size,
            seed=cfg.seed,
            epoch=epoch,
            workers=cfg.workers,
            device=self.device,
            channels_last=self.channels_last,
        )
        sizes = _micro_batch_sizes(len(self.splits.train), cfg.batch_size, cfg.max_batches)
        groups = _group_sizes(sizes, cfg.accumulation)
        total_steps = cfg.num_epochs * self.steps_per_epoch
        loss_sum = torch.zeros((), device=self.device)
        group_loss = torch.zeros((), device=self.device)
        seen, steps, at_step = 0, 0, {}
        t0 = time.perf_counter()
        bar = tqdm(total=len(sizes), desc=f"epoch {epoch + 1}/{cfg.num_epochs}", disable=not self.progress, leave=False)
        stage.stepper.optimizer.zero_grad(set_to_none=True)
        for i, (x, y) in enumerate(batches):
            if i == len(sizes):
                break
            if i % cfg.accumulation == 0:  # the criterion's per-step settings (the eps schedule's radius)
                at_step = stage.criterion.at_step(epoch * self.steps_per_epoch + i // cfg.accumulation, total_steps)
            share = x.shape[0] / groups[i]
            try:
                with self.autocast():
                    loss = stage.stepper.loss(model, x, y, share)
            except NonFiniteError as error:  # the training attack met NaN / Inf logits: the weights diverged
                bar.close()
                return {}, f"non-finite model output at epoch {epoch + 1}, micro-batch {i + 1} ({error})"
            stage.stepper.backward(loss, share)
            group_loss += loss.detach().float() * x.shape[0]
            seen += x.shape[0]
            bar.update()
            if (i + 1) % cfg.accumulation == 0 or i + 1 == len(sizes):
                failure = "" if torch.isfinite(group_loss) else "non-finite training loss"
                failure = failure or stage.stepper.step(model, self.autocast)
                if failure:
                    bar.close()
                    return {}, f"{failure} at epoch {epoch + 1}, micro-batch {i + 1}"
                loss_sum += group_loss
                group_loss.zero_()
                steps += 1
                bar.set_postfix(loss=f"{loss_sum.item() / seen:.4f}")
        bar.close()
        seconds = time.perf_counter() - t0
        return {
            "train_loss": loss_sum.item() / max(seen, 1),
            "train_samples": seen,
            "optimizer_steps": steps,
            "train_seconds": seconds,
            "images_per_s": seen / seconds,
            "amp": self.precision.amp,
            "amp_skipped_steps": stage.stepper.skipped_steps - skipped,
            **group_lrs(stage.stepper.optimizer),
            **stage.labels,
            **at_step,
        }, ""

    def validate(self) -> dict[str, float]:
        cfg = self.config
        loader = data.loader(self.val_set, cfg.batch_size, shuffle=False, workers=cfg.workers, device=self.device)
        totals = {"clean_correct": 0.0, "pgd_correct": 0.0, "loss_sum": 0.0}
        n = 0
        for xb, yb in tqdm(loader, desc="validation", disable=not self.progress, leave=False):
            x, y = data.to_device(xb, yb, self.device, channels_last=self.channels_last)
            with self.autocast():
                sums = validation_sums(self.forward_model, x, y, cfg)
            for k, v in sums.items():
                totals[k] += v.item()
            n += x.shape[0]
        return {
            "val_clean_acc": totals["clean_correct"] / n,
            "val_pgd_acc": totals["pgd_correct"] / n,
            "val_loss": totals["loss_sum"] / n,
            "val_samples": n,
        }


def fit(
    config: TrainConfig, *, callback: Callback | None = None, resume: bool = True, progress: bool = False
) -> TrainResult:
    """Trains `config` to its last epoch (or until the callback returns True, or the loss diverges).

    With config.out_dir set, each epoch appends a line to out_dir/metrics.jsonl and atomically rewrites
    out_dir/checkpoint.pt; with resume=True an existing checkpoint of the same configuration is continued
    exactly (weights, optimizer, schedule, RNG, epoch; data order and augmentation are functions of the
    seed and the epoch). callback(metrics) sees every epoch's metrics dict.
    """
    run = _Run(config, progress)
    if resume:
        run.resume()
    run.start_files()
    for epoch in range(run.start_epoch, config.num_epochs):
        row, failure = run.train_epoch(epoch)
        if failure:
            run.record({"epoch": epoch + 1, "status": "diverged", "message": failure}, epoch_done=None)
            return TrainResult("diverged", run.model, run.metrics, _ckpt(run), failure)
        if run.stage.scheduler is not None:
            run.stage.scheduler.step()
        try:
            row = {"epoch": epoch + 1, **row, **run.validate(), "status": "ok"}
        except NonFiniteError as error:  # the validation attack met NaN / Inf logits
            row = {"epoch": epoch + 1, "val_loss": math.nan, "message": str(error)}
        if not all(math.isfinite(v) for v in row.values() if isinstance(v, float)):
            message = f"non-finite metric at epoch {epoch + 1}: {row}"
            run.record({"epoch": epoch + 1, "status": "diverged", "message": message}, epoch_done=None)
            return TrainResult("diverged", run.model, run.metrics, _ckpt(run), message)
        run.record(row, epoch_done=epoch)
        if callback is not None and callback(row):
            return TrainResult("stopped", run.model, run.metrics, _ckpt(run))
    return TrainResult("completed", run.model, run.metrics, _ckpt(run))


def _checkpoint_precision(state: dict[str, Any], config: TrainConfig, device: torch.device) -> precision.Precision:
    """The precision a checkpoint's run trained at: its record, or for a checkpoint written before runs recorded
    it, the rule of that version (amp "auto": bf16 on GPU, float32 on CPU)."""
    if "precision" in state:
        return precision.from_record(state["precision"], config.amp, device)
    old = "bf16" if config.amp == "bf16" or (config.amp == "auto" and device.type == "cuda") else "none"
    return precision.from_record({"amp": old}, config.amp, device)


def _ckpt(run: _Run) -> Path | None:
    path = None if run.out is None else run.out / CHECKPOINT
    return path if path is not None and path.is_file() else None
