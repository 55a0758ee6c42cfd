"""Steppers: what turns a group of micro-batches into one optimizer step (gradient accumulation included).

The loop calls, per micro-batch, `loss = stepper.loss(model, x, y, share)` then `stepper.backward(loss, share)`, and
at the end of each group `failure = stepper.step(model, autocast)`. Stepper: the criterion's loss, then the optimizer's
step through the run's loss scaler (`use_scaler`; torch.amp.GradScaler, enabled under amp "fp16" only): the
micro-batches' scaled gradients accumulate, and each optimizer step unscales them once, skips the step when one
is not finite (counted in `skipped_steps`) and updates the scale once. SharpnessAwareStepper (losses with LossSpec.sharpness_aware, GRACE's): the optimizer is CurvatureSAM;
each micro-batch's attack and shifted view are drawn once (criterion.batch) and kept for the group, whose
gradient is then recomputed at the perturbed weights (BatchNorm statistics preserved) before the base step.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from rft_fast.train.criterion import Criterion, for_loop
from rft_fast.train.grace import CurvatureSAM, preserved_buffers
from rft_fast.train.loss_registry import loss_spec

if TYPE_CHECKING:
    from rft_fast.train.config import TrainConfig

Autocast = Callable[[], contextlib.AbstractContextManager]


class Stepper:
    """The plain step: backward per micro-batch (by the loop), `optimizer.step()` per group.

    Args:
        optimizer: the optimizer (what the checkpoint saves under "optimizer").
        criterion: the loop's criterion (rft_fast.train.criterion.LoopCriterion).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, criterion: Any) -> None:
        self.optimizer, self.criterion = optimizer, criterion
        self.scaler = torch.amp.GradScaler("cpu", enabled=False)
        self.skipped_steps = 0  # optimizer steps the scaler skipped (a non-finite gradient under fp16)

    def use_scaler(self, scaler: torch.amp.GradScaler) -> None:
        """The run's loss scaler (one for the whole run: its scale carries over between stages)."""
        self.scaler = scaler

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, share: float) -> Tensor:
        """The micro-batch's loss (the loop backpropagates loss * share: share = its part of the group)."""
        return self.criterion(model, x, y)

    def backward(self, loss: Tensor, share: float) -> None:
        """Accumulates the micro-batch's gradient, loss * share, scaled by the loss scaler."""
        self.scaler.scale(loss * share).backward()

    def step(self, model: nn.Module, autocast: Autocast = contextlib.nullcontext) -> str:
        """The group's optimizer step and zero_grad; "" or a message saying why no step was taken. `autocast`:
        the loop's autocast context factory (for passes the step runs itself). The scaler unscales, skips the step
        when a gradient is not finite (its scale then backs off: that is how a skip is told) and updates."""
        scale = self.scaler.get_scale()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.skipped_steps += int(self.scaler.get_scale() < scale)
        self.optimizer.zero_grad(set_to_none=True)
        return ""


class SharpnessAwareStepper(Stepper):
    """CurvatureSAM's step (rft_fast.train.grace's recipe) over the group's kept micro-batches."""

    def __init__(self, optimizer: CurvatureSAM, criterion: Any) -> None:
        super().__init__(optimizer, criterion)
        self.kept: list[tuple[Any, float]] = []

    def use_scaler(self, scaler: torch.amp.GradScaler) -> None:
        """Only a disabled scaler: the step computes two gradients, which one unscale per step cannot cover
        (TrainConfig refuses amp "fp16" with these losses)."""
        if scaler.is_enabled():
            raise ValueError(
                "the sharpness-aware step does not support loss scaling (amp 'fp16'): use 'bf16' or 'none'"
            )
        super().use_scaler(scaler)

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, share: float) -> Tensor:
        b = self.criterion.batch(model, x, y)
        self.kept.append((b, share))
        return self.criterion.objective(model, b)

    def step(self, model: nn.Module, autocast: Autocast = contextlib.nullcontext) -> str:
        """The gradient at w is in .grad; perturb, recompute the group's gradient at w + e on the same
        micro-batches (buffers preserved), restore w, base step. Returns "" or a message when the loss at w + e
        is not finite (the weights are then left at w)."""
        kept, self.kept = self.kept, []
        opt: CurvatureSAM = self.optimizer  # type: ignore[assignment]
        opt.first_step()
        opt.zero_grad(set_to_none=True)
        total = torch.zeros((), device=next(model.parameters()).device)
        with preserved_buffers(model):
            for b, share in kept:
                with autocast():
                    loss = self.criterion.objective(model, b)
                (loss * share).backward()
                total += loss.detach().float() * share
        if not torch.isfinite(total):
            opt.cancel()
            return "non-finite training loss at the sharpness-aware perturbation"
        opt.second_step()
        opt.zero_grad(set_to_none=True)
        return ""


def make_stepper(optimizer: torch.optim.Optimizer, criterion: Criterion, config: TrainConfig) -> Stepper:
    """The stepper of the config's loss around `optimizer`, holding `criterion` as the loop calls it
    (criterion.for_loop). Schedulers stay on `optimizer` (CurvatureSAM shares its param_groups): a sharpness-aware
    loss gets SharpnessAwareStepper with CurvatureSAM(optimizer, grace_rho, grace_beta2), the others Stepper."""
    if loss_spec(config.loss).sharpness_aware:
        sam = CurvatureSAM(optimizer, rho=config.grace_rho, beta2=config.grace_beta2)
        return SharpnessAwareStepper(sam, for_loop(criterion))
    return Stepper(optimizer, for_loop(criterion))
