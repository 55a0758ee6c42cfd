"""The training criterion of a config and the objectives the per-epoch validation measures.

Without options make_criterion gives the plain loss (standard CE, ClassicATLoss, TRADESLoss). With GRACE,
consistency_weight > 0 or a non-constant eps_schedule it gives a TrainingCriterion: the base loss (wrapped in
GraceLoss for the "+grace" losses), plus consistency_weight * consistency_loss on two shifted views, with the
training attack behind a ScheduledAttack whose radius the loop sets at each optimizer step.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rft_fast import ops
from rft_fast.attacks import APGD, PGD
from rft_fast.losses import ClassicATLoss, TRADESLoss
from rft_fast.modes import eval_mode
from rft_fast.regularizers import GraceBatch, GraceLoss, Shift, consistency_loss
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


class ScheduledAttack:
    """The training attack with a radius that the loop sets per optimizer step (`eps`, from the config's
    EpsSchedule). APGD derives its step size from the radius (initial step 2 eps), so passing the radius scales
    the step too. eps == 0 returns the clean batch (detached copy): the losses then train on clean inputs
    (Classic AT: CE on x; TRADES: CE on x, KL 0; GRACE: x_adv = x)."""

    def __init__(self, attack: APGD) -> None:
        self.attack = attack
        self.eps = float(attack.eps)

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        if self.eps == 0:
            return x.detach().clone()
        return self.attack(model, x, y, eps=self.eps)


class _Batch(NamedTuple):
    """One micro-batch's inputs, drawn once: GRACE's (attack, shift) or None, the consistency views or None."""

    x: Tensor
    y: Tensor
    grace: GraceBatch | None
    views: tuple[Tensor, Tensor] | None


@dataclass(eq=False)
class TrainingCriterion:
    """criterion(model, x, y) = base objective [+ Gram alignment (GRACE)] + consistency_weight * L_cons.

    Split as GraceLoss is, for CurvatureSAM: `batch(model, x, y)` runs the attack and draws the shifted views
    once; `objective(model, batch)` evaluates the loss (again at the perturbed weights, same batch). Without
    GRACE, `objective` runs the base loss, attack included, so only `__call__` is meant for it.
    `state_dict()` carries the views' draw counters across a resumption.
    """

    base: Criterion
    grace: GraceLoss | None = None
    consistency_weight: float = 0.0
    augment: Shift | None = None
    attack: ScheduledAttack | None = None

    def set_eps(self, eps: float) -> None:
        if self.attack is None:
            raise ValueError("this criterion has no scheduled training attack")
        self.attack.eps = float(eps)

    def batch(self, model: nn.Module, x: Tensor, y: Tensor) -> _Batch:
        g = self.grace.batch(model, x, y) if self.grace is not None else None
        views = (self.augment(x), self.augment(x)) if self.consistency_weight > 0 else None
        return _Batch(x, y, g, views)

    def objective(self, model: nn.Module, b: _Batch) -> Tensor:
        loss = self.grace.objective(model, b.grace) if self.grace is not None else self.base(model, b.x, b.y)
        if b.views is not None:
            loss = loss + self.consistency_weight * consistency_loss(model(b.views[0]), model(b.views[1]))
        return loss

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        return self.objective(model, self.batch(model, x, y))

    def state_dict(self) -> dict[str, Any]:
        return {"grace_shift": None if self.grace is None else self.grace.shift.state_dict(),
                "augment": None if self.augment is None else self.augment.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.grace is not None:
            self.grace.shift.load_state_dict(state["grace_shift"])
        if self.augment is not None:
            self.augment.load_state_dict(state["augment"])


def make_criterion(config: TrainConfig) -> Criterion:
    """criterion(model, x, y) -> scalar loss: "ce" (standard training), "classic_at" (CE on APGD examples)
    or "trades" (CE + beta KL, memory-saving unless config.memory_saving is False). The "+grace" losses,
    consistency_weight > 0 or a non-constant eps_schedule give a TrainingCriterion (module docstring); GRACE's
    TRADES keeps both graphs (memory_saving does not apply). The shifted views are seeded from config.seed
    (GRACE's shift: stream 2 seed, consistency: 2 seed + 1)."""
    options = config.grace or config.consistency_weight > 0 or config.eps_schedule != "constant"
    attack: Any = training_attack(config)
    scheduled = ScheduledAttack(attack) if config.eps_schedule != "constant" else None
    if scheduled is not None:
        attack = scheduled
    if config.base_loss == "ce":
        base: Criterion = _standard
    elif config.base_loss == "classic_at":
        base = ClassicATLoss(attack)
    else:
        base = TRADESLoss(attack, beta=config.beta, memory_saving=config.memory_saving)
    if not options:
        return base
    grace = GraceLoss(base, config.grace_gram_weight, Shift(seed=(2 * config.seed) % 2**62)) if config.grace else None
    augment = Shift(seed=(2 * config.seed + 1) % 2**62) if config.consistency_weight > 0 else None
    return TrainingCriterion(base, grace, float(config.consistency_weight), augment, scheduled)


def validation_attack(config: TrainConfig) -> PGD:
    """PGD-`val_steps` at the training radius, random start, fixed seed: the per-epoch robust accuracy."""
    return PGD(norm=config.attack_norm, eps=config.attack_eps, steps=config.val_steps, random_start=True, seed=0)


@torch.no_grad()
def _objective_sum(model: nn.Module, x: Tensor, x_adv: Tensor, y: Tensor, config: TrainConfig) -> Tensor:
    if config.base_loss == "ce":
        return F.cross_entropy(model(x).float(), y, reduction="sum")
    if config.base_loss == "classic_at":
        return F.cross_entropy(model(x_adv).float(), y, reduction="sum")
    return ops.trades_objective(model(x), model(x_adv), y, config.beta) * x.shape[0]


def validation_sums(model: nn.Module, x: Tensor, y: Tensor, config: TrainConfig) -> dict[str, Tensor]:
    """Per-batch sums, model in eval mode: correct clean predictions, correct under PGD, and the training
    objective on the training attack's examples (the grid's ASHA metric: the "validation robust loss"). The
    training attack runs at the full attack_eps whatever the eps_schedule; for the "+grace" losses the objective
    is the base loss's (no Gram or consistency term)."""
    with eval_mode(model):
        x_train_adv = training_attack(config)(model, x, y)
        x_pgd = validation_attack(config)(model, x, y)
        with torch.no_grad():
            clean = (model(x).argmax(1) == y).sum()
            robust = (model(x_pgd).argmax(1) == y).sum()
        loss = _objective_sum(model, x, x_train_adv, y, config)
    return {"clean_correct": clean, "pgd_correct": robust, "loss_sum": loss.float()}
