"""Precision: the autocast dtype of a run's forward passes, resolved once per run from what its device does natively.

amp (TrainConfig.amp, EvalSettings.amp) is one of AMP:
    "auto"  "bf16" where the device has native bf16 arithmetic, else "none" (`resolve`; the environment variable
            RFT_FAST_AUTO_AMP=bf16|fp16|none sets what "auto" means instead, recorded in the features);
    "bf16"  bfloat16 autocast;
    "fp16"  float16 autocast (training scales the loss with torch.amp.GradScaler: `Precision.scaler`);
    "none"  float32.
Native bf16 (`native_bf16`): on CUDA, torch.cuda.is_bf16_supported(including_emulation=False) (compute capability
>= 8, or ROCm); on CPU, torch's own probe (torch.cpu.get_capabilities()): AVX512-BF16 or AMX-BF16 on x86, BF16 or
SVE-BF16 on ARM. Emulated bf16 is no speed-up: on an AVX2 CPU without them a timm test model's forward/backward ran
5-20x slower under bf16 autocast than in float32, which is why "auto" is float32 there.

`Precision.record()` is what a run's metadata stores (the training checkpoint, the metrics rows' "amp", the
evaluation rows' versions["precision"]): the resolved amp, what was requested, and the features detected.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

AMP = ("auto", "bf16", "fp16", "none")  # what a config asks for
RESOLVED = ("bf16", "fp16", "none")  # what a run uses
DTYPES: dict[str, torch.dtype | None] = {"bf16": torch.bfloat16, "fp16": torch.float16, "none": None}
DTYPE_NAMES = {"bf16": "bfloat16", "fp16": "float16", "none": "float32"}  # the bench results' "dtype" values
AUTO_ENV = "RFT_FAST_AUTO_AMP"  # overrides the detection behind "auto" (a fleet of mixed machines, the tests)
CPU_BF16_FEATURES = ("avx512_bf16", "amx_bf16", "bf16", "sve_bf16")  # torch.cpu.get_capabilities() keys


def cpu_features() -> dict[str, Any]:
    """The CPU's bf16 features as torch detects them (torch.cpu.get_capabilities), with torch's dispatch level
    (torch.backends.cpu.get_cpu_capability: "AVX2", "AVX512", ...) and the architecture."""
    caps = torch.cpu.get_capabilities()
    out: dict[str, Any] = {
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "architecture": str(caps.get("architecture", "unknown")),
    }
    out.update({name: bool(caps[name]) for name in CPU_BF16_FEATURES if name in caps})
    return out


def cuda_features(device: torch.device) -> dict[str, Any]:
    """The GPU's name, compute capability and whether it does bf16 natively (no emulation)."""
    props = torch.cuda.get_device_properties(device)
    with torch.cuda.device(device):
        native = torch.cuda.is_bf16_supported(including_emulation=False)
    return {"name": props.name, "capability": f"{props.major}.{props.minor}", "cuda_bf16": bool(native)}


def features(device: torch.device | str) -> dict[str, Any]:
    """What `device` offers for reduced precision: {"device": its type, ...cpu_features() or cuda_features()};
    other device types report their type only (no native bf16 is assumed)."""
    device = torch.device(device)
    if device.type == "cpu":
        return {"device": "cpu", **cpu_features()}
    if device.type == "cuda":
        return {"device": "cuda", **cuda_features(device)}
    return {"device": device.type}


def native_bf16(detected: Mapping[str, Any]) -> bool:
    """Whether `features(...)` found native bf16 arithmetic (any CPU bf16 feature, or a CUDA device's)."""
    return any(bool(detected.get(name)) for name in (*CPU_BF16_FEATURES, "cuda_bf16"))


