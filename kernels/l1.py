"""L1 ops: APGD-L1's sparse top-k sign step and the exact projection onto {||d||_1 <= eps} ∩ box.

One program per row runs every phase of an op, each a K-ary search over float32 bit patterns (search.py)
of at most 8 passes over the row, then writes:
- threshold: tau = the keep-th largest |g| exactly (largest tau with #{|g| >= tau} >= keep), counted as
  cnt = #{|g| >= tau, g != 0} on the way;
- projection of v: lam = the smallest float32 lam >= 0 with h(lam) = sum clip(|v| - lam, 0, u) <= eps,
  u = the room to the box along sign(v); d = sign(v) clip(|v| - lam, 0, u).
APGD projects twice (z, then the momentum point), recomputing z in float32 from lam1 on every pass. One kernel
runs every op, the STAGE constexpr naming the last point it projects.
Bad numbers (nonfinite.py): the lam searches count the NaN / Inf entries they read; a row with one, or with an
eps / step that is not finite and > 0, is written as NaN (z: x_adv, x, grad; x_next: x_prev as well).
CHECK: the write pass reports the row's rule and its x entries' range (nonfinite._report).
"""

from __future__ import annotations

import triton
import triton.language as tl
from torch import Tensor

from .nonfinite import _finite, _outside_box, _poison, _positive, _report
from .search import INF_BITS, _kary_candidates, _kary_narrow
from .utils import SEARCH_K, StepCall, search_settings

# The point a pass projects (STAGE of _l1_block): x_adv itself, the sparse step, or APGD's momentum point.
_PROJECT = tl.constexpr(0)
_STEP = tl.constexpr(1)
_MOMENTUM = tl.constexpr(2)


@triton.jit
def _l1_room(v, x):
    """u: how far x + d may move from x along sign(v) inside [0, 1]."""
    return tl.where(v > 0, 1.0 - x, x)


@triton.jit
def _l1_delta(v, x, lam):
    """The projection's d = sign(v) * clip(|v| - lam, 0, u)."""
    m = tl.maximum(tl.minimum(tl.abs(v) - lam, _l1_room(v, x)), 0.0)
    return tl.where(v < 0, -m, m)


