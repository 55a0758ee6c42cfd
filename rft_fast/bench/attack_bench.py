"""`rft-fast bench attack`: APGD-CE throughput (images/s) of rft-fast against pyautoattack's APGDAttack and the
plain-PyTorch reference APGD, with the robust accuracy each one reaches, in one run.

Models are timm backbones with random weights; the labels are the model's own clean predictions, so every
point is attacked (clean accuracy 100%) by every implementation. Implementations (same norm, eps, steps,
restarts, one random start each):
- "rft-fast":    rft_fast.attacks.APGD, select="loss" (the training attack: highest-loss point, no clean forward)
- "rft-fast-aa": rft_fast.attacks.APGD, select="misclassified" (AutoAttack's semantics, clean forward included)
- "pyautoattack": pyautoattack's APGDAttack.perturb (AutoAttack's code)
- "reference":   rft_fast.reference.apgd_attack (plain PyTorch, select="loss")
Under --dtypes bfloat16 each implementation runs the model's forward/backward under bf16 autocast (rft-fast
through amp_dtype, the others through a wrapper); attack arithmetic stays float32 in all of them. Robust
accuracy is the float32 accuracy of the model on the returned points.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import torch
from torch import nn

from rft_fast import reference
from rft_fast.attacks import APGD
from rft_fast.bench import common
from rft_fast.modes import eval_mode

DEFAULT_MODELS = ("resnet50", "convnext_tiny", "vit_small_patch16_224")
IMPLS = ("rft-fast", "rft-fast-aa", "pyautoattack", "reference")
DTYPES = {"float32": None, "bfloat16": torch.bfloat16}
# fmt: off
COLUMNS = (
    ("model", "model", "<22"), ("dtype", "dtype", "<8"), ("impl", "impl", "<12"), ("batch", "batch", ">5"),
    ("size", "px", ">4"), ("median_s", "s/batch", ">8.3f"), ("images_per_s", "img/s", ">8.1f"),
    ("robust_acc", "rob.acc", ">7.3f"), ("vs_aa", "x AA", ">6.2f"), ("vs_aa_fp32", "x AA fp32", ">9.2f"),
)
# fmt: on


class _Autocast(nn.Module):
    """model under autocast, float32 logits out: how pyautoattack and the reference get the bf16 setting."""

    def __init__(self, model: nn.Module, dtype: torch.dtype | None) -> None:
        super().__init__()
        self.model, self.dtype = model, dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.dtype is None:
            return self.model(x)
        with torch.autocast(device_type=x.device.type, dtype=self.dtype):
            return self.model(x).float()


def available_impls() -> list[str]:
    try:
        import pyautoattack  # noqa: F401
    except ImportError:
        return [i for i in IMPLS if i != "pyautoattack"]
    return list(IMPLS)


def attack_fn(
    impl: str,
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    norm: str,
    eps: float,
    steps: int,
    restarts: int,
    amp_dtype: torch.dtype | None,
) -> Callable[[], torch.Tensor]:
    """A closure running one attack of `impl` on (x, y), model in eval mode; returns x_adv."""
    if impl in ("rft-fast", "rft-fast-aa"):
        attack = APGD(
            norm=norm,
            eps=eps,
            steps=steps,
            loss="ce",
            restarts=restarts,
            amp_dtype=amp_dtype,
            select="loss" if impl == "rft-fast" else "misclassified",
        )
        return lambda: attack(model, x, y)
    wrapped = _Autocast(model, amp_dtype)
    if impl == "pyautoattack":
        from pyautoattack.autopgd_base import APGDAttack

        aa = APGDAttack(
            wrapped, n_iter=steps, norm=norm, n_restarts=restarts, eps=eps, seed=0, loss="ce", device=x.device
        )

        def run_aa() -> torch.Tensor:
            with eval_mode(model):
                return aa.perturb(x, y)

        return run_aa
    if impl == "reference":

        def run_ref() -> torch.Tensor:
            with eval_mode(model):
                return reference.apgd_attack(wrapped, x, y, eps, norm, steps=steps, loss="ce", restarts=restarts)

        return run_ref
    raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")


def run(
    device: str = "cpu",
    models: tuple[str, ...] = DEFAULT_MODELS,
    batch: int = 128,
    image_size: int = 224,
    dtypes: tuple[str, ...] = ("float32", "bfloat16"),
    impls: tuple[str, ...] | None = None,
    norm: str = "Linf",
    eps: float = 4 / 255,
    steps: int = 10,
    restarts: int = 1,
    num_classes: int = 10,
    channels_last: bool = False,
    min_seconds: float = 0.0,
    min_reps: int = 3,
) -> dict[str, object]:

    dev = torch.device(device)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True  # same for every implementation
    chosen = list(impls or available_impls())
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    rows = []
    for name in models:
        with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
            torch.manual_seed(0)  # the same random weights in every run (pyautoattack reseeds the global RNG)
            model = common.make_model(name, image_size, num_classes, dev).eval().to(memory_format=fmt)
        gen = torch.Generator().manual_seed(0)
        x = torch.rand(batch, 3, image_size, image_size, generator=gen).to(dev).contiguous(memory_format=fmt)
        with torch.no_grad():
            y = model(x).argmax(1)  # clean accuracy 100%: every implementation attacks every point
        model_rows = []
        for dtype_name in dtypes:
            for impl in chosen:
                fn = attack_fn(
                    impl, model, x, y, norm=norm, eps=eps, steps=steps, restarts=restarts, amp_dtype=DTYPES[dtype_name]
                )
                seconds = common.time_fn(fn, dev, min_reps=min_reps, min_seconds=min_seconds)
                with torch.no_grad():
                    acc = (model(fn()).argmax(1) == y).float().mean().item()
                model_rows.append(
                    {
                        "model": name,
                        "dtype": dtype_name,
                        "impl": impl,
                        "batch": batch,
                        "size": image_size,
                        "median_s": seconds,
                        "images_per_s": batch / seconds,
                        "robust_acc": acc,
                    }
                )
        aa = {r["dtype"]: r["median_s"] for r in model_rows if r["impl"] == "pyautoattack"}
        for r in model_rows:
            r["vs_aa"] = aa[r["dtype"]] / r["median_s"] if r["dtype"] in aa else None
            r["vs_aa_fp32"] = aa["float32"] / r["median_s"] if "float32" in aa else None
        rows += model_rows
        del model
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    meta = common.environment(dev, " ".join(sys.argv))
    meta["attack"] = (
        f"APGD-CE {norm} eps={eps:.6g} steps={steps} restarts={restarts}; labels = clean predictions "
        f"of random-init timm models, {num_classes} classes; channels_last={channels_last}"
    )
    return {"meta": meta, "rows": rows}


def format_table(result: dict[str, object]) -> str:
    return common.format_table(result["meta"], result["rows"], COLUMNS) + f"\n{result['meta']['attack']}"
