"""Argument checks of rft_fast.ops: one error message per bad argument, naming it.

Shapes, dtypes and devices are always checked (no device read). Float eps / step_size / l1_sparsity / momentum /
beta are always validated. Data checks (range, NaN, per-sample tensors' values) run with check=True: on a kernel
backend the kernel tests the data in its own pass and ORs check bits into a flag (`new_flag`), which the op reads
once after the call; only a set flag runs the data checks here, which raise their own message
(`raise_if_flagged`). The torch backend (and an empty batch) runs the checks here, before the call. With
check=False bad values follow the bad-number rule (rft_fast.ops).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from rft_fast.checks import is_real
from rft_fast.study import NORMS

Scalar = float | Tensor

# The bits a kernel ORs into its flag with check=True (docs/kernels.md, "Data checks").
FLAG_BAD_NUMBER = 1  # the bad-number rule fired: a NaN / Inf entry, an eps / step not finite and > 0
FLAG_X_RANGE = 2  # an entry of x outside [0, 1]


def new_flag(check: bool, like: Tensor) -> Tensor | None:
    """The zeroed int32 (1,) flag a kernel ORs its check bits into, on like's device; None for check=False."""
    return torch.zeros(1, dtype=torch.int32, device=like.device) if check else None


def raise_if_flagged(flag: Tensor | None, op: str, data_checks: Callable[[], None]) -> None:
    """After a checked kernel call: nothing when the flag is clear (one host sync, 4 bytes); else `data_checks`
    raises the message of the bad argument, and a ValueError names the bits if they find nothing."""
    if flag is None:
        return
    bits = int(flag.item())
    if not bits:
        return
    data_checks()
    found = [
        text
        for bit, text in (
            (FLAG_BAD_NUMBER, "a NaN / Inf entry or a bad per-sample value"),
            (FLAG_X_RANGE, "x outside [0, 1]"),
        )
        if bits & bit
    ]
    raise ValueError(
        f"{op}: the kernel reported bad input data ({', '.join(found) or bits}) that the argument "
        "checks did not find; please report this with the inputs"
    )


def check_norm(norm: str) -> None:
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")


def check_alike(named: dict[str, Tensor], shape_desc: str, shape_ok: Callable[[Tensor], bool]) -> None:
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


def check_finite(named: dict[str, Tensor]) -> None:
    for name, t in named.items():
        if not bool(torch.isfinite(t.detach()).all()):
            raise ValueError(f"{name} contains NaN or Inf values")


def check_tensors(check_data: bool, **named: Tensor) -> None:
    """Same shape/device/dtype for all; optionally finite values and x inside [0, 1]."""
    check_alike(named, "(N, ...) with at least 2 dims", lambda t: t.dim() >= 2)
    if not check_data:
        return
    check_finite(named)
    x = named["x"]
    if x.numel() and (float(x.min()) < 0.0 or float(x.max()) > 1.0):
        raise ValueError(f"x must lie in [0, 1] (images as pixels), got values in [{float(x.min())}, {float(x.max())}]")


def per_sample(
    value: Scalar, name: str, like: Tensor, *, check_values: bool = True, upper: float | None = None
) -> Tensor:
    """A float or (N,) tensor as a float32 (N,) tensor on like.device, validated.

    A float's value is always checked; a tensor's values only with check_values (reading them costs a
    device sync, which inner loops skip with check=False; unchecked bad values then make their samples'
    outputs NaN on every backend, see rft_fast.ops).
    """
    n = like.shape[0]
    if isinstance(value, Tensor):
        if value.dim() == 0:
            value = value.reshape(1)
        if value.dim() != 1 or value.shape[0] not in (1, n):
            raise ValueError(f"{name} must be a float or a tensor of shape ({n},), got shape {tuple(value.shape)}")
        t = value.detach().to(device=like.device, dtype=torch.float32).expand(n)
    elif is_real(value, finite=False):
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


def check_momentum(momentum: float) -> None:
    if not is_real(momentum) or not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum must be a float in [0, 1], got {momentum!r}")


def check_logits(check_data: bool, y: Tensor | None, **named: Tensor) -> None:
    check_alike(named, "(N, C) with C >= 1", lambda t: t.dim() == 2 and t.shape[1] >= 1)
    if check_data:
        check_finite(named)
    first_name, first = next(iter(named.items()))
    if y is None:
        return
    if not isinstance(y, Tensor) or y.dtype != torch.int64 or y.shape != first.shape[:1]:
        got = f"{y.dtype} {tuple(y.shape)}" if isinstance(y, Tensor) else type(y).__name__
        raise ValueError(f"y must be an int64 tensor of shape ({first.shape[0]},) (class labels), got {got}")
    if y.device != first.device:
        raise ValueError(f"y is on {y.device}, expected {first.device} like {first_name}")
    if bool(((y < 0) | (y >= first.shape[1])).any()):
        raise ValueError(
            f"y holds labels outside [0, {first.shape[1]}): {y[(y < 0) | (y >= first.shape[1])][:4].tolist()}"
        )


def check_beta(beta: float) -> float:
    if not is_real(beta) or beta < 0:
        raise ValueError(f"beta must be a finite float >= 0, got {beta!r}")
    return float(beta)
