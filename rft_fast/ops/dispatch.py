"""The one backend dispatch point of rft_fast.ops: which backends run here, which one a call gets, and the
kernel function it calls.

Backends: "triton" (rft_fast.kernels; on CPU only under TRITON_INTERPRET=1), "cpp" (rft_fast._C: C++ on CPU,
CUDA on GPU), "torch" (eager, rft_fast.reference) and "auto" (the first of `backends(device)` that takes the
input dtype). Both kernel backends export the same functions with the same arguments (docs/kernels.md); only
the norm is named differently (a string for Triton, an int for C++: `norm_arg`).
"""

from __future__ import annotations

import functools
import importlib
import os
from collections.abc import Callable
from types import ModuleType

import torch
from torch import Tensor

BACKENDS = ("triton", "cpp", "torch")
KERNEL_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_NORM_ID = {"Linf": 0, "L2": 1, "L1": 2}


@functools.cache
def _cpp() -> ModuleType | None:
    try:
        return importlib.import_module("rft_fast._C")
    except ImportError:
        return None


@functools.cache
def _triton() -> ModuleType | None:
    try:
        return importlib.import_module("rft_fast.kernels")
    except ImportError:
        return None


def _triton_interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


# The C++ extension has CUDA kernels for the projected steps only; its KL kernels are CPU-only.
_CUDA_CPP_OPS = ("project", "pgd_step", "apgd_step")


def backends(device: torch.device | str, op: str = "pgd_step") -> list[str]:
    """Backends that can run `op` on `device` here, fastest first."""
    dev = torch.device(device)
    found = []
    if dev.type == "cuda":
        if torch.cuda.is_available() and _triton() is not None:
            found.append("triton")
        if _cpp() is not None and _cpp().has_cuda and op in _CUDA_CPP_OPS:
            found.append("cpp")
        found.append("torch")
    elif dev.type == "cpu":
        if _cpp() is not None:
            found.append("cpp")
        found.append("torch")
        if _triton_interpreted() and _triton() is not None:
            found.append("triton")
    else:
        found.append("torch")
    return found


def pick_backend(backend: str, t: Tensor, op: str = "pgd_step") -> str:
    available = backends(t.device, op)
    if backend == "auto":
        usable = [b for b in available if b == "torch" or t.dtype in KERNEL_DTYPES]
        return usable[0]
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {('auto',) + BACKENDS}, got {backend!r}")
    if backend not in available:
        raise ValueError(f"backend {backend!r} is not available on {t.device}; available: {available}")
    if backend != "torch" and t.dtype not in KERNEL_DTYPES:
        raise TypeError(f"backend {backend!r} takes float32/bfloat16/float16 tensors, got {t.dtype}")
    return backend


def norm_arg(backend: str, norm: str) -> str | int:
    return _NORM_ID[norm] if backend == "cpp" else norm


def kernel(backend: str, name: str) -> Callable[..., None]:
    module = _cpp() if backend == "cpp" else _triton()
    return getattr(module, name)
