"""Step-time overhead of the regularizers: one training step (attack + loss + backward + optimizer step) of the
plain Classic AT / TRADES criterion against the same criterion with GRACE or the consistency loss.

Variants per base loss:
  plain        base criterion, AdamW step
  gram         GraceLoss(base) (the Gram term and the shifted view), AdamW step
  grace        GraceLoss(base) with CurvatureSAM(AdamW): the second backward at w + e reuses the attack
  consistency  ConsistencyLoss(base) (two augmented views), AdamW step
The overhead column is the median step time over the plain variant's.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import torch
from torch import nn

from rft_fast.attacks import APGD
from rft_fast.bench import common
from rft_fast.losses import ClassicATLoss, TRADESLoss
from rft_fast.regularizers import ConsistencyLoss, GraceLoss
from rft_fast.train.grace import CurvatureSAM, preserved_buffers

LOSSES = ("classic_at", "trades")  # the registry losses (train.loss_registry) that GRACE and consistency wrap
VARIANTS = ("plain", "gram", "grace", "consistency")
# fmt: off
COLUMNS = (
    ("model", "model", "<14"), ("loss", "loss", "<10"), ("variant", "variant", "<12"), ("batch", "batch", ">5"),
    ("size", "px", ">4"), ("median_s", "step s", ">8.4f"), ("images_per_s", "img/s", ">8.1f"),
    ("overhead", "x plain", ">7.2f"),
)
# fmt: on


def step_fn(
    variant: str, loss: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, attack_steps: int
) -> Callable[[], None]:
    """One training step of `variant` on a fixed batch (AdamW, lr 1e-8: the model stays put across repetitions)."""
    attack = APGD(norm="Linf", eps=4 / 255, steps=attack_steps, random_start=False)
    base = ClassicATLoss(attack) if loss == "classic_at" else TRADESLoss(attack, beta=6.0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-8)
    if variant == "grace":
        grace, sam = GraceLoss(base), CurvatureSAM(optimizer)

        def run_grace() -> None:
            sam.zero_grad(set_to_none=True)
            b = grace.batch(model, x, y)
            grace.objective(model, b).backward()

            def closure() -> None:
                with preserved_buffers(model):
                    grace.objective(model, b).backward()

            sam.step(closure)

        return run_grace
    criterion = {"plain": base, "gram": GraceLoss(base), "consistency": ConsistencyLoss(base)}[variant]

    def run() -> None:
        optimizer.zero_grad(set_to_none=True)
        criterion(model, x, y).backward()
        optimizer.step()

    return run


def run(
    device: str = "cpu",
    model: str = "test_resnet",
    batch: int = 16,
    image_size: int = 32,
    attack_steps: int = 5,
    losses: tuple[str, ...] = LOSSES,
    variants: tuple[str, ...] = VARIANTS,
    min_reps: int = 5,
    min_seconds: float = 1.0,
) -> dict[str, object]:
    """{"meta": environment, "rows": one row per (loss, variant)}; `model` is a timm name (random init)."""
    unknown = [v for v in variants if v not in VARIANTS] + [loss for loss in losses if loss not in LOSSES]
    if unknown:
        raise ValueError(f"unknown variants/losses {unknown}: variants are {VARIANTS}, losses {LOSSES}")
    dev = torch.device(device)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 3, image_size, image_size, generator=gen).to(dev)
    y = torch.randint(0, 10, (batch,), generator=gen).to(dev)
    net = common.make_model(model, image_size, 10, dev)
    rows = []
    for loss in losses:
        plain = None
        for variant in ("plain",) + tuple(v for v in variants if v != "plain"):
            seconds = common.time_fn(
                step_fn(variant, loss, net, x, y, attack_steps), dev, min_reps=min_reps, min_seconds=min_seconds
            )
            plain = plain or seconds
            if variant in variants:
                rows.append(
                    {
                        "model": model,
                        "loss": loss,
                        "variant": variant,
                        "batch": batch,
                        "size": image_size,
                        "median_s": seconds,
                        "images_per_s": batch / seconds,
                        "overhead": seconds / plain,
                    }
                )
    meta = common.environment(dev, " ".join(sys.argv))
    meta["step"] = f"APGD-CE Linf 4/255, {attack_steps} steps, no random start; loss + backward + AdamW step"
    return {"meta": meta, "rows": rows}


def format_table(result: dict[str, object]) -> str:
    return common.format_table(result["meta"], result["rows"], COLUMNS)
