"""fit(config): one robust fine-tuning run, resumable, reporting each epoch's metrics to a callback.

The grid calls the same function as `rft-fast train`. Each epoch: shuffled micro-batches (uint8 until the
device), the criterion under bf16 autocast on GPU, gradients accumulated to the effective batch, an optimizer
step per group, the scheduler per epoch, then validation (clean and PGD accuracy, the robust objective), one
JSON line of metrics, an atomic checkpoint, and the callback. A non-finite loss stops the run with status
"diverged" before the optimizer applies it; the last checkpoint stays the last good epoch.

Options (TrainConfig): the "+grace" losses wrap the optimizer in CurvatureSAM (schedulers act on the base
optimizer, whose param_groups it shares); each micro-batch's attack and shifted view are drawn once and kept
for the group, whose gradient is then recomputed at the perturbed weights (BatchNorm statistics preserved)
before the base step. A non-constant eps_schedule sets the training attack's radius before each optimizer step
from the schedule over the run's optimizer steps (epochs x steps per epoch) and records the last step's radius
as the epoch's "attack_eps_now". The checkpoint carries the shifted views' draw counters ("criterion") and
CurvatureSAM's curvature estimates (in "optimizer").
"""
from __future__ import annotations

import contextlib
import json
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from rft_fast import data, models
from rft_fast.attacks import NonFiniteError
from rft_fast.files import clean_orphans
from rft_fast.train import checkpoint
from rft_fast.train import tora as tora_train
from rft_fast.train.config import TrainConfig
from rft_fast.train.criterion import TrainingCriterion, make_criterion, validation_sums
from rft_fast.train.grace import CurvatureSAM, preserved_buffers
from rft_fast.train.optim import group_lrs, make_optimizer, make_scheduler, param_groups
from rft_fast.train.schedule import EpsSchedule

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


def _autocast(config: TrainConfig, device: torch.device) -> contextlib.AbstractContextManager:
    use = config.amp == "bf16" or (config.amp == "auto" and device.type == "cuda")
    return torch.autocast(device.type, dtype=torch.bfloat16) if use else contextlib.nullcontext()


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _set_modes(model: nn.Module, linear_probe: bool) -> None:
    """FFT: everything trains. LP: the backbone in eval mode (BatchNorm statistics frozen), the head trains."""
    if linear_probe:
        model.eval()
        models.head_module(model).train()
    else:
        model.train()


