"""ops.trades_kl / ops.trades_objective: every backend against autograd of the reference."""

from __future__ import annotations

import pytest
import torch
from helpers import use_backend

from rft_fast import ops, reference

BACKENDS = ("triton", "cpp", "torch")
# (N, C): binary, CIFAR-10, Flowers-102, ImageNet-1k, a C past any block size; batch 1 and odd batches.
SHAPES = ((1, 2), (3, 10), (17, 102), (4, 1000), (2, 5003))
DTYPES = ((torch.float32, 1e-5, 1e-4), (torch.bfloat16, 2e-2, 2e-2), (torch.float16, 2e-3, 2e-3))


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return use_backend(request.param)


def _logits(n: int, c: int, dtype: torch.dtype, seed: int, scale: float = 3.0, strided: bool = False):
    gen = torch.Generator().manual_seed(seed)
    width = c + 3 if strided else c
    lc = (torch.randn(n, width, generator=gen) * scale)[:, :c]
    la = lc + torch.randn(n, width, generator=gen)[:, :c] * scale / 3
    y = torch.randint(0, c, (n,), generator=gen)
    return la.to(dtype), lc.to(dtype), y


def _reference_and_grads(la, lc, y, beta, reduction, upstream):
    la64, lc64 = (t.detach().double().requires_grad_() for t in (la, lc))
    if y is None:
        out = reference.trades_kl(la64, lc64, reduction) * beta
    else:
        out = reference.trades_objective(lc64, la64, y, beta, reduction)
    ga, gc = torch.autograd.grad(out, (la64, lc64), upstream.double())
    return out, ga, gc


@pytest.mark.parametrize(
    "with_y,beta,reduction", ((False, 1.0, "mean"), (True, 6.0, "mean"), (True, 1.0, "none"), (False, 1.0, "sum"))
)
@pytest.mark.parametrize("dtype,atol,rtol", DTYPES)
@pytest.mark.parametrize("n,c", SHAPES)
def test_matches_reference_forward_and_backward(backend, n, c, dtype, atol, rtol, with_y, beta, reduction):
    la, lc, y = _logits(n, c, dtype, seed=n * c, strided=(n * c) % 2 == 1)
    y = y if with_y else None
    la_, lc_ = la.clone().requires_grad_(), lc.clone().requires_grad_()
    if y is None:
        out = ops.trades_kl(la_, lc_, reduction=reduction, backend=backend) * beta
    else:
        out = ops.trades_objective(lc_, la_, y, beta, reduction=reduction, backend=backend)
    upstream = 2.0 * torch.rand(out.shape, generator=torch.Generator().manual_seed(1)) + 0.5  # not 1
    ga, gc = torch.autograd.grad(out, (la_, lc_), upstream)
    ref, ref_ga, ref_gc = _reference_and_grads(la, lc, y, beta, reduction, upstream)
    assert out.dtype == torch.float32 and ga.dtype == dtype and gc.dtype == dtype
    torch.testing.assert_close(out.double(), ref, atol=atol, rtol=rtol)
    grad_scale = max(ref_ga.abs().max().item(), ref_gc.abs().max().item(), 1e-3)
    torch.testing.assert_close(ga.double(), ref_ga, atol=atol * grad_scale, rtol=rtol)
    torch.testing.assert_close(gc.double(), ref_gc, atol=atol * grad_scale, rtol=rtol)


def test_large_class_count_imagenet21k(backend):
    la, lc, y = _logits(2, 21843, torch.float32, seed=3)
    la_, lc_ = la.clone().requires_grad_(), lc.clone().requires_grad_()
    out = ops.trades_objective(lc_, la_, y, 1.0, backend=backend)
    out.backward()
    ref, ref_ga, ref_gc = _reference_and_grads(la, lc, y, 1.0, "mean", torch.tensor(1.0))
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(la_.grad.double(), ref_ga, atol=1e-7, rtol=1e-4)
    torch.testing.assert_close(lc_.grad.double(), ref_gc, atol=1e-7, rtol=1e-4)


def test_extreme_logits_and_identical_rows(backend):
    la, lc, _ = _logits(4, 37, torch.float32, seed=5, scale=60.0)
    lc[1] = la[1]  # KL exactly 0 on this row
    rows = ops.trades_kl(la, lc, reduction="none", backend=backend)
    torch.testing.assert_close(
        rows.double(), reference.trades_kl(la.double(), lc.double(), "none"), atol=1e-4, rtol=1e-5
    )
    assert torch.isfinite(rows).all() and abs(rows[1].item()) < 1e-6


def test_clean_detached_is_the_attack_variant(backend):
    """The attack's KL: gradient only through the adversarial logits, same value."""
    la, lc, _ = _logits(5, 10, torch.float32, seed=6)
    la_ = la.clone().requires_grad_()
    lc_ = lc.clone().requires_grad_()
    out = ops.trades_kl(la_, lc_.detach(), backend=backend)
    out.backward()
    assert lc_.grad is None
    _, ref_ga, _ = _reference_and_grads(la, lc, None, 1.0, "mean", torch.tensor(1.0))
    torch.testing.assert_close(la_.grad.double(), ref_ga, atol=1e-7, rtol=1e-5)


def test_gradcheck_float64_reference_path():
    la, lc, y = _logits(3, 7, torch.float64, seed=7)
    la.requires_grad_()
    lc.requires_grad_()
    assert torch.autograd.gradcheck(lambda a, c: ops.trades_objective(c, a, y, 2.0, backend="torch"), (la, lc))


@pytest.mark.parametrize(
    "call,exc,match",
    (
        (lambda la, lc, y: ops.trades_kl(la, lc[:, :5]), ValueError, "logits_clean has shape"),
        (lambda la, lc, y: ops.trades_kl(la, lc.double()), TypeError, "logits_clean has dtype"),
        (lambda la, lc, y: ops.trades_kl(la.long(), lc), TypeError, "logits_adv must be a floating-point"),
        (lambda la, lc, y: ops.trades_kl(la[0], lc[0]), ValueError, r"must have shape \(N, C\)"),
        (
            lambda la, lc, y: ops.trades_kl(la, lc.index_fill(0, torch.tensor([1]), float("nan"))),
            ValueError,
            "logits_clean contains NaN",
        ),
        (
            lambda la, lc, y: ops.trades_kl(la.index_fill(0, torch.tensor([0]), float("inf")), lc),
            ValueError,
            "logits_adv contains NaN or Inf",
        ),
        (lambda la, lc, y: ops.trades_objective(lc, la, y + 10, 1.0), ValueError, r"y holds labels outside \[0, 10\)"),
        (lambda la, lc, y: ops.trades_objective(lc, la, y.int(), 1.0), ValueError, "y must be an int64 tensor"),
        (lambda la, lc, y: ops.trades_objective(lc, la, None, 1.0), ValueError, "y must be an int64 tensor"),
        (lambda la, lc, y: ops.trades_objective(lc, la, y, -1.0), ValueError, "beta must be a finite float >= 0"),
        (lambda la, lc, y: ops.trades_kl(la, lc, reduction="avg"), ValueError, "reduction must be one of"),
    ),
)
def test_bad_input(call, exc, match):
    la, lc, y = _logits(3, 10, torch.float32, seed=8)
    with pytest.raises(exc, match=match):
        call(la, lc, y)


def test_nan_check_can_be_turned_off():
    la, lc, _ = _logits(2, 10, torch.float32, seed=9)
    lc[0, 0] = float("nan")
    assert torch.isnan(ops.trades_kl(la, lc, check=False, backend="torch"))
