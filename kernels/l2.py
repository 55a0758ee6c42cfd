"""L2 ops: AutoAttack's normalized step with rescale-then-clip, and the exact projection onto ball ∩ box.

Steps run on an (N, chunks) grid, pgd_step and apgd_step in one kernel (the APGD constexpr adds the momentum
point). A row that fits one chunk is done by one program in one read. Longer rows first store per-chunk partial
sums (S_gg, S_vg, S_vv, then ||d2||^2 for APGD) in a small float32 [N, 4, chunks] buffer; the next kernel's programs each add their row's partials in a fixed order (no atomics,
so every program, and every run, sees the same sums) and write their chunk.

The projection runs one program per row: a K-ary search over the bit patterns of t (see search.py) for the
largest float32 t in [0, 1] with f(t) = ||clip(t v, -x, 1 - x)||^2 <= eps^2, then one write pass.

Bad numbers (nonfinite.py): a NaN / Inf entry of a row makes its whole output row NaN. The steps carry it as a
NaN in S_gg (a sum of squares, NaN only then) and in ||d2||^2 (x_prev), the projection counts bad entries
during its search passes; an eps / step that is not finite and > 0 poisons its row too. CHECK: the programs
that write report their row's rule and their x entries' range (nonfinite._report).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from .nonfinite import _finite, _outside_box, _poison, _positive, _report
from .search import ONE_BITS, _kary_candidates, _kary_narrow
from .utils import SEARCH_K, StepCall, chunk_settings, num_warps_for, search_settings

# ---------------------------------------------------------------- steps


@triton.jit
def _load_chunk(x_adv_ptr, x_ptr, grad_ptr, D, BLOCK: tl.constexpr):
    """Offsets of this program's chunk (grid (N, chunks), all rows contiguous), its mask, x_adv, x, grad."""
    row = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < D
    offs = row * D + offs
    x_adv = tl.load(x_adv_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    grad = tl.load(grad_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    return offs, mask, x_adv, x, grad


@triton.jit
def _gg_terms(x_adv, x, grad):
    """grad^2 per element, NaN where an input is NaN / Inf: S_gg is then NaN exactly for a row with a bad entry."""
    return _poison(_finite(x_adv) & _finite(x) & _finite(grad), grad * grad)


@triton.jit
def _row_total(partial_ptr, q, num_chunks, CHUNKS_P2: tl.constexpr):
    """Sum over this row's chunks of partial sum q (0: S_gg, 1: S_vg, 2: S_vv, 3: ||d2||^2), in a fixed order."""
    row = tl.program_id(0).to(tl.int64)
    c = tl.arange(0, CHUNKS_P2)
    return tl.sum(tl.load(partial_ptr + (row * 4 + q) * num_chunks + c, mask=c < num_chunks, other=0.0), axis=0)


@triton.jit
def _l2_rescale(x, d, n, eps):
    """clamp(x + d * min(eps, n) / (n + 1e-12), 0, 1): AutoAttack's L2 projection of x + d, n = ||d||."""
    return tl.minimum(tl.maximum(x + d * (tl.minimum(eps, n) / (n + 1e-12)), 0.0), 1.0)


@triton.jit
def _l2_step_point(partial_ptr, x_adv, x, grad, step, eps, num_chunks, CHUNKS_P2: tl.constexpr):
    """z = rescale(x + d1), d1 = v + c g, c = step / ||g||, with ||d1|| expanded from S_gg, S_vg, S_vv; and
    whether the row is usable (no bad entry: S_gg is not NaN; eps and step finite and > 0)."""
    v = x_adv - x
    if CHUNKS_P2 == 1:  # the whole row is in this block
        s_gg = tl.sum(_gg_terms(x_adv, x, grad), axis=0)
        s_vg = tl.sum(v * grad, axis=0)
        s_vv = tl.sum(v * v, axis=0)
    else:
        s_gg = _row_total(partial_ptr, 0, num_chunks, CHUNKS_P2)
        s_vg = _row_total(partial_ptr, 1, num_chunks, CHUNKS_P2)
        s_vv = _row_total(partial_ptr, 2, num_chunks, CHUNKS_P2)
    c = step / (tl.sqrt(s_gg) + 1e-12)
    n1 = tl.sqrt(tl.maximum(s_vv + 2.0 * c * s_vg + c * c * s_gg, 0.0))
    ok = (s_gg == s_gg) & _positive(eps) & _positive(step)
    return _l2_rescale(x, v + c * grad, n1, eps), ok


@triton.jit
def _l2_dots_kernel(
    partial_ptr,  # [N, 4, num_chunks] float32
    x_adv_ptr,  # [N, D]
    x_ptr,  # [N, D]
    grad_ptr,  # [N, D]
    D,
    num_chunks,
    BLOCK: tl.constexpr,
):
    """Per-chunk S_gg, S_vg, S_vv (v = x_adv - x) for rows longer than one chunk."""
    _, _, x_adv, x, grad = _load_chunk(x_adv_ptr, x_ptr, grad_ptr, D, BLOCK)
    v = x_adv - x
    out_ptr = partial_ptr + tl.program_id(0).to(tl.int64) * 4 * num_chunks + tl.program_id(1)
    tl.store(out_ptr, tl.sum(_gg_terms(x_adv, x, grad), axis=0))
    tl.store(out_ptr + num_chunks, tl.sum(v * grad, axis=0))
    tl.store(out_ptr + 2 * num_chunks, tl.sum(v * v, axis=0))


@triton.jit
def _l2_step_kernel(
    out_ptr,  # [N, D]: the step (APGD: z)
    x_next_ptr,  # [N, D] (written only when APGD)
    x_adv_ptr,  # [N, D]
    x_prev_ptr,  # [N, D] (read only when APGD)
    x_ptr,  # [N, D]
    grad_ptr,  # [N, D]
    partial_ptr,  # [N, 4, num_chunks] float32
    step_ptr,  # [N] float32
    eps_ptr,  # [N] float32
    flag_ptr,  # [1] int32 (CHECK only)
    momentum,
    D,
    num_chunks,
    BLOCK: tl.constexpr,
    CHUNKS_P2: tl.constexpr,
    APGD: tl.constexpr,
    WRITE_Z: tl.constexpr,
    WRITE_NEXT: tl.constexpr,
    CHECK: tl.constexpr,
):
    """out = z = rescale(x + d1); APGD: d2 = w - x and x_next = rescale(x + d2), z recomputed in float32 when
    only x_next is written.

    pgd_step, or APGD with one chunk per row: one launch writes everything. Otherwise the WRITE_Z launch stores
    z and the chunk's ||d2||^2, and the WRITE_NEXT launch adds those up and writes x_next.
    """
    offs, mask, x_adv, x, grad = _load_chunk(x_adv_ptr, x_ptr, grad_ptr, D, BLOCK)
    row = tl.program_id(0).to(tl.int64)
    eps = tl.load(eps_ptr + row)
    z, ok = _l2_step_point(partial_ptr, x_adv, x, grad, tl.load(step_ptr + row), eps, num_chunks, CHUNKS_P2)
    if WRITE_Z:
        tl.store(out_ptr + offs, _poison(ok, z).to(out_ptr.dtype.element_ty), mask=mask)
    if APGD:
        x_prev = tl.load(x_prev_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        d2 = x_adv + momentum * (z - x_adv) + (1.0 - momentum) * (x_adv - x_prev) - x
        d2 = tl.where(mask, d2, 0.0)
        n2_sq = tl.sum(_poison(_finite(x_prev), d2 * d2), axis=0)  # NaN when x_prev has a bad entry
        if CHUNKS_P2 > 1:
            if WRITE_NEXT:
                n2_sq = _row_total(partial_ptr, 3, num_chunks, CHUNKS_P2)
            else:
                tl.store(partial_ptr + (row * 4 + 3) * num_chunks + tl.program_id(1), n2_sq)
        if WRITE_NEXT:
            ok = ok & (n2_sq == n2_sq)  # x_next's rule (it covers z's)
            x_next = _poison(ok, _l2_rescale(x, d2, tl.sqrt(n2_sq), eps))
            tl.store(x_next_ptr + offs, x_next.to(x_next_ptr.dtype.element_ty), mask=mask)
    if CHECK:
        _report(flag_ptr, ~ok, _outside_box(x, mask))


def step(call: StepCall) -> None:
    """out = clamp(x + d1 * min(eps, ||d1||) / ||d1||, 0, 1), d1 = x_adv - x + step * grad / ||grad||;
    apgd: x_next = clamp(x + d2 * min(eps, ||d2||) / ||d2||, 0, 1), d2 = w - x (APGD momentum w). keep unused."""
    out, x_next, x_adv, x_prev, x, grad, step_size, eps, keep, momentum, apgd, flag = call
    n, d = x.shape
    block, num_chunks, chunks_p2 = chunk_settings(d)
    partial = torch.empty((n, 4, num_chunks), dtype=torch.float32, device=x.device)
    warps = num_warps_for(block)
    if num_chunks > 1:
        _l2_dots_kernel[(n, num_chunks)](partial, x_adv, x, grad, d, num_chunks, BLOCK=block, num_warps=warps)
    # (write z, write x_next) per launch: both at once for APGD when the row fits one chunk.
    if not apgd:
        launches = ((True, False),)
    else:
        launches = ((True, True),) if num_chunks == 1 else ((True, False), (False, True))
    for write_z, write_next in launches:
        _l2_step_kernel[(n, num_chunks)](
            out,
            x_next,
            x_adv,
            x_prev,
            x,
            grad,
            partial,
            step_size,
            eps,
            eps if flag is None else flag,
            momentum,
            d,
            num_chunks,
            BLOCK=block,
            CHUNKS_P2=chunks_p2,
            APGD=apgd,
            WRITE_Z=write_z,
            WRITE_NEXT=write_next,
            CHECK=flag is not None,
            num_warps=warps,
        )


# ---------------------------------------------------------------- exact projection


@triton.jit
def _l2_project_kernel(
    out_ptr,  # [N, D]
    x_adv_ptr,  # [N, D]
    x_ptr,  # [N, D]
    eps_ptr,  # [N] float32
    flag_ptr,  # [1] int32 (CHECK only)
    D,
    BLOCK: tl.constexpr,
    K: tl.constexpr,
    CHECK: tl.constexpr,
):
    """out = x + clip(t v, -x, 1 - x), t the largest float32 in [0, 1] with f(t) <= eps^2 (t = 1: clamp(x_adv))."""
    row = tl.program_id(0).to(tl.int64)
    out_ptr += row * D
    x_adv_ptr += row * D
    x_ptr += row * D
    eps = tl.load(eps_ptr + row)
    # Ranks are the bit patterns of t; f(0) = 0 <= eps^2, and the first pass already tests t = 1.
    lo = tl.zeros([], tl.int32)
    hi = lo + ONE_BITS
    bad = tl.zeros([], tl.int32)  # NaN / Inf entries seen by the search passes (there is at least one pass)
    while lo < hi:
        r = _kary_candidates(lo, hi, K)
        t = r.to(tl.float32, bitcast=True)
        f = tl.zeros([K], tl.float32)
        for start in range(0, D, BLOCK):
            offs = start + tl.arange(0, BLOCK)
            mask = offs < D
            x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            v = tl.load(x_adv_ptr + offs, mask=mask, other=0.0).to(tl.float32) - x
            d = tl.minimum(tl.maximum(t[None, :] * v[:, None], -x[:, None]), 1.0 - x[:, None])
            f += tl.sum(d * d, axis=0)
            bad += tl.sum((mask & ~(_finite(x) & _finite(v))).to(tl.int32), axis=0)
        lo, hi = _kary_narrow(lo, hi, r, f <= eps * eps)
    ok = (bad == 0) & _positive(eps)
    t = lo.to(tl.float32, bitcast=True)
    outside = tl.zeros([], tl.int32)
    for start in range(0, D, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        mask = offs < D
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        x_adv = tl.load(x_adv_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        out = x + tl.minimum(tl.maximum(t * (x_adv - x), -x), 1.0 - x)
        out = tl.where(lo == ONE_BITS, tl.minimum(tl.maximum(x_adv, 0.0), 1.0), out)
        tl.store(out_ptr + offs, _poison(ok, out).to(out_ptr.dtype.element_ty), mask=mask)
        if CHECK:
            outside = outside | _outside_box(x, mask)
    if CHECK:
        _report(flag_ptr, ~ok, outside)


def project(out: Tensor, x_adv: Tensor, x: Tensor, eps: Tensor, flag: Tensor | None) -> None:
    """Exact nearest point of {||z - x||_2 <= eps} ∩ [0, 1]^D to x_adv, per row; check bits into flag when given."""
    block, warps = search_settings(x.shape[1])
    _l2_project_kernel[(x.shape[0],)](
        out,
        x_adv,
        x,
        eps,
        eps if flag is None else flag,
        x.shape[1],
        BLOCK=block,
        K=SEARCH_K,
        CHECK=flag is not None,
        num_warps=warps,
    )
