"""Optimizer and schedule of the study: separate lr / weight decay for backbone and head, none on biases and
norm parameters (every parameter with ndim <= 1), AdamW betas (0.9, 0.95) or SGD, optional cosine to 0."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from rft_fast.train.config import TrainConfig


def param_groups(backbone: list[nn.Parameter], head: list[nn.Parameter], config: TrainConfig) -> list[dict]:
    """Four groups (backbone/head x decay/no decay), each tagged with its "name"; frozen parameters and
    empty groups are left out (linear probing leaves only the head's)."""
    groups = []
    for part, params, lr, wd in (
        ("backbone", backbone, config.lr_backbone, config.wd_backbone),
        ("head", head, config.lr_head, config.wd_head),
    ):
        trainable = [p for p in params if p.requires_grad]
        decay = [p for p in trainable if p.ndim > 1]
        no_decay = [p for p in trainable if p.ndim <= 1]
        for suffix, ps, w in (("", decay, wd), ("_no_decay", no_decay, 0.0)):
            if ps:
                groups.append({"name": part + suffix, "params": ps, "lr": lr, "weight_decay": w})
    if not groups:
        raise ValueError("no trainable parameter: every parameter has requires_grad=False")
    return groups


def make_optimizer(groups: list[dict], config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW (betas (0.9, 0.95), the study's) or SGD with Nesterov-free momentum."""
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, betas=(0.9, 0.95))
    return torch.optim.SGD(groups, momentum=config.momentum)


def make_scheduler(
    optimizer: torch.optim.Optimizer, config: TrainConfig
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """Cosine annealing to 0 over the run's epochs, stepped once per epoch; None without `cosine`."""
    if not config.cosine:
        return None
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.num_epochs, eta_min=0.0)


def group_lrs(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """Current learning rate per part ("lr_backbone", "lr_head") for the metrics."""
    return {f"lr_{g['name'].removesuffix('_no_decay')}": g["lr"] for g in optimizer.param_groups}
