"""Linf ops: the projection is a clamp, so each op is one elementwise kernel over the flat (N*D) elements.

Each kernel reads every input once and writes every output once; eps / step are gathered per element by
row = offset // D (a 1-D grid keeps short rows as efficient as long ones). Bad numbers (nonfinite.py): an
output entry is NaN where one of the inputs it reads is NaN / Inf or its row's eps / step is not finite and > 0.
"""
from __future__ import annotations

import triton
import triton.language as tl
from torch import Tensor

from .nonfinite import _finite, _poison, _positive
from .utils import ELEMENTWISE_BLOCK, num_warps_for


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
    out_ptr,  # [N, D]
    x_adv_ptr,  # [N, D]
    x_ptr,  # [N, D]
    eps_ptr,  # [N] float32
    numel,
    D,
    BLOCK: tl.constexpr,
):
    offs, mask, row = _flat_block(numel, D, BLOCK)
    eps = tl.load(eps_ptr + row, mask=mask, other=0.0)
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    x_adv = tl.load(x_adv_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    ok = _finite(x) & _finite(x_adv) & _positive(eps)
    tl.store(out_ptr + offs, _poison(ok, _linf_clip(x_adv, x, eps)).to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _linf_pgd_kernel(
    out_ptr,  # [N, D]
    x_adv_ptr,  # [N, D]
    x_ptr,  # [N, D]
    grad_ptr,  # [N, D]
    step_ptr,  # [N] float32
    eps_ptr,  # [N] float32
    numel,
    D,
    BLOCK: tl.constexpr,
):
    offs, mask, row = _flat_block(numel, D, BLOCK)
    step = tl.load(step_ptr + row, mask=mask, other=0.0)
    eps = tl.load(eps_ptr + row, mask=mask, other=0.0)
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    x_adv = tl.load(x_adv_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    grad = tl.load(grad_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    ok = _finite(x) & _finite(x_adv) & _finite(grad) & _positive(eps) & _positive(step)
    out = _poison(ok, _linf_clip(x_adv + step * _sign(grad), x, eps))
    tl.store(out_ptr + offs, out.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _linf_apgd_kernel(
    x_next_ptr,  # [N, D]
    z_ptr,  # [N, D]
    x_adv_ptr,  # [N, D]
    x_prev_ptr,  # [N, D]
    x_ptr,  # [N, D]
    grad_ptr,  # [N, D]
    step_ptr,  # [N] float32
    eps_ptr,  # [N] float32
    momentum,
    numel,
    D,
    BLOCK: tl.constexpr,
):
    offs, mask, row = _flat_block(numel, D, BLOCK)
    step = tl.load(step_ptr + row, mask=mask, other=0.0)
    eps = tl.load(eps_ptr + row, mask=mask, other=0.0)
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    x_adv = tl.load(x_adv_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    x_prev = tl.load(x_prev_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    grad = tl.load(grad_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    z = _linf_clip(x_adv + step * _sign(grad), x, eps)
    w = x_adv + momentum * (z - x_adv) + (1.0 - momentum) * (x_adv - x_prev)
    ok = _finite(x) & _finite(x_adv) & _finite(grad) & _positive(eps) & _positive(step)
    tl.store(z_ptr + offs, _poison(ok, z).to(z_ptr.dtype.element_ty), mask=mask)
    x_next = _poison(ok & _finite(x_prev), _linf_clip(w, x, eps))
    tl.store(x_next_ptr + offs, x_next.to(x_next_ptr.dtype.element_ty), mask=mask)


def _grid(numel: int) -> tuple[int]:
    return (triton.cdiv(numel, ELEMENTWISE_BLOCK),)


def project(out: Tensor, x_adv: Tensor, x: Tensor, eps: Tensor) -> None:
    """out = clamp(x_adv, x - eps, x + eps) clamped to [0, 1]."""
    numel, d = x.numel(), x.shape[1]
    _linf_project_kernel[_grid(numel)](
        out, x_adv, x, eps, numel, d, BLOCK=ELEMENTWISE_BLOCK, num_warps=num_warps_for(ELEMENTWISE_BLOCK)
    )


def pgd_step(out: Tensor, x_adv: Tensor, x: Tensor, grad: Tensor, step: Tensor, eps: Tensor) -> None:
    """out = project(x_adv + step * sign(grad))."""
    numel, d = x.numel(), x.shape[1]
    _linf_pgd_kernel[_grid(numel)](
        out, x_adv, x, grad, step, eps, numel, d, BLOCK=ELEMENTWISE_BLOCK, num_warps=num_warps_for(ELEMENTWISE_BLOCK)
    )


def apgd_step(
    x_next: Tensor, z: Tensor, x_adv: Tensor, x_prev: Tensor, x: Tensor, grad: Tensor, step: Tensor, eps: Tensor,
    momentum: float,
) -> None:
    """z = pgd_step(...); x_next = project(x_adv + a (z - x_adv) + (1 - a)(x_adv - x_prev)), a = momentum."""
    numel, d = x.numel(), x.shape[1]
    _linf_apgd_kernel[_grid(numel)](
        x_next, z, x_adv, x_prev, x, grad, step, eps, momentum, numel, d,
        BLOCK=ELEMENTWISE_BLOCK, num_warps=num_warps_for(ELEMENTWISE_BLOCK),
    )
