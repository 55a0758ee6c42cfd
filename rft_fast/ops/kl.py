"""The TRADES ops: trades_kl and trades_objective, one autograd.Function over a kernel backend's fused forward
and backward (the torch backend is rft_fast.reference, differentiated by autograd). check=True on a kernel
backend: the forward kernel flags non-finite logits in its own pass (rft_fast.ops.arguments.new_flag)."""

from __future__ import annotations

import torch
from torch import Tensor

from rft_fast import reference
from rft_fast.ops.arguments import check_beta, check_logits, new_flag, raise_if_flagged
from rft_fast.ops.dispatch import kernel, pick_backend

REDUCTIONS = ("mean", "sum", "none")


def _logit_rows(t: Tensor) -> Tensor:
    return t if t.stride(1) == 1 else t.contiguous()


def _reduce_rows(rows: Tensor, reduction: str) -> Tensor:
    return rows.mean() if reduction == "mean" else rows.sum() if reduction == "sum" else rows


class _TradesObjective(torch.autograd.Function):
    """CE_i [if y] + beta * KL_i per row through a kernel backend; fused backward for both logits."""

    @staticmethod
    def forward(ctx, logits_adv, logits_clean, y, beta, reduction, backend, flag):  # type: ignore[override]
        la, lc = _logit_rows(logits_adv.detach()), _logit_rows(logits_clean.detach())
        rows, stats = kernel(backend, "kl_forward")(la, lc, y, beta, flag)
        ctx.save_for_backward(la, lc, stats, *(() if y is None else (y,)))
        ctx.meta = (beta, reduction, backend, y is not None)
        return _reduce_rows(rows, reduction)

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        beta, reduction, backend, has_y = ctx.meta
        la, lc, stats, *rest = ctx.saved_tensors
        y = rest[0] if has_y else None
        n = la.shape[0]
        weight = grad_out.float().expand(n) / (n if reduction == "mean" else 1)
        grad_adv = torch.empty_like(la, memory_format=torch.contiguous_format)
        grad_clean = torch.empty_like(lc, memory_format=torch.contiguous_format) if ctx.needs_input_grad[1] else None
        kernel(backend, "kl_backward")(weight.contiguous(), la, lc, y, beta, stats, grad_adv, grad_clean)
        return (grad_adv if ctx.needs_input_grad[0] else None), grad_clean, None, None, None, None, None


def _objective(logits_adv, logits_clean, y, beta, reduction, backend, check):
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    beta = check_beta(beta)
    check_logits(False, y, logits_adv=logits_adv, logits_clean=logits_clean)
    be = pick_backend(backend, logits_adv, "trades_kl")

    def data_checks() -> None:
        check_logits(True, y, logits_adv=logits_adv, logits_clean=logits_clean)

    if check and (be == "torch" or logits_adv.shape[0] == 0):
        data_checks()
        check = False
    if logits_adv.shape[0] == 0:
        if reduction == "mean":
            raise ValueError(
                "logits_adv is an empty batch (N = 0): its mean is undefined; use reduction='sum' "
                "(0.0) or 'none' (an empty (0,) tensor)"
            )
        be = "torch"  # the empty result, differentiable, the same whichever backend was asked for
    if be == "torch":
        if y is None:
            return reference.trades_kl(logits_adv, logits_clean, reduction) * beta
        return reference.trades_objective(logits_clean, logits_adv, y, beta, reduction)
    flag = new_flag(check, logits_adv)
    result = _TradesObjective.apply(logits_adv, logits_clean, y, beta, reduction, be, flag)
    raise_if_flagged(flag, "trades_kl" if y is None else "trades_objective", data_checks)
    return result


def trades_kl(
    logits_adv: Tensor, logits_clean: Tensor, *, reduction: str = "mean", backend: str = "auto", check: bool = True
) -> Tensor:
    """KL(softmax(logits_clean) || softmax(logits_adv)) summed over classes, mean over the batch.

    The quantity of the official TRADES code (KLDivLoss(sum)(log_softmax(adv), softmax(clean)) / N),
    differentiable in both arguments; pass `logits_clean.detach()` for the variant the TRADES attack
    maximizes (clean prediction fixed). Logits: (N, C) float32/bfloat16/float16, math in float32; the result
    is float32. reduction: "mean" | "sum" | "none" (per sample). check=True rejects NaN/Inf logits at the cost
    of one read of both logit tensors (N x C, negligible next to a model's forward); with check=False every
    backend computes the formula as IEEE arithmetic does: a NaN or +Inf logit makes its row's value NaN (and
    so the mean), a -Inf adversarial logit where the clean probability is positive makes it +Inf.
    An empty batch (N = 0): reduction "none" gives a (0,) tensor, "sum" 0.0, and "mean" raises a ValueError
    (the mean of no samples is undefined; a NaN would read as a diverged loss).
    """
    return _objective(logits_adv, logits_clean, None, 1.0, reduction, backend, check)


def trades_objective(
    logits_clean: Tensor,
    logits_adv: Tensor,
    y: Tensor,
    beta: float,
    *,
    reduction: str = "mean",
    backend: str = "auto",
    check: bool = True,
) -> Tensor:
    """TRADES' training loss CE(logits_clean, y) + beta * KL(softmax(clean) || softmax(adv)), fused in one pass.

    Arguments, bad numbers and the empty batch as trades_kl (y: int64 (N,) labels in [0, C)).
    """
    if y is None:
        raise ValueError("y must be an int64 tensor of class labels, got None")
    return _objective(logits_adv, logits_clean, y, beta, reduction, backend, check)
