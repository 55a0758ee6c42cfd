"""AutoAttack (Croce & Hein 2020) through pyautoattack: the study's robust accuracy under Linf, L2 and L1.

mode "standard": AutoAttack's standard version (APGD-CE, APGD-T, FAB-T, Square; for L1 APGD runs with the
large-eps schedule and 5 restarts), what the study reports. mode "fast": the same APGD-CE and APGD-T, without
FAB-T and Square, for validation during tuning; results carry the mode so the two are never mixed up.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from rft_fast.modes import eval_mode

NORMS = ("Linf", "L2", "L1")
MODES = ("standard", "fast")
STUDY_EPS = {"Linf": 4 / 255, "L2": 2.0, "L1": 75.0}
FAST_ATTACKS = ["apgd-ce", "apgd-t"]
_NORM_TOLERANCE = 1e-4  # relative slack on ||x_adv - x|| for float rounding in pyautoattack's projections


@dataclass(frozen=True)
class RobustAccuracy:
    """The outcome of one AutoAttack run on n points: clean and robust accuracy on the same points."""

    norm: str
    eps: float
    mode: str
    clean: float
    robust: float
    n: int
    seconds: float
    batch_size: int


def check_batch(x: Tensor, y: Tensor) -> None:
    """Images (N, C, H, W) floating in [0, 1] without NaN, labels int64 (N,): clear errors otherwise."""
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.dim() != 4:
        raise ValueError(f"x must be a float image batch (N, C, H, W), got {getattr(x, 'shape', type(x))}")
    if not isinstance(y, Tensor) or y.dtype != torch.int64 or y.shape != x.shape[:1]:
        raise ValueError(f"y must be int64 labels of shape ({x.shape[0]},), got {getattr(y, 'dtype', type(y))} {tuple(getattr(y, 'shape', ()))}")
    if torch.isnan(x).any():
        raise ValueError("x contains NaN")
    if x.min() < 0 or x.max() > 1:
        raise ValueError(f"x must lie in [0, 1] (normalization belongs inside the model), got [{x.min():.4g}, {x.max():.4g}]")


def auto_batch_size(model: nn.Module, x: Tensor, start: int = 1024) -> int:
    """The largest power-of-two batch (<= start, <= N) whose forward + input-gradient fits in GPU memory,
    halved once more for the attacks' extra state; 128 (or N) on CPU, where memory is not the limit."""
    n = x.shape[0]
    if x.device.type != "cuda":
        return min(n, 128)
    batch = min(start, 1 << (n - 1).bit_length())
    while batch > 1:
        try:
            xb = x[:batch].detach().clone().requires_grad_(True)
            with eval_mode(model):
                torch.autograd.grad(model(xb).float().logsumexp(1).sum(), xb)
            return max(1, min(n, batch // 2))
        except torch.cuda.OutOfMemoryError:
            batch //= 2
        finally:
            torch.cuda.empty_cache()
    return 1


def predict(model: nn.Module, x: Tensor, batch_size: int) -> Tensor:
    """Predicted classes (N,), batched, without grad, the model in eval mode (modes restored after)."""
    with torch.no_grad(), eval_mode(model):
        return torch.cat([model(xb).argmax(1) for xb in x.split(batch_size)])


def _distance(x_adv: Tensor, x: Tensor, norm: str) -> Tensor:
    d = (x_adv - x).flatten(1).float()
    return {"Linf": lambda: d.abs().amax(1), "L2": lambda: d.norm(dim=1), "L1": lambda: d.abs().sum(1)}[norm]()


def autoattack(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    norm: str,
    eps: float | None = None,
    mode: str = "standard",
    batch_size: int | None = None,
    seed: int = 0,
) -> RobustAccuracy:
    """Runs pyautoattack's AutoAttack on (x, y) and returns clean and robust accuracy on those points.

    x: (N, C, H, W) in [0, 1] on the model's device; y: (N,) int64. eps: None = the study's (Linf 4/255,
    L2 2.0, L1 75). The model runs in eval mode (each module's flag restored after). Checked after the run:
    every adversarial point lies in the eps-ball and [0, 1], and no point is robust without being clean-correct
    (robust accuracy <= clean accuracy); a violation raises RuntimeError rather than recording a wrong number.
    """
    import pyautoattack

    if norm not in NORMS:
        raise ValueError(f"norm must be one of {list(NORMS)}, got {norm!r}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {list(MODES)}, got {mode!r}")
    eps = STUDY_EPS[norm] if eps is None else eps
    if not isinstance(eps, (int, float)) or not math.isfinite(eps) or eps <= 0:
        raise ValueError(f"eps must be a finite number > 0, got {eps!r}")
    check_batch(x, y)
    batch_size = batch_size or auto_batch_size(model, x)
    t0 = time.perf_counter()
    with eval_mode(model):
        adversary = pyautoattack.AutoAttack(model, norm=norm, eps=float(eps), version="standard", seed=seed, device=x.device)
        if mode == "fast":
            adversary.attacks_to_run = list(FAST_ATTACKS)
        x_adv, _ = adversary.run_standard_evaluation(x, y, batch_size=batch_size)
    clean_ok = predict(model, x, batch_size) == y
    robust_ok = predict(model, x_adv, batch_size) == y
    if x.device.type == "cuda":
        torch.cuda.synchronize(x.device)
    seconds = time.perf_counter() - t0
    dist = _distance(x_adv, x, norm)
    if bool((dist > eps * (1 + _NORM_TOLERANCE) + 1e-6).any()) or x_adv.min() < 0 or x_adv.max() > 1:
        raise RuntimeError(f"AutoAttack returned points outside the {norm} ball of radius {eps} or [0, 1] (max distance {dist.max():.6g})")
    if bool((robust_ok & ~clean_ok).any()):
        raise RuntimeError(f"{int((robust_ok & ~clean_ok).sum())} points are robust but misclassified clean: robust accuracy "
                           "must not exceed clean accuracy (a randomized or non-deterministic model?)")
    n = x.shape[0]
    return RobustAccuracy(norm, float(eps), mode, clean_ok.sum().item() / n, robust_ok.sum().item() / n, n, seconds, batch_size)
