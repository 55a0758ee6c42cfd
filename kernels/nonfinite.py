"""The bad-number rule of every backend (docs/kernels.md, rft_fast.reference): what a kernel poisons with NaN.

A kernel never uses a NaN / +-Inf input entry or an invalid per-row eps / step as a number: the outputs it
feeds are written as NaN. These helpers decide "usable" where the values are read, so the rule costs no extra
pass over the data. NaN fails every comparison, which is what makes both tests catch it.

Data checks (CHECK=True, a call with a flag): each program ORs check bits into the int32 flag, from the same
predicates, with one atomic only when a bit is set: 1 (the rule fired for an output it wrote), 2 (an x entry it
read lies outside [0, 1]). rft_fast.ops reads the flag once per call.
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


@triton.jit
def _any(c):
    """1 if any entry of the block c is true, else 0 (int32)."""
    return tl.max(c.to(tl.int32), axis=0)


@triton.jit
def _outside_box(x, mask):
    """1 if a float32 x entry of the block (under mask) lies outside [0, 1] or is NaN, else 0 (int32). Tested on
    the bits, as -0 or a non-negative pattern up to that of 1.0, so that no flush of subnormals changes it."""
    bits = x.to(tl.int32, bitcast=True)
    inside = ((bits >= 0) & (bits <= 0x3F800000)) | (bits == -2147483648)
    return _any(mask & ~inside)


@triton.jit
def _report(flag_ptr, bad, outside):
    """ORs the check bits into *flag_ptr: 1 if bad (the rule fired), 2 if outside (int32 1: x left [0, 1])."""
    bits = bad.to(tl.int32) | (outside * 2)
    tl.atomic_or(flag_ptr, bits, mask=bits != 0)
