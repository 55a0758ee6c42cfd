"""The official TRADES training attack (Zhang et al. 2019), as its reference code generates x_adv."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rft_fast.attacks import NonFiniteError
from rft_fast.checks import is_int, is_real
from rft_fast.modes import eval_mode


@dataclass(eq=False)
class TradesPGD:
    """The TRADES attack: Zhang et al., "Theoretically Principled Trade-off between Robustness and Accuracy",
    ICML 2019 (arXiv:1901.08573), as the authors' code (trades.py) runs it.

    Linf only. Start at x + 0.001 * N(0, I), NOT projected; then `steps` sign steps of `step_size` ascending
    KL(softmax(model(x)) || softmax(model(x_adv))) (summed over the batch and classes), each followed by the
    projection onto the Linf ball of radius eps around x and a clamp to [0, 1]. Returns the last iterate.
    The official defaults are eps 0.031, step 0.007, 10 steps (not 8/255 and 2/255).

    BatchNorm: the attack runs with every module in eval mode (each module's mode restored after), so the
    running statistics do not move here. The official loss then forwards the clean batch twice (once for the
    clean logits of its KL term, once inside the CE term), so BatchNorm statistics move three times per
    training step there and twice here (TRADESLoss forwards the clean batch once), as in the study.

    Args:
        eps: the Linf radius, > 0 (default 0.031).
        step_size: the sign step, > 0 (default 0.007).
        steps: iterations >= 1 (default 10).
        seed: seeds the start's N(0, I) draw, a torch.Generator on x's device at every call (default 0).

    Call: `attack(model, x, y, *, eps=None) -> x_adv`; x: (N, C, H, W) in [0, 1]; y: (N,) labels (unused: the
    attack needs no label); eps overrides the radius for this call (a float > 0) and scales the step with it
    (step_size * eps / self.eps), so that an eps schedule keeps the official step-to-radius ratio. x_adv like
    x, detached. Raises rft_fast.attacks.NonFiniteError when the KL was NaN / Inf at some step.

    Example:
        >>> x_adv = TradesPGD()(model, x, y)                     # the official attack
        >>> x_adv = TradesPGD(eps=4 / 255, step_size=4 / 255 * 0.007 / 0.031, steps=10)(model, x, y)
    """

    eps: float = 0.031
    step_size: float = 0.007
    steps: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("eps", "step_size"):
            value = getattr(self, name)
            if not is_real(value) or value <= 0:
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        if not is_int(self.steps) or self.steps < 1:
            raise ValueError(f"steps must be an int >= 1, got {self.steps!r}")
        if not is_int(self.seed) or self.seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {self.seed!r}")

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, *, eps: float | None = None) -> Tensor:
        if not isinstance(x, Tensor) or not x.is_floating_point() or x.dim() < 2:
            raise ValueError(f"x must be a floating-point image batch (N, ...), got {getattr(x, 'shape', type(x))}")
        radius = self.eps if eps is None else float(eps)
        if not is_real(radius) or radius <= 0:
            raise ValueError(f"eps must be a finite number > 0, got {eps!r}")
        step = self.step_size * radius / self.eps
        x32 = x.detach().float()
        gen = torch.Generator(device=x.device).manual_seed(self.seed)
        x_adv = x32 + 0.001 * torch.randn(x32.shape, generator=gen, device=x.device)
        finite = torch.ones((), dtype=torch.bool, device=x.device)
        with eval_mode(model):
            with torch.no_grad():
                p_clean = F.softmax(model(x32).float(), dim=1)
            for _ in range(self.steps):
                x_adv.requires_grad_(True)
                with torch.enable_grad():
                    kl = F.kl_div(F.log_softmax(model(x_adv).float(), dim=1), p_clean, reduction="sum")
                    (grad,) = torch.autograd.grad(kl, [x_adv])
                finite &= torch.isfinite(kl)
                x_adv = x_adv.detach() + step * torch.sign(grad.detach())
                x_adv = torch.min(torch.max(x_adv, x32 - radius), x32 + radius).clamp_(0.0, 1.0)
        if not bool(finite):
            raise NonFiniteError(f"TradesPGD (Linf, KL): NaN or Inf in the loss (eps {radius:g}, {self.steps} steps)")
        return x_adv.to(x.dtype)
