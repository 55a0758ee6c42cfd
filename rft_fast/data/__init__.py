"""Datasets for robust fine-tuning: the study's registry, splits, deterministic augmentation and loaders.

splits = build("uc_merced", "/data", image_size=224, seed=42)      # or build("folder:/my/images")
for images, labels in loader(splits.train, 128, shuffle=True, seed=0, epoch=epoch, device="cuda"):
    x, y = to_device(images, labels, "cuda")  # uint8 on the host, float [0, 1] on the device
for x, y in train_batches(splits.train, 128, seed=0, epoch=epoch, device="cuda"):
    ...  # the same batches, decoded once (rft_fast.data.cache) and augmented on the device
"""

from rft_fast.data.loading import epoch_order, loader, to_device, train_batches
from rft_fast.data.registry import (
    DATASETS,
    REGISTRY,
    DatasetInfo,
    Splits,
    build,
    download,
    format_table,
    lookup,
    register_dataset,
    unregister_dataset,
)
from rft_fast.data.sources import ImageSource
from rft_fast.data.splits import SPLIT_RULES, StratificationWarning, stratified_subset

__all__ = [
    "DATASETS",
    "REGISTRY",
    "SPLIT_RULES",
    "StratificationWarning",
    "DatasetInfo",
    "ImageSource",
    "Splits",
    "build",
    "download",
    "format_table",
    "lookup",
    "register_dataset",
    "unregister_dataset",
    "epoch_order",
    "loader",
    "stratified_subset",
    "to_device",
    "train_batches",
]
