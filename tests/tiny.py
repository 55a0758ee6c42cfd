"""timm's tiny test networks registered as backbones (random init), for training and evaluation tests."""
from __future__ import annotations

import contextlib
from typing import Iterator

from rft_fast import models

TINY = {"tiny_resnet": "test_resnet", "tiny_vit": "test_vit"}


def register() -> None:
    """Registers tiny_resnet / tiny_vit (32 px, mean 0.5, std 0.25) where they are missing."""
    for name, timm_name in TINY.items():
        if name not in models.REGISTRY:
            models.register(models.BackboneSpec(
                name=name, timm_name=timm_name, pretrained_tag=None,
                arch="convolutional" if "resnet" in timm_name else "attention", size="small", pretraining="supervised",
                input_size=32, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), weights="none (tests: random init)",
                checkpoint_format="timm", aliases=(), notes="timm test model",
            ))


@contextlib.contextmanager
def registered() -> Iterator[None]:
    """The tiny backbones registered for the duration, the registry restored after (other tests see 40)."""
    saved = dict(models.REGISTRY)
    register()
    try:
        yield
    finally:
        models.REGISTRY.clear()
        models.REGISTRY.update(saved)
