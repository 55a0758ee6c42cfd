"""The reference TRADES KL and objective (the official TRADES code's quantities), differentiable by autograd."""

from __future__ import annotations

import torch
from torch import Tensor

from rft_fast.reference.projection import cast


def trades_kl(logits_adv: Tensor, logits_clean: Tensor, reduction: str = "mean") -> Tensor:
    """KL(softmax(clean) || softmax(adv)) summed over classes; mean over the batch by default.

    The quantity of the official TRADES code: KLDivLoss(reduction="sum")(log_softmax(adv), softmax(clean)) / N.
    Differentiable in both arguments. reduction: "mean" | "sum" | "none" (per sample).
    """
    la, lc = cast(logits_adv, logits_clean)
    log_pc = torch.log_softmax(lc, dim=1)
    kl = (log_pc.exp() * (log_pc - torch.log_softmax(la, dim=1))).sum(dim=1)
    return _reduce(kl, reduction)


def trades_objective(
    logits_clean: Tensor, logits_adv: Tensor, y: Tensor, beta: float, reduction: str = "mean"
) -> Tensor:
    """TRADES' training loss: CE(clean, y) + beta * KL(softmax(clean) || softmax(adv))."""
    lc = cast(logits_clean)[0]
    ce = torch.nn.functional.cross_entropy(lc, y, reduction="none")
    return _reduce(ce + beta * trades_kl(logits_adv, logits_clean, reduction="none"), reduction)


def _reduce(per_sample: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return per_sample.mean()
    if reduction == "sum":
        return per_sample.sum()
    return per_sample
