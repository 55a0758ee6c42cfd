"""`rft-fast bench trades`: one TRADES step (attack + loss + backward), standard vs memory-saving.

Per model: median step time, peak memory and, with a memory cap, the largest batch that fits (doubling then
bisection). Peak memory is the CUDA allocator's peak above the pre-step allocation on GPU; on CPU (and also
reported on GPU) it is the peak of activations saved for backward alive at once (autograd saved-tensor hooks),
the part of memory the two TRADES graphs compete for. --amp bf16 / fp16 runs the step (attack and loss; backward
after it, as a training loop does) under torch.autocast in that dtype; the standard variant's saved weight casts
count like any saved tensor, and memory-saving TRADES saves none (losses._RecastParameterCopies).
"""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import Callable

import torch

from rft_fast import reference
from rft_fast.bench import common
from rft_fast.bench.memory import cuda_peak, saved_activation_peak
from rft_fast.losses import TRADESLoss

DEFAULT_MODELS = ("resnet50", "convnext_tiny", "vit_small_patch16_224")
# fmt: off
COLUMNS = (
    ("model", "model", "<22"), ("amp", "amp", "<4"), ("variant", "variant", "<13"), ("batch", "batch", ">5"),
    ("size", "px", ">4"), ("median_s", "step s", ">8.3f"), ("saved_gb", "saved GB", ">9.3f"),
    ("cuda_peak_gb", "cuda GB", ">8.3f"), ("mem_ratio", "mem/std", ">8.3f"), ("time_ratio", "time/std", ">9.3f"),
    ("max_batch", "max batch", ">9"),
)
# fmt: on
VARIANTS = {"standard": False, "memory-saving": True}
AMP_DTYPES: dict[str, torch.dtype | None] = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def amp_dtype(amp: str) -> torch.dtype | None:
    """The autocast dtype of an --amp name (None: no autocast, float32)."""
    if amp not in AMP_DTYPES:
        raise ValueError(f"amp must be one of {sorted(AMP_DTYPES)}, got {amp!r}")
    return AMP_DTYPES[amp]


def step_fn(
    model, criterion, batch: int, image_size: int, device: torch.device, amp: str = "none"
) -> Callable[[], None]:
    """One step: zero grads, criterion(model, x, y) under autocast in AMP_DTYPES[amp] (none: float32), backward."""
    dtype = amp_dtype(amp)
    gen = torch.Generator().manual_seed(batch)
    x = torch.rand(batch, 3, image_size, image_size, generator=gen).to(device)
    y = torch.randint(0, 10, (batch,), generator=gen).to(device)

    def run() -> None:
        model.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext():
            loss = criterion(model, x, y)
        loss.backward()

    return run


def _fits(model, criterion, batch, image_size, device, cap_bytes: int, amp: str) -> bool:
    step = step_fn(model, criterion, batch, image_size, device, amp)
    try:
        peak = cuda_peak(step, device) if device.type == "cuda" else saved_activation_peak(step)
    except torch.cuda.OutOfMemoryError:
        return False
    finally:
        model.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return peak <= cap_bytes


def largest_batch(
    model, criterion, image_size: int, device: torch.device, cap_bytes: int, limit: int = 4096, amp: str = "none"
) -> int:
    """The largest batch whose step peak stays under cap_bytes (0 if even batch 1 does not)."""
    fits = functools.partial(
        _fits, model, criterion, image_size=image_size, device=device, cap_bytes=cap_bytes, amp=amp
    )
    lo, hi = 0, 1
    while hi <= limit and fits(batch=hi):
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(batch=mid) else (lo, mid)
    return lo


def run(
    device: str = "cpu",
    models: tuple[str, ...] = DEFAULT_MODELS,
    batch: int = 64,
    image_size: int = 224,
    attack_steps: int = 10,
    max_memory_gb: float | None = None,
    min_seconds: float = 0.0,
    amp: str = "none",
) -> dict[str, object]:
    """Rows per model x variant; amp: "none" (float32) | "bf16" | "fp16" autocast around attack and loss."""
    amp_dtype(amp)  # refuse a bad name before building models
    dev = torch.device(device)
    rows = []
    for name in models:
        model = common.make_model(name, image_size, 10, dev)
        measured = {}
        for variant, memory_saving in VARIANTS.items():
            attack = functools.partial(
                reference.pgd_attack, eps=8 / 255, step_size=2 / 255, steps=attack_steps, loss="kl"
            )
            criterion = TRADESLoss(attack, beta=1.0, memory_saving=memory_saving)
            step = step_fn(model, criterion, batch, image_size, dev, amp)
            seconds = common.time_fn(step, dev, min_reps=2, min_seconds=min_seconds)
            saved = saved_activation_peak(step)
            peak = cuda_peak(step, dev) if dev.type == "cuda" else None
            max_batch = None
            if max_memory_gb is not None:
                search_attack = functools.partial(attack, steps=1)  # the attack's graph never exceeds one branch
                max_batch = largest_batch(
                    model,
                    TRADESLoss(search_attack, memory_saving=memory_saving),
                    image_size,
                    dev,
                    int(max_memory_gb * 1e9),
                    amp=amp,
                )
            measured[variant] = (seconds, peak if peak is not None else saved)
            std_s, std_mem = measured["standard"]
            rows.append(
                {
                    "model": name,
                    "amp": amp,
                    "variant": variant,
                    "batch": batch,
                    "size": image_size,
                    "median_s": seconds,
                    "saved_gb": saved / 1e9,
                    "cuda_peak_gb": None if peak is None else peak / 1e9,
                    "mem_ratio": measured[variant][1] / std_mem,
                    "time_ratio": seconds / std_s,
                    "max_batch": max_batch,
                }
            )
    meta = common.environment(dev, " ".join(sys.argv))
    meta["memory_measure"] = (
        "cuda max_memory_allocated above pre-step" if dev.type == "cuda" else "saved-activation peak (autograd hooks)"
    )
    meta["amp"] = amp
    meta["attack"] = f"PGD-KL (rft_fast.reference.pgd_attack), {attack_steps} steps, Linf 8/255"
    return {"meta": meta, "rows": rows}


def format_table(result: dict[str, object]) -> str:
    return common.format_table(result["meta"], result["rows"], COLUMNS)
