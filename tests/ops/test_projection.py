"""Projections are the exact nearest feasible point: independent solver, AutoAttack, and properties."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from helpers import lp_norms, make_eps, make_inputs, solve_projection, use_backend
from hypothesis import given, settings
from hypothesis import strategies as st

from rft_fast import ops, reference

NORMS = ("Linf", "L2", "L1")


def _projection_case(n: int, d: int, norm: str, seed: int):
    raw = make_inputs((n, d), seed, feasible=False)
    return raw["x_adv"], raw["x"], make_eps(norm, n, d, raw["gen"])


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("n,d", ((1, 1), (3, 7), (4, 231), (2, 1500)))
def test_reference_matches_independent_solver(norm, n, d):
    x_adv, x, eps = _projection_case(n, d, norm, seed=d)
    out = reference.project(x_adv, x, eps, norm)
    for i in range(n):
        expected = x[i].numpy() + solve_projection((x_adv - x)[i].numpy(), x[i].numpy(), eps[i].item(), norm)
        np.testing.assert_allclose(out[i].numpy(), expected, atol=1e-10, rtol=0)


@pytest.mark.parametrize("backend", ("triton", "cpp", "torch"))
@pytest.mark.parametrize("norm", NORMS)
def test_backends_match_independent_solver_fp32(backend, norm):
    use_backend(backend)
    x_adv, x, eps = _projection_case(5, 3 * 13 * 17, norm, seed=7)
    out = ops.project(x_adv.float(), x.float(), eps.float(), norm, backend=backend).double()
    xf, vf = x.float().double(), (x_adv.float().double() - x.float().double())
    for i in range(5):
        expected = xf[i].numpy() + solve_projection(vf[i].numpy(), xf[i].numpy(), float(eps.float()[i]), norm)
        np.testing.assert_allclose(out[i].numpy(), expected, atol=2e-5, rtol=0)


@pytest.mark.parametrize("d", (5, 300, 4000))
def test_l1_projection_matches_autoattack(d):
    """Our exact L1 ∩ box projection against AutoAttack's own L1_projection (pyautoattack)."""
    autopgd = pytest.importorskip("pyautoattack.autopgd_base")
    x_adv, x, eps = _projection_case(6, d, "L1", seed=d)
    eps_aa = float(eps[0])  # AutoAttack takes one radius for the batch
    ours = reference.l1_projection_delta(x_adv - x, x, eps_aa)
    theirs = autopgd.L1_projection(x.float(), (x_adv - x).float(), eps_aa).double()
    # AutoAttack's output is x + v + delta_p; ours is the projected perturbation itself.
    torch.testing.assert_close(ours, (x_adv - x) + theirs, atol=5e-5, rtol=0)


def _feasible(z: torch.Tensor, x: torch.Tensor, eps: torch.Tensor, norm: str) -> bool:
    tol = 1e-5 * torch.clamp(eps, min=1.0)
    return bool(lp_norms(z - x, norm).le(eps + tol).all() and z.min() >= -1e-7 and z.max() <= 1 + 1e-7)


SETTINGS = settings(max_examples=25, deadline=None, derandomize=True)
cases = st.tuples(st.integers(1, 4), st.integers(1, 300), st.sampled_from(NORMS), st.integers(0, 2**31 - 1))


@pytest.mark.slow
@pytest.mark.parametrize("backend", ("triton", "cpp", "torch"))
@SETTINGS
@given(case=cases)
def test_projection_properties(backend, case):
    """Inside ball and box; idempotent; feasible points unchanged; no random feasible point is closer."""
    use_backend(backend)
    project = functools.partial(ops.project, backend=backend)
    n, d, norm, seed = case
    x_adv, x, eps = _projection_case(n, d, norm, seed)
    x_adv, x, eps = x_adv.float(), x.float(), eps.float()
    p = project(x_adv, x, eps, norm)
    assert _feasible(p, x, eps, norm)
    torch.testing.assert_close(project(p, x, eps, norm), p, atol=2e-6, rtol=0)
    # Random feasible points (projections of random points, and mixes with x) are no closer to x_adv.
    gen = torch.Generator().manual_seed(seed)
    for _ in range(8):
        f = project(x + torch.randn(x.shape, generator=gen) * 0.3, x, eps, norm)
        torch.testing.assert_close(project(f, x, eps, norm), f, atol=2e-6, rtol=0)
        lam = torch.rand(n, 1, generator=gen)
        for y in (f, x + lam * (f - x), x + lam * (p - x)):
            dist_p = (p - x_adv).double().flatten(1).norm(dim=1)
            dist_y = (y - x_adv).double().flatten(1).norm(dim=1)
            assert bool((dist_p <= dist_y + 1e-5).all())


@pytest.mark.parametrize("backend", ("triton", "cpp", "torch"))
@SETTINGS
@given(case=cases, momentum=st.sampled_from((0.75, 1.0)))
def test_steps_feasible_property(backend, case, momentum):
    use_backend(backend)
    n, d, norm, seed = case
    raw = make_inputs((n, d), seed)
    x, eps = raw["x"].float(), make_eps(norm, n, d, raw["gen"]).float()
    x_adv = ops.project(raw["x_adv"].float(), x, eps, norm)
    x_prev = ops.project(raw["x_prev"].float(), x, eps, norm)
    grad = raw["grad"].float()
    out = ops.pgd_step(x_adv, x, grad, eps * 0.5, eps, norm, backend=backend)
    x_next, z = ops.apgd_step(x_adv, x_prev, x, grad, eps * 0.5, eps, norm, momentum=momentum, backend=backend)
    for t in (out, x_next, z):
        assert _feasible(t, x, eps, norm)
