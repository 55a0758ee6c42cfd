"""Memory layout of rft_fast.ops: every image tensor reaches a kernel as (N, D) contiguous rows in its memory
order (NHWC order for channels_last), and outputs are allocated in that order, so NCHW and channels_last
inputs both run without a copy."""

from __future__ import annotations

import torch
from torch import Tensor


def memory_format(t: Tensor) -> torch.memory_format:
    if t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def _rows(t: Tensor, fmt: torch.memory_format) -> Tensor:
    """(N, D) view of t in memory order (NHWC order for channels_last); copies only if t is not dense in fmt."""
    if not t.is_contiguous(memory_format=fmt):
        t = t.contiguous(memory_format=fmt)
    if fmt == torch.channels_last:
        t = t.permute(0, 2, 3, 1)
    return t.flatten(1)  # (N, D), also for no elements


class Layout:
    """Flattens same-shaped tensors to (N, D) rows sharing one memory order and allocates outputs in it."""

    def __init__(self, like: Tensor) -> None:
        self.like = like
        self.fmt = memory_format(like)

    def rows(self, t: Tensor) -> Tensor:
        return _rows(t, self.fmt)

    def empty(self) -> tuple[Tensor, Tensor]:
        out = torch.empty_like(self.like, memory_format=self.fmt)
        return out, _rows(out, self.fmt)
