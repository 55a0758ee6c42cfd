"""Robust training losses, called as criterion(model, x, y) -> scalar; loss.backward() gives the gradient.

ClassicATLoss: cross-entropy on the adversarial batch (Madry et al. 2018).
TRADESLoss: CE(model(x), y) + beta * KL(softmax(model(x)) || softmax(model(x_adv))) (Zhang et al. 2019),
by default memory-saving: the clean and the adversarial activation graphs are never alive together.
Attacks run with every module in eval mode and each module's mode is restored afterwards.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from rft_fast import ops
from rft_fast.modes import eval_mode

Attack = Callable[[nn.Module, Tensor, Tensor], Tensor]


def check_batch(x: Tensor, y: Tensor) -> None:
    """Refuses anything but a float image batch x (N, ...) with int64 labels y (N,) (the losses' and GRACE's inputs)."""
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.dim() < 2:
        raise ValueError(f"x must be a floating-point image batch (N, ...), got {getattr(x, 'shape', type(x))}")
    if not isinstance(y, Tensor) or y.dtype != torch.int64 or y.shape != x.shape[:1]:
        raise ValueError(f"y must be int64 labels of shape ({x.shape[0]},), got {getattr(y, 'dtype', type(y))}")


def adversarial_examples(attack: Attack, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """The attack's examples for a training loss: the attack runs in eval mode (modes restored after), detached."""
    with eval_mode(model):
        x_adv = attack(model, x, y)
    return x_adv.detach()


@dataclass
class ClassicATLoss:
    """Cross-entropy on attack(model, x, y), the attack run in eval mode (Classic AT)."""

    attack: Attack

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        check_batch(x, y)
        x_adv = adversarial_examples(self.attack, model, x, y)
        return nn.functional.cross_entropy(model(x_adv).float(), y)


@dataclass
class TRADESLoss:
    """TRADES: CE(clean) + beta * KL(clean || adv), the model forwarding both batches in its own mode.

    The attack is a parameter (the study uses APGD-CE; the original TRADES maximizes the KL from the clean
    prediction). memory_saving=True keeps only logits between the call and backward() and recomputes each
    branch in backward, one after the other (peak activations: the larger branch instead of both), with
    the same RNG draws and without touching BatchNorm statistics a second time; gradients equal the
    standard computation's. Cost: two extra forward passes without grad.
    """

    attack: Attack
    beta: float = 1.0
    memory_saving: bool = True

    def __post_init__(self) -> None:
        ops.check_beta(self.beta)

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        check_batch(x, y)
        x_adv = adversarial_examples(self.attack, model, x, y)
        if not self.memory_saving:
            logits_clean = model(x)
            return ops.trades_objective(logits_clean, model(x_adv), y, self.beta)
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise ValueError("model has no parameter with requires_grad=True: nothing to train")
        return _RecomputedTRADES.apply(_Closure(model, x, x_adv, y, self.beta), *params)


@dataclass
class _Closure:
    model: nn.Module
    x: Tensor
    x_adv: Tensor
    y: Tensor
    beta: float


def _rng_states(device: torch.device) -> tuple[Tensor, Tensor | None]:
    return torch.get_rng_state(), torch.cuda.get_rng_state(device) if device.type == "cuda" else None


def _set_rng_states(states: tuple[Tensor, Tensor | None], device: torch.device) -> None:
    torch.set_rng_state(states[0])
    if states[1] is not None:
        torch.cuda.set_rng_state(states[1], device)


def _autocast_state(device: torch.device) -> dict[str, object]:
    return {
        "device_type": device.type,
        "enabled": torch.is_autocast_enabled(device.type),
        "dtype": torch.get_autocast_dtype(device.type),
    }


class _RecomputedTRADES(torch.autograd.Function):
    """Forward: both branches without grad (BatchNorm statistics updated once each, clean then adversarial,
    as the standard computation does). Backward: the adversarial branch is recomputed with grad and
    backpropagated, freed, then the clean branch; each replays its recorded RNG state and leaves buffers as
    they were."""

    @staticmethod
    def forward(ctx, c: _Closure, *params: Tensor) -> Tensor:  # type: ignore[override]
        dev = c.x.device
        rng_clean = _rng_states(dev)
        logits_clean = c.model(c.x)
        rng_adv = _rng_states(dev)
        logits_adv = c.model(c.x_adv)
        ctx.rng = (rng_clean, rng_adv, _rng_states(dev))
        ctx.autocast = _autocast_state(dev)
        ctx.closure = c
        ctx.save_for_backward(logits_clean, logits_adv, *params)
        return ops.trades_objective(logits_clean, logits_adv, c.y, c.beta)

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        c: _Closure = ctx.closure
        logits_clean, logits_adv, *params = ctx.saved_tensors
        rng_clean, rng_adv, rng_after = ctx.rng
        with torch.enable_grad():
            lc, la = logits_clean.detach().requires_grad_(), logits_adv.detach().requires_grad_()
            g_clean, g_adv = torch.autograd.grad(
                ops.trades_objective(lc, la, c.y, c.beta, check=False), (lc, la), grad_out
            )
        buffers = [b.detach().clone() for b in c.model.buffers()]
        total: list[Tensor | None] = [None] * len(params)
        for rng, inputs, g in ((rng_adv, c.x_adv, g_adv), (rng_clean, c.x, g_clean)):
            _set_rng_states(rng, inputs.device)
            with torch.enable_grad(), torch.autocast(**ctx.autocast):
                out = c.model(inputs)
            grads = torch.autograd.grad(out, params, g.to(out.dtype), allow_unused=True)
            del out
            for b, saved in zip(c.model.buffers(), buffers):  # after backward: BatchNorm saved them
                b.copy_(saved)
            total = [t if gr is None else gr if t is None else t + gr for t, gr in zip(total, grads)]
        _set_rng_states(rng_after, c.x.device)
        return (None, *total)
