"""Randomized smoothing certification ("smoothing-L2"): Cohen, Rosenfeld & Kolter, "Certified Adversarial
Robustness via Randomized Smoothing", ICML 2019 (arXiv:1902.02918), algorithm CERTIFY.

The smoothed classifier is g(x) = argmax_c P(f(x + delta) = c), delta ~ N(0, sigma^2 I), the noise added in
[0, 1] pixel space (normalization is inside the model) without clipping, as in the paper. Per image:

    c_A   = the most frequent class of f over n0 noisy copies (selection draws)
    n_A   = how often f predicts c_A over n further noisy copies (estimation draws)
    p_A   = the one-sided (1 - alpha) Clopper-Pearson lower bound on P(f = c_A) = Beta.ppf(alpha, n_A, n - n_A + 1)
            (0 when n_A = 0)
    if p_A < 1/2: abstain (prediction -1, radius 0), else prediction c_A and radius sigma * Phi^-1(p_A)

With probability >= 1 - alpha over the draws, g predicts c_A within the L2 ball of that radius. The Monte-Carlo
prediction of g without abstention, argmax of the n estimation counts, gives the smoothed accuracy. A
certified prediction has p_A >= 1/2, hence n_A / n > 1/2 (the bound is below the empirical share), so c_A is that
argmax: certified accuracy at any radius never exceeds the smoothed accuracy.

Vectorized: the (image, draw) pairs of a whole batch of images are flattened into model batches of `batch_size`
noisy images on x's device, and the counts gathered with one bincount per batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats
from torch import Tensor, nn

from rft_fast.attacks import NonFiniteError
from rft_fast.checks import is_int, is_real
from rft_fast.modes import eval_mode


@dataclass(frozen=True)
class Certification:
    """CERTIFY's outcome for N images (CPU tensors): prediction (N,) int64, -1 where it abstains; radius (N,)
    float64, 0 where it abstains; p_lower (N,) float64, the bound on p_A; smoothed (N,) int64, the Monte-Carlo
    prediction (argmax of the n estimation counts, never abstaining)."""

    prediction: Tensor
    radius: Tensor
    p_lower: Tensor
    smoothed: Tensor
    sigma: float
    n0: int
    n: int
    alpha: float


def _count(name: str, value: int) -> None:
    if not is_int(value) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")


def _check_images(x: Tensor) -> None:
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.dim() < 2 or x.shape[0] < 1:
        raise ValueError(f"x must be a non-empty float image batch (N, C, H, W), got {getattr(x, 'shape', type(x))}")
    if torch.isnan(x).any() or x.min() < 0 or x.max() > 1:
        raise ValueError("x must lie in [0, 1] without NaN (normalization belongs inside the model)")


def noisy_counts(model: nn.Module, x: Tensor, sigma: float, num: int, batch_size: int, gen: torch.Generator) -> Tensor:
    """(N, C) int64 counts of model's predicted classes over `num` copies of each image plus N(0, sigma^2 I)
    noise, drawn from `gen`; the model in eval mode (modes restored), without grad, on x's device."""
    n_img = x.shape[0]
    total = n_img * num
    counts: Tensor | None = None
    bad = torch.zeros((), dtype=torch.bool, device=x.device)
    with torch.no_grad(), eval_mode(model):
        for start in range(0, total, batch_size):
            image = torch.arange(start, min(start + batch_size, total), device=x.device) // num
            clean = x[image].float()
            noisy = clean + sigma * torch.randn(clean.shape, generator=gen, device=x.device)
            logits = model(noisy.to(x.dtype))
            bad |= ~torch.isfinite(logits).all()
            classes = logits.shape[1]
            if counts is None:
                counts = torch.zeros(n_img * classes, dtype=torch.int64, device=x.device)
            counts += torch.bincount(image * classes + logits.argmax(1), minlength=n_img * classes)
    assert counts is not None  # total >= 1
    if bool(bad):
        raise NonFiniteError("the model's logits are not finite (NaN or Inf) on noisy copies: no certificate is stored")
    return counts.view(n_img, -1)


def certify(
    model: nn.Module,
    x: Tensor,
    sigma: float,
    *,
    n0: int = 100,
    n: int = 100_000,
    alpha: float = 0.001,
    batch_size: int = 1000,
    seed: int = 0,
) -> Certification:
    """Cohen et al.'s CERTIFY for every image of x (N, C, H, W) in [0, 1] (module docstring: formulas).

    Args:
        sigma: the noise's standard deviation in pixel units, > 0.
        n0: selection draws per image (default 100, the paper's).
        n: estimation draws per image (default 100,000, the paper's).
        alpha: failure probability, in (0, 1) (default 0.001, the paper's).
        batch_size: noisy images per forward pass (default 1000).
        seed: seeds a torch.Generator on x's device at every call: same inputs, seed, batch_size and device,
            same result.
    """
    _check_images(x)
    if not is_real(sigma) or sigma <= 0:
        raise ValueError(f"sigma must be a finite number > 0, got {sigma!r}")
    for name, value in (("n0", n0), ("n", n), ("batch_size", batch_size)):
        _count(name, value)
    if not is_real(alpha, finite=False) or not 0 < alpha < 1:
        raise ValueError(f"alpha must be a number in (0, 1), got {alpha!r}")
    gen = torch.Generator(device=x.device).manual_seed(seed)
    selected = noisy_counts(model, x, sigma, n0, batch_size, gen).argmax(1)
    counts = noisy_counts(model, x, sigma, n, batch_size, gen)
    n_a = counts.gather(1, selected[:, None])[:, 0].cpu().numpy()
    with np.errstate(invalid="ignore"):
        p_lower = np.where(n_a > 0, stats.beta.ppf(alpha, np.maximum(n_a, 1), n - n_a + 1), 0.0)
    certified = p_lower >= 0.5
    radius = np.where(certified, sigma * stats.norm.ppf(np.where(certified, p_lower, 0.5)), 0.0)
    prediction = torch.where(torch.from_numpy(certified), selected.cpu(), -1)
    return Certification(
        prediction=prediction,
        radius=torch.from_numpy(radius.astype(np.float64)),
        p_lower=torch.from_numpy(p_lower.astype(np.float64)),
        smoothed=counts.argmax(1).cpu(),
        sigma=float(sigma),
        n0=n0,
        n=n,
        alpha=float(alpha),
    )


def _labels(y: Tensor, like: Tensor) -> Tensor:
    if not isinstance(y, Tensor) or y.dtype != torch.int64 or y.shape != like.shape:
        raise ValueError(
            f"y must be int64 labels of shape {tuple(like.shape)}, got {getattr(y, 'dtype', type(y))} "
            f"{tuple(getattr(y, 'shape', ()))}"
        )
    return y.cpu()


def certified_accuracy(cert: Certification, y: Tensor, radii: Sequence[float]) -> list[float]:
    """For each r in radii (>= 0): the share of images predicted correctly AND certified at radius >= r."""
    y = _labels(y, cert.prediction)
    for r in radii:
        if not is_real(r) or r < 0:
            raise ValueError(f"radii must be finite numbers >= 0, got {r!r}")
    correct = cert.prediction == y
    return [((correct & (cert.radius >= r)).double().mean().item()) for r in radii]


def smoothed_accuracy(cert: Certification, y: Tensor) -> float:
    """The share of images whose Monte-Carlo smoothed prediction (no abstention) is the label."""
    return (cert.smoothed == _labels(y, cert.smoothed)).double().mean().item()
