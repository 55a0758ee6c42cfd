"""The study's fine-tuning protocols as data: FFT-50, FFT-5 (full fine-tuning) and LP-50 (linear probing)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Protocol:
    """A fine-tuning protocol: how many epochs, and whether only the head trains (backbone frozen, BatchNorm
    kept in eval mode; the attack still backpropagates through the backbone to the input)."""

    name: str
    epochs: int
    linear_probe: bool
    description: str


PROTOCOLS: dict[str, Protocol] = {
    p.name: p
    for p in (
        Protocol("FFT-50", 50, False, "full fine-tuning, 50 epochs"),
        Protocol("FFT-5", 5, False, "full fine-tuning, 5 epochs"),
        Protocol("LP-50", 50, True, "linear probing: backbone frozen (BatchNorm in eval mode), head trains, 50 epochs"),
    )
}


def get_protocol(name: str) -> Protocol:
    """The protocol called `name` (case-insensitive); an unknown name raises a ValueError listing the known ones."""
    for key, proto in PROTOCOLS.items():
        if key.lower() == str(name).lower():
            return proto
    raise ValueError(f"unknown protocol {name!r}; expected one of {list(PROTOCOLS)}")
