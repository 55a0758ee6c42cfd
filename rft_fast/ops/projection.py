"""The projected-step ops: project, pgd_step and apgd_step (checks, layout, backend, one kernel call).

check=True on a kernel backend: the kernel checks the data in its own pass into a flag (rft_fast.ops.arguments,
new_flag / raise_if_flagged), read once after the call; the torch backend and an empty batch check first.
Bad numbers with check=False: the rule of rft_fast.ops (its docstring); N = 0 gives empty outputs.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from rft_fast import reference
from rft_fast.ops.arguments import (
    Scalar,
    check_momentum,
    check_norm,
    check_tensors,
    new_flag,
    per_sample,
    raise_if_flagged,
)
from rft_fast.ops.dispatch import kernel, norm_arg, pick_backend
from rft_fast.ops.layout import Layout


def _l1_keep(sparsity: Tensor, d: int) -> Tensor:
    """How many of the largest |grad| set APGD-L1's threshold: n - idx, idx as AutoAttack computes it."""
    idx = torch.clamp((1.0 - sparsity) * d, min=0, max=d - 1).long()
    return (d - idx).contiguous()


def _l1_step_args(norm: str, step: Tensor, sparsity: Tensor, x: Tensor, fold: bool) -> tuple[Tensor, Tensor]:
    """(step, keep) for a kernel. An invalid l1_sparsity (unchecked tensor) becomes a NaN step, which the
    kernels treat as a bad per-sample value (NaN rows, the check flag), and keep stays in [1, D]: for L1, and
    with `fold` for every norm (a checked call's tensor l1_sparsity, which only the L1 rule reads). Device ops
    only, no sync."""
    d = math.prod(x.shape[1:])
    if norm != "L1" and not fold:
        return step, _l1_keep(sparsity, d)
    ok = (sparsity > 0) & (sparsity <= 1.0)  # NaN fails both
    step = torch.where(ok, step, torch.full_like(step, float("nan")))
    return step.contiguous(), _l1_keep(torch.where(ok, sparsity, torch.ones_like(sparsity)), d)


def _checks_first(check: bool, backend: str, x_adv: Tensor, data_checks: Callable[[], None]) -> bool:
    """Runs the data checks before the call where no kernel flags them (torch backend, empty batch); True when
    the kernel is to flag them instead."""
    if not check:
        return False
    if backend == "torch" or x_adv.numel() == 0:
        data_checks()
        return False
    return True


def project(x_adv: Tensor, x: Tensor, eps: Scalar, norm: str, *, backend: str = "auto", check: bool = True) -> Tensor:
    """Euclidean projection of x_adv onto {z : ||z - x||_p <= eps} ∩ [0,1]^d, per sample, exact for every norm.

    x_adv, x: (N, ...) float tensors (same shape, dtype, device); eps: float or (N,) tensor, > 0;
    norm: "Linf" | "L2" | "L1". Returns a new tensor in x_adv's dtype and memory format.
    check=True rejects NaN / Inf data, x outside [0, 1] and bad eps values with a ValueError (one host sync);
    check=False reads nothing on the host and follows the bad-number rule of rft_fast.ops (NaN outputs
    where a bad value feeds, the same on every backend). N = 0: an empty result.
    """
    check_norm(norm)
    check_tensors(False, x_adv=x_adv, x=x)
    eps_t = per_sample(eps, "eps", x, check_values=False)
    be = pick_backend(backend, x_adv)

    def data_checks() -> None:
        check_tensors(True, x_adv=x_adv, x=x)
        per_sample(eps, "eps", x)

    flag = new_flag(_checks_first(check, be, x_adv, data_checks), x)
    if x_adv.numel() == 0:
        return Layout(x_adv).empty()[0]
    if be == "torch":
        return reference.project(x_adv, x, eps_t.to(x.dtype) if x.dtype == torch.float64 else eps_t, norm)
    lay = Layout(x_adv)
    out, out_rows = lay.empty()
    kernel(be, "project")(out_rows, lay.rows(x_adv), lay.rows(x), eps_t, norm_arg(be, norm), flag)
    raise_if_flagged(flag, "project", data_checks)
    return out


