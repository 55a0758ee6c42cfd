"""timm's tiny test networks registered as backbones (random init), for training and evaluation tests."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from rft_fast import models

TINY = {"tiny_resnet": "test_resnet", "tiny_vit": "test_vit"}


def register() -> None:
    """Registers tiny_resnet / tiny_vit (32 px, mean 0.5, std 0.25) where they are missing."""
    for name, timm_name in TINY.items():
        if name not in models.REGISTRY:
            models.register(
                models.BackboneSpec(
                    name=name,
                    timm_name=timm_name,
                    pretrained_tag=None,
                    arch="convolutional" if "resnet" in timm_name else "attention",
                    size="small",
                    pretraining="supervised",
                    input_size=32,
                    mean=(0.5, 0.5, 0.5),
                    std=(0.25, 0.25, 0.25),
                    weights="none (tests: random init)",
                    checkpoint_format="timm",
                    aliases=(),
                    notes="timm test model",
                )
            )


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


@contextlib.contextmanager
def registered_single_thread() -> Iterator[None]:
    """`registered()` with torch on one thread (restored after): the ViT tests run many tiny ops, and on 2
    shared cores one thread is much faster than oversubscription."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with registered():
            yield
    finally:
        torch.set_num_threads(threads)
