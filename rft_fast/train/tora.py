"""TORA's two-phase trade-off training (protocol "TORA-<epochs>"): what trains in each phase, with what loss.

Phase 1 (the first `config.tora_phase1_epochs_resolved` epochs, default half rounded up): psi_R, [ROB] and f_ROB
train with the grid's robust loss (config.loss: Classic AT or TRADES, attack through the "rob" path) and
psi_A, [ACC] and f_ACC with clean cross-entropy on the "acc" path; the two losses are summed, and since the
paths share no trainable parameter each part receives exactly its own loss's gradient.
Phase 2 (the remaining epochs): only the fusion gates train, on the fused model, with
lambda * L_ROB + (1 - lambda) * L_ACC (L_ROB: the robust loss, attack through the whole fused model; L_ACC:
clean CE). Each phase has its own optimizer and cosine schedule over its own epochs; the loop rebuilds them
at the switch and the checkpoint records the phase.
Learning rates: adapters, tokens and fusion use lr_backbone / wd_backbone (they sit in the body), the two
heads lr_head / wd_head; no weight decay on biases, norms and tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rft_fast import models
from rft_fast.models.adapters import ToraViT
from rft_fast.train.criterion import Criterion, LoopCriterion, make_criterion
from rft_fast.train.optim import make_optimizer

if TYPE_CHECKING:
    from rft_fast.train.config import TrainConfig

PHASES = (1, 2)


def build_model(model: models.Normalized, config: TrainConfig) -> ToraViT:
    """`model` wrapped with the config's adapter and fusion widths (frozen backbone; see models.tora)."""
    return models.tora(model, bottleneck=config.tora_bottleneck, fusion_dim=config.tora_fusion_dim)


def phase_of_epoch(config: TrainConfig, epoch: int) -> int:
    """1 for the first tora_phase1_epochs (0-based `epoch` below it), else 2."""
    return 1 if epoch < config.tora_phase1_epochs_resolved else 2


def phase_epochs(config: TrainConfig, phase: int) -> int:
    _check_phase(phase)
    first = config.tora_phase1_epochs_resolved
    return first if phase == 1 else config.num_epochs - first


def set_phase(model: ToraViT, phase: int) -> None:
    """requires_grad on the phase's parameters only (phase 1: both adapter paths; phase 2: the fusion)."""
    _check_phase(phase)
    trainable = {
        id(p) for p in (model.acc_parameters() + model.rob_parameters() if phase == 1 else model.fusion_parameters())
    }
    for p in model.parameters():
        p.requires_grad_(id(p) in trainable)


def param_groups(model: ToraViT, config: TrainConfig, phase: int) -> list[dict]:
    """Phase 1: "adapters" (psi_A, psi_R, tokens) and "heads"; phase 2: "fusion". Each with a "_no_decay"
    twin for biases, norms and tokens; empty groups left out."""
    _check_phase(phase)
    heads = {id(p) for p in (*model.head_acc.parameters(), *model.head_rob.parameters())}
    tokens = {id(model.acc_token), id(model.rob_token)}
    if phase == 1:
        params = model.acc_parameters() + model.rob_parameters()
        parts = (
            ("adapters", [p for p in params if id(p) not in heads], config.lr_backbone, config.wd_backbone),
            ("heads", [p for p in params if id(p) in heads], config.lr_head, config.wd_head),
        )
    else:
        parts = (("fusion", model.fusion_parameters(), config.lr_backbone, config.wd_backbone),)
    groups = []
    for name, params, lr, wd in parts:
        decay = [p for p in params if p.ndim > 1 and id(p) not in tokens]
        no_decay = [p for p in params if p.ndim <= 1 or id(p) in tokens]
        for suffix, ps, w in (("", decay, wd), ("_no_decay", no_decay, 0.0)):
            if ps:
                groups.append({"name": name + suffix, "params": ps, "lr": lr, "weight_decay": w})
    return groups


def phase_optimizer(
    model: ToraViT, config: TrainConfig, phase: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler | None]:
    """The phase's optimizer (the config's kind) and, with `cosine`, annealing to 0 over the phase's epochs."""
    optimizer = make_optimizer(param_groups(model, config, phase), config)
    if not config.cosine:
        return optimizer, None
    return optimizer, torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=phase_epochs(config, phase), eta_min=0.0
    )


def _clean_ce(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    return F.cross_entropy(model(x).float(), y)


@dataclass(eq=False)
class PhaseCriterion(LoopCriterion):
    """criterion(model, x, y) for a ToraViT in `phase`; `robust` is the config's loss (make_criterion), run on
    path views so that attacks and memory-saving TRADES (which recomputes in backward) see the right path."""

    robust: Criterion
    phase: int
    lam: float

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        if not isinstance(model, ToraViT):
            raise TypeError(f"the TORA criterion takes a ToraViT, got {type(model).__name__}")
        if self.phase == 1:
            return self.robust(model.view("rob"), x, y) + _clean_ce(model.view("acc"), x, y)
        fused = model.view("fused")
        loss = torch.zeros((), device=x.device)
        if self.lam > 0:
            loss = loss + self.lam * self.robust(fused, x, y)
        if self.lam < 1:
            loss = loss + (1 - self.lam) * _clean_ce(fused, x, y)
        return loss


def phase_criterion(config: TrainConfig, phase: int) -> PhaseCriterion:
    """The phase's training loss (module docstring); the robust part follows config.loss."""
    _check_phase(phase)
    return PhaseCriterion(make_criterion(config), phase, float(config.tora_lambda))


def _check_phase(phase: int) -> None:
    if phase not in PHASES:
        raise ValueError(f"phase must be one of {list(PHASES)}, got {phase!r}")