def pgd_step(
    x_adv: Tensor,
    x: Tensor,
    grad: Tensor,
    step_size: Scalar,
    eps: Scalar,
    norm: str,
    *,
    l1_sparsity: Scalar = 0.2,
    backend: str = "auto",
    check: bool = True,
) -> Tensor:
    """One projected ascent step with AutoAttack's update rule, fused: step, then project.

    Linf: x_adv + step_size * sign(grad), clamped into the ball and box. L2: x_adv + step_size *
    grad / ||grad||_2, rescaled into the ball, clipped to the box. L1: the sparse step of APGD-L1 (sign of
    the top `l1_sparsity` share of |grad|, divided by its count) followed by the exact L1 ∩ box projection.
    step_size, eps, l1_sparsity: floats or (N,) tensors. check: as project (a bad grad entry: NaN at its position
    for Linf, the sample's whole row for L2 / L1). N = 0: an empty result.
    """
    check_norm(norm)
    check_tensors(False, x_adv=x_adv, x=x, grad=grad)
    eps_t, step_t, sparsity = _step_values(x, eps, step_size, l1_sparsity, check=False)
    be = pick_backend(backend, x_adv)

    def data_checks() -> None:
        check_tensors(True, x_adv=x_adv, x=x, grad=grad)
        _step_values(x, eps, step_size, l1_sparsity, check=True)

    flag = new_flag(_checks_first(check, be, x_adv, data_checks), x)
    if x_adv.numel() == 0:
        return Layout(x_adv).empty()[0]
    if be == "torch":
        return reference.pgd_step(x_adv, x, grad, _ref_scalar(step_t, x), _ref_scalar(eps_t, x), norm, l1_sparsity)
    step_t, keep = _l1_step_args(norm, step_t, sparsity, x, flag is not None and isinstance(l1_sparsity, Tensor))
    lay = Layout(x_adv)
    out, out_rows = lay.empty()
    kernel(be, "pgd_step")(
        out_rows, lay.rows(x_adv), lay.rows(x), lay.rows(grad), step_t, eps_t, norm_arg(be, norm), keep, flag
    )
    raise_if_flagged(flag, "pgd_step", data_checks)
    return out


def apgd_step(
    x_adv: Tensor,
    x_prev: Tensor,
    x: Tensor,
    grad: Tensor,
    step_size: Scalar,
    eps: Scalar,
    norm: str,
    *,
    momentum: float = 0.75,
    l1_sparsity: Scalar = 0.2,
    backend: str = "auto",
    check: bool = True,
) -> tuple[Tensor, Tensor]:
    """APGD's momentum update in one pass; returns (x_next, z).

    z = P(x_k + eta * step(grad)) (the pgd_step), x_next = P(x_k + a (z - x_k) + (1 - a)(x_k - x_{k-1}))
    with a = `momentum` (AutoAttack: 0.75, and 1.0 on the first iteration; its APGD-L1 uses no momentum,
    i.e. momentum=1.0). check: as pgd_step; z does not read x_prev, so a bad x_prev entry reaches x_next only.
    N = 0: two empty results.
    """
    check_norm(norm)
    check_tensors(False, x_adv=x_adv, x_prev=x_prev, x=x, grad=grad)
    check_momentum(momentum)
    eps_t, step_t, sparsity = _step_values(x, eps, step_size, l1_sparsity, check=False)
    be = pick_backend(backend, x_adv)

    def data_checks() -> None:
        check_tensors(True, x_adv=x_adv, x_prev=x_prev, x=x, grad=grad)
        _step_values(x, eps, step_size, l1_sparsity, check=True)

    flag = new_flag(_checks_first(check, be, x_adv, data_checks), x)
    if x_adv.numel() == 0:
        empty = Layout(x_adv).empty
        return empty()[0], empty()[0]
    if be == "torch":
        return reference.apgd_step(
            x_adv, x_prev, x, grad, _ref_scalar(step_t, x), _ref_scalar(eps_t, x), norm, float(momentum), l1_sparsity
        )
    step_t, keep = _l1_step_args(norm, step_t, sparsity, x, flag is not None and isinstance(l1_sparsity, Tensor))
    lay = Layout(x_adv)
    (x_next, next_rows), (z, z_rows) = lay.empty(), lay.empty()
    kernel(be, "apgd_step")(
        next_rows,
        z_rows,
        lay.rows(x_adv),
        lay.rows(x_prev),
        lay.rows(x),
        lay.rows(grad),
        step_t,
        eps_t,
        norm_arg(be, norm),
        float(momentum),
        keep,
        flag,
    )
    raise_if_flagged(flag, "apgd_step", data_checks)
    return x_next, z


def _step_values(x: Tensor, eps: Scalar, step_size: Scalar, l1_sparsity: Scalar, check: bool) -> tuple[Tensor, ...]:
    """(eps, step_size, l1_sparsity) as float32 (N,) tensors; tensors' values read only with check."""
    return (
        per_sample(eps, "eps", x, check_values=check),
        per_sample(step_size, "step_size", x, check_values=check),
        per_sample(l1_sparsity, "l1_sparsity", x, check_values=check, upper=1.0),
    )


def _ref_scalar(t: Tensor, like: Tensor) -> Tensor:
    return t.to(like.dtype) if like.dtype == torch.float64 else t
