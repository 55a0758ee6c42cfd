"""Public ops and the one backend dispatch point.

Backends: "triton" (rft_fast.kernels; on CPU only under TRITON_INTERPRET=1), "cpp" (rft_fast._C: C++ on
CPU, CUDA on GPU), "torch" (eager, rft_fast.reference) and "auto" (the first of `backends(device)` that
takes the input dtype). Data checks (range, NaN) read the data once at the public call; inner loops pass
`check=False` to stay at bandwidth.

Bad numbers with check=False (one rule, the same on every backend; rft_fast.reference states it): project,
pgd_step and apgd_step neither raise on a bad value nor use it as a number: every output entry it feeds is NaN.
Bad values are NaN / +-Inf entries of x_adv, x, grad, x_prev and per-sample eps / step_size tensors whose entries
are not finite and > 0 (L1 steps: l1_sparsity outside (0, 1]). Linf (elementwise): NaN at the bad entry's
positions, a bad eps / step_size the sample's whole rows; L2 and L1 (row-coupled): the sample's whole row.
The kernels apply the rule as they read the data (no extra pass, no host sync), so the caller's finiteness
check of what comes next (the attacks check every loss) catches it. check=True raises a ValueError instead.
Float eps / step_size / l1_sparsity are always validated (no device read). An empty batch (N = 0, or no
elements) gives empty outputs of the right shape on every backend.
"""
from __future__ import annotations

import functools
import importlib
import math
import os
from types import ModuleType
from typing import Callable

import torch
from torch import Tensor

from rft_fast import reference
from rft_fast.study import NORMS

BACKENDS = ("triton", "cpp", "torch")
KERNEL_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_NORM_ID = {"Linf": 0, "L2": 1, "L1": 2}

Scalar = float | Tensor


@functools.lru_cache(maxsize=None)
def _cpp() -> ModuleType | None:
    try:
        return importlib.import_module("rft_fast._C")
    except ImportError:
        return None


@functools.lru_cache(maxsize=None)
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


def _pick_backend(backend: str, t: Tensor, op: str = "pgd_step") -> str:
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


# ---------------------------------------------------------------- argument checks


def _check_norm(norm: str) -> None:
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")


def _check_alike(named: dict[str, Tensor], shape_desc: str, shape_ok: Callable[[Tensor], bool]) -> None:
    """Floating tensors of one shape, device and dtype (the first one's), each error naming its argument."""
    first_name, first = next(iter(named.items()))
    for name, t in named.items():
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor (float32/bfloat16/float16), got {t.dtype}")
        if not shape_ok(t):
            raise ValueError(f"{name} must have shape {shape_desc}, got {tuple(t.shape)}")
        if t.shape != first.shape:
            raise ValueError(f"{name} has shape {tuple(t.shape)}, expected {tuple(first.shape)} like {first_name}")
        if t.device != first.device:
            raise ValueError(f"{name} is on {t.device}, expected {first.device} like {first_name}")
        if t.dtype != first.dtype:
            raise TypeError(f"{name} has dtype {t.dtype}, expected {first.dtype} like {first_name}")


def _check_finite(named: dict[str, Tensor]) -> None:
    for name, t in named.items():
        if not bool(torch.isfinite(t.detach()).all()):
            raise ValueError(f"{name} contains NaN or Inf values")


def _check_tensors(check_data: bool, **named: Tensor) -> None:
    """Same shape/device/dtype for all; optionally finite values and x inside [0, 1]."""
    _check_alike(named, "(N, ...) with at least 2 dims", lambda t: t.dim() >= 2)
    if not check_data:
        return
    _check_finite(named)
    x = named["x"]
    if x.numel() and (float(x.min()) < 0.0 or float(x.max()) > 1.0):
        raise ValueError(f"x must lie in [0, 1] (images as pixels), got values in [{float(x.min())}, {float(x.max())}]")


