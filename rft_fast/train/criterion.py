"""The training criterion of a config and the objectives the per-epoch validation measures."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rft_fast import ops
from rft_fast.attacks import APGD, PGD
from rft_fast.losses import ClassicATLoss, TRADESLoss
from rft_fast.modes import eval_mode
from rft_fast.train.config import TrainConfig

Criterion = Callable[[nn.Module, Tensor, Tensor], Tensor]


def training_attack(config: TrainConfig) -> APGD:
    """The study's training attack: APGD, K steps, no random start (first step 2 eps), CE (or KL) loss."""
    return APGD(
        norm=config.attack_norm, eps=config.attack_eps, steps=config.attack_steps, loss=config.attack_loss,
        random_start=False,
    )


def _standard(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    return F.cross_entropy(model(x).float(), y)


def make_criterion(config: TrainConfig) -> Criterion:
    """criterion(model, x, y) -> scalar loss: "ce" (standard training), "classic_at" (CE on APGD examples)
    or "trades" (CE + beta KL, memory-saving unless config.memory_saving is False)."""
    if config.loss == "ce":
        return _standard
    if config.loss == "classic_at":
        return ClassicATLoss(training_attack(config))
    return TRADESLoss(training_attack(config), beta=config.beta, memory_saving=config.memory_saving)


def validation_attack(config: TrainConfig) -> PGD:
    """PGD-`val_steps` at the training radius, random start, fixed seed: the per-epoch robust accuracy."""
    return PGD(norm=config.attack_norm, eps=config.attack_eps, steps=config.val_steps, random_start=True, seed=0)


@torch.no_grad()
def _objective_sum(model: nn.Module, x: Tensor, x_adv: Tensor, y: Tensor, config: TrainConfig) -> Tensor:
    if config.loss == "ce":
        return F.cross_entropy(model(x).float(), y, reduction="sum")
    if config.loss == "classic_at":
        return F.cross_entropy(model(x_adv).float(), y, reduction="sum")
    return ops.trades_objective(model(x), model(x_adv), y, config.beta) * x.shape[0]


def validation_sums(model: nn.Module, x: Tensor, y: Tensor, config: TrainConfig) -> dict[str, Tensor]:
    """Per-batch sums, model in eval mode: correct clean predictions, correct under PGD, and the training
    objective on the training attack's examples (the grid's ASHA metric: the "validation robust loss")."""
    with eval_mode(model):
        x_train_adv = training_attack(config)(model, x, y)
        x_pgd = validation_attack(config)(model, x, y)
        with torch.no_grad():
            clean = (model(x).argmax(1) == y).sum()
            robust = (model(x_pgd).argmax(1) == y).sum()
        loss = _objective_sum(model, x, x_train_adv, y, config)
    return {"clean_correct": clean, "pgd_correct": robust, "loss_sum": loss.float()}
