"""The built-in threats' run functions (registered in rft_fast.results.threats) and the ThreatContext every run
function gets: the model, the test subset (as a Dataset and as tensors on the model's device), the settings,
and `record`, which stores one row of the threat (in the store, when given, the moment it exists)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from rft_fast import data
from rft_fast.eval import corruptions
from rft_fast.eval.autoattack import autoattack, predict
from rft_fast.eval.smoothing import certified_accuracy, certify, smoothed_accuracy
from rft_fast.results.threats import ThreatSpec, attack_eps, smoothing_mode


@dataclass
class ThreatContext:
    """What a threat's run function measures on. x, y: the subset's images in [0, 1] and labels on the model's
    device; subset: the same images as a Dataset (uint8 items); batch: the batch size of a forward pass;
    source_key: what identifies the test split for caches (dataset, split, image_size, n, subset_seed);
    corrupted: the image source's frozen study-setting corruptions of subset (None: computed from subset)."""

    spec: ThreatSpec
    model: nn.Module
    subset: Dataset
    x: Tensor
    y: Tensor
    settings: Any  # EvalSettings
    batch: int
    progress: bool
    source_key: dict[str, Any]
    _record: Callable[..., None]
    corrupted: corruptions.CorruptedSet | None = None

    def record(
        self,
        accuracy: float,
        n: int,
        seconds: float,
        extra: dict[str, Any] | None = None,
        *,
        eps: float | None = None,
        corruption: str | None = None,
        severity: int | None = None,
        mode: str = "-",
    ) -> None:
        """Stores one row of this threat: its accuracy on n images, the seconds it took, `extra` merged into
        its versions, and its key (checked by the threat's key rule)."""
        self._record(
            self.spec.threat, accuracy, n, seconds, extra, eps=eps, corruption=corruption, severity=severity, mode=mode
        )

    def accuracy(self, x: Tensor, y: Tensor, what: str = "images") -> float:
        """The model's accuracy on (x, y), in batches."""
        return (predict(self.model, x, self.batch, what) == y).float().mean().item()


def clean(ctx: ThreatContext) -> None:
    t0 = time.perf_counter()
    accuracy = ctx.accuracy(ctx.x, ctx.y, "clean images")
    ctx.record(accuracy, len(ctx.y), time.perf_counter() - t0)


def attack(ctx: ThreatContext) -> None:
    """AutoAttack under the threat's norm (its name) at the settings' eps and mode."""
    norm, s = ctx.spec.name, ctx.settings
    r = autoattack(
        ctx.model,
        ctx.x,
        ctx.y,
        norm=norm,
        eps=attack_eps(s, norm),
        mode=s.mode,
        batch_size=s.batch_size,
        seed=s.seed,
        progress=ctx.progress,
    )
    extra = {"autoattack": {**r.plan.record(), "projected": r.projected, "warnings": list(r.warnings)}}
    ctx.record(r.robust, r.n, r.seconds, extra, eps=r.eps, mode=r.mode)


def common_corruptions(ctx: ThreatContext) -> None:
    """Common corruptions: the study's 11 types at one severity (a row per type, then the aggregate "study"), or
    the full 15 types x 5 severities (a row per (type, severity), then per severity the aggregate "full": the mean
    accuracy over the types, n the images). The image source's frozen set when it has one."""
    s = ctx.settings
    # The full grid is built one corruption type at a time (5 sets in memory, not 75).
    groups = [None] if s.corruption_setting == "study" else [(name,) for name in corruptions.ALL]
    full: dict[int, list[float]] = {}  # severity -> the accuracy of each type's set
    for names in groups:
        t0 = time.perf_counter()
        sets = (
            [ctx.corrupted]
            if ctx.corrupted is not None
            else corruptions.build(
                ctx.subset,
                key=ctx.source_key,
                setting=s.corruption_setting,
                severity=s.severity,
                seed=s.seed,
                cache_dir=s.cache_dir,
                workers=s.workers,
                progress=ctx.progress,
                names=names,
                resolution=s.corruption_resolution,
                blocks=s.corruption_blocks,
            )
        )
        build_seconds = (time.perf_counter() - t0) / len(sets)
        for cs in sets:
            t0 = time.perf_counter()
            xc, yc = data.to_device(cs.images, cs.labels, ctx.x.device)
            correct = (predict(ctx.model, xc, ctx.batch, f"{cs.setting} corrupted images") == yc).cpu()
            seconds = time.perf_counter() - t0 + build_seconds
            label = "study" if cs.setting == "study" else cs.setting
            if cs.setting == "study":  # the per-type rows first: the aggregate row marks the threat done
                for name in dict.fromkeys(cs.corruptions):
                    mask = torch.tensor([c == name for c in cs.corruptions])
                    ctx.record(
                        correct[mask].float().mean().item(), int(mask.sum()), 0.0, corruption=name, severity=cs.severity
                    )
            ctx.record(correct.float().mean().item(), len(yc), seconds, corruption=label, severity=cs.severity)
            if cs.setting != "study":
                full.setdefault(cs.severity, []).append(correct.float().mean().item())
    for severity, accuracies in full.items():  # last: the aggregate rows mark the threat done
        ctx.record(sum(accuracies) / len(accuracies), len(ctx.y), 0.0, corruption="full", severity=severity)


def smoothing(ctx: ThreatContext) -> None:
    """Randomized-smoothing certification per sigma: the smoothed accuracy and the certified accuracy per radius."""
    s = ctx.settings
    for sigma in s.smoothing_sigmas:
        t0 = time.perf_counter()
        cert = certify(
            ctx.model,
            ctx.x,
            sigma,
            n0=s.smoothing_n0,
            n=s.smoothing_n,
            alpha=s.smoothing_alpha,
            batch_size=s.smoothing_batch_size,
            seed=s.seed,
        )
        seconds = time.perf_counter() - t0
        params = {
            "smoothing": {
                "sigma": sigma,
                "n0": s.smoothing_n0,
                "n": s.smoothing_n,
                "alpha": s.smoothing_alpha,
                "batch_size": s.smoothing_batch_size,
                "seed": s.seed,
            }
        }
        mode = smoothing_mode(sigma)
        ctx.record(smoothed_accuracy(cert, ctx.y), len(ctx.y), seconds, params, mode=mode)
        for radius, accuracy in zip(s.smoothing_radii, certified_accuracy(cert, ctx.y, s.smoothing_radii)):
            ctx.record(accuracy, len(ctx.y), 0.0, params, eps=radius, mode=mode)
