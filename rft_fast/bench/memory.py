"""Peak-memory measurements for benchmarks: the CUDA allocator on GPU, saved activations anywhere."""

from __future__ import annotations

import weakref
from collections.abc import Callable

import torch


def saved_activation_peak(fn: Callable[[], object]) -> int:
    """Peak bytes of activations saved for backward that are alive at the same time while fn() runs.

    Measured with autograd's saved-tensor hooks: a storage is counted when a graph first saves a tensor on it
    and uncounted when the last graph holding it frees it, so views and tensors saved by several nodes count
    once. Leaf tensors that require grad (parameters) and views of them are left out: they exist with or
    without a graph. A parameter's low-precision copy under autocast is not a leaf: when a graph saves it, it
    counts like any activation (the standard TRADES graph saves one per weight). Hooks pushed inside fn that
    pass tensors on to these (memory-saving TRADES' recompute does) keep them counted; a tensor such hooks store
    as a recipe instead (its weight casts, redone in backward) holds no memory and is not counted. This is the
    memory TRADES' two graphs compete for, measured exactly on any device (CPU included); it leaves out
    parameters, gradients and transient workspace.
    """
    state = {"now": 0, "peak": 0}
    holders: dict[int, int] = {}

    def release(key: int, size: int) -> None:
        holders[key] -= 1
        if holders[key] == 0:
            del holders[key]
            state["now"] -= size

    class _Saved:
        def __init__(self, t: torch.Tensor) -> None:
            self.t = t
            base = t if t._base is None else t._base
            if base.is_leaf and base.requires_grad:  # a parameter or a view of one (e.g. a Linear's weight.t())
                return
            storage = t.untyped_storage()
            key, size = storage.data_ptr(), storage.nbytes()
            if key not in holders:
                holders[key] = 0
                state["now"] += size
                state["peak"] = max(state["peak"], state["now"])
            holders[key] += 1
            weakref.finalize(self, release, key, size)

    with torch.autograd.graph.saved_tensors_hooks(_Saved, lambda saved: saved.t):
        fn()
    return state["peak"]


def cuda_peak(fn: Callable[[], object], device: torch.device) -> int:
    """Peak bytes allocated on `device` while fn() runs, above what was allocated before."""
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) - before