@dataclass(frozen=True)
class Precision:
    """A resolved precision. amp: one of RESOLVED; requested: the amp asked for (AMP); device: the device type the
    autocast is for; features: what was detected there (`features`); source: "detected" (resolved here) or
    "checkpoint" (a resumed run keeps its checkpoint's precision)."""

    amp: str
    requested: str
    device: str
    features: Mapping[str, Any] = field(default_factory=dict)
    source: str = "detected"

    def __post_init__(self) -> None:
        if self.amp not in RESOLVED:
            raise ValueError(f"amp must resolve to one of {list(RESOLVED)}, got {self.amp!r}")

    @property
    def dtype(self) -> torch.dtype | None:
        """The autocast dtype (None: float32, no autocast): what the attacks take as amp_dtype."""
        return DTYPES[self.amp]

    @property
    def dtype_name(self) -> str:
        return DTYPE_NAMES[self.amp]

    def autocast(self) -> contextlib.AbstractContextManager:
        """torch.autocast for the device at `dtype`, or a null context under "none"."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device, dtype=self.dtype)

    def scaler(self) -> torch.amp.GradScaler:
        """A GradScaler for training: enabled under "fp16" only (disabled, it passes the loss and the step through
        unchanged, so the training loop calls it the same way at every precision)."""
        return torch.amp.GradScaler(self.device, enabled=self.amp == "fp16")

    def record(self) -> dict[str, Any]:
        """Plain data for a run's metadata."""
        return {
            "amp": self.amp,
            "dtype": self.dtype_name,
            "requested": self.requested,
            "source": self.source,
            "features": dict(self.features),
        }


def check_amp(amp: object, name: str = "amp") -> str:
    """`amp` if it is one of AMP, else ValueError naming `name`."""
    if not isinstance(amp, str) or amp not in AMP:
        raise ValueError(f"{name} must be one of {list(AMP)}, got {amp!r}")
    return amp


def resolve(amp: str, device: torch.device | str) -> Precision:
    """The precision `amp` gives on `device`: "auto" is "bf16" where `features(device)` shows native bf16, else
    "none"; the others are themselves."""
    check_amp(amp)
    device = torch.device(device)
    detected = features(device)
    if amp != "auto":
        return Precision(amp, amp, device.type, detected)
    forced = os.environ.get(AUTO_ENV, "")
    if forced:
        if forced not in RESOLVED:
            raise ValueError(f"{AUTO_ENV} must be one of {list(RESOLVED)} (what amp 'auto' means), got {forced!r}")
        return Precision(forced, amp, device.type, {**detected, AUTO_ENV: forced})
    return Precision("bf16" if native_bf16(detected) else "none", amp, device.type, detected)


def from_record(record: Mapping[str, Any], requested: str, device: torch.device | str) -> Precision:
    """The precision a checkpoint recorded (`Precision.record()`), for resuming on `device`: its amp, whatever this
    device would resolve `requested` to (so that the resumed epochs compute as the first ones did)."""
    amp = record.get("amp") if isinstance(record, Mapping) else None
    if amp not in RESOLVED:
        raise ValueError(f"the checkpoint's precision record must hold amp in {list(RESOLVED)}, got {record!r}")
    device = torch.device(device)
    return Precision(str(amp), requested, device.type, features(device), source="checkpoint")


class AutocastModel(nn.Module):
    """`module` run under `chosen`'s autocast, float32 logits out: the model evaluation's forward passes (and the
    attacks' forward/backward) call. `full_precision` gives back the float32 module."""

    def __init__(self, module: nn.Module, chosen: Precision) -> None:
        super().__init__()
        self.module, self.chosen = module, chosen

    def forward(self, x: Tensor) -> Tensor:
        with self.chosen.autocast():
            return self.module(x).float()


def under(model: nn.Module, chosen: Precision) -> nn.Module:
    """`model` under `chosen`'s autocast (an AutocastModel), or `model` itself at float32."""
    return model if chosen.dtype is None else AutocastModel(model, chosen)


def full_precision(model: nn.Module) -> nn.Module:
    """The float32 module inside an AutocastModel (`model` itself otherwise)."""
    return model.module if isinstance(model, AutocastModel) else model
