"""Explicit, restoring mode switches for models (no hidden mode flips inside attacks or losses)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Puts every submodule in eval mode and restores each one's own flag afterwards.

    Restoring per module matters: linear probing keeps BatchNorm in eval mode inside a training model, and a
    blanket model.train() afterwards would silently switch it back.
    """
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, was_training in flags:
            m.training = was_training
