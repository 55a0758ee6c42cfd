"""K-ary search over float32 bit patterns: the exact per-row thresholds of the L2 and L1 kernels.

Non-negative float32 values order like their int32 bit patterns, so the largest (or smallest) float where a
monotone predicate holds is found by searching integers ("ranks"). A pass tests K candidate ranks spread
over the bracket with one read of the row ([BLOCK, K] comparisons) and keeps the sub-bracket where the
predicate flips, so a 31-bit range takes ceil(31 / log2 K) passes (8 for K = 16) and the result is exact.
The caller loops `while lo < hi` around its own row pass:

    r = _kary_candidates(lo, hi, K)       # [K] ranks in (lo, hi]
    ok = <predicate at r, one pass over the row>
    lo, hi = _kary_narrow(lo, hi, r, ok)
"""

from __future__ import annotations

import triton
import triton.language as tl

ONE_BITS = tl.constexpr(0x3F800000)  # bit pattern of 1.0
INF_BITS = tl.constexpr(0x7F800000)  # bit pattern of +inf, the largest non-NaN pattern


@triton.jit
def _kary_candidates(lo, hi, K: tl.constexpr):
    """K int32 ranks lo < r_1 <= ... <= r_K = hi spread evenly over (lo, hi] (repeats once hi - lo < K)."""
    j = tl.arange(0, K).to(tl.int64) + 1
    return (lo + ((hi - lo).to(tl.int64) * j + (K - 1)) // K).to(tl.int32)


@triton.jit
def _kary_narrow(lo, hi, r, ok):
    """The bracket [lo, hi] of the largest rank where the predicate holds, given ok = predicate(r).

    The predicate holds at lo and is monotone (true up to some rank, false above it).
    """
    return tl.max(tl.where(ok, r, lo), axis=0), tl.min(tl.where(ok, hi, r - 1), axis=0)
