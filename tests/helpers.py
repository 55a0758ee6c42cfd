"""Input makers and an independent float64 projection solver shared by the tests."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from rft_fast import ops

ROOT = Path(__file__).resolve().parent.parent  # the repository (tests/ sits in it)

EPS_SCALE = {"Linf": 8 / 255, "L2": 0.1, "L1": 0.05}  # eps = scale * uniform(0.2, 1) * D^(1/p)


def available_backends() -> list[str]:
    return ops.backends("cpu")


def required_backends() -> set[str]:
    """Backends the test command demands (it builds the extension wherever a compiler exists)."""
    return {b for b in os.environ.get("RFT_FAST_REQUIRE_BACKENDS", "").split(",") if b}


def use_backend(name: str) -> str:
    """`name` if it runs here; a failure if the test command requires it, else a skip saying why."""
    if name not in available_backends():
        why = f"backend {name!r} is not available here ({available_backends()}); build rft_fast._C / set TRITON_INTERPRET=1"
        if name in required_backends():
            pytest.fail(why)
        pytest.skip(why)
    return name


def make_eps(norm: str, n: int, d: int, gen: torch.Generator) -> torch.Tensor:
    """Per-sample radii spread so that the ball constraint binds for some rows and not for others."""
    power = {"Linf": 0.0, "L2": 0.5, "L1": 1.0}[norm]
    return EPS_SCALE[norm] * (0.2 + 0.8 * torch.rand(n, generator=gen, dtype=torch.float64)) * d**power


def make_inputs(shape: tuple[int, ...], seed: int, *, feasible: bool = True) -> dict[str, torch.Tensor]:
    """x in [0,1] with some pixels exactly at 0 and 1; x_adv near x; grad with exact zeros and ties."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=gen, dtype=torch.float64)
    edge = torch.rand(shape, generator=gen, dtype=torch.float64)
    x = torch.where(edge < 0.1, 0.0, torch.where(edge > 0.9, 1.0, x))
    noise = torch.randn(shape, generator=gen, dtype=torch.float64) * 0.1
    x_adv = (x + noise).clamp(0, 1) if feasible else x + 3 * noise
    x_prev = (x + torch.randn(shape, generator=gen, dtype=torch.float64) * 0.1).clamp(0, 1)
    grad = torch.randn(shape, generator=gen, dtype=torch.float64)
    grad = torch.where(torch.rand(shape, generator=gen, dtype=torch.float64) < 0.05, 0.0, grad)
    return {"x_adv": x_adv, "x_prev": x_prev, "x": x, "grad": grad, "gen": gen}


def solve_projection(v: np.ndarray, x: np.ndarray, eps: float, norm: str) -> np.ndarray:
    """Nearest point of {||d||_p <= eps} ∩ [-x, 1-x] to v by bisection on the dual variable (float64).

    Independent of rft_fast.reference (which solves the same KKT conditions by sorting).
    """
    lo, hi = -x, 1 - x
    if norm == "Linf":
        return np.clip(np.clip(v, -eps, eps), lo, hi)
    if norm == "L2":  # d(t) = clip(t v, lo, hi), ||d(t)|| increasing in t
        f = lambda t: np.sum(np.clip(t * v, lo, hi) ** 2)
        if f(1.0) <= eps**2:
            return np.clip(v, lo, hi)
        a, b = 0.0, 1.0
        for _ in range(200):
            m = 0.5 * (a + b)
            a, b = (a, m) if f(m) > eps**2 else (m, b)
        return np.clip(a * v, lo, hi)
    u = np.where(v > 0, hi, -lo)  # L1: d(lam) = sign(v) clip(|v| - lam, 0, u), ||d(lam)||_1 decreasing
    h = lambda lam: np.sum(np.clip(np.abs(v) - lam, 0, u))
    if h(0.0) <= eps:
        return np.sign(v) * np.minimum(np.abs(v), u)
    a, b = 0.0, float(np.abs(v).max())
    for _ in range(200):
        m = 0.5 * (a + b)
        a, b = (m, b) if h(m) > eps else (a, m)
    return np.sign(v) * np.clip(np.abs(v) - b, 0, u)


def lp_norms(d: torch.Tensor, norm: str) -> torch.Tensor:
    rows = d.reshape(d.shape[0], -1).double()
    return {"Linf": rows.abs().amax(1), "L2": rows.norm(dim=1), "L1": rows.abs().sum(1)}[norm]


def spec_from(base: dict, **changes):
    """load_spec of a copy of `base` with `changes` applied (a None value removes the key)."""
    from rft_fast.grid import load_spec

    raw = copy.deepcopy(base)
    for key, value in changes.items():
        if value is None:
            raw.pop(key, None)
        else:
            raw[key] = value
    return load_spec(raw)