def per_sample(
    value: Scalar, name: str, like: Tensor, *, check_values: bool = True, upper: float | None = None
) -> Tensor:
    """A float or (N,) tensor as a float32 (N,) tensor on like.device, validated.

    A float's value is always checked; a tensor's values only with check_values (reading them costs a
    device sync, which inner loops skip with check=False; unchecked bad values then make their samples'
    outputs NaN on every backend, see the module docstring).
    """
    n = like.shape[0]
    if isinstance(value, Tensor):
        if value.dim() == 0:
            value = value.reshape(1)
        if value.dim() != 1 or value.shape[0] not in (1, n):
            raise ValueError(f"{name} must be a float or a tensor of shape ({n},), got shape {tuple(value.shape)}")
        t = value.detach().to(device=like.device, dtype=torch.float32).expand(n)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        v = float(value)
        if not (math.isfinite(v) and v > 0 and (upper is None or v <= upper)):
            raise ValueError(f"{name} must be {_range_text(upper)}, got {value}")
        return torch.full((n,), v, dtype=torch.float32, device=like.device)
    else:
        raise TypeError(f"{name} must be a float or a tensor of shape ({n},), got {type(value).__name__}")
    if not check_values:
        return t.contiguous()
    bad = ~torch.isfinite(t) | (t <= 0)
    if upper is not None:
        bad |= t > upper
    if bool(bad.any()):
        raise ValueError(f"{name} must be {_range_text(upper)}, got {t[bad][:4].tolist()}")
    return t.contiguous()


def _range_text(upper: float | None) -> str:
    return f"in (0, {upper}]" if upper is not None else "> 0 and finite"


def _l1_keep(sparsity: Tensor, d: int) -> Tensor:
    """How many of the largest |grad| set APGD-L1's threshold: n - idx, idx as AutoAttack computes it."""
    idx = torch.clamp((1.0 - sparsity) * d, min=0, max=d - 1).long()
    return (d - idx).contiguous()


