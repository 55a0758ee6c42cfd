"""Triton backend of rft_fast.ops: fused projected steps for Linf / L2 / L1 balls ∩ [0, 1]^D.

Contract (docs/kernels.md): image tensors are (N, D) contiguous rows of one dtype (float32, bfloat16 or
float16; math in float32), eps / step float32 (N,), keep int64 (N,); results go into the given outputs.
One file per norm: linf.py (elementwise), l2.py (chunked row reductions, exact projection by search),
l1.py (per-row searches); search.py holds the shared K-ary bit-pattern search, nonfinite.py the bad-number
rule's helpers (a NaN / Inf entry or a bad eps / step gives NaN outputs, never an error). kl.py: the TRADES KL /
objective (kl_forward, kl_backward; (N, C) logits with unit column stride, one program per row).
Every op but kl_backward takes a last `flag` (None, or an int32 (1,) tensor): its kernels then OR the data-check
bits into it in their own passes (nonfinite.py; docs/kernels.md, "Data checks").
"""

from __future__ import annotations

from types import ModuleType

import torch
from torch import Tensor

from . import l1, l2, linf
from .kl import kl_backward, kl_forward
from .utils import StepCall, check_flag, check_per_sample, check_rows

__all__ = ["project", "pgd_step", "apgd_step", "kl_forward", "kl_backward"]

# norm -> its module. Each exposes the same two launchers (docs/kernels.md, "Adding a norm"):
#   project(out, x_adv, x, eps, flag)
#   step(call: StepCall)  (out, x_next, x_adv, x_prev, x, grad, step, eps, keep, momentum, apgd, flag)
# step writes the pgd step into out and, when apgd, APGD's momentum point into x_next (z = out); a norm
# ignores what its rule does not read (keep: L1 only; x_next, x_prev, momentum: apgd only).
NORM_MODULES: dict[str, ModuleType] = {"Linf": linf, "L2": l2, "L1": l1}


def _norm_module(norm: str) -> ModuleType:
    if norm not in NORM_MODULES:
        raise ValueError(f"norm must be one of {tuple(NORM_MODULES)}, got {norm!r}")
    return NORM_MODULES[norm]


def project(out: Tensor, x_adv: Tensor, x: Tensor, eps: Tensor, norm: str, flag: Tensor | None = None) -> None:
    """out = the exact nearest point of {||z - x||_norm <= eps} ∩ [0, 1]^D to x_adv, per row."""
    module = _norm_module(norm)
    check_rows(out, x_adv, x)
    check_per_sample(x, torch.float32, eps)
    check_flag(x, flag)
    if x.numel():
        module.project(out, x_adv, x, eps, flag)


def pgd_step(
    out: Tensor,
    x_adv: Tensor,
    x: Tensor,
    grad: Tensor,
    step: Tensor,
    eps: Tensor,
    norm: str,
    keep: Tensor,
    flag: Tensor | None = None,
) -> None:
    """out = one projected ascent step with AutoAttack's rule for `norm` (keep: L1's top-k size, per row)."""
    module = _norm_module(norm)
    check_rows(out, x_adv, x, grad)
    check_per_sample(x, torch.float32, step, eps)
    check_per_sample(x, torch.int64, keep)
    check_flag(x, flag)
    if x.numel():
        module.step(StepCall(out, out, x_adv, x_adv, x, grad, step, eps, keep, 1.0, False, flag))


def apgd_step(
    x_next: Tensor,
    z: Tensor,
    x_adv: Tensor,
    x_prev: Tensor,
    x: Tensor,
    grad: Tensor,
    step: Tensor,
    eps: Tensor,
    norm: str,
    momentum: float,
    keep: Tensor,
    flag: Tensor | None = None,
) -> None:
    """z = pgd_step(...); x_next = the projection of x_adv + a (z - x_adv) + (1 - a)(x_adv - x_prev), a = momentum."""
    module = _norm_module(norm)
    check_rows(x_next, z, x_adv, x_prev, x, grad)
    check_per_sample(x, torch.float32, step, eps)
    check_per_sample(x, torch.int64, keep)
    check_flag(x, flag)
    if x.numel():
        module.step(StepCall(z, x_next, x_adv, x_prev, x, grad, step, eps, keep, float(momentum), True, flag))
