"""What timm itself says about a model name: its canonical `arch.tag`, pretrained config, and the facts derived
from the network (parameter count, architecture type), used to turn any timm name into a backbone.

Everything is read from timm's registry and from the model built on the meta device (no weights, no memory);
nothing here branches on a model name.
"""

from __future__ import annotations

import functools
from typing import Any

import timm
import torch
from torch import nn

# The study's size classes (docs/study.md): small < 20M, medium 20-50M, large >= 50M parameters, no classifier.
SIZE_BOUNDS = (("small", 20e6), ("medium", 50e6), ("large", float("inf")))
# Children that make a module self-attention (timm names its query/key/value projections these ways).
_QKV = ({"qkv"}, {"q", "kv"}, {"q", "k", "v"}, {"q_proj", "k_proj", "v_proj"})


def canonical(name: str) -> str | None:
    """timm's own spelling `arch.tag` of `name`, None when timm does not know it.

    A bare architecture resolves to timm's default pretrained tag (`resnet18` -> `resnet18.a1_in1k`), an
    architecture without pretrained weights stays bare; an unknown architecture or tag gives None.
    """
    if not isinstance(name, str) or not name or not timm.is_model(name.partition(".")[0]):
        return None
    try:
        cfg = timm.models.get_pretrained_cfg(name)
    except RuntimeError:  # timm: "Invalid pretrained tag (...) for <arch>"
        return None
    arch = name.partition(".")[0]
    return f"{arch}.{cfg.tag}" if cfg is not None and cfg.tag else arch


def pretrained_cfg(timm_id: str) -> dict[str, Any] | None:
    """timm's pretrained config of `timm_id` (`arch.tag`) as a dict, None when it has none."""
    cfg = timm.models.get_pretrained_cfg(timm_id) if timm.is_model(timm_id.partition(".")[0]) else None
    return None if cfg is None else cfg.to_dict()


def list_pretrained(pattern: str = "*") -> list[str]:
    """timm's pretrained names (`arch.tag`) matching the fnmatch `pattern`, sorted as timm sorts them."""
    return timm.list_models(pattern, pretrained=True)


def build_timm(timm_name: str, num_classes: int, image_size: int, **kwargs: Any) -> nn.Module:
    """`timm.create_model` (without weights unless `kwargs` ask for them); `img_size` is passed only to models
    whose layers depend on it.

    Resolution-bound models (ViT, DeiT, EVA, Swin, CoaT, CoAtNet, ...) take `img_size`; conv nets take any input
    size and reject the argument, which is how the two are told apart.
    """
    kwargs = {"pretrained": False, **kwargs, "num_classes": num_classes}
    try:
        return timm.create_model(timm_name, img_size=image_size, **kwargs)
    except TypeError as err:
        if "img_size" not in str(err):
            raise
    return timm.create_model(timm_name, **kwargs)


@functools.cache
def count_params(timm_name: str, image_size: int) -> int:
    """Parameters without the classifier (timm num_classes=0), counted on the meta device; cached."""
    with torch.device("meta"):
        model = build_timm(timm_name, 0, image_size)
    return sum(p.numel() for p in model.parameters())


def size_class(num_params: int) -> str:
    """The study's size class of a backbone with `num_params` parameters (classifier excluded)."""
    return next(name for name, bound in SIZE_BOUNDS if num_params < bound)


def _mixes_space(module: nn.Module) -> bool:
    """A convolution that mixes neighbouring pixels: kernel > 1, and not a patchify stem (kernel == stride)."""
    if not isinstance(module, nn.modules.conv._ConvNd):
        return False
    return max(module.kernel_size) > 1 and tuple(module.kernel_size) != tuple(module.stride)


def _is_attention(module: nn.Module) -> bool:
    if isinstance(module, nn.MultiheadAttention):
        return True
    children = {name for name, _ in module.named_children()}
    return any(qkv <= children for qkv in _QKV)


def arch_type(model: nn.Module) -> str:
    """ "convolutional" (spatial convolutions only), "attention" (self-attention only; a patchify stem is not a
    convolution here), "hybrid" (both) or "unknown" (neither, e.g. an MLP-Mixer)."""
    modules = list(model.modules())
    conv = any(_mixes_space(m) for m in modules)
    attention = any(_is_attention(m) for m in modules)
    return {(True, False): "convolutional", (False, True): "attention", (True, True): "hybrid"}.get(
        (conv, attention), "unknown"
    )


@functools.cache
def derived_arch(timm_name: str, image_size: int) -> str:
    """`arch_type` of timm's `timm_name`, built on the meta device; cached."""
    with torch.device("meta"):
        return arch_type(build_timm(timm_name, 0, image_size))