def _l1_step_args(norm: str, step: Tensor, sparsity: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    """(step, keep) for a kernel. L1: an invalid l1_sparsity (unchecked tensor) becomes a NaN step, which the
    kernels treat as a bad per-sample value (NaN rows), and keep stays in [1, D]. Device ops only, no sync."""
    d = math.prod(x.shape[1:])
    if norm != "L1":
        return step, _l1_keep(sparsity, d)
    ok = (sparsity > 0) & (sparsity <= 1.0)  # NaN fails both
    step = torch.where(ok, step, torch.full_like(step, float("nan")))
    return step.contiguous(), _l1_keep(torch.where(ok, sparsity, torch.ones_like(sparsity)), d)


# ---------------------------------------------------------------- memory layout


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


class _Layout:
    """Flattens same-shaped tensors to (N, D) rows sharing one memory order and allocates outputs in it."""

    def __init__(self, like: Tensor) -> None:
        self.like = like
        self.fmt = memory_format(like)

    def rows(self, t: Tensor) -> Tensor:
        return _rows(t, self.fmt)

    def empty(self) -> tuple[Tensor, Tensor]:
        out = torch.empty_like(self.like, memory_format=self.fmt)
        return out, _rows(out, self.fmt)


# ---------------------------------------------------------------- public ops


def project(x_adv: Tensor, x: Tensor, eps: Scalar, norm: str, *, backend: str = "auto", check: bool = True) -> Tensor:
    """Euclidean projection of x_adv onto {z : ||z - x||_p <= eps} ∩ [0,1]^d, per sample, exact for every norm.

    x_adv, x: (N, ...) float tensors (same shape, dtype, device); eps: float or (N,) tensor, > 0;
    norm: "Linf" | "L2" | "L1". Returns a new tensor in x_adv's dtype and memory format.
    check=True rejects NaN / Inf data, x outside [0, 1] and bad eps values with a ValueError (one host sync);
    check=False reads nothing on the host and follows the bad-number rule of the module docstring (NaN outputs
    where a bad value feeds, the same on every backend). N = 0: an empty result.
    """
    _check_norm(norm)
    _check_tensors(check, x_adv=x_adv, x=x)
    eps_t = per_sample(eps, "eps", x, check_values=check)
    be = _pick_backend(backend, x_adv)
    if x_adv.numel() == 0:
        return _Layout(x_adv).empty()[0]
    if be == "torch":
        return reference.project(x_adv, x, eps_t.to(x.dtype) if x.dtype == torch.float64 else eps_t, norm)
    lay = _Layout(x_adv)
    out, out_rows = lay.empty()
    _kernel(be, "project")(out_rows, lay.rows(x_adv), lay.rows(x), eps_t, _norm_arg(be, norm))
    return out


def pgd_step(
    x_adv: Tensor,
    x: Tensor,
    grad: Tensor,
    step_size: Scalar,
    eps: Scalar,
    norm: str,
    *,
    l1_sparsity: Scalar = 0.2,
    backend: str = "auto",
    check: bool = True,
) -> Tensor:
    """One projected ascent step with AutoAttack's update rule, fused: step, then project.

    Linf: x_adv + step_size * sign(grad), clamped into the ball and box. L2: x_adv + step_size *
    grad / ||grad||_2, rescaled into the ball, clipped to the box. L1: the sparse step of APGD-L1 (sign of
    the top `l1_sparsity` share of |grad|, divided by its count) followed by the exact L1 ∩ box projection.
    step_size, eps, l1_sparsity: floats or (N,) tensors. check: as project (a bad grad entry: NaN at its position
    for Linf, the sample's whole row for L2 / L1). N = 0: an empty result.
    """
    _check_norm(norm)
    _check_tensors(check, x_adv=x_adv, x=x, grad=grad)
    eps_t = per_sample(eps, "eps", x, check_values=check)
    step_t = per_sample(step_size, "step_size", x, check_values=check)
    sparsity = per_sample(l1_sparsity, "l1_sparsity", x, check_values=check, upper=1.0)
    be = _pick_backend(backend, x_adv)
    if x_adv.numel() == 0:
        return _Layout(x_adv).empty()[0]
    if be == "torch":
        return reference.pgd_step(x_adv, x, grad, _ref_scalar(step_t, x), _ref_scalar(eps_t, x), norm, l1_sparsity)
    step_t, keep = _l1_step_args(norm, step_t, sparsity, x)
    lay = _Layout(x_adv)
    out, out_rows = lay.empty()
    _kernel(be, "pgd_step")(
        out_rows, lay.rows(x_adv), lay.rows(x), lay.rows(grad), step_t, eps_t, _norm_arg(be, norm), keep
    )
    return out


def apgd_step(
    x_adv: Tensor,
    x_prev: Tensor,
    x: Tensor,
    grad: Tensor,
    step_size: Scalar,
    eps: Scalar,
    norm: str,
    *,
    momentum: float = 0.75,
    l1_sparsity: Scalar = 0.2,
    backend: str = "auto",
    check: bool = True,
) -> tuple[Tensor, Tensor]:
    """APGD's momentum update in one pass; returns (x_next, z).

    z = P(x_k + eta * step(grad)) (the pgd_step), x_next = P(x_k + a (z - x_k) + (1 - a)(x_k - x_{k-1}))
    with a = `momentum` (AutoAttack: 0.75, and 1.0 on the first iteration; its APGD-L1 uses no momentum,
    i.e. momentum=1.0). check: as pgd_step; z does not read x_prev, so a bad x_prev entry reaches x_next only.
    N = 0: two empty results.
    """
    _check_norm(norm)
    _check_tensors(check, x_adv=x_adv, x_prev=x_prev, x=x, grad=grad)
    if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum must be a float in [0, 1], got {momentum!r}")
    eps_t = per_sample(eps, "eps", x, check_values=check)
    step_t = per_sample(step_size, "step_size", x, check_values=check)
    sparsity = per_sample(l1_sparsity, "l1_sparsity", x, check_values=check, upper=1.0)
    be = _pick_backend(backend, x_adv)
    if x_adv.numel() == 0:
        empty = _Layout(x_adv).empty
        return empty()[0], empty()[0]
    if be == "torch":
        return reference.apgd_step(
            x_adv, x_prev, x, grad, _ref_scalar(step_t, x), _ref_scalar(eps_t, x), norm, float(momentum), l1_sparsity
        )
    step_t, keep = _l1_step_args(norm, step_t, sparsity, x)
    lay = _Layout(x_adv)
    (x_next, next_rows), (z, z_rows) = lay.empty(), lay.empty()
    _kernel(be, "apgd_step")(
        next_rows,
        z_rows,
        lay.rows(x_adv),
        lay.rows(x_prev),
        lay.rows(x),
        lay.rows(grad),
        step_t,
        eps_t,
        _norm_arg(be, norm),
        float(momentum),
        keep,
    )
    return x_next, z


def _ref_scalar(t: Tensor, like: Tensor) -> Tensor:
    return t.to(like.dtype) if like.dtype == torch.float64 else t


def _norm_arg(backend: str, norm: str) -> str | int:
    return _NORM_ID[norm] if backend == "cpp" else norm


def _kernel(backend: str, name: str) -> Callable[..., None]:
    module = _cpp() if backend == "cpp" else _triton()
    return getattr(module, name)


# ---------------------------------------------------------------- TRADES KL

REDUCTIONS = ("mean", "sum", "none")


def _check_logits(check_data: bool, y: Tensor | None, **named: Tensor) -> None:
    _check_alike(named, "(N, C) with C >= 1", lambda t: t.dim() == 2 and t.shape[1] >= 1)
    if check_data:
        _check_finite(named)
    first_name, first = next(iter(named.items()))
    if y is None:
        return
    if not isinstance(y, Tensor) or y.dtype != torch.int64 or y.shape != first.shape[:1]:
        got = f"{y.dtype} {tuple(y.shape)}" if isinstance(y, Tensor) else type(y).__name__
        raise ValueError(f"y must be an int64 tensor of shape ({first.shape[0]},) (class labels), got {got}")
    if y.device != first.device:
        raise ValueError(f"y is on {y.device}, expected {first.device} like {first_name}")
    if bool(((y < 0) | (y >= first.shape[1])).any()):
        raise ValueError(f"y holds labels outside [0, {first.shape[1]}): {y[(y < 0) | (y >= first.shape[1])][:4].tolist()}")


def check_beta(beta: float) -> float:
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not math.isfinite(beta) or beta < 0:
        raise ValueError(f"beta must be a finite float >= 0, got {beta!r}")
    return float(beta)


def _logit_rows(t: Tensor) -> Tensor:
    return t if t.stride(1) == 1 else t.contiguous()


def _reduce_rows(rows: Tensor, reduction: str) -> Tensor:
    return rows.mean() if reduction == "mean" else rows.sum() if reduction == "sum" else rows


class _TradesObjective(torch.autograd.Function):
    """CE_i [if y] + beta * KL_i per row through a kernel backend; fused backward for both logits."""

    @staticmethod
    def forward(ctx, logits_adv, logits_clean, y, beta, reduction, backend):  # type: ignore[override]
        la, lc = _logit_rows(logits_adv.detach()), _logit_rows(logits_clean.detach())
        rows, stats = _kernel(backend, "kl_forward")(la, lc, y, beta)
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
        _kernel(backend, "kl_backward")(weight.contiguous(), la, lc, y, beta, stats, grad_adv, grad_clean)
        return (grad_adv if ctx.needs_input_grad[0] else None), grad_clean, None, None, None, None


def _objective(logits_adv, logits_clean, y, beta, reduction, backend, check):
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    beta = check_beta(beta)
    _check_logits(check, y, logits_adv=logits_adv, logits_clean=logits_clean)
    be = _pick_backend(backend, logits_adv, "trades_kl")
    if logits_adv.shape[0] == 0:
        if reduction == "mean":
            raise ValueError("logits_adv is an empty batch (N = 0): its mean is undefined; use reduction='sum' "
                             "(0.0) or 'none' (an empty (0,) tensor)")
        be = "torch"  # the empty result, differentiable, the same whichever backend was asked for
    if be == "torch":
        if y is None:
            return reference.trades_kl(logits_adv, logits_clean, reduction) * beta
        return reference.trades_objective(logits_clean, logits_adv, y, beta, reduction)
    return _TradesObjective.apply(logits_adv, logits_clean, y, beta, reduction, be)


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
