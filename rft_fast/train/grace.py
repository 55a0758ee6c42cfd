"""GRACE part (a): a sharpness-aware step whose per-parameter radius is scaled by a curvature estimate.

CurvatureSAM wraps any optimizer. With g the gradient at the weights w (already in .grad) and t_i the number of
steps parameter tensor i has had a gradient in:

    v   <- beta2 * v + (1 - beta2) * g^2                  (EMA of squared gradients: a diagonal Fisher estimate)
    c   =  sqrt(v / (1 - beta2^t)) + eps                   (bias-corrected RMS gradient: the curvature estimate)
    c~  =  c / mean(c)                                     (mean over every coordinate that has a gradient)
    e   =  rho * (g / c~) / sqrt(sum(g^2 / c~))            (the ascent step)
    w   <- w + e;  g' = gradient at w + e;  w <- w (bitwise);  base optimizer step with g'

e is the first-order maximizer of g.e over the ellipsoid {e : sum(c~ * e^2) <= rho^2} (Fisher-SAM's form with
the RMS gradient as the metric), so the radius along coordinate i is rho / sqrt(c~_i): smaller where the
curvature estimate is large. Normalizing c by its mean keeps rho in SAM's units: with uniform curvature
(c~ = 1) the step is SAM's e = rho g / ||g||; e is invariant to rescaling the loss. One extra forward/backward
per step (the gradient at w + e). Parameters with requires_grad=False or without a gradient are neither
perturbed nor counted. Memory: v and, between the two steps, a copy of the perturbed weights.

Driving it with gradient accumulation (the loop's micro-batches of one optimizer step):

    for x, y, share in group:                     # share = micro-batch size / group size
        b = criterion.batch(model, x, y)          # GraceLoss: the attack and the shifted view, drawn once
        (criterion.objective(model, b) * share).backward()
    def closure():                                # the same micro-batches at w + e
        with preserved_buffers(model):            # BatchNorm statistics are not updated a second time
            for b, share in kept: (criterion.objective(model, b) * share).backward()
    optimizer.step(closure)                       # first_step, zero_grad, closure, second_step
    optimizer.zero_grad(set_to_none=True)
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from rft_fast.checks import is_real


def _number(name: str, value: float, low: float, high: float | None, closed_low: bool) -> float:
    ok = is_real(value) and (value >= low if closed_low else value > low) and (high is None or value < high)
    if not ok:
        bounds = f"{'[' if closed_low else '('}{low}, {high if high is not None else 'inf'})"
        raise ValueError(f"{name} must be a number in {bounds}, got {value!r}")
    return float(value)


@contextlib.contextmanager
def preserved_buffers(model: nn.Module) -> Iterator[None]:
    """Restores every buffer of `model` (BatchNorm running statistics, counters) on exit: the second forward
    pass of a sharpness-aware step sees the same batch again and must not count it twice."""
    saved = [b.detach().clone() for b in model.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for b, s in zip(model.buffers(), saved):
                b.copy_(s)


class CurvatureSAM(Optimizer):
    """Curvature-scaled sharpness-aware minimization around `base` (module docstring: formulas, driving).

    Shares `base`'s param_groups (learning-rate schedulers and zero_grad act on both). `state_dict()` holds
    the base optimizer's state and the curvature estimates.

    Args:
        base: the optimizer that applies the update (e.g. AdamW), built on the model's parameters.
        rho: the neighbourhood's radius, >= 0 (default 0.05, SAM's default); 0 gives the base optimizer's step
            at the cost of the extra pass.
        beta2: the EMA's decay, in [0, 1) (default 0.999, Adam's).
        eps: added to the RMS gradient before normalizing, > 0 (default 1e-8).

    Use: loss.backward() at w, then `step(closure)` where closure() recomputes the gradient (backward) at the
    perturbed weights; or `first_step()`, the backward passes, `second_step()`.
    """

    def __init__(self, base: Optimizer, rho: float = 0.05, beta2: float = 0.999, eps: float = 1e-8) -> None:
        if not isinstance(base, Optimizer):
            raise TypeError(f"base must be a torch.optim.Optimizer, got {type(base).__name__}")
        self.rho = _number("rho", rho, 0.0, None, True)
        self.beta2 = _number("beta2", beta2, 0.0, 1.0, True)
        self.eps = _number("eps", eps, 0.0, None, False)
        self.base = base
        super().__init__(base.param_groups, base.defaults)
        self.param_groups = base.param_groups
        self._perturbed: list[Tensor] = []

    def _with_grad(self) -> list[Tensor]:
        params = [p for g in self.param_groups for p in g["params"] if p.requires_grad and p.grad is not None]
        if any(p.grad.is_sparse for p in params):
            raise ValueError("CurvatureSAM does not support sparse gradients")
        return params

    def _metric(self, p: Tensor) -> Tensor:
        """c = sqrt(v / (1 - beta2^t)) + eps for parameter p (a fresh tensor)."""
        st = self.state[p]
        return (st["curvature"] / (1 - self.beta2 ** st["step"])).sqrt_().add_(self.eps)

    @torch.no_grad()
    def first_step(self) -> None:
        """Updates the curvature estimate with the gradient in .grad and moves the weights to w + e."""
        if self._perturbed:
            raise RuntimeError("first_step() called twice without second_step(): the weights are still perturbed")
        params = self._with_grad()
        if not params:
            raise RuntimeError("no parameter has a gradient: call loss.backward() before first_step()")
        for p in params:
            st = self.state[p]
            if "curvature" not in st:
                st["curvature"], st["step"] = torch.zeros_like(p), 0
            st["step"] += 1
            st["curvature"].mul_(self.beta2).addcmul_(p.grad, p.grad, value=1 - self.beta2)
        acc = functools.reduce(torch.promote_types, {p.dtype for p in params}, torch.float32)  # sums' dtype
        numel = sum(p.numel() for p in params)
        mean_c = torch.stack([self._metric(p).sum(dtype=acc) for p in params]).sum() / numel
        quad = torch.stack([(p.grad.to(acc).square() / self._metric(p)).sum(dtype=acc) for p in params]).sum() * mean_c
        scale = torch.where(quad > 0, self.rho * mean_c / quad.sqrt(), 0.0)  # g = 0 everywhere: e = 0 (no sync)
        for p in params:
            self.state[p]["w"] = p.detach().clone()
            p.add_((p.grad / self._metric(p) * scale).to(p.dtype))
        self._perturbed = params

    @torch.no_grad()
    def second_step(self) -> None:
        """Restores the weights saved by first_step() exactly, then applies the base optimizer's step with the
        gradient now in .grad (the one at w + e)."""
        if not self._perturbed:
            raise RuntimeError("second_step() without first_step(): there is no perturbation to undo")
        for p in self._perturbed:
            p.copy_(self.state[p].pop("w"))
        self._perturbed = []
        self.base.step()

    @torch.no_grad()
    def cancel(self) -> None:
        """Restores the weights saved by first_step() exactly without any update (e.g. the loss at w + e was not
        finite); the curvature estimate keeps first_step()'s update."""
        for p in self._perturbed:
            p.copy_(self.state[p].pop("w"))
        self._perturbed = []

    def step(self, closure: Callable[[], Tensor | None] | None = None) -> Tensor | None:  # type: ignore[override]
        """first_step(), zero_grad, closure() (the backward pass(es) at w + e), second_step(); returns
        closure()'s value. The gradient at w must already be in .grad."""
        if closure is None:
            raise ValueError(
                "CurvatureSAM.step needs closure: a function that runs the backward pass at the "
                "perturbed weights (the gradient at the current weights must already be in .grad)"
            )
        self.first_step()
        self.zero_grad(set_to_none=True)
        with torch.enable_grad():
            loss = closure()
        self.second_step()
        return loss

    def state_dict(self) -> dict[str, object]:
        return {"base": self.base.state_dict(), "curvature": super().state_dict()}

    def load_state_dict(self, state_dict: dict[str, object]) -> None:
        self.base.load_state_dict(state_dict["base"])
        super().load_state_dict(state_dict["curvature"])
        self.param_groups = self.base.param_groups
