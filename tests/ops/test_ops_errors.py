"""Bad input gets a clear error naming the argument; the package works without its extension."""

from __future__ import annotations

import pytest
import torch
from helpers import required_backends

from rft_fast import ops
from rft_fast.ops import dispatch


def _args(n=2, shape=(3, 4, 4)):
    g = torch.Generator().manual_seed(0)
    x = torch.rand((n, *shape), generator=g)
    return x.clone(), x, torch.randn((n, *shape), generator=g)


@pytest.mark.parametrize(
    "mutate,exc,match",
    (
        (lambda a: a.update(norm="L3"), ValueError, "norm must be one of"),
        (lambda a: a.update(eps=0.0), ValueError, "eps must be > 0"),
        (lambda a: a.update(eps=-1.0), ValueError, "eps must be > 0"),
        (lambda a: a.update(eps=float("nan")), ValueError, "eps must be > 0"),
        (lambda a: a.update(eps=torch.ones(3)), ValueError, r"eps must be a float or a tensor of shape \(2,\)"),
        (lambda a: a.update(eps="big"), TypeError, "eps must be a float"),
        (lambda a: a.update(step_size=0.0), ValueError, "step_size must be > 0"),
        (lambda a: a.update(l1_sparsity=1.5), ValueError, r"l1_sparsity must be in \(0, 1.0\]"),
        (lambda a: a.update(grad=a["grad"][:, :2]), ValueError, "grad has shape"),
        (lambda a: a.update(grad=a["grad"].double()), TypeError, "grad has dtype"),
        (lambda a: a.update(x=(a["x"] * 255).to(torch.uint8)), TypeError, "x must be a floating-point tensor"),
        (lambda a: a.update(x=a["x"] * 2), ValueError, r"x must lie in \[0, 1\]"),
        (lambda a: a.update(x=a["x"] - 0.5), ValueError, r"x must lie in \[0, 1\]"),
        (lambda a: a["grad"].view(-1)[3].fill_(float("nan")), ValueError, "grad contains NaN"),
        (lambda a: a["x_adv"].view(-1)[0].fill_(float("inf")), ValueError, "x_adv contains NaN or Inf"),
        (lambda a: a.update(x_adv=a["x_adv"][0]), ValueError, r"x_adv must have shape \(N, \.\.\.\)|x has shape"),
        (lambda a: a.update(x=[0.5]), TypeError, "x must be a torch.Tensor"),
        (lambda a: a.update(backend="cuda"), ValueError, "backend must be one of"),
        (lambda a: a.update(backend="triton_gpu"), ValueError, "backend must be one of"),
    ),
)
def test_pgd_step_rejects_bad_input(mutate, exc, match):
    x_adv, x, grad = _args()
    a = dict(x_adv=x_adv, x=x, grad=grad, step_size=0.1, eps=0.3, norm="L2")
    mutate(a)
    with pytest.raises(exc, match=match):
        ops.pgd_step(**a)


def test_x_adv_must_be_2d_or_more():
    with pytest.raises(ValueError, match="x_adv must have shape"):
        ops.project(torch.rand(5), torch.rand(5), 0.1, "Linf")


def test_apgd_step_rejects_bad_momentum_and_prev():
    x_adv, x, grad = _args()
    with pytest.raises(ValueError, match="momentum must be a float in"):
        ops.apgd_step(x_adv, x_adv, x, grad, 0.1, 0.3, "Linf", momentum=1.5)
    with pytest.raises(ValueError, match="x_prev has shape"):
        ops.apgd_step(x_adv, x_adv[:1], x, grad, 0.1, 0.3, "Linf")


def test_check_false_skips_data_checks_only():
    x_adv, x, grad = _args()
    ops.pgd_step(x_adv, x * 2, grad, 0.1, 0.3, "Linf", check=False)  # range not read
    with pytest.raises(ValueError, match="eps must be > 0"):
        ops.pgd_step(x_adv, x, grad, 0.1, 0.0, "Linf", check=False)


def test_unavailable_backend_lists_available(monkeypatch):
    monkeypatch.setattr(dispatch, "_cpp", lambda: None)
    x_adv, x, _ = _args()
    with pytest.raises(ValueError, match=r"backend 'cpp' is not available on cpu; available: \['torch'"):
        ops.project(x_adv, x, 0.1, "Linf", backend="cpp")


def test_works_without_extension(monkeypatch):
    """No compiler at install time: fewer backends, auto still works."""
    monkeypatch.setattr(dispatch, "_cpp", lambda: None)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert ops.backends("cpu") == ["torch"]
    x_adv, x, grad = _args()
    out = ops.pgd_step(x_adv, x, grad, 0.1, 0.3, "L1")
    assert out.shape == x.shape and (out - x).abs().flatten(1).sum(1).le(0.3 + 1e-5).all()


def test_backends_lists_cpu_order():
    found = ops.backends("cpu")
    assert "torch" in found and ops.backends(torch.device("cpu")) == found
    for name in required_backends():
        assert name in found
    if "cpp" in found:  # compiled C++ beats eager; the interpreter is slowest
        assert found.index("cpp") < found.index("torch")
    if "triton" in found:
        assert found[-1] == "triton"


def test_float64_auto_uses_reference_and_kernels_refuse_it():
    x_adv, x, grad = _args()
    out = ops.project(x_adv.double() + 0.5, x.double(), 0.1, "Linf")
    assert out.dtype == torch.float64
    kernel_backends = [b for b in ops.backends("cpu") if b != "torch"]
    for backend in kernel_backends:
        with pytest.raises(TypeError, match="takes float32/bfloat16/float16"):
            ops.project(x_adv.double(), x.double(), 0.1, "Linf", backend=backend)
