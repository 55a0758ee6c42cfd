"""PGD (Madry et al. 2018) and FGSM with random start (Wong et al. 2020) on the fused ops."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from rft_fast import ops
from rft_fast.attacks import common
from rft_fast.modes import eval_mode


def _pgd(
    name: str,
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    norm: str,
    eps: float | Tensor,
    steps: int,
    step_size: float | Tensor | None,
    step_factor: float,
    loss: str,
    random_start: bool,
    seed: int,
    l1_sparsity: float,
    amp_dtype: torch.dtype | None,
    backend: str,
) -> Tensor:
    """Projected ascent with a fixed step from a random start; returns the last iterate. NonFiniteError (naming
    the attack `name`) when a loss or input gradient was NaN / Inf at some step."""
    with eval_mode(model):
        x32, y, eps_t = common.prepare(x, y, eps)
        step = step_factor * eps_t if step_size is None else ops.per_sample(step_size, "step_size", x32)
        obj = common.Objective(model, x32, y, loss, amp_dtype, x.dtype, backend=backend)
        gen = common.generator(x.device, seed)
        if random_start:
            x_adv = common.uniform_start(x32, eps_t, norm, gen, backend)
        elif loss == "kl":
            x_adv = common.trades_start(x32, eps_t, norm, gen, backend)
        else:
            x_adv = x32.clone()
        for _ in range(steps):
            _, _, grad = obj(x_adv)
            x_adv = ops.pgd_step(
                x_adv, x32, grad, step, eps_t, norm, l1_sparsity=l1_sparsity, backend=backend, check=False
            )
    obj.finite.raise_if_bad(name, norm, loss)
    return common.finish(x_adv, x, eps, norm)


def _validate(attack, steps: int) -> None:
    common.check_common(attack.norm, attack.loss, attack.amp_dtype, attack.seed, attack.backend)
    common.check_radius("eps", attack.eps)
    if attack.step_size is not None:
        common.check_radius("step_size", attack.step_size)
    common.check_int("steps", steps, 1)
    common.check_choice("random_start", attack.random_start, (True, False))
    common.check_float("l1_sparsity", attack.l1_sparsity, 0.0, 1.0, lo_open=True)


@dataclass(eq=False)
class PGD:
    """Projected gradient descent: Madry et al., "Towards Deep Learning Models Resistant to Adversarial
    Attacks", ICLR 2018 (arXiv:1706.06083).

    `steps` ascent steps of fixed size from a random start, each followed by the projection onto
    {z : ||z - x||_p <= eps} ∩ [0, 1]^d (ops.pgd_step: Linf sign step, L2 normalized step, L1 the sparse
    top-k step of APGD-L1). Returns the last iterate, as Madry et al.

    Args:
        norm: "Linf" | "L2" | "L1" (default "Linf").
        eps: radius, a float or a tensor of shape (N,), > 0 (default 8/255).
        steps: iterations >= 1 (default 10).
        step_size: a float or (N,) tensor > 0; None (default) uses 2.5 * eps / steps (Madry et al.'s rule:
            2/255 for eps 8/255 and 10 steps).
        loss: "ce" | "dlr" | "kl" (TRADES: KL from the clean prediction) (default "ce").
        random_start: start at a uniform point of the ball (Linf: U(-eps, eps) per coordinate; L2/L1: a random
            direction at radius U(0, eps)) (default True); False starts at x, or for loss "kl" at
            x + 0.001 N(0, I) projected onto the ball ∩ [0, 1]. This is not the official TRADES attack (eps 0.031,
            step 0.007, 10 sign steps from an unprojected x + 0.001 N(0, 1) start): that one is
            rft_fast.attacks.trades_pgd.TradesPGD (training attack "trades-pgd").
        seed: seeds a torch.Generator on x's device at every call (default 0).
        l1_sparsity: share of coordinates moved by an L1 step (default 0.2).
        amp_dtype: None | torch.bfloat16 | torch.float16: autocast for the model's forward/backward.
        backend: ops backend (default "auto").

    Call: `attack(model, x, y) -> x_adv`; x: (N, ...) in [0, 1]; y: (N,) labels in [0, C); x_adv like x,
    detached, inside the ball ∩ [0, 1]; model in eval mode during the attack, modes restored after.
    Raises rft_fast.attacks.NonFiniteError (a ValueError) when a loss or input gradient of some sample was NaN /
    Inf at any step (checked on the device, read once at the end).

    Example:
        >>> x_adv = PGD(norm="Linf", eps=8 / 255, steps=10)(model, x, y)
    """

    norm: str = "Linf"
    eps: float | Tensor = 8 / 255
    steps: int = 10
    step_size: float | Tensor | None = None
    loss: str = "ce"
    random_start: bool = True
    seed: int = 0
    l1_sparsity: float = 0.2
    amp_dtype: torch.dtype | None = None
    backend: str = "auto"

    def __post_init__(self) -> None:
        _validate(self, self.steps)

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, *, eps: float | Tensor | None = None) -> Tensor:
        _validate(self, self.steps)
        return _pgd(
            "PGD",
            model,
            x,
            y,
            norm=self.norm,
            eps=self.eps if eps is None else eps,
            steps=self.steps,
            step_size=self.step_size,
            step_factor=2.5 / self.steps,
            loss=self.loss,
            random_start=self.random_start,
            seed=self.seed,
            l1_sparsity=self.l1_sparsity,
            amp_dtype=self.amp_dtype,
            backend=self.backend,
        )


@dataclass(eq=False)
class FGSMRS:
    """FGSM with random start ("fast adversarial training"): Wong, Rice & Kolter, "Fast is better than free:
    Revisiting adversarial training", ICLR 2020 (arXiv:2001.03994).

    delta ~ U(-eps, eps) per coordinate (clipped to the image box), one signed-gradient step of size
    step_size = 1.25 * eps, projected back onto the eps-ball ∩ [0, 1]. L2 / L1 take the matching normalized /
    sparse step from a random point of the ball (an extension; the paper is Linf).

    Args:
        norm: "Linf" | "L2" | "L1" (default "Linf").
        eps: radius, a float or (N,) tensor, > 0 (default 8/255).
        step_size: float or (N,) tensor; None (default) = 1.25 * eps (the paper's alpha).
        loss: "ce" | "dlr" | "kl" (default "ce").
        random_start: default True (False is plain FGSM).
        seed, l1_sparsity, amp_dtype, backend: as PGD.

    Call: `attack(model, x, y) -> x_adv` as PGD.

    Example:
        >>> x_adv = FGSMRS(eps=8 / 255)(model, x, y)          # step 10/255
    """

    norm: str = "Linf"
    eps: float | Tensor = 8 / 255
    step_size: float | Tensor | None = None
    loss: str = "ce"
    random_start: bool = True
    seed: int = 0
    l1_sparsity: float = 0.2
    amp_dtype: torch.dtype | None = None
    backend: str = "auto"

    def __post_init__(self) -> None:
        _validate(self, 1)

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, *, eps: float | Tensor | None = None) -> Tensor:
        _validate(self, 1)
        return _pgd(
            "FGSM-RS",
            model,
            x,
            y,
            norm=self.norm,
            eps=self.eps if eps is None else eps,
            steps=1,
            step_size=self.step_size,
            step_factor=1.25,
            loss=self.loss,
            random_start=self.random_start,
            seed=self.seed,
            l1_sparsity=self.l1_sparsity,
            amp_dtype=self.amp_dtype,
            backend=self.backend,
        )
