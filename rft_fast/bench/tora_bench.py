"""TORA vs FFT vs LP: trainable parameters, training-step time and peak memory on one backbone (docs/tora.md).

One step = the training criterion (APGD-K examples through the whole model, then Classic AT or memory-saving
TRADES) + backward + AdamW step, on a fixed random batch, random-init weights. Methods: "FFT" (everything
trains), "LP" (head only), "TORA-phase1" (psi_A + psi_R + heads: robust loss on the rob path + clean CE on the
acc path), "TORA-phase2" (fusion only, lambda 0.5 on the fused model). Peak memory: the CUDA allocator's peak
on GPU, the saved-activation peak (rft_fast.bench.memory) everywhere.
"""

from __future__ import annotations

import sys
from typing import Any

import torch

from rft_fast import models
from rft_fast.bench import common
from rft_fast.bench.memory import cuda_peak, saved_activation_peak
from rft_fast.train import tora as tora_train
from rft_fast.train.config import TrainConfig
from rft_fast.train.criterion import make_criterion

METHODS = ("FFT", "LP", "TORA-phase1", "TORA-phase2")
# fmt: off
COLUMNS = (
    ("backbone", "backbone", "<34"), ("method", "method", "<12"), ("batch", "batch", ">5"), ("size", "px", ">4"),
    ("trainable_m", "train M", ">8.2f"), ("total_m", "total M", ">8.2f"), ("median_s", "step s", ">8.3f"),
    ("images_per_s", "img/s", ">8.1f"), ("peak_gb", "peak GB", ">8.3f"),
)
# fmt: on


def bench_tora(
    backbone: str = "vit_small_patch16_224.augreg_in1k",
    *,
    image_size: int = 224,
    batch: int = 64,
    device: str | torch.device = "cpu",
    loss: str = "trades",
    attack_steps: int = 10,
    num_classes: int = 10,
    bottleneck: int = 64,
    fusion_dim: int = 64,
    methods: tuple[str, ...] = METHODS,
) -> list[dict[str, Any]]:
    """One row per method: backbone, method, batch, size, trainable / total parameters (millions), median step
    seconds, images/s, peak GB (CUDA allocator on GPU, saved activations on CPU) and `memory` (which)."""
    device = torch.device(device)
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise ValueError(f"methods must be a subset of {list(METHODS)}, got unknown {unknown}")
    config = TrainConfig(
        backbone=backbone,
        dataset="bench",
        protocol="TORA-2",
        loss=loss,
        attack_steps=attack_steps,
        random_init=True,
        tora_bottleneck=bottleneck,
        tora_fusion_dim=fusion_dim,
    )
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 3, image_size, image_size, generator=g).to(device)
    y = torch.randint(0, num_classes, (batch,), generator=g).to(device)
    rows = []
    for method in methods:
        torch.manual_seed(0)
        model: torch.nn.Module = models.create(backbone, num_classes, random_init=True, image_size=image_size)
        if method.startswith("TORA"):
            model = tora_train.build_model(model, config)
            phase = 1 if method.endswith("1") else 2
            tora_train.set_phase(model, phase)
            criterion = tora_train.phase_criterion(config, phase)
        else:
            if method == "LP":
                for p in models.split_parameters(model)[0]:
                    p.requires_grad_(False)
            criterion = make_criterion(config)
        model = model.to(device).train()
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=1e-8, betas=(0.9, 0.95))
        step = _step(model, optimizer, criterion, x, y)
        seconds = common.time_fn(step, device, min_reps=2, min_seconds=0.0)
        peak = cuda_peak(step, device) if device.type == "cuda" else saved_activation_peak(step)
        rows.append(
            {
                "backbone": backbone,
                "method": method,
                "batch": batch,
                "size": image_size,
                "trainable_m": sum(p.numel() for p in trainable) / 1e6,
                "total_m": sum(p.numel() for p in model.parameters()) / 1e6,
                "median_s": seconds,
                "images_per_s": batch / seconds,
                "peak_gb": peak / 1e9,
                "memory": "cuda allocator" if device.type == "cuda" else "saved activations",
            }
        )
        del model, optimizer, step
    return rows


def _step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, criterion, x: torch.Tensor, y: torch.Tensor):
    """One training step of `model` on (x, y): zero_grad, criterion backward, optimizer step."""

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        criterion(model, x, y).backward()
        optimizer.step()

    return step


def run(
    device: str = "cpu",
    backbones: tuple[str, ...] | None = None,
    batch: int | None = None,
    image_size: int | None = None,
    loss: str = "trades",
    attack_steps: int | None = None,
) -> dict[str, Any]:
    """{"meta", "rows"}: `bench_tora` for each backbone. Defaults: vit_small and vit_base at 224, batch 64,
    APGD-10 on GPU; vit_small at 64 px, batch 8, APGD-2 on CPU (where 224 px takes minutes a step)."""
    dev = torch.device(device)
    gpu = dev.type == "cuda"
    backbones = backbones or (
        ("vit_small_patch16_224.augreg_in1k", "vit_base_patch16_224.augreg_in1k")
        if gpu
        else ("vit_small_patch16_224.augreg_in1k",)
    )
    batch, image_size = batch or (64 if gpu else 8), image_size or (224 if gpu else 64)
    steps = attack_steps or (10 if gpu else 2)
    rows = [
        row
        for name in backbones
        for row in bench_tora(name, image_size=image_size, batch=batch, device=dev, loss=loss, attack_steps=steps)
    ]
    meta = common.environment(dev, " ".join(sys.argv))
    meta["step"] = f"APGD-CE Linf 4/255, {steps} steps through the whole model; {loss} + backward + AdamW step"
    return {"meta": meta, "rows": rows}


def format_table(result: dict[str, Any]) -> str:
    return common.format_table(result["meta"], result["rows"], COLUMNS)
