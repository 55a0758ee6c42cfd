"""`rft-fast bench data`: training images/s of the decoded cache + device augmentation vs torchvision's pipeline.

The bench writes n synthetic JPEGs (source_size x source_size, two classes) into a temporary folder, then
times one shuffled epoch of augmented training batches delivered to the device as float [0, 1] by
- "torchvision": ImageFolder + v2 transforms (decode, antialiased resize to image_size, the study's flip /
  ColorJitter / rotation per item) in a DataLoader with `workers` processes, converted by to_device;
- "rft-fast cached": data.train_batches on the folder dataset, read from the decoded cache (built before,
  timed on its own as "rft-fast cache build": the decode-once cost, by the same number of workers) and
  augmented per batch on the device.
Both give the same pixels for the same seed (tests/data/test_cache.py); speed-up = cached / torchvision.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from rft_fast.bench import common
from rft_fast.data.loading import decoded_source

# fmt: off
COLUMNS = (
    ("pipeline", "pipeline", "<24"), ("n", "images", ">6"), ("size", "px", ">4"), ("workers", "workers", ">7"),
    ("seconds", "seconds", ">8.2f"), ("images_per_s", "images/s", ">9.1f"), ("speedup", "speed-up", ">8.2f"),
)
# fmt: on
IMPLS = ("torchvision", "rft-fast cached")


def write_jpegs(folder: Path, n: int, size: int, seed: int = 0) -> Path:
    """n random-texture size x size JPEGs (quality 90) in folder/class{0,1}/; returns folder."""
    rng = np.random.default_rng(seed)
    from PIL import Image

    for i in range(n):
        low = rng.integers(0, 256, (size // 8, size // 8, 3), dtype=np.uint8)  # smooth-ish, like a photo
        image = Image.fromarray(low).resize((size, size), Image.BILINEAR)
        target = folder / f"class{i % 2}"
        target.mkdir(parents=True, exist_ok=True)
        image.save(target / f"{i:06d}.jpg", quality=90)
    return folder


def torchvision_epoch(folder: Path, image_size: int, batch: int, workers: int, device: torch.device, seed: int) -> int:
    """One epoch of ImageFolder + v2 transforms through a DataLoader and to_device; the images delivered."""
    from torchvision.datasets import ImageFolder
    from torchvision.transforms import v2

    from rft_fast import data
    from rft_fast.data.augment import study_transform

    transform = v2.Compose([v2.PILToTensor(), v2.Resize([image_size, image_size], antialias=True), study_transform()])
    dataset = ImageFolder(str(folder), transform=transform)
    n = 0
    for xb, yb in data.loader(dataset, batch, shuffle=True, seed=seed, workers=workers, device=device):
        x, _ = data.to_device(xb, yb, device)
        n += x.shape[0]
    common._sync(device)
    return n


def cached_split(folder: Path, image_size: int):
    """The augmented training split of `folder` as rft-fast builds it."""
    from rft_fast import data

    return data.build(f"folder:{folder}", image_size=image_size, seed=0).train


def cached_epoch(train, batch: int, workers: int, device: torch.device, seed: int, epoch: int, cache_dir: Path) -> int:
    """One epoch of data.train_batches (building the cache first when it is missing); the images delivered."""
    from rft_fast import data

    n = 0
    batches = data.train_batches(
        train, batch, seed=seed, epoch=epoch, workers=workers, device=device, cache_dir=cache_dir
    )
    for x, _ in batches:
        n += x.shape[0]
    common._sync(device)
    return n


def run(
    device: str = "cpu",
    n: int = 512,
    image_size: int = 224,
    source_size: int = 256,
    batch: int = 128,
    workers: int = 2,
    epochs: int = 2,
) -> dict[str, object]:
    dev = torch.device(device)
    rows = []
    with tempfile.TemporaryDirectory(prefix="rft-bench-data-") as tmp:
        folder = write_jpegs(Path(tmp) / "pics", n, source_size)
        cache_dir = Path(tmp) / "decoded"
        torchvision_epoch(folder, image_size, batch, workers, dev, seed=0)  # warm the page cache and imports
        t0 = time.perf_counter()
        count = torchvision_epoch(folder, image_size, batch, workers, dev, seed=1)
        seconds = time.perf_counter() - t0
        base = count / seconds
        rows.append(_row("torchvision", count, seconds, image_size, workers, 1.0))

        train = cached_split(folder, image_size)
        t0 = time.perf_counter()
        decoded_source(train.base.dataset, cache_dir=cache_dir, workers=workers)
        build_s = time.perf_counter() - t0
        rows.append(_row("rft-fast cache build", len(train.base.dataset), build_s, image_size, workers, None))
        cached_epoch(train, batch, workers, dev, seed=0, epoch=0, cache_dir=cache_dir)  # warm-up
        times = []
        for epoch in range(1, epochs + 1):
            t0 = time.perf_counter()
            count = cached_epoch(train, batch, workers, dev, seed=0, epoch=epoch, cache_dir=cache_dir)
            times.append(time.perf_counter() - t0)
        seconds = float(np.median(times))
        rows.append(_row("rft-fast cached", count, seconds, image_size, 0, count / seconds / base))
    meta = common.environment(dev, " ".join(sys.argv))
    meta.update(cpu_count=os.cpu_count(), source_size=source_size, batch=batch)
    return {"meta": meta, "rows": rows}


def _row(pipeline: str, n: int, seconds: float, size: int, workers: int, speedup: float | None) -> dict:
    return {
        "pipeline": pipeline,
        "n": n,
        "size": size,
        "workers": workers,
        "seconds": seconds,
        "images_per_s": n / seconds,
        "speedup": speedup,
    }


def format_table(result: dict[str, object]) -> str:
    return common.format_table(result["meta"], result["rows"], COLUMNS)
