"""The study's fine-tuning protocols as data: FFT-50, FFT-5 (full fine-tuning), LP-50 (linear probing), and
TORA-<epochs> (robust adapters on a frozen ViT, two phases; any epoch count >= 2, TORA-50 listed)."""
from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Protocol:
    """A fine-tuning protocol: how many epochs, and whether only the head trains (backbone frozen, BatchNorm
    kept in eval mode; the attack still backpropagates through the backbone to the input), and whether it
    trains TORA adapters (`rft_fast.train.tora`) instead of the backbone or the head."""

    name: str
    epochs: int
    linear_probe: bool
    description: str
    tora: bool = False


PROTOCOLS: dict[str, Protocol] = {
    p.name: p
    for p in (
        Protocol("FFT-50", 50, False, "full fine-tuning, 50 epochs"),
        Protocol("FFT-5", 5, False, "full fine-tuning, 5 epochs"),
        Protocol("LP-50", 50, True, "linear probing: backbone frozen (BatchNorm in eval mode), head trains, 50 epochs"),
    )
}
_TORA = re.compile(r"tora-(\d+)", re.IGNORECASE)


def tora_protocol(epochs: int) -> Protocol:
    """TORA-<epochs>: frozen ViT, phase 1 trains the accuracy/robustness adapters, phase 2 their fusion."""
    return Protocol(f"TORA-{epochs}", epochs, False, f"TORA robust adapters on a frozen ViT, two phases, {epochs} epochs",
                    tora=True)


PROTOCOLS["TORA-50"] = tora_protocol(50)


def get_protocol(name: str) -> Protocol:
    """The protocol called `name` (case-insensitive; "TORA-<epochs>" for any epochs >= 2); an unknown name raises
    a ValueError listing the known ones."""
    for key, proto in PROTOCOLS.items():
        if key.lower() == str(name).lower():
            return proto
    match = _TORA.fullmatch(str(name))
    if match and int(match.group(1)) >= 2:
        return tora_protocol(int(match.group(1)))
    raise ValueError(f"unknown protocol {name!r}; expected one of {list(PROTOCOLS)} or TORA-<epochs>, epochs >= 2")
