"""`rft-fast bench train`: one adversarial training step (APGD-CE K steps + loss + backward + AdamW step),
rft-fast's training criterion vs the plain reference loop (rft_fast.reference.train_step), per model x loss x
dtype, in one run.

rft-fast: the criterion `rft-fast train` uses (APGD on the fused ops; TRADES memory-saving). reference: eager
APGD and the standard two-graph TRADES. bf16 = the model under torch.autocast for both. default: rft-fast as a
default TrainConfig runs it on this device (amp "auto" resolved by rft_fast.precision: bf16 where the device has
native bf16, else float32), its "x ref" against the reference's float32 step. Images/s = batch /
median step time; peak memory: the CUDA allocator's peak on GPU, the saved-activation peak everywhere.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable

import torch
from torch import nn

from rft_fast import precision, reference
from rft_fast.bench import common
from rft_fast.bench.memory import cuda_peak, saved_activation_peak
from rft_fast.train.config import TrainConfig
from rft_fast.train.criterion import make_criterion

DEFAULT_MODELS = ("resnet50", "convnext_tiny", "vit_small_patch16_224")
LOSSES = ("classic_at", "trades")  # the registry losses (train.loss_registry) that reference.train_step mirrors
IMPLS = ("rft-fast", "reference")
DTYPES = {"float32": None, "bfloat16": torch.bfloat16}
# fmt: off
COLUMNS = (
    ("model", "model", "<22"), ("loss", "loss", "<10"), ("dtype", "dtype", "<8"), ("impl", "impl", "<9"),
    ("batch", "batch", ">5"), ("size", "px", ">4"), ("median_s", "step s", ">8.3f"),
    ("images_per_s", "img/s", ">8.1f"), ("speedup", "x ref", ">6.2f"), ("saved_gb", "saved GB", ">9.3f"),
    ("cuda_peak_gb", "cuda GB", ">8.3f"), ("mem_ratio", "mem/ref", ">8.3f"),
)
# fmt: on


def defaults(device: torch.device) -> tuple[int, int]:
    """(batch, image size): the issue's 64 x 224 px on GPU; 8 x 64 px on CPU, where 224 px takes minutes."""
    return (64, 224) if device.type == "cuda" else (8, 64)


def step_fn(
    impl: str, loss: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, amp_dtype: torch.dtype | None
) -> Callable[[], None]:
    """One full training step of `impl` on a fixed batch (the optimizer is AdamW with a tiny lr, so the model
    stays put across repetitions in practice)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-8, betas=(0.9, 0.95))
    autocast = (lambda: torch.autocast(x.device.type, dtype=amp_dtype)) if amp_dtype else contextlib.nullcontext
    if impl == "reference":

        def run() -> None:
            with autocast():
                reference.train_step(model, optimizer, x, y, loss=loss, eps=4 / 255, steps=steps)

        return run
    criterion = make_criterion(
        TrainConfig(backbone="bench", dataset="bench", loss=loss, attack_steps=steps, random_init=True)
    )

    def run() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast():
            value = criterion(model, x, y)
        value.backward()
        optimizer.step()

    return run


def run(
    device: str = "cpu",
    models: tuple[str, ...] = DEFAULT_MODELS,
    batch: int | None = None,
    image_size: int | None = None,
    attack_steps: int = 10,
    dtypes: tuple[str, ...] = tuple(DTYPES),
    losses: tuple[str, ...] = LOSSES,
    min_seconds: float = 0.0,
    min_reps: int = 2,
) -> dict[str, object]:
    dev = torch.device(device)
    batch, image_size = batch or defaults(dev)[0], image_size or defaults(dev)[1]
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 3, image_size, image_size, generator=gen).to(dev)
    y = torch.randint(0, 10, (batch,), generator=gen).to(dev)
    chosen = precision.resolve("auto", dev)  # what a default TrainConfig computes in on this device
    rows = []

    def measure(
        name: str, model: nn.Module, impl: str, loss: str, dtype: str, amp_dtype: torch.dtype | None, ref: tuple | None
    ) -> tuple:
        """Times one (model, impl, loss, dtype) step and appends its row; returns `ref` or, if None, this one."""
        step = step_fn("rft-fast" if impl == "default" else impl, loss, model, x, y, attack_steps, amp_dtype)
        seconds = common.time_fn(step, dev, min_reps=min_reps, min_seconds=min_seconds)
        saved = saved_activation_peak(step)
        peak = cuda_peak(step, dev) if dev.type == "cuda" else None
        mem = peak if peak is not None else saved
        ref = ref or (seconds, mem)
        row = {"model": name, "loss": loss, "dtype": dtype, "impl": impl, "batch": batch, "size": image_size}
        row.update(median_s=seconds, images_per_s=batch / seconds, speedup=ref[0] / seconds, saved_gb=saved / 1e9)
        row.update(cuda_peak_gb=None if peak is None else peak / 1e9, mem_ratio=mem / ref[1])
        rows.append(row)
        return ref

    for name in models:
        model = common.make_model(name, image_size, 10, dev)
        for loss in losses:
            fp32_ref = None
            for dtype in dtypes:
                ref = measure(name, model, "reference", loss, dtype, DTYPES[dtype], None)
                fp32_ref = ref if dtype == "float32" else fp32_ref
                measure(name, model, "rft-fast", loss, dtype, DTYPES[dtype], ref)
            # the default configuration (amp auto resolved here) against the reference eager float32 loop
            fp32_ref = fp32_ref or measure(name, model, "reference", loss, "float32", None, None)
            measure(name, model, "default", loss, chosen.dtype_name, chosen.dtype, fp32_ref)
    meta = common.environment(dev, " ".join(sys.argv))
    meta["default_precision"] = chosen.record()
    meta["step"] = f"APGD-CE Linf 4/255, {attack_steps} steps, no random start; loss + backward + AdamW step"
    meta["memory_measure"] = (
        "cuda max_memory_allocated above pre-step" if dev.type == "cuda" else "saved-activation peak (autograd hooks)"
    )
    return {"meta": meta, "rows": rows}


def format_table(result: dict[str, object]) -> str:
    return common.format_table(result["meta"], result["rows"], COLUMNS)
