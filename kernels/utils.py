"""Launch heuristics (block sizes, warps, grids) and host-side layout checks, in one place for every kernel file."""

from __future__ import annotations

from typing import NamedTuple

import torch
import triton
from torch import Tensor

# Elementwise kernels (Linf): elements per program of the flat 1-D grid.
ELEMENTWISE_BLOCK = 2048
# Chunked row reductions (L2 steps): columns per program of the (N, chunks) grid.
MAX_CHUNK_BLOCK = 4096
# Per-row searches (L2 projection, L1): columns per loop iteration and candidates per pass. A pass tests
# SEARCH_K bit patterns at once ([BLOCK, K] comparisons), narrowing the bracket by a factor of SEARCH_K.
SEARCH_BLOCK = 1024
SEARCH_K = 16
# Per-row loops over the classes (TRADES KL): columns per loop iteration, and columns per warp. Rows of up
# to 4096 classes take one iteration; longer ones (ImageNet-21k: 21,843) loop over 4096-wide pieces.
MAX_ROW_BLOCK = 4096
ROW_COLUMNS_PER_WARP = 256


def next_power_of_2(n: int) -> int:
    return triton.next_power_of_2(max(int(n), 1))


def num_warps_for(block: int) -> int:
    """Warps for a program touching `block` elements (Liger-Kernel's calculate_settings rule)."""
    if block >= 32768:
        return 32
    if block >= 8192:
        return 16
    if block >= 2048:
        return 8
    return 4


def chunk_settings(d: int) -> tuple[int, int, int]:
    """(BLOCK, number of chunks, chunks rounded up to a power of 2) splitting a row of d columns."""
    block = min(MAX_CHUNK_BLOCK, next_power_of_2(d))
    chunks = triton.cdiv(d, block)
    return block, chunks, next_power_of_2(chunks)


def search_settings(d: int) -> tuple[int, int]:
    """(BLOCK, num_warps) of a per-row search program: about 64 values of its [BLOCK, SEARCH_K] tile a thread."""
    block = min(SEARCH_BLOCK, next_power_of_2(d))
    return block, min(8, max(4, block * SEARCH_K // (32 * 64)))


def row_loop_settings(c: int) -> tuple[int, int]:
    """(BLOCK, num_warps) of a one-program-per-row loop over c columns: one warp per 256 columns, 1 to 8."""
    block = min(MAX_ROW_BLOCK, next_power_of_2(c))
    return block, min(8, max(1, block // ROW_COLUMNS_PER_WARP))


ROW_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def check_rows(*rows: Tensor) -> None:
    """The kernels take (N, D) row-contiguous tensors of one shape, dtype and device."""
    first = rows[0]
    if first.dtype not in ROW_DTYPES:
        raise TypeError(f"the kernels take {ROW_DTYPES} tensors, got {first.dtype}")
    for t in rows:
        if t.dim() != 2 or not t.is_contiguous() or t.shape != first.shape or t.dtype != first.dtype:
            raise ValueError(
                f"expected contiguous (N, D) rows like {tuple(first.shape)} {first.dtype}, got "
                f"{tuple(t.shape)} {t.dtype} contiguous={t.is_contiguous()}"
            )
        if t.device != first.device:
            raise ValueError(f"all tensors must be on {first.device}, got {t.device}")


def check_per_sample(like: Tensor, dtype: torch.dtype, *values: Tensor) -> None:
    """Per-row values (eps, step: float32; keep: int64): contiguous (N,) tensors on like's device."""
    n = like.shape[0]
    for t in values:
        if t.shape != (n,) or not t.is_contiguous() or t.dtype != dtype or t.device != like.device:
            raise ValueError(
                f"expected a contiguous {dtype} tensor of shape ({n},) on {like.device}, got "
                f"{tuple(t.shape)} {t.dtype} on {t.device}"
            )


def check_flag(like: Tensor, flag: Tensor | None) -> None:
    """The data-check flag: None, or an int32 (1,) tensor on like's device that the kernels OR their bits into."""
    if flag is not None and (flag.shape != (1,) or flag.dtype != torch.int32 or flag.device != like.device):
        raise ValueError(
            f"expected flag None or an int32 tensor of shape (1,) on {like.device}, got "
            f"{tuple(flag.shape)} {flag.dtype} on {flag.device}"
        )


def check_logits(*logits: Tensor) -> None:
    """(N, C) logits of one shape, dtype and device with unit column stride (any row stride)."""
    first = logits[0]
    if first.dtype not in ROW_DTYPES:
        raise TypeError(f"the kernels take {ROW_DTYPES} tensors, got {first.dtype}")
    for t in logits:
        if t.dim() != 2 or t.shape != first.shape or t.dtype != first.dtype or (t.shape[1] > 1 and t.stride(1) != 1):
            raise ValueError(
                f"expected (N, C) logits like {tuple(first.shape)} {first.dtype} with stride(1) == 1, "
                f"got {tuple(t.shape)} {t.dtype} strides {tuple(t.stride())}"
            )
        if t.device != first.device:
            raise ValueError(f"all tensors must be on {first.device}, got {t.device}")


class StepCall(NamedTuple):
    """What every norm module's `step(call)` receives (kernels/__init__.py builds it): the one signature of the
    projected-step launchers, so dispatch is a table. A norm ignores what its rule does not read."""

    out: Tensor  # [N, D] the step's point z (pgd_step's result)
    x_next: Tensor  # [N, D] APGD's next point (apgd only; out itself for a plain step)
    x_adv: Tensor  # [N, D]
    x_prev: Tensor  # [N, D] APGD's previous point (apgd only)
    x: Tensor  # [N, D] the clean rows (the ball's centres)
    grad: Tensor  # [N, D]
    step_size: Tensor  # [N] float32
    eps: Tensor  # [N] float32
    keep: Tensor  # [N] int64: L1's top-k size
    momentum: float  # APGD's alpha (apgd only)
    apgd: bool
    flag: Tensor | None  # [1] int32: the data-check bits are ORed into it (None: no checks)
