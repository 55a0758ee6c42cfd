"""The training criterion of a config and the objectives the per-epoch validation measures.

The loss and the training attack come from their registries (rft_fast.train.loss_registry, attack_registry).
Without options make_criterion gives the loss's plain criterion (standard CE, ClassicATLoss, TRADESLoss). With a
sharpness-aware loss (the "+grace" losses), consistency_weight > 0 or a non-constant eps_schedule it gives a
TrainingCriterion: the loss, plus consistency_weight * consistency_loss on two shifted views, with the training
attack behind a ScheduledAttack whose radius `at_step` sets from the EpsSchedule at each optimizer step.
Every criterion the loop holds answers state_dict / load_state_dict / set_eps / at_step (LoopCriterion: no-ops
for a plain one).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from torch import Tensor, nn

from rft_fast.attacks import PGD
from rft_fast.modes import eval_mode
from rft_fast.regularizers import Shift, consistency_loss
from rft_fast.train.attack_registry import ATTACK_REGISTRY, Attack
from rft_fast.train.loss_registry import loss_spec
from rft_fast.train.schedule import EpsSchedule

if TYPE_CHECKING:
    from rft_fast.train.config import TrainConfig

Criterion = Callable[[nn.Module, Tensor, Tensor], Tensor]


def training_attack(config: TrainConfig) -> Attack:
    """The config's training attack (TrainConfig.attack; the study's: APGD, K steps, no random start, first step
    2 eps, CE or KL loss)."""
    return ATTACK_REGISTRY.get(config.attack).build(config)


class LoopCriterion:
    """What the training loop calls on its criterion besides criterion(model, x, y): the checkpoint's state
    (None: nothing to save), the training attack's radius, and the per-step hook that sets it (returning the
    metrics it adds to the epoch's row). These defaults are the no-ops of a criterion without options."""

    def state_dict(self) -> dict[str, Any] | None:
        return None

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        pass

    def set_eps(self, eps: float) -> None:
        pass

    def at_step(self, step: int, total_steps: int) -> dict[str, float]:
        return {}


@dataclass(eq=False)
class PlainCriterion(LoopCriterion):
    """A criterion(model, x, y) without options, with LoopCriterion's no-ops."""

    criterion: Criterion

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        return self.criterion(model, x, y)


def for_loop(criterion: Criterion) -> LoopCriterion:
    """`criterion` as the loop holds it: itself when it is a LoopCriterion, else wrapped in PlainCriterion."""
    return criterion if isinstance(criterion, LoopCriterion) else PlainCriterion(criterion)


class ScheduledAttack:
    """The training attack with a radius that the loop sets per optimizer step (`eps`, from the config's
    EpsSchedule). APGD derives its step size from the radius (initial step 2 eps), so passing the radius scales
    the step too (TradesPGD scales its step with it). eps == 0 returns the clean batch (detached copy): the
    losses then train on clean inputs (Classic AT: CE on x; TRADES: CE on x, KL 0; GRACE: x_adv = x)."""

    def __init__(self, attack: Attack) -> None:
        self.attack = attack
        self.eps = float(attack.eps)

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        if self.eps == 0:
            return x.detach().clone()
        return self.attack(model, x, y, eps=self.eps)


class _Batch(NamedTuple):
    """One micro-batch's inputs, drawn once: the split loss's batch (GRACE's attack and shift) or None, the
    consistency views or None."""

    x: Tensor
    y: Tensor
    grace: Any
    views: tuple[Tensor, Tensor] | None


@dataclass(eq=False)
class TrainingCriterion(LoopCriterion):
    """criterion(model, x, y) = the loss's objective + consistency_weight * L_cons.

    Split as GraceLoss is, for CurvatureSAM: `batch(model, x, y)` runs the attack and draws the shifted views
    once; `objective(model, batch)` evaluates the loss (again at the perturbed weights, same batch). `grace` is
    the split loss of a sharpness-aware loss (LossSpec.sharpness_aware; GraceLoss for the "+grace" losses), else
    None and `base` runs whole, attack included, so only `__call__` is meant for it.
    `state_dict()` carries the views' draw counters across a resumption; `at_step` sets the scheduled radius.
    """

    base: Criterion
    grace: Any = None
    consistency_weight: float = 0.0
    augment: Shift | None = None
    attack: ScheduledAttack | None = None
    schedule: EpsSchedule | None = None

    def set_eps(self, eps: float) -> None:
        if self.attack is None:
            raise ValueError("this criterion has no scheduled training attack")
        self.attack.eps = float(eps)

    def at_step(self, step: int, total_steps: int) -> dict[str, float]:
        """Sets the radius of optimizer step `step` of `total_steps` from the schedule; {"attack_eps_now": it}."""
        if self.schedule is None:
            return {}
        eps = self.schedule(step, total_steps)
        self.set_eps(eps)
        return {"attack_eps_now": eps}

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
        return {
            "grace_shift": None if self.grace is None else self.grace.state_dict(),
            "augment": None if self.augment is None else self.augment.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        if self.grace is not None:
            self.grace.load_state_dict(state["grace_shift"])
        if self.augment is not None:
            self.augment.load_state_dict(state["augment"])


def make_criterion(config: TrainConfig) -> Criterion:
    """criterion(model, x, y) -> scalar loss: the config's loss (LossSpec.build) on its training attack. A
    sharpness-aware loss, consistency_weight > 0 or a non-constant eps_schedule give a TrainingCriterion (module
    docstring). The shifted views are seeded from config.seed (GRACE's shift: stream 2 seed, consistency:
    2 seed + 1)."""
    spec = loss_spec(config.loss)
    schedule = (
        EpsSchedule(config.eps_schedule, config.attack_eps, config.eps_start, config.eps_warmup)
        if config.eps_schedule != "constant"
        else None
    )
    scheduled = ScheduledAttack(training_attack(config)) if schedule is not None else None
    attack = (scheduled or training_attack(config)) if spec.uses_attack else None
    loss = spec.build(config, attack)
    if not (spec.sharpness_aware or config.consistency_weight > 0 or schedule is not None):
        return loss
    augment = Shift(seed=(2 * config.seed + 1) % 2**62) if config.consistency_weight > 0 else None
    grace = loss if spec.sharpness_aware else None
    return TrainingCriterion(loss, grace, float(config.consistency_weight), augment, scheduled, schedule)


def validation_attack(config: TrainConfig) -> PGD:
    """PGD-`val_steps` at the training radius, random start, fixed seed: the per-epoch robust accuracy."""
    return PGD(norm=config.attack_norm, eps=config.attack_eps, steps=config.val_steps, random_start=True, seed=0)


def validation_sums(model: nn.Module, x: Tensor, y: Tensor, config: TrainConfig) -> dict[str, Tensor]:
    """Per-batch sums, model in eval mode: correct clean predictions, correct under PGD, and the training
    objective on the training attack's examples (LossSpec.objective_sum: the grid's ASHA metric, the "validation
    robust loss"). The training attack runs at the full attack_eps whatever the eps_schedule; for the "+grace"
    losses the objective is the base loss's (no Gram or consistency term)."""
    with eval_mode(model):
        x_train_adv = training_attack(config)(model, x, y)
        x_pgd = validation_attack(config)(model, x, y)
        with torch.no_grad():
            clean = (model(x).argmax(1) == y).sum()
            robust = (model(x_pgd).argmax(1) == y).sum()
            loss = loss_spec(config.loss).objective_sum(model, x, x_train_adv, y, config)
    return {"clean_correct": clean, "pgd_correct": robust, "loss_sum": loss.float()}
