"""A timm-style MLP classifier registered as backbone "tiny_mlp" (random init): the precision and compile tests'
model, small enough that emulated bf16 / fp16 (CPUs without native support run them 5-20x slower than float32)
and torch.compile stay cheap."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import timm
import torch
from torch import nn

from rft_fast import models

NAME = "tiny_mlp"


class Mlp(nn.Module):
    """Flatten, Linear(3 * img_size^2, width), GELU, Linear head: timm's get_classifier / reset_classifier."""

    def __init__(self, num_classes: int = 10, img_size: int = 8, width: int = 64, **_: object) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(3 * img_size * img_size, width), nn.GELU())
        self.head = nn.Linear(width, num_classes)

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.head = nn.Linear(self.head.in_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def rft_test_mlp(pretrained: bool = False, **kwargs: object) -> Mlp:
    """timm entrypoint of Mlp (no pretrained weights)."""
    return Mlp(**{k: v for k, v in kwargs.items() if k in ("num_classes", "img_size")})


timm.models.register_model(rft_test_mlp)


@contextlib.contextmanager
def registered() -> Iterator[None]:
    """tiny_mlp registered as a backbone for the duration (the registry restored after)."""
    saved = dict(models.REGISTRY)
    models.register(
        models.BackboneSpec(
            name=NAME,
            timm_name="rft_test_mlp",
            pretrained_tag=None,
            arch="convolutional",
            size="small",
            pretraining="supervised",
            input_size=8,
            mean=(0.5, 0.5, 0.5),
            std=(0.25, 0.25, 0.25),
            weights="none (tests: random init)",
            checkpoint_format="timm",
            aliases=(),
            notes="precision / compile tests' MLP",
        )
    )
    try:
        yield
    finally:
        models.REGISTRY.clear()
        models.REGISTRY.update(saved)
