"""TRADES KL / objective: loss_i = CE(clean_i, y_i) [if y] + beta * KL(softmax(clean_i) || softmax(adv_i)).

One program per row, each a single pass over the C classes in BLOCK-wide pieces (any C, nothing
materialized):
- forward reads each logit once and keeps, for both rows, an online (running-max) softmax: the max m and
  s = sum exp(l - m), plus t = sum exp(lc - m_c) * ((lc - m_c) - (la - m_a)), re-expressed at each new max.
  Then KL = t / s_c - log s_c + log s_a: the maxes cancel, so there is no difference of two large
  log-sum-exps (accurate for large logits and for adv close to clean; exactly 0 for equal rows).
  Writes loss_rows (N,) and stats (N, 3) = (lse_c, lse_a, KL), float32.
- backward reads each logit once more and writes grad_adv, and grad_clean when asked:
  grad_adv = w beta (p_a - p_c), grad_clean = w ((p_c - onehot(y)) + beta p_c (log p_c - log p_a - KL)).
  A row of C <= BLOCK (up to 4096 classes) sits in registers, so p is renormalized there from the row's own
  max and sum; only longer rows take p = exp(l - lse) from the stats, whose float32 rounding (half an ulp
  of |lse|) then bounds the error of p_a - p_c near one-hot rows.
With a flag (CHECK), forward ORs 1 into it for a row holding a NaN / Inf logit (nonfinite._report).
Bytes per row: forward 2 C b (b = bytes per logit), backward 2 C b read + 2 C b written (C b without grad_clean).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from .nonfinite import _any, _finite, _report
from .utils import check_flag, check_logits, check_per_sample, check_rows, row_loop_settings


@triton.jit
def _kl_fwd_kernel(
    loss_ptr,  # [N] float32
    stats_ptr,  # [N, 3] float32
    adv_ptr,  # [N, C], adv_stride apart
    adv_stride,
    clean_ptr,  # [N, C], clean_stride apart
    clean_stride,
    y_ptr,  # [N] int64 (read only when HAS_Y)
    flag_ptr,  # [1] int32 (CHECK only)
    beta,
    C,
    BLOCK: tl.constexpr,
    HAS_Y: tl.constexpr,
    CHECK: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    adv_ptr += row * adv_stride
    clean_ptr += row * clean_stride
    cols = tl.arange(0, BLOCK)
    # Running maxes start at the first logit (finite), so every rescaling below is finite.
    m_a = tl.load(adv_ptr).to(tl.float32)
    m_c = tl.load(clean_ptr).to(tl.float32)
    s_a = 0.0
    s_c = 0.0
    t = 0.0
    bad = tl.zeros([], tl.int32)
    for start in range(0, C, BLOCK):
        offs = start + cols
        mask = offs < C
        la = tl.load(adv_ptr + offs, mask=mask, other=-float("inf")).to(tl.float32)
        lc = tl.load(clean_ptr + offs, mask=mask, other=-float("inf")).to(tl.float32)
        if CHECK:
            bad = bad | _any(mask & ~(_finite(la) & _finite(lc)))
        new_a = tl.maximum(m_a, tl.max(la, axis=0))
        new_c = tl.maximum(m_c, tl.max(lc, axis=0))
        za = la - new_a  # -inf in the masked tail
        zc = lc - new_c
        e_c = tl.exp(zc)
        d = tl.where(mask, zc, 0.0) - tl.where(mask, za, 0.0)  # 0 in the tail, not -inf - -inf
        # Old terms of t: each (lc - m_c) - (la - m_a) moves by -shift, and its weight by exp(m_c - new_c).
        shift = (new_c - m_c) - (new_a - m_a)
        scale_c = tl.exp(m_c - new_c)
        t = scale_c * (t - s_c * shift) + tl.sum(e_c * d, axis=0)
        s_c = scale_c * s_c + tl.sum(e_c, axis=0)
        s_a = tl.exp(m_a - new_a) * s_a + tl.sum(tl.exp(za), axis=0)
        m_a = new_a
        m_c = new_c
    log_s_c = tl.log(s_c)
    log_s_a = tl.log(s_a)
    kl = t / s_c - log_s_c + log_s_a
    loss = beta * kl
    if HAS_Y:
        label = tl.load(y_ptr + row)
        loss += (m_c - tl.load(clean_ptr + label).to(tl.float32)) + log_s_c  # lse_c - lc[y]
    tl.store(loss_ptr + row, loss)
    tl.store(stats_ptr + row * 3, m_c + log_s_c)
    tl.store(stats_ptr + row * 3 + 1, m_a + log_s_a)
    tl.store(stats_ptr + row * 3 + 2, kl)
    if CHECK:
        _report(flag_ptr, bad, 0)


@triton.jit
def _kl_store_grads(
    grad_adv_ptr,
    grad_clean_ptr,
    offs,
    mask,
    p_c,
    p_a,
    r,
    w,
    w_beta,
    label,
    HAS_Y: tl.constexpr,
    WRITE_CLEAN: tl.constexpr,
):
    """Store one piece of grad_adv and grad_clean from p_c, p_a and r = log p_c - log p_a - KL."""
    tl.store(grad_adv_ptr + offs, (w_beta * (p_a - p_c)).to(grad_adv_ptr.dtype.element_ty), mask=mask)
    if WRITE_CLEAN:
        g = w_beta * p_c * r
        if HAS_Y:
            g += w * (p_c - tl.where(offs == label, 1.0, 0.0))
        tl.store(grad_clean_ptr + offs, g.to(grad_clean_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _kl_bwd_kernel(
    grad_adv_ptr,  # [N, C], grad_adv_stride apart
    grad_adv_stride,
    grad_clean_ptr,  # [N, C], grad_clean_stride apart (written only when WRITE_CLEAN)
    grad_clean_stride,
    adv_ptr,  # [N, C], adv_stride apart
    adv_stride,
    clean_ptr,  # [N, C], clean_stride apart
    clean_stride,
    y_ptr,  # [N] int64 (read only when HAS_Y)
    weight_ptr,  # [N] float32
    stats_ptr,  # [N, 3] float32: lse_c, lse_a, KL
    beta,
    C,
    BLOCK: tl.constexpr,
    HAS_Y: tl.constexpr,
    WRITE_CLEAN: tl.constexpr,
    ONE_BLOCK: tl.constexpr,  # C <= BLOCK
):
    row = tl.program_id(0).to(tl.int64)
    adv_ptr += row * adv_stride
    clean_ptr += row * clean_stride
    grad_adv_ptr += row * grad_adv_stride
    grad_clean_ptr += row * grad_clean_stride
    kl = tl.load(stats_ptr + row * 3 + 2)
    w = tl.load(weight_ptr + row)
    w_beta = w * beta
    label = -1
    if HAS_Y:
        label = tl.load(y_ptr + row)
    cols = tl.arange(0, BLOCK)
    if ONE_BLOCK:
        # The row is in registers: renormalize it here (shifted by its own maxes) rather than through the
        # stored float32 lse, whose rounding (an ulp of |lse|) would dominate p_a - p_c for large logits.
        mask = cols < C
        la = tl.load(adv_ptr + cols, mask=mask, other=-float("inf")).to(tl.float32)
        lc = tl.load(clean_ptr + cols, mask=mask, other=-float("inf")).to(tl.float32)
        za = la - tl.max(la, axis=0)
        zc = lc - tl.max(lc, axis=0)
        e_a = tl.exp(za)
        e_c = tl.exp(zc)
        s_a = tl.sum(e_a, axis=0)
        s_c = tl.sum(e_c, axis=0)
        r = (tl.where(mask, zc, 0.0) - tl.where(mask, za, 0.0)) - ((tl.log(s_c) - tl.log(s_a)) + kl)
        _kl_store_grads(
            grad_adv_ptr,
            grad_clean_ptr,
            cols,
            mask,
            e_c * (1.0 / s_c),
            e_a * (1.0 / s_a),
            r,
            w,
            w_beta,
            label,
            HAS_Y,
            WRITE_CLEAN,
        )
    else:
        lse_c = tl.load(stats_ptr + row * 3)
        lse_a = tl.load(stats_ptr + row * 3 + 1)
        # log p_c - log p_a - KL = (lc - la) - (lse_c - lse_a + KL): no large lse subtracted per element.
        offset = (lse_c - lse_a) + kl
        for start in range(0, C, BLOCK):
            offs = start + cols
            mask = offs < C
            la = tl.load(adv_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            lc = tl.load(clean_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            _kl_store_grads(
                grad_adv_ptr,
                grad_clean_ptr,
                offs,
                mask,
                tl.exp(lc - lse_c),
                tl.exp(la - lse_a),
                (lc - la) - offset,
                w,
                w_beta,
                label,
                HAS_Y,
                WRITE_CLEAN,
            )


def _check_labels(like: Tensor, y: Tensor | None) -> None:
    if y is not None:
        check_per_sample(like, torch.int64, y)


def kl_forward(
    logits_adv: Tensor, logits_clean: Tensor, y: Tensor | None, beta: float, flag: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """(loss_rows, stats): loss_rows[i] = CE_i [if y] + beta * KL_i (float32 (N,)); stats = (lse_c, lse_a, KL_i).
    flag: ORs 1 into it when a logit is NaN / Inf."""
    check_logits(logits_adv, logits_clean)
    _check_labels(logits_clean, y)
    check_flag(logits_clean, flag)
    n, c = logits_clean.shape
    loss_rows = torch.empty(n, dtype=torch.float32, device=logits_clean.device)
    stats = torch.empty((n, 3), dtype=torch.float32, device=logits_clean.device)
    if n == 0:
        return loss_rows, stats
    block, warps = row_loop_settings(c)
    _kl_fwd_kernel[(n,)](
        loss_rows,
        stats,
        logits_adv,
        logits_adv.stride(0),
        logits_clean,
        logits_clean.stride(0),
        logits_clean if y is None else y,
        loss_rows if flag is None else flag,
        float(beta),
        c,
        BLOCK=block,
        HAS_Y=y is not None,
        CHECK=flag is not None,
        num_warps=warps,
    )
    return loss_rows, stats


def kl_backward(
    weight_rows: Tensor,
    logits_adv: Tensor,
    logits_clean: Tensor,
    y: Tensor | None,
    beta: float,
    stats: Tensor,
    grad_adv: Tensor,
    grad_clean: Tensor | None,
) -> None:
    """grad_adv = w beta (p_a - p_c); grad_clean (when given) = w ((p_c - onehot(y)) [if y] + beta p_c (log p_c -
    log p_a - KL)), w = weight_rows, written in the logits' dtype."""
    check_logits(logits_adv, logits_clean)
    _check_labels(logits_clean, y)
    check_per_sample(logits_clean, torch.float32, weight_rows)
    n, c = logits_clean.shape
    if (
        stats.shape != (n, 3)
        or stats.dtype != torch.float32
        or not stats.is_contiguous()
        or stats.device != logits_clean.device
    ):
        raise ValueError(
            f"expected contiguous float32 stats of shape ({n}, 3) on {logits_clean.device}, got "
            f"{tuple(stats.shape)} {stats.dtype} on {stats.device}"
        )
    grads = (grad_adv,) if grad_clean is None else (grad_adv, grad_clean)
    check_rows(*grads)
    if (
        grad_adv.shape != logits_clean.shape
        or grad_adv.dtype != logits_clean.dtype
        or grad_adv.device != logits_clean.device
    ):
        raise ValueError(
            f"expected gradients like the logits, {tuple(logits_clean.shape)} {logits_clean.dtype} on "
            f"{logits_clean.device}, got {tuple(grad_adv.shape)} {grad_adv.dtype} on {grad_adv.device}"
        )
    if n == 0:
        return
    write_clean = grad_clean is not None
    grad_clean = grad_clean if write_clean else grad_adv
    block, warps = row_loop_settings(c)
    _kl_bwd_kernel[(n,)](
        grad_adv,
        grad_adv.stride(0),
        grad_clean,
        grad_clean.stride(0),
        logits_adv,
        logits_adv.stride(0),
        logits_clean,
        logits_clean.stride(0),
        logits_clean if y is None else y,
        weight_rows,
        stats,
        float(beta),
        c,
        BLOCK=block,
        HAS_Y=y is not None,
        WRITE_CLEAN=write_clean,
        ONE_BLOCK=c <= block,
        num_warps=warps,
    )
