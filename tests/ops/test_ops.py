"""Every backend of every op against rft_fast.reference (float64) on fresh random inputs."""

from __future__ import annotations

import pytest
import torch
from helpers import lp_norms, make_eps, make_inputs, use_backend

from rft_fast import ops, reference

NORMS = ("Linf", "L2", "L1")
BACKENDS = ("triton", "cpp", "torch")
# (shape, memory format): batch 1, sizes that are no multiple of any block, one larger row, flat rows.
CASES = (
    ((1, 3, 7, 11), torch.contiguous_format),
    ((3, 3, 7, 11), torch.channels_last),
    ((2, 3, 33, 65), torch.contiguous_format),
    ((4, 2, 45, 47), torch.channels_last),
    ((5, 17), torch.contiguous_format),
)
# dtype -> atol on outputs in [0, 1]: fp32 ~ rounding, half types one output ulp near 1.
DTYPES = ((torch.float32, 2e-5), (torch.bfloat16, 2**-7 + 1e-6), (torch.float16, 2**-10 + 1e-6))


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return use_backend(request.param)


def _cast(t: torch.Tensor, dtype: torch.dtype, fmt: torch.memory_format) -> torch.Tensor:
    t = t.to(dtype)
    return t.contiguous(memory_format=fmt) if t.dim() == 4 else t


def _step_sizes(norm: str, eps: torch.Tensor) -> torch.Tensor:
    return eps * {"Linf": 0.25, "L2": 0.5, "L1": 1.0}[norm]


def _case(shape, fmt, dtype, norm, seed, feasible=True):
    raw = make_inputs(shape, seed, feasible=feasible)
    d = raw["x"][0].numel()
    eps = make_eps(norm, shape[0], d, raw["gen"])
    cast = {k: _cast(v, dtype, fmt) for k, v in raw.items() if k != "gen"}
    # The reference sees exactly the values the backend sees, in float64.
    ref = {k: v.double() for k, v in cast.items()}
    return cast, ref, eps


def _assert_close(out: torch.Tensor, expected: torch.Tensor, atol: float, like: torch.Tensor) -> None:
    assert out.dtype == like.dtype and out.shape == like.shape
    assert out.is_contiguous(memory_format=ops.memory_format(like)), "output lost the input's memory format"
    torch.testing.assert_close(out.double(), expected.to(out.dtype).double(), atol=atol, rtol=0)


@pytest.mark.parametrize("dtype,atol", DTYPES)
@pytest.mark.parametrize("shape,fmt", CASES)
@pytest.mark.parametrize("norm", NORMS)
def test_project_matches_reference(backend, norm, shape, fmt, dtype, atol):
    t, r, eps = _case(shape, fmt, dtype, norm, seed=1, feasible=False)
    out = ops.project(t["x_adv"], t["x"], eps.float(), norm, backend=backend, check=False)
    _assert_close(out, reference.project(r["x_adv"], r["x"], eps, norm), atol, t["x_adv"])


# l1_sparsity only matters for L1: all coordinates, AutoAttack's initial 0.2, and a single coordinate.
NORM_SPARSITY = (("Linf", 0.2), ("L2", 0.2), ("L1", 0.2), ("L1", 1.0), ("L1", 1e-4))


@pytest.mark.parametrize("dtype,atol", DTYPES)
@pytest.mark.parametrize("shape,fmt", CASES)
@pytest.mark.parametrize("norm,sparsity", NORM_SPARSITY)
def test_pgd_step_matches_reference(backend, norm, sparsity, shape, fmt, dtype, atol):
    t, r, eps = _case(shape, fmt, dtype, norm, seed=2)
    step = _step_sizes(norm, eps)
    out = ops.pgd_step(
        t["x_adv"], t["x"], t["grad"], step.float(), eps.float(), norm, l1_sparsity=sparsity, backend=backend
    )
    expected = reference.pgd_step(r["x_adv"], r["x"], r["grad"], step, eps, norm, l1_sparsity=sparsity)
    _assert_close(out, expected, atol, t["x_adv"])


@pytest.mark.parametrize("momentum", (0.75, 1.0))
@pytest.mark.parametrize("dtype,atol", DTYPES)
@pytest.mark.parametrize("shape,fmt", CASES)
@pytest.mark.parametrize("norm", NORMS)
def test_apgd_step_matches_reference(backend, norm, shape, fmt, dtype, atol, momentum):
    t, r, eps = _case(shape, fmt, dtype, norm, seed=3)
    step = _step_sizes(norm, eps)
    x_next, z = ops.apgd_step(
        t["x_adv"], t["x_prev"], t["x"], t["grad"], step.float(), eps.float(), norm, momentum=momentum, backend=backend
    )
    ref_next, ref_z = reference.apgd_step(r["x_adv"], r["x_prev"], r["x"], r["grad"], step, eps, norm, momentum)
    _assert_close(z, ref_z, atol, t["x_adv"])
    _assert_close(x_next, ref_next, atol, t["x_adv"])


@pytest.mark.parametrize("norm", NORMS)
def test_scalar_and_per_sample_eps_agree(backend, norm):
    t, _, _ = _case((3, 3, 9, 9), torch.contiguous_format, torch.float32, norm, seed=4, feasible=False)
    eps = make_eps(norm, 1, 243, torch.Generator().manual_seed(0)).item()
    a = ops.project(t["x_adv"], t["x"], eps, norm, backend=backend)
    b = ops.project(t["x_adv"], t["x"], torch.full((3,), eps), norm, backend=backend)
    assert torch.equal(a, b)


@pytest.mark.parametrize("norm", NORMS)
def test_steps_stay_feasible_and_move(backend, norm):
    t, _, eps = _case((4, 3, 16, 16), torch.contiguous_format, torch.float32, norm, seed=5)
    step = _step_sizes(norm, eps).float()
    t["x_adv"] = reference.project(t["x_adv"], t["x"], eps.float(), norm)  # start inside the ball
    out = ops.pgd_step(t["x_adv"], t["x"], t["grad"], step, eps.float(), norm, backend=backend)
    assert lp_norms(out - t["x"], norm).le(eps * (1 + 1e-5) + 1e-6).all()
    assert out.min() >= 0 and out.max() <= 1
    assert (out - t["x_adv"]).flatten(1).abs().amax(1).gt(0).all(), "a step with nonzero gradient must move"
    if norm == "Linf":  # a clamp is monotone: every coordinate moves along sign(grad) or stays
        assert ((out - t["x_adv"]) * t["grad"]).ge(0).all()


def test_l1_apgd_without_momentum_is_the_pgd_step(backend):
    t, _, eps = _case((2, 3, 10, 10), torch.contiguous_format, torch.float32, "L1", seed=6)
    step = eps.float()
    x_next, z = ops.apgd_step(
        t["x_adv"], t["x_prev"], t["x"], t["grad"], step, eps.float(), "L1", momentum=1.0, backend=backend
    )
    pgd = ops.pgd_step(t["x_adv"], t["x"], t["grad"], step, eps.float(), "L1", backend=backend)
    torch.testing.assert_close(z, pgd, atol=2e-6, rtol=0)
    torch.testing.assert_close(x_next, z, atol=2e-6, rtol=0)