def _micro_batch_sizes(n: int, batch_size: int, max_batches: int | None) -> list[int]:
    sizes = [batch_size] * (n // batch_size) + ([n % batch_size] if n % batch_size else [])
    return sizes[:max_batches] if max_batches is not None else sizes


def _group_sizes(sizes: list[int], accumulation: int) -> list[int]:
    """Samples per optimizer step for each micro-batch (the last group of an epoch may be short), so that
    each micro-batch's loss is weighted by its share of its own group: the gradient is the group's mean."""
    out = []
    for start in range(0, len(sizes), accumulation):
        group = sizes[start:start + accumulation]
        out += [sum(group)] * len(group)
    return out


class _Run:
    """The state of one run: model, optimizer, schedule, data, and the files it writes."""

    def __init__(self, config: TrainConfig, progress: bool) -> None:
        self.config, self.progress = config, progress
        self.device = resolve_device(config.device)
        self.channels_last = config.channels_last if config.channels_last is not None else self.device.type == "cuda"
        models.get(config.backbone)  # an unknown name fails here, before any data is read
        self.image_size = config.image_size
        self.splits = data.build(
            config.dataset, config.data_root, image_size=self.image_size, seed=config.split_seed,
            augment_seed=config.seed,
        )
        self.val_set = (
            data.stratified_subset(self.splits.val, config.val_samples, seed=config.split_seed)
            if config.val_samples is not None else self.splits.val
        )
        _seed_everything(config.seed)
        model = models.create(
            config.backbone, self.splits.num_classes, pretrained_path=config.pretrained_path,
            random_init=config.random_init, image_size=self.image_size,
        )
        if config.tora:
            model = tora_train.build_model(model, config)
        else:
            backbone, head = models.split_parameters(model)
            if config.linear_probe:
                for p in backbone:
                    p.requires_grad_(False)
        self.model = model.to(self.device, memory_format=torch.channels_last if self.channels_last else torch.preserve_format)
        self.phase: int | None = None  # TORA's phase (1 | 2); None for the other protocols
        if config.tora:
            self.enter_phase(1)
        else:
            self.optimizer = make_optimizer(param_groups(backbone, head, config), config)
            self.scheduler = make_scheduler(self.optimizer, config)  # on the base optimizer (also under GRACE)
            if config.grace:
                self.optimizer = CurvatureSAM(self.optimizer, rho=config.grace_rho, beta2=config.grace_beta2)
            self.criterion = make_criterion(config)
        self.eps_schedule = (
            EpsSchedule(config.eps_schedule, config.attack_eps, config.eps_start, config.eps_warmup)
            if config.eps_schedule != "constant" else None
        )
        sizes = _micro_batch_sizes(len(self.splits.train), config.batch_size, config.max_batches)
        self.steps_per_epoch = math.ceil(len(sizes) / config.accumulation)
        self.metrics: list[dict[str, Any]] = []
        self.start_epoch = 0
        self.out = config.output_dir()

    def enter_phase(self, phase: int) -> None:
        """TORA: the phase's trainable parameters, a fresh optimizer and schedule, and the phase's criterion."""
        self.phase = phase
        tora_train.set_phase(self.model, phase)
        self.optimizer, self.scheduler = tora_train.phase_optimizer(self.model, self.config, phase)
        self.criterion = tora_train.phase_criterion(self.config, phase)

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
        if self.phase is not None and state["tora_phase"] != self.phase:
            self.enter_phase(state["tora_phase"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        if isinstance(self.criterion, TrainingCriterion):
            self.criterion.load_state_dict(state["criterion"])
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
                "epoch": epoch_done, "config": self.config.to_dict(), "num_classes": self.splits.num_classes,
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
                "rng": checkpoint.rng_state(), "metrics": self.metrics,
            }
            if self.phase is not None:
                payload["tora_phase"] = self.phase
            if isinstance(self.criterion, TrainingCriterion):
                payload["criterion"] = self.criterion.state_dict()
            checkpoint.save(self.out / CHECKPOINT, payload)
        with open(self.out / METRICS, "a") as f:
            f.write(json.dumps(row) + "\n")

    # ------------------------------------------------------------------ one epoch
    def train_epoch(self, epoch: int) -> tuple[dict[str, Any], str]:
        """Runs one epoch; returns (metrics, "" or the divergence message)."""
        cfg = self.config
        if self.phase is not None and tora_train.phase_of_epoch(cfg, epoch) != self.phase:
            self.enter_phase(tora_train.phase_of_epoch(cfg, epoch))
        _set_modes(self.model, cfg.linear_probe)
        loader = data.loader(
            self.splits.train, cfg.batch_size, shuffle=True, seed=cfg.seed, epoch=epoch, workers=cfg.workers,
            device=self.device,
        )
        sizes = _micro_batch_sizes(len(self.splits.train), cfg.batch_size, cfg.max_batches)
        groups = _group_sizes(sizes, cfg.accumulation)
        loss_sum = torch.zeros((), device=self.device)
        group_loss = torch.zeros((), device=self.device)
        seen, steps = 0, 0
        sam = isinstance(self.optimizer, CurvatureSAM)
        kept: list[tuple[Any, float]] = []  # GRACE: the group's micro-batches, for the gradient at w + e
        eps_now = cfg.attack_eps
        t0 = time.perf_counter()
        bar = tqdm(total=len(sizes), desc=f"epoch {epoch + 1}/{cfg.num_epochs}", disable=not self.progress, leave=False)
        self.optimizer.zero_grad(set_to_none=True)
        for i, (xb, yb) in enumerate(loader):
            if i == len(sizes):
                break
            x, y = data.to_device(xb, yb, self.device, channels_last=self.channels_last)
            if self.eps_schedule is not None and i % cfg.accumulation == 0:
                step = epoch * self.steps_per_epoch + i // cfg.accumulation
                eps_now = self.eps_schedule(step, cfg.num_epochs * self.steps_per_epoch)
                self.criterion.set_eps(eps_now)
            share = x.shape[0] / groups[i]
            try:
                with _autocast(cfg, self.device):
                    if sam:
                        b = self.criterion.batch(self.model, x, y)
                        kept.append((b, share))
                        loss = self.criterion.objective(self.model, b)
                    else:
                        loss = self.criterion(self.model, x, y)
            except NonFiniteError as error:  # the training attack met NaN / Inf logits: the weights diverged
                bar.close()
                return {}, f"non-finite model output at epoch {epoch + 1}, micro-batch {i + 1} ({error})"
            (loss * share).backward()
            group_loss += loss.detach().float() * x.shape[0]
            seen += x.shape[0]
            bar.update()
            if (i + 1) % cfg.accumulation == 0 or i + 1 == len(sizes):
                if not torch.isfinite(group_loss):
                    bar.close()
                    return {}, f"non-finite training loss at epoch {epoch + 1}, micro-batch {i + 1}"
                if sam:
                    failure = self._sharpness_aware_step(kept)
                    kept = []
                    if failure:
                        bar.close()
                        return {}, f"{failure} at epoch {epoch + 1}, micro-batch {i + 1}"
                else:
                    self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                loss_sum += group_loss
                group_loss.zero_()
                steps += 1
                bar.set_postfix(loss=f"{loss_sum.item() / seen:.4f}")
        bar.close()
        seconds = time.perf_counter() - t0
        row = {"train_loss": loss_sum.item() / max(seen, 1), "train_samples": seen, "optimizer_steps": steps,
               "train_seconds": seconds, "images_per_s": seen / seconds, **group_lrs(self.optimizer)}
        if self.phase is not None:
            row["tora_phase"] = self.phase
        if self.eps_schedule is not None:
            row["attack_eps_now"] = eps_now
        return row, ""

    def _sharpness_aware_step(self, kept: list[tuple[Any, float]]) -> str:
        """CurvatureSAM's step for one group (grace.py's recipe): the gradient at w is in .grad; perturb, recompute
        the group's gradient at w + e on the same micro-batches (buffers preserved), restore w, base step.
        Returns "" or a message when the loss at w + e is not finite (the weights are then left at w)."""
        opt: CurvatureSAM = self.optimizer  # type: ignore[assignment]
        opt.first_step()
        opt.zero_grad(set_to_none=True)
        total = torch.zeros((), device=self.device)
        with preserved_buffers(self.model):
            for b, share in kept:
                with _autocast(self.config, self.device):
                    loss = self.criterion.objective(self.model, b)
                (loss * share).backward()
                total += loss.detach().float() * share
        if not torch.isfinite(total):
            opt.cancel()
            return "non-finite training loss at the sharpness-aware perturbation"
        opt.second_step()
        return ""

    def validate(self) -> dict[str, float]:
        cfg = self.config
        loader = data.loader(self.val_set, cfg.batch_size, shuffle=False, workers=cfg.workers, device=self.device)
        totals = {"clean_correct": 0.0, "pgd_correct": 0.0, "loss_sum": 0.0}
        n = 0
        for xb, yb in tqdm(loader, desc="validation", disable=not self.progress, leave=False):
            x, y = data.to_device(xb, yb, self.device, channels_last=self.channels_last)
            with _autocast(cfg, self.device):
                sums = validation_sums(self.model, x, y, cfg)
            for k, v in sums.items():
                totals[k] += v.item()
            n += x.shape[0]
        return {"val_clean_acc": totals["clean_correct"] / n, "val_pgd_acc": totals["pgd_correct"] / n,
                "val_loss": totals["loss_sum"] / n, "val_samples": n}


def fit(config: TrainConfig, *, callback: Callback | None = None, resume: bool = True, progress: bool = False) -> TrainResult:
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
        if run.scheduler is not None:
            run.scheduler.step()
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


def _ckpt(run: _Run) -> Path | None:
    path = None if run.out is None else run.out / CHECKPOINT
    return path if path is not None and path.is_file() else None
