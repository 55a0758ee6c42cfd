"""The study's training augmentation, made reproducible per (seed, epoch, item), per item and per batch.

Each item's random draws come from a generator seeded by a hash of (seed, epoch, index), so an epoch's
augmented images are the same whatever the number of loader workers, the order the items are read in, or a
restart from a checkpoint. `Augmented` runs torchvision's transforms on one item (in a forked CPU RNG state);
`draw_params` + `augment_batch` make the same draws per item and apply them to a whole uint8 batch on its
device with torchvision's own arithmetic (flip, brightness blend truncated to uint8, rotation by an affine
grid sampled at the nearest pixel, 0 outside), pixel for pixel the same on CPU (tests/data/test_cache.py).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from rft_fast.checks import is_int

FLIP_P = 0.5  # RandomHorizontalFlip(p)
BRIGHTNESS = 0.25  # ColorJitter(brightness): factor uniform in [1 - b, 1 + b]
DEGREES = 2.0  # RandomRotation(degrees): angle uniform in [-d, d]


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

    return v2.Compose([v2.RandomHorizontalFlip(FLIP_P), v2.ColorJitter(BRIGHTNESS), v2.RandomRotation(DEGREES)])


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


@dataclass(frozen=True)
class AugmentParams:
    """One batch's draws, item by item: flip (bool (B,)), brightness factor (float32 (B,)), angle in degrees
    (float, as torchvision passes it to its rotation)."""

    flip: Tensor
    brightness: Tensor
    angles: tuple[float, ...]


def draw_params(seed: int, epoch: int, indices: Sequence[int]) -> AugmentParams:
    """The draws `study_transform` makes for item `i` of `epoch` under `Augmented`, for each i in `indices`.

    Same generator state (a fresh CPU generator seeded with item_seed), same calls in the same order:
    RandomHorizontalFlip's torch.rand(1) (flip when < p), ColorJitter's randperm(4) then its brightness
    uniform_, RandomRotation's angle uniform_.
    """
    flips, factors, angles = [], [], []
    for index in indices:
        gen = torch.Generator().manual_seed(item_seed(seed, epoch, int(index)))
        flips.append(bool(torch.rand(1, generator=gen) < FLIP_P))
        torch.randperm(4, generator=gen)  # ColorJitter's order of its (here: one) colour operations
        factors.append(torch.empty(1).uniform_(1 - BRIGHTNESS, 1 + BRIGHTNESS, generator=gen).item())
        angles.append(torch.empty(1).uniform_(-DEGREES, DEGREES, generator=gen).item())
    return AugmentParams(torch.tensor(flips), torch.tensor(factors, dtype=torch.float32), tuple(angles))


def _rotation_thetas(angles: Sequence[float]) -> list[list[float]]:
    """torchvision's inverse affine matrix of `rotate(angle)` about the centre (v2 `rotate_image`: the angle
    taken mod 360, then `_get_inverse_affine_matrix(center=0, -angle, no translation, scale 1, no shear)`)."""
    thetas = []
    for angle in angles:
        rot = math.radians(-(angle % 360))
        thetas.append([math.cos(rot), math.sin(rot), 0.0, -math.sin(rot), math.cos(rot), 0.0])
    return thetas


def _rotate_nearest(images: Tensor, angles: Sequence[float]) -> Tensor:
    """uint8 (B, C, H, W) rotated by angles[b] degrees as torchvision's v2 rotate does it (an affine grid in
    float32 by the same bmm, grid_sample nearest with zeros outside, rounded back to uint8); angle 0 (mod 360)
    leaves an image as it is, as torchvision does."""
    b, _, h, w = images.shape
    device = images.device
    theta = torch.tensor(_rotation_thetas(angles), dtype=torch.float32, device=device).reshape(b, 2, 3)
    base = torch.empty(1, h, w, 3, dtype=torch.float32, device=device)
    base[..., 0].copy_(torch.linspace((1.0 - w) * 0.5, (w - 1.0) * 0.5, steps=w, device=device))
    base[..., 1].copy_(torch.linspace((1.0 - h) * 0.5, (h - 1.0) * 0.5, steps=h, device=device).unsqueeze_(-1))
    base[..., 2].fill_(1)
    scaled = theta.transpose(1, 2).div_(torch.tensor([0.5 * w, 0.5 * h], dtype=torch.float32, device=device))
    grid = base.view(1, h * w, 3).expand(b, -1, -1).bmm(scaled).view(b, h, w, 2)
    out = torch.nn.functional.grid_sample(
        images.float(), grid, mode="nearest", padding_mode="zeros", align_corners=False
    )
    out = out.round_().to(torch.uint8)
    still = torch.tensor([a % 360 == 0 for a in angles], device=device).view(b, 1, 1, 1)
    return torch.where(still, images, out)


def augment_batch(images: Tensor, params: AugmentParams) -> Tensor:
    """The study's augmentation of a uint8 batch (B, 3, H, W) on its own device, item b by params' b-th draws:
    flip, brightness (x * factor in float32, clamped to [0, 255], truncated to uint8), rotation (nearest, 0
    outside). The result equals `Augmented`'s items (on CPU pixel for pixel; see docs/data.md for CUDA)."""
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise ValueError(f"images must be uint8 (B, C, H, W), got {images.dtype} {tuple(images.shape)}")
    b = images.shape[0]
    if len(params.angles) != b:
        raise ValueError(f"params hold {len(params.angles)} items' draws for a batch of {b}")
    device = images.device
    flip = params.flip.to(device).view(b, 1, 1, 1)
    x = torch.where(flip, images.flip(-1), images)
    factor = params.brightness.to(device).view(b, 1, 1, 1)
    x = x.float().mul_(factor).clamp_(0, 255).to(torch.uint8)
    return _rotate_nearest(x, params.angles)
