"""Batches of uint8 images off the host, converted to float [0, 1] only on the device.

Keeping images uint8 until the device quarters host memory traffic and the host-to-device copy; the
shuffle order is a function of (seed, epoch), so a resumed run sees the same batches. `train_batches` is the
training path: the study's augmented train split read from the decoded cache (rft_fast.data.cache) and
augmented batch by batch on the device, the same batches `loader` + `to_device` give.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset

from rft_fast.checks import is_int
from rft_fast.data import cache
from rft_fast.data.augment import Augmented, augment_batch, draw_params
from rft_fast.data.sources import ImageSource


def default_workers(device: torch.device) -> int:
    """min(8, CPUs - 1) loader processes when feeding a GPU, none (read in the main process) on a CPU."""
    return min(8, max((os.cpu_count() or 1) - 1, 0)) if device.type == "cuda" else 0


def _order_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + epoch) % 2**63)


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The order `loader(..., shuffle=True, seed=seed, epoch=epoch)` reads `n` items in (the same DataLoader
    draws from the same generator: its worker base seed, then the sampler's permutation)."""
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    order = DataLoader(range(n), batch_size=n, shuffle=True, generator=_order_generator(seed, epoch))
    return next(iter(order)).numpy().astype(np.int64)


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
        generator=_order_generator(seed, epoch),
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


def _cached_source(dataset: Dataset) -> tuple[ImageSource, np.ndarray] | None:
    """(the ImageSource under `dataset`'s subset views, the source index of each of dataset's items), or None
    when `dataset` is not the augmented view of a source with a known origin and identity."""
    if not isinstance(dataset, Augmented):
        return None
    view, indices = dataset.base, np.arange(len(dataset), dtype=np.int64)
    while isinstance(view, Subset):
        indices = np.asarray(view.indices, dtype=np.int64)[indices]
        view = view.dataset
    if not isinstance(view, ImageSource) or view.origin is None:
        return None
    return view, indices


def decoded_source(
    source: ImageSource, *, cache_dir: str | Path | None = None, workers: int = 0
) -> cache.DecodedImages | None:
    """`source`'s decoded images from the cache (decoded by `workers` processes and written first when
    missing), also attached to it so its items are read from them; None when caching is off or the source
    has no identity."""
    if source.decoded is not None:
        return source.decoded
    folder = cache.cache_dir(cache_dir)
    identity = source.identity()
    if folder is None or identity is None or source.origin is None:
        return None
    source.decoded = cache.decoded(
        source,
        dataset=source.origin[0],
        part=source.origin[1],
        size=source.image_size,
        identity=identity,
        labels=source.labels,
        classes=source.classes,
        folder=folder,
        workers=workers,
    )
    return source.decoded


def train_batches(
    dataset: Dataset,
    batch_size: int,
    *,
    seed: int = 0,
    epoch: int = 0,
    workers: int | None = None,
    device: torch.device | str = "cpu",
    channels_last: bool = False,
    cache_dir: str | Path | None = None,
) -> Iterator[tuple[Tensor, Tensor]]:
    """One training epoch of shuffled batches on `device`: (float32 images (B, 3, S, S) in [0, 1], int64 (B,)).

    The same batches as `loader(dataset, batch_size, shuffle=True, seed=seed, epoch=epoch)` + `to_device`
    (order from (seed, epoch), augmentation from (dataset.seed, epoch, index)). For the study's augmented
    train split of a built dataset, images are decoded once into the cache (`cache_dir`, default
    rft_fast.data.cache.cache_dir(); decoded by `workers` processes the first time) and each batch is
    gathered from it, copied to the device as uint8 and augmented there (`augment_batch`); otherwise, or with
    the cache off, through `loader`, decoded and augmented per item by its workers.
    """
    if not is_int(batch_size) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    device = torch.device(device)
    found = _cached_source(dataset)
    workers = default_workers(device) if workers is None else workers
    images = None if found is None else decoded_source(found[0], cache_dir=cache_dir, workers=workers)
    if images is None:
        epoch_loader = loader(dataset, batch_size, shuffle=True, seed=seed, epoch=epoch, workers=workers, device=device)
        for xb, yb in epoch_loader:
            yield to_device(xb, yb, device, channels_last=channels_last)
        return
    source_index, labels = found[1], np.asarray(dataset.labels, dtype=np.int64)
    order = epoch_order(len(dataset), seed, epoch)
    pin = device.type == "cuda"
    for start in range(0, len(order), batch_size):
        positions = order[start : start + batch_size]
        params = draw_params(dataset.seed, epoch, positions.tolist())
        host = torch.empty((len(positions), *images.images.shape[1:]), dtype=torch.uint8, pin_memory=pin)
        images.gather(source_index[positions], out=host.numpy())
        x = augment_batch(host.to(device, non_blocking=True), params)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        y = torch.from_numpy(labels[positions]).to(device, non_blocking=True)
        yield x.float().div_(255), y
