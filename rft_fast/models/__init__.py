"""Backbones: the study's 40-entry registry, model creation with local weights, checkpoint conversion.

from rft_fast import models
spec = models.get("convnext_tiny.fb_in22k")
model = models.create(spec.name, num_classes=37, pretrained_path="convnext_tiny.safetensors")
backbone_params, head_params = models.split_parameters(model)
"""

from rft_fast.models.adapters import ToraParams, ToraViT, tora
from rft_fast.models.factory import create, load_finetuned
from rft_fast.models.registry import (
    ARCHS,
    CHECKPOINT_FORMATS,
    PRETRAININGS,
    REGISTRY,
    SIZES,
    BackboneSpec,
    format_table,
    get,
    list_backbones,
    num_params,
    register,
)
from rft_fast.models.weights import convert_checkpoint
from rft_fast.models.wrapper import Normalized, head_module, split_parameters

__all__ = [
    "ARCHS",
    "CHECKPOINT_FORMATS",
    "PRETRAININGS",
    "REGISTRY",
    "SIZES",
    "ToraParams",
    "ToraViT",
    "BackboneSpec",
    "Normalized",
    "convert_checkpoint",
    "create",
    "format_table",
    "get",
    "head_module",
    "list_backbones",
    "load_finetuned",
    "num_params",
    "register",
    "split_parameters",
    "tora",
]
