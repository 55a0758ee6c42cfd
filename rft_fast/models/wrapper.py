"""`Normalized`: a timm backbone that takes [0,1] images, plus the backbone/head split used by optimizers.

Normalization lives inside the model (docs/study.md, "Threat models") so that attacks, eps and clipping all work in
[0,1] pixel space whatever the backbone's mean/std.
"""

from __future__ import annotations

import torch
from torch import nn

from rft_fast.models.normalization import DEFAULT_NORMALIZATION, mean_std
from rft_fast.models.registry import BackboneSpec


class Normalized(nn.Module):
    """forward(x) = backbone((x - mean) / std) for images x in [0,1], shape [N, 3, H, W].

    `mean`/`std` are float32 buffers of shape (1, 3, 1, 1), cast to x's dtype in forward (so AMP and float64
    checks work); they are not persistent: a saved state dict holds only `backbone.*`, and the constants come
    from `spec` under rule `normalization` (rft_fast.models.normalization: "pretrained" | "study"). Exposes
    `spec`, `backbone` (the timm model), `num_classes` and `normalization`.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(
        self, backbone: nn.Module, spec: BackboneSpec, num_classes: int, normalization: str = DEFAULT_NORMALIZATION
    ) -> None:
        super().__init__()
        mean, std = mean_std(spec, normalization)
        self.backbone = backbone
        self.spec = spec
        self.num_classes = num_classes
        self.normalization = normalization
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone((x - self.mean.to(x.dtype)) / self.std.to(x.dtype))

    def extra_repr(self) -> str:
        return f"spec={self.spec.name!r}, num_classes={self.num_classes}, normalization={self.normalization!r}"


def head_module(model: Normalized) -> nn.Module:
    """The classifier of `model` (timm's `get_classifier()`): the part that is new for each task."""
    if not isinstance(model, Normalized):
        raise TypeError(f"head_module() takes a Normalized model (from models.create), got {type(model).__name__}")
    return model.backbone.get_classifier()


def head_prefix(backbone: nn.Module) -> str:
    """State-dict prefix of the backbone's classifier, e.g. "head.fc", "fc", "head", "classifier"."""
    head = backbone.get_classifier()
    for name, module in backbone.named_modules():
        if module is head:
            return name
    raise ValueError(f"{type(backbone).__name__}.get_classifier() is not a submodule of the model")


def split_parameters(model: Normalized) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(backbone parameters, head parameters), each in `named_parameters` order; together they are all of them.

    The study gives the backbone and the head their own learning rate and weight decay, and linear probing
    trains the head only.
    """
    head_ids = {id(p) for p in head_module(model).parameters()}
    params = list(model.parameters())
    return [p for p in params if id(p) not in head_ids], [p for p in params if id(p) in head_ids]
