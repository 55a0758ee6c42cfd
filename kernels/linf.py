"""Linf ops: the projection is a clamp, so each op is one elementwise kernel over the flat (N*D) elements.

Each kernel reads every input once and writes every output once; eps / step are gathered per element by
row = offset // D (a 1-D grid keeps short rows as efficient as long ones). pgd_step and apgd_step are one
kernel, the APGD constexpr adding the momentum point. Bad numbers (nonfinite.py): an output entry is NaN where
one of the inputs it reads is NaN / Inf or its row's eps / step is not finite and > 0. CHECK: each program
reports its block's check bits (nonfinite._report).
"""

from __future__ import annotations

import triton
import triton.language as tl
from torch import Tensor

from .nonfinite import _any, _finite, _outside_box, _poison, _positive, _report
from .utils import ELEMENTWISE_BLOCK, StepCall, num_warps_for


@triton.jit
def _flat_block(numel, D, BLOCK: tl.constexpr):
    """This program's offsets into the flat (N*D) elements, their mask and the row of each."""
    start = tl.program_id(0).to(tl.int64) * BLOCK
    offs = start + tl.arange(0, BLOCK)
    first = start // D
    # One 64-bit division per program; the per-element one runs in 32 bits on offsets local to the block.
    row = first + ((offs - first * D).to(tl.int32) // D)
    return offs, offs < numel, row


@triton.jit
def _sign(v):
    """sign(v) in {-1, 0, 1}, as torch.sign."""
    return tl.where(v > 0, 1.0, tl.where(v < 0, -1.0, 0.0))


@triton.jit
def _linf_clip(p, x, eps):
    """Nearest point of {||z - x||_inf <= eps} ∩ [0, 1] to p, elementwise."""
    return tl.minimum(tl.maximum(tl.minimum(tl.maximum(p, x - eps), x + eps), 0.0), 1.0)


@triton.jit
def _linf_project_kernel(
    out_ptr,  # [N*D] flat
    x_adv_ptr,  # [N*D] flat
    x_ptr,  # [N*D] flat
    eps_ptr,  # [N] float32
    flag_ptr,  # [1] int32 (CHECK only)
    numel,
    D,
    BLOCK: tl.constexpr,
    CHECK: tl.constexpr,
):
    offs, mask, row = _flat_block(numel, D, BLOCK)
    eps = tl.load(eps_ptr + row, mask=mask, other=0.0)
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    x_adv = tl.load(x_adv_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    ok = _finite(x) & _finite(x_adv) & _positive(eps)
    tl.store(out_ptr + offs, _poison(ok, _linf_clip(x_adv, x, eps)).to(out_ptr.dtype.element_ty), mask=mask)
    if CHECK:
        _report(flag_ptr, _any(mask & ~ok), _outside_box(x, mask))


@triton.jit
def _linf_step_kernel(
    out_ptr,  # [N*D] flat: the step (APGD: z)
    x_next_ptr,  # [N*D] flat (written only when APGD)
    x_adv_ptr,  # [N*D] flat
    x_prev_ptr,  # [N*D] flat (read only when APGD)
    x_ptr,  # [N*D] flat
    grad_ptr,  # [N*D] flat
    step_ptr,  # [N] float32
    eps_ptr,  # [N] float32
    flag_ptr,  # [1] int32 (CHECK only)
    momentum,
    numel,
    D,
    BLOCK: tl.constexpr,
    APGD: tl.constexpr,
    CHECK: tl.constexpr,
):
    """out = clip(x_adv + step sign(grad)); APGD: x_next = clip(x_adv + a (out - x_adv) + (1 - a)(x_adv - x_prev))."""
    offs, mask, row = _flat_block(numel, D, BLOCK)
    step = tl.load(step_ptr + row, mask=mask, other=0.0)
    eps = tl.load(eps_ptr + row, mask=mask, other=0.0)
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    x_adv = tl.load(x_adv_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    grad = tl.load(grad_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    z = _linf_clip(x_adv + step * _sign(grad), x, eps)
    ok = _finite(x) & _finite(x_adv) & _finite(grad) & _positive(eps) & _positive(step)
    tl.store(out_ptr + offs, _poison(ok, z).to(out_ptr.dtype.element_ty), mask=mask)
    if APGD:
        x_prev = tl.load(x_prev_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        w = x_adv + momentum * (z - x_adv) + (1.0 - momentum) * (x_adv - x_prev)
        ok = ok & _finite(x_prev)  # x_next's rule (it covers z's)
        tl.store(x_next_ptr + offs, _poison(ok, _linf_clip(w, x, eps)).to(x_next_ptr.dtype.element_ty), mask=mask)
    if CHECK:
        _report(flag_ptr, _any(mask & ~ok), _outside_box(x, mask))


def _grid(numel: int) -> tuple[int]:
    return (triton.cdiv(numel, ELEMENTWISE_BLOCK),)


def project(out: Tensor, x_adv: Tensor, x: Tensor, eps: Tensor, flag: Tensor | None) -> None:
    """out = clamp(x_adv, x - eps, x + eps) clamped to [0, 1]; check bits into flag when given."""
    numel, d = x.numel(), x.shape[1]
    _linf_project_kernel[_grid(numel)](
        out,
        x_adv,
        x,
        eps,
        eps if flag is None else flag,
        numel,
        d,
        BLOCK=ELEMENTWISE_BLOCK,
        CHECK=flag is not None,
        num_warps=num_warps_for(ELEMENTWISE_BLOCK),
    )


def step(call: StepCall) -> None:
    """out = project(x_adv + step * sign(grad)); apgd: x_next = project of the momentum point (keep unused)."""
    out, x_next, x_adv, x_prev, x, grad, step_size, eps, keep, momentum, apgd, flag = call
    numel, d = x.numel(), x.shape[1]
    _linf_step_kernel[_grid(numel)](
        out,
        x_next,
        x_adv,
        x_prev,
        x,
        grad,
        step_size,
        eps,
        eps if flag is None else flag,
        momentum,
        numel,
        d,
        BLOCK=ELEMENTWISE_BLOCK,
        APGD=apgd,
        CHECK=flag is not None,
        num_warps=num_warps_for(ELEMENTWISE_BLOCK),
    )
