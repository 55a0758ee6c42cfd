"""The study's training augmentation, made reproducible per (seed, epoch, item).

Each item's random draws come from a generator seeded by a hash of (seed, epoch, index), inside a forked
CPU RNG state, so an epoch's augmented images are the same whatever the number of loader workers, the
order the items are read in, or a restart from a checkpoint.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch
from torch.utils.data import Dataset

from rft_fast.checks import is_int


def item_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed for item `index` in `epoch` (blake2b of the triple: stable across processes and runs)."""
    digest = hashlib.blake2b(f"{seed}/{epoch}/{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def study_transform() -> torch.nn.Module:
    """Horizontal flip (p = 0.5), ColorJitter(0.25), rotation by up to 2 degrees, on uint8 (3, H, W) tensors.

    ColorJitter(0.25) is taken literally, as torchvision reads it: brightness factor in [0.75, 1.25], and no
    contrast, saturation or hue jitter. The rotation keeps the size (corners filled with 0, nearest pixel),
    torchvision's defaults.
    """
    from torchvision.transforms import v2

    return v2.Compose([v2.RandomHorizontalFlip(0.5), v2.ColorJitter(0.25), v2.RandomRotation(2)])


class Augmented(Dataset):
    """`base` with the study's augmentation; item i of epoch e is a function of (seed, e, i) only.

    Call `set_epoch` before each epoch (`rft_fast.data.loader` does); DataLoader workers copy the epoch when
    the loader's iterator starts.
    """

    def __init__(self, base: Dataset, seed: int) -> None:
        self.base = base
        self.seed = seed
        self.epoch = 0
        self.transform = study_transform()

    def set_epoch(self, epoch: int) -> None:
        if not is_int(epoch) or epoch < 0:
            raise ValueError(f"epoch must be a non-negative int, got {epoch!r}")
        self.epoch = epoch

    @property
    def labels(self) -> np.ndarray:
        return self.base.labels

    @property
    def classes(self) -> list[str]:
        return self.base.classes

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        index = range(len(self))[index]  # negative indices name the same item (and seed) as their positive form
        image, label = self.base[index]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(item_seed(self.seed, self.epoch, index))
            return self.transform(image), label
