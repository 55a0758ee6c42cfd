"""Batches of uint8 images off the host, converted to float [0, 1] only on the device.

Keeping images uint8 until the device quarters host memory traffic and the host-to-device copy; the
shuffle order is a function of (seed, epoch), so a resumed run sees the same batches.
"""

from __future__ import annotations

import os

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from rft_fast.checks import is_int


def default_workers(device: torch.device) -> int:
    """min(8, CPUs - 1) loader processes when feeding a GPU, none (read in the main process) on a CPU."""
    return min(8, max((os.cpu_count() or 1) - 1, 0)) if device.type == "cuda" else 0


def loader(
    dataset: Dataset,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int = 0,
    epoch: int = 0,
    workers: int | None = None,
    device: torch.device | str = "cpu",
    drop_last: bool = False,
) -> DataLoader:
    """A DataLoader for one epoch: batches (uint8 (B, 3, H, W), int64 (B,)).

    The order comes from a generator seeded by (seed, epoch) (make one loader per epoch: iterating the same
    loader again continues that generator). Calls `dataset.set_epoch(epoch)` where it exists (the training
    augmentation). Memory is pinned when `device` is CUDA; workers are not kept between epochs.
    """
    if not is_int(batch_size) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if workers is not None and (not is_int(workers) or workers < 0):
        raise ValueError(f"workers must be a non-negative int or None, got {workers!r}")
    device = torch.device(device)
    if hasattr(dataset, "set_epoch"):
        dataset.set_epoch(epoch)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=torch.Generator().manual_seed((seed * 1_000_003 + epoch) % 2**63),
        num_workers=default_workers(device) if workers is None else workers,
        pin_memory=device.type == "cuda",
        drop_last=drop_last,
        persistent_workers=False,
    )


def to_device(
    images: Tensor, labels: Tensor, device: torch.device | str, *, channels_last: bool = False
) -> tuple[Tensor, Tensor]:
    """(float32 images in [0, 1], int64 labels) on `device`: the uint8 batch is copied (non-blocking) and
    converted there; `channels_last` reorders the uint8 copy before the conversion."""
    if images.dtype != torch.uint8:
        raise TypeError(f"images must be uint8 (as the loaders yield them), got {images.dtype}")
    x = images.to(device, non_blocking=True)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x.float().div_(255), labels.to(device, dtype=torch.int64, non_blocking=True)
