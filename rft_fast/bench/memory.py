"""Peak-memory measurements for benchmarks: the CUDA allocator on GPU, saved activations anywhere."""
from __future__ import annotations

import weakref
from typing import Callable

import torch


def saved_activation_peak(fn: Callable[[], object]) -> int:
    """Peak bytes of tensors saved for backward that are alive at the same time while fn() runs.

    Measured with autograd's saved-tensor hooks: every tensor a graph saves is counted when saved and
    uncounted when the graph frees it. This is the memory TRADES' two graphs compete for, measured exactly
    on any device (CPU included); it leaves out parameters, gradients and transient workspace.
    """
    state = {"now": 0, "peak": 0}

    class _Saved:
        def __init__(self, t: torch.Tensor) -> None:
            self.t = t
            size = t.numel() * t.element_size()
            state["now"] += size
            state["peak"] = max(state["peak"], state["now"])
            weakref.finalize(self, lambda: state.__setitem__("now", state["now"] - size))

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