@triton.jit
def _l1_block(x_adv_ptr, x_prev_ptr, x_ptr, grad_ptr, offs, mask, c, tau, lam1, momentum, STAGE: tl.constexpr):
    """x, the point to project relative to x (v, 0 off the row), z, and whether every input read is finite
    (True off the row), on one block of the row.

    _PROJECT: v = x_adv - x. _STEP: v = x_adv + c sign(g) [|g| >= tau] - x (c = step / cnt).
    _MOMENTUM: z = x + d(step v, lam1), v = x_adv + a (z - x_adv) + (1 - a)(x_adv - x_prev) - x.
    Pointers, c, tau, lam1 and momentum a stage does not read may be anything.
    """
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    x_adv = tl.load(x_adv_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    v = x_adv - x
    z = x
    ok = _finite(x) & _finite(x_adv)
    if STAGE != _PROJECT:
        g = tl.load(grad_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        top = tl.abs(g).to(tl.int32, bitcast=True) >= tau
        v = x_adv + tl.where(top, tl.where(g < 0, -c, c), 0.0) - x
        ok = ok & _finite(g)
    if STAGE == _MOMENTUM:
        z = x + _l1_delta(v, x, lam1)
        x_prev = tl.load(x_prev_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        v = x_adv + momentum * (z - x_adv) + (1.0 - momentum) * (x_adv - x_prev) - x
        ok = ok & _finite(x_prev)
    return x, tl.where(mask, v, 0.0), z, ok


@triton.jit
def _l1_lambda(
    x_adv_ptr,
    x_prev_ptr,
    x_ptr,
    grad_ptr,
    eps,
    D,
    c,
    tau,
    lam1,
    momentum,
    STAGE: tl.constexpr,
    BLOCK: tl.constexpr,
    K: tl.constexpr,
):
    """(lam, bad): lam the smallest float32 lam >= 0 with h(lam) <= eps for the STAGE point (0 when h(0) <= eps),
    bad the count of NaN / Inf entries the passes read (0 for a usable row)."""
    # Rank r = bits(+inf) - bits(lam), so larger ranks are smaller lam: r = 0 is lam = +inf (h = 0), and the
    # first pass already tests r = bits(+inf), i.e. lam = 0.
    lo = tl.zeros([], tl.int32)
    inf_bits = lo + INF_BITS
    hi = inf_bits
    bad = tl.zeros([], tl.int32)
    while lo < hi:
        r = _kary_candidates(lo, hi, K)
        lam = (inf_bits - r).to(tl.float32, bitcast=True)
        h = tl.zeros([K], tl.float32)
        for start in range(0, D, BLOCK):
            offs = start + tl.arange(0, BLOCK)
            x, v, _, ok = _l1_block(
                x_adv_ptr, x_prev_ptr, x_ptr, grad_ptr, offs, offs < D, c, tau, lam1, momentum, STAGE
            )
            excess = tl.minimum(tl.abs(v)[:, None] - lam[None, :], _l1_room(v, x)[:, None])
            h += tl.sum(tl.maximum(excess, 0.0), axis=0)
            bad += tl.sum((~ok).to(tl.int32), axis=0)
        lo, hi = _kary_narrow(lo, hi, r, h <= eps)
    return (inf_bits - lo).to(tl.float32, bitcast=True), bad


@triton.jit
def _l1_threshold(grad_ptr, keep, D, BLOCK: tl.constexpr, K: tl.constexpr):
    """(tau, cnt): tau the bit pattern of the keep-th largest |g|, raised to 1 (the smallest positive float,
    so |g| >= tau also drops g == 0), and cnt = #{|g| >= tau}."""
    # Ranks are the bit patterns of |g|. Track the counts at both ends of the bracket: at lo (valid once a
    # candidate set lo), and at hi + 1 (that is the count of g != 0 when the search ends at lo = hi = 0).
    lo = tl.zeros([], tl.int32)
    hi = lo + INF_BITS
    lo_cnt = lo + D
    hi_cnt = lo
    while lo < hi:
        r = _kary_candidates(lo, hi, K)
        cnt = tl.zeros([K], tl.int32)
        for start in range(0, D, BLOCK):
            offs = start + tl.arange(0, BLOCK)
            mask = offs < D
            g = tl.load(grad_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            bits = tl.where(mask, tl.abs(g).to(tl.int32, bitcast=True), -1)
            cnt += tl.sum((bits[:, None] >= r[None, :]).to(tl.int32), axis=0)
        lo, hi = _kary_narrow(lo, hi, r, cnt >= keep)
        lo_cnt = tl.min(tl.where(r == lo, cnt, lo_cnt), axis=0)
        hi_cnt = tl.max(tl.where(r == hi + 1, cnt, hi_cnt), axis=0)
    return tl.maximum(lo, 1), tl.where(lo > 0, lo_cnt, hi_cnt)


@triton.jit
def _l1_step_scale(grad_ptr, step_ptr, keep_ptr, D, BLOCK: tl.constexpr, K: tl.constexpr):
    """(c, tau): the sparse step is c * sign(g) on |g| >= tau, c = step / (cnt + 1e-10)."""
    row = tl.program_id(0).to(tl.int64)
    tau, cnt = _l1_threshold(grad_ptr, tl.load(keep_ptr + row).to(tl.int32), D, BLOCK, K)
    return tl.load(step_ptr + row) / (cnt.to(tl.float32) + 1e-10), tau


@triton.jit
def _l1_kernel(
    out_ptr,  # [N, D]: project / pgd_step's result, apgd_step's z
    x_next_ptr,  # [N, D] (written only at _MOMENTUM)
    x_adv_ptr,  # [N, D]
    x_prev_ptr,  # [N, D] (read only at _MOMENTUM)
    x_ptr,  # [N, D]
    grad_ptr,  # [N, D] (read only by the steps)
    keep_ptr,  # [N] int64 (the steps)
    step_ptr,  # [N] float32 (the steps)
    eps_ptr,  # [N] float32
    flag_ptr,  # [1] int32 (CHECK only)
    momentum,
    D,
    STAGE: tl.constexpr,
    BLOCK: tl.constexpr,
    K: tl.constexpr,
    CHECK: tl.constexpr,
):
    """Every L1 op in one program per row; STAGE is the last point it projects: _PROJECT (project), _STEP
    (pgd_step) or _MOMENTUM (apgd_step: the step's z first, then the momentum point)."""
    row = tl.program_id(0).to(tl.int64)
    out_ptr += row * D
    x_next_ptr += row * D
    x_adv_ptr += row * D
    x_prev_ptr += row * D
    x_ptr += row * D
    grad_ptr += row * D
    eps = tl.load(eps_ptr + row)
    if STAGE == _PROJECT:
        c = 0.0
        tau = 0
        lam1, bad1 = _l1_lambda(
            x_adv_ptr, x_prev_ptr, x_ptr, grad_ptr, eps, D, c, tau, 0.0, momentum, _PROJECT, BLOCK, K
        )
        ok = (bad1 == 0) & _positive(eps)
    else:
        c, tau = _l1_step_scale(grad_ptr, step_ptr, keep_ptr, D, BLOCK, K)
        lam1, bad1 = _l1_lambda(x_adv_ptr, x_prev_ptr, x_ptr, grad_ptr, eps, D, c, tau, 0.0, momentum, _STEP, BLOCK, K)
        ok = (bad1 == 0) & _positive(eps) & _positive(tl.load(step_ptr + row))
    if STAGE == _MOMENTUM:
        lam2, bad2 = _l1_lambda(
            x_adv_ptr, x_prev_ptr, x_ptr, grad_ptr, eps, D, c, tau, lam1, momentum, _MOMENTUM, BLOCK, K
        )
        ok_next = ok & (bad2 == 0)  # the momentum passes read x_prev as well
    else:
        ok_next = ok
    outside = tl.zeros([], tl.int32)
    for start in range(0, D, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        mask = offs < D
        x, v, z, _ = _l1_block(x_adv_ptr, x_prev_ptr, x_ptr, grad_ptr, offs, mask, c, tau, lam1, momentum, STAGE)
        if STAGE == _MOMENTUM:
            tl.store(out_ptr + offs, _poison(ok, z).to(out_ptr.dtype.element_ty), mask=mask)
            x_next = _poison(ok_next, x + _l1_delta(v, x, lam2))
            tl.store(x_next_ptr + offs, x_next.to(x_next_ptr.dtype.element_ty), mask=mask)
        else:
            tl.store(out_ptr + offs, _poison(ok, x + _l1_delta(v, x, lam1)).to(out_ptr.dtype.element_ty), mask=mask)
        if CHECK:
            outside = outside | _outside_box(x, mask)
    if CHECK:
        _report(flag_ptr, ~ok_next, outside)  # ok_next covers ok


def _launch(
    out: Tensor,
    x_next: Tensor,
    x_adv: Tensor,
    x_prev: Tensor,
    x: Tensor,
    grad: Tensor,
    keep: Tensor,
    step_size: Tensor,
    eps: Tensor,
    momentum: float,
    stage: int,
    flag: Tensor | None,
) -> None:
    block, warps = search_settings(x.shape[1])
    _l1_kernel[(x.shape[0],)](
        out,
        x_next,
        x_adv,
        x_prev,
        x,
        grad,
        keep,
        step_size,
        eps,
        eps if flag is None else flag,
        momentum,
        x.shape[1],
        STAGE=stage,
        BLOCK=block,
        K=SEARCH_K,
        CHECK=flag is not None,
        num_warps=warps,
    )


def project(out: Tensor, x_adv: Tensor, x: Tensor, eps: Tensor, flag: Tensor | None) -> None:
    """Exact nearest point of {||z - x||_1 <= eps} ∩ [0, 1]^D to x_adv, per row; check bits into flag when given."""
    _launch(out, out, x_adv, x, x, x, eps, eps, eps, 0.0, _PROJECT, flag)  # what the stage does not read: anything


def step(call: StepCall) -> None:
    """out = project(x_adv + step * sign(g) [|g| >= tau] / cnt): APGD-L1's sparse step, tau the keep-th largest |g|;
    apgd: x_next = project(x_adv + a (out - x_adv) + (1 - a)(x_adv - x_prev)), a = momentum."""
    out, x_next, x_adv, x_prev, x, grad, step_size, eps, keep, momentum, apgd, flag = call
    _launch(out, x_next, x_adv, x_prev, x, grad, keep, step_size, eps, momentum, _MOMENTUM if apgd else _STEP, flag)
