"""The bad-number rule of every backend (docs/kernels.md, rft_fast.reference): what a kernel poisons with NaN.

A kernel never uses a NaN / +-Inf input entry or an invalid per-row eps / step as a number: the outputs it
feeds are written as NaN. These helpers decide "usable" where the values are read, so the rule costs no extra
pass over the data. NaN fails every comparison, which is what makes both tests catch it.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _finite(v):
    """v is neither NaN nor +-Inf."""
    return tl.abs(v) < float("inf")


@triton.jit
def _positive(v):
    """A per-row eps / step is usable: finite and > 0."""
    return (v > 0.0) & (v < float("inf"))


@triton.jit
def _poison(ok, v):
    """v where ok, NaN elsewhere."""
    return tl.where(ok, v, float("nan"))
