"""Backbones: the study's 40-entry registry and any timm name, model creation with hub weights (default), a
local file or none, checkpoint conversion, the normalization rules.

from rft_fast import models
spec = models.get("convnext_tiny.fb_in22k")          # or any timm name: models.get("resnet18")
model = models.create(spec.name, num_classes=37)     # hub weights; pretrained_path="w.safetensors" for a file
backbone_params, head_params = models.split_parameters(model)
"""

from rft_fast.models.adapters import ToraParams, ToraViT, tora
from rft_fast.models.factory import create, load_finetuned
from rft_fast.models.hub import Fetched, cached_file, fetch, hub_cache_dir, hub_file, hub_offline
from rft_fast.models.normalization import NORMALIZATIONS, mean_std, study_differences
from rft_fast.models.registry import (
    ARCHS,
    CHECKPOINT_FORMATS,
    PRETRAININGS,
    REGISTRY,
    SIZES,
    UNKNOWN,
    BackboneSpec,
    format_table,
    get,
    list_backbones,
    list_timm,
    num_params,
    register,
    timm_spec,
)
from rft_fast.models.weights import convert_checkpoint
from rft_fast.models.wrapper import Normalized, head_module, split_parameters

__all__ = [
    "ARCHS",
    "CHECKPOINT_FORMATS",
    "NORMALIZATIONS",
    "PRETRAININGS",
    "REGISTRY",
    "SIZES",
    "UNKNOWN",
    "ToraParams",
    "ToraViT",
    "BackboneSpec",
    "Fetched",
    "Normalized",
    "cached_file",
    "convert_checkpoint",
    "create",
    "fetch",
    "format_table",
    "get",
    "head_module",
    "hub_cache_dir",
    "hub_file",
    "hub_offline",
    "list_backbones",
    "list_timm",
    "load_finetuned",
    "mean_std",
    "num_params",
    "register",
    "split_parameters",
    "study_differences",
    "timm_spec",
    "tora",
]
