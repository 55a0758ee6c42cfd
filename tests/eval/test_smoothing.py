"""Randomized smoothing CERTIFY: exact radii for a constant classifier, abstention, the certified radius of a
linear classifier against its exact distance to the decision boundary, certified <= smoothed accuracy,
reproducibility, and input validation."""

from __future__ import annotations

import statistics

import pytest
import torch
from torch import nn

from rft_fast.eval.smoothing import certified_accuracy, certify, noisy_counts, smoothed_accuracy

SIGMA = 0.25


class Constant(nn.Module):
    """Always predicts `label` (logits one-hot), whatever the input."""

    def __init__(self, label: int, classes: int = 4) -> None:
        super().__init__()
        self.label, self.classes = label, classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.one_hot(torch.full((x.shape[0],), self.label), self.classes).float()


class Linear(nn.Module):
    """Two classes split by the hyperplane w.x = b: class 1 where w.x > b."""

    def __init__(self, w: torch.Tensor, b: float) -> None:
        super().__init__()
        self.w, self.b = w, b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        margin = x.flatten(1) @ self.w - self.b
        return torch.stack([-margin, margin], 1)


def images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, 4, 4, generator=torch.Generator().manual_seed(seed))


def test_constant_classifier_radius_is_exact():
    n, alpha = 1000, 0.001
    cert = certify(Constant(2), images(3), SIGMA, n0=10, n=n, alpha=alpha, batch_size=256)
    p_lower = alpha ** (1 / n)  # Clopper-Pearson lower bound when all n draws agree
    assert cert.prediction.tolist() == [2, 2, 2]
    torch.testing.assert_close(cert.p_lower, torch.full((3,), p_lower, dtype=torch.float64), rtol=1e-12, atol=0)
    expected = SIGMA * statistics.NormalDist().inv_cdf(p_lower)
    torch.testing.assert_close(cert.radius, torch.full((3,), expected, dtype=torch.float64), rtol=1e-10, atol=0)


def test_abstains_when_the_bound_is_not_met():
    # all n draws agree, but with n = 5 the bound alpha^(1/5) = 0.25 < 1/2
    cert = certify(Constant(1), images(2), SIGMA, n0=5, n=5, alpha=0.001)
    assert cert.prediction.tolist() == [-1, -1] and cert.radius.tolist() == [0.0, 0.0]
    assert cert.smoothed.tolist() == [1, 1]  # the Monte-Carlo prediction itself never abstains
    # an image on the decision boundary: p_A about 1/2, never certified
    w = torch.zeros(48)
    w[0] = 1.0
    x = torch.full((1, 3, 4, 4), 0.5)
    assert certify(Linear(w, 0.5), x, SIGMA, n0=50, n=2000).prediction.tolist() == [-1]


def test_linear_classifier_radius_is_a_tight_lower_bound_on_the_boundary_distance():
    """For f(x) = [w.x > b], P(f(x + delta) = f(x)) = Phi(|w.x - b| / (sigma ||w||)), so the exact radius is
    the distance |w.x - b| / ||w|| to the hyperplane; CERTIFY's radius lies below it, and close for large n."""
    gen = torch.Generator().manual_seed(3)
    w = torch.randn(48, generator=gen)
    x = images(16, seed=4)
    b = float((x.flatten(1) @ w).median())
    model = Linear(w, b)
    distance = ((x.flatten(1) @ w - b).abs() / w.norm()).double()
    cert = certify(model, x, SIGMA, n0=100, n=20_000, alpha=0.001, batch_size=4096, seed=1)
    label = (x.flatten(1) @ w > b).long()
    certified = cert.prediction >= 0
    assert certified.sum() >= 8
    assert torch.equal(cert.prediction[certified], label[certified])
    assert (cert.radius <= distance + 1e-12).all()
    assert (distance[certified] - cert.radius[certified]).max() < 0.15 * SIGMA
    assert (distance[~certified] < 0.3 * SIGMA).all()  # abstentions only near the boundary


def test_certified_accuracy_never_exceeds_smoothed_accuracy():
    gen = torch.Generator().manual_seed(5)
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 5))
    with torch.no_grad():
        model[1].weight.copy_(torch.randn(5, 48, generator=gen))
    x = images(40, seed=6)
    y = torch.randint(0, 5, (40,), generator=gen)
    y[:20] = model(x[:20]).argmax(1)  # half of them right
    radii = [0.0, 0.1, 0.25, 0.5, 1.0]
    for sigma in (0.1, 0.5):
        cert = certify(model, x, sigma, n0=20, n=500, alpha=0.01, batch_size=1000)
        acc = certified_accuracy(cert, y, radii)
        smooth = smoothed_accuracy(cert, y)
        assert all(a <= smooth for a in acc) and acc == sorted(acc, reverse=True)
        assert acc[0] > 0 and smooth == (cert.smoothed == y).double().mean().item()
        expected = [((cert.prediction == y) & (cert.radius >= r)).double().mean().item() for r in radii]
        assert acc == expected


def test_reproducible_with_a_seed_and_counts_are_vectorized_correctly():
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 3))
    x = images(5)
    a = certify(model, x, 0.5, n0=10, n=300, batch_size=64, seed=7)
    b = certify(model, x, 0.5, n0=10, n=300, batch_size=64, seed=7)
    c = certify(model, x, 0.5, n0=10, n=300, batch_size=64, seed=8)
    assert torch.equal(a.prediction, b.prediction) and torch.equal(a.radius, b.radius)
    assert not torch.equal(a.p_lower, c.p_lower)
    # the flattened (image, draw) batches: the same counts as one image at a time with the same noise
    gen = torch.Generator().manual_seed(0)
    counts = noisy_counts(model, x, 0.5, 7, 5, gen)  # batches of 5 straddle images
    gen = torch.Generator().manual_seed(0)
    noise = torch.randn(35, 3, 4, 4, generator=gen)
    with torch.no_grad():
        preds = model(x.repeat_interleave(7, 0) + 0.5 * noise).argmax(1).view(5, 7)
    expected = torch.stack([torch.bincount(p, minlength=3) for p in preds])
    assert counts.sum(1).tolist() == [7] * 5
    assert torch.equal(counts, expected)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(sigma=0.0), "sigma must be a finite number > 0"),
        (dict(n0=0), "n0 must be an int >= 1"),
        (dict(n=10.0), "n must be an int >= 1"),
        (dict(alpha=1.0), "alpha must be a number in \\(0, 1\\)"),
        (dict(batch_size=-1), "batch_size must be an int >= 1"),
        (dict(x=torch.full((1, 3, 4, 4), 1.5)), "x must lie in \\[0, 1\\]"),
        (dict(x=torch.zeros(3)), "x must be a non-empty float image batch"),
    ],
)
def test_invalid_arguments_are_named(kwargs, message):
    args = {"x": images(1), "sigma": SIGMA, **kwargs}
    x, sigma = args.pop("x"), args.pop("sigma")
    with pytest.raises(ValueError, match=message):
        certify(Constant(0), x, sigma, **args)


def test_accuracy_arguments_are_checked():
    cert = certify(Constant(0), images(2), SIGMA, n0=5, n=50)
    with pytest.raises(ValueError, match="radii must be finite numbers >= 0"):
        certified_accuracy(cert, torch.zeros(2, dtype=torch.int64), [-0.1])
    with pytest.raises(ValueError, match="y must be int64 labels of shape \\(2,\\)"):
        smoothed_accuracy(cert, torch.zeros(3, dtype=torch.int64))
