"""Readers for the registered datasets: each yields (uint8 (3, S, S) image, int label) items.

Images are read lazily from disk (PIL -> RGB -> uint8 tensor -> plain resize to S x S, antialiased), and
labels come from the datasets' annotation files, so splitting never reads an image. Only the built-in
digits set lives in memory (its 8x8 originals). torchvision is imported lazily: `rft_fast.data` imports
without it, and opening a dataset never downloads anything (download=False).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

UC_MERCED_CLASSES = 21


class ImageSource(Dataset):
    """Items of `base` (indexable, item[0] a PIL image) as uint8 (3, S, S) tensors with the given labels.

    `files` (the image file of each item) or `content` (a digest of in-memory pixels) say what the items are
    made of: the key of their decoded cache (rft_fast.data.cache; a source with neither is never cached).
    `origin` is (dataset name, part), set by `build`. Once `decoded` holds this source's cached images, items
    are read from it instead of decoded again (the same pixels).
    """

    def __init__(
        self,
        base: Any,
        labels: Sequence[int],
        classes: Sequence[str],
        image_size: int,
        *,
        files: Sequence[str | Path] | None = None,
        content: str | None = None,
    ) -> None:
        self.base = base
        self.labels = np.asarray(labels, dtype=np.int64)
        self.classes = list(classes)
        self.image_size = image_size
        self.files = None if files is None else [Path(f) for f in files]
        self.content = content
        self.origin: tuple[str, str] | None = None
        self.decoded: Any = None  # rft_fast.data.cache.DecodedImages of this source, once built
        self.skipped: list[Path] = []  # files left out as unreadable (a `?skip_bad=1` dataset of your own)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if self.decoded is not None:
            return self.decoded[index][0], int(self.labels[index])
        return to_uint8(self.native(index), self.image_size), int(self.labels[index])

    def native(self, index: int) -> Image.Image:
        """Item `index` as an RGB PIL image at its native resolution (before any resize): what the study's
        corruptions are applied to."""
        return self.base[index][0].convert("RGB")

    def identity(self) -> str | None:
        """What the items are made of, as a digest: each file's path, size and mtime (in item order), or the
        in-memory content's digest; None when neither is known (the source is then not cached)."""
        if self.content is not None:
            return f"content:{self.content}"
        if self.files is None or len(self.files) != len(self.labels):
            return None
        h = hashlib.blake2b(digest_size=16)
        for path in self.files:
            stat = path.stat()
            h.update(f"{path.resolve()}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
        return f"files:{h.hexdigest()}"


def read_image(path: Path) -> Image.Image:
    """An RGB PIL image of `path`, read as torchvision's default loader reads it (`Image.open(f).convert("RGB")`:
    L, LA, P, RGBA, CMYK, I;16 alike); a file PIL cannot read is a ValueError naming it."""
    try:
        with open(path, "rb") as f:
            return Image.open(f).convert("RGB")
    except (OSError, ValueError, SyntaxError) as err:  # PIL's decoders raise all three
        raise ValueError(f"cannot read image {path}: {err}") from err


class ImageFiles:
    """(RGB PIL image, label) items of a list of image files; `hint` is added to a read error's message."""

    def __init__(self, files: list[Path], labels: list[int], hint: str = "") -> None:
        self.files, self.labels, self.hint = files, labels, hint

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        try:
            return read_image(self.files[index]), self.labels[index]
        except ValueError as err:
            if not self.hint:
                raise
            raise ValueError(f"{err} ({self.hint})") from err


def to_uint8(image: Image.Image, size: int) -> torch.Tensor:
    """PIL image -> RGB uint8 tensor (3, size, size): plain (aspect-changing) antialiased bilinear resize."""
    from torchvision.transforms.v2 import functional as F

    tensor = F.pil_to_tensor(image if image.mode == "RGB" else image.convert("RGB"))
    return F.resize(tensor, [size, size], antialias=True)


def _require(*paths: Path) -> None:
    """FileNotFoundError naming the first of `paths` that does not exist (checked before torchvision runs,
    which would otherwise create folders (Caltech101) or fail with a bare RuntimeError)."""
    for path in paths:
        if not path.exists():
            raise FileNotFoundError(f"missing {path}")


def _torchvision(cls_name: str, root: Path, **kwargs: Any) -> Any:
    """torchvision.datasets.<cls_name>(root, download=False), its 'not found / corrupted' as FileNotFoundError."""
    import torchvision.datasets

    try:
        return getattr(torchvision.datasets, cls_name)(str(root), download=False, **kwargs)
    except RuntimeError as err:
        raise FileNotFoundError(f"torchvision.datasets.{cls_name}: {err}") from err


def open_caltech101(root: Path, size: int) -> dict[str, ImageSource]:
    """All of Caltech-101 (torchvision drops the BACKGROUND_Google clutter folder: 101 classes)."""
    folder = root / "caltech101" / "101_ObjectCategories"
    _require(folder, folder / "BACKGROUND_Google")  # torchvision removes this folder's name from the classes
    base = _torchvision("Caltech101", root, target_type="category")
    files = [folder / base.categories[y] / f"image_{i:04d}.jpg" for i, y in zip(base.index, base.y)]
    return {"train": ImageSource(base, base.y, base.categories, size, files=files)}


def open_fgvc_aircraft(root: Path, size: int) -> dict[str, ImageSource]:
    """FGVC-Aircraft's official train / val / test splits, variant level (100 classes)."""
    data = root / "fgvc-aircraft-2013b" / "data"
    lists = (data / f"images_variant_{split}.txt" for split in ("train", "val", "test"))
    _require(data / "images", data / "variants.txt", *lists)
    parts = {}
    for split in ("train", "val", "test"):
        base = _torchvision("FGVCAircraft", root, split=split, annotation_level="variant")
        parts[split] = ImageSource(base, base._labels, base.classes, size, files=base._image_files)
    return parts


def open_flowers102(root: Path, size: int) -> dict[str, ImageSource]:
    """Oxford Flowers-102's official train / val / test splits (102 classes), read from imagelabels.mat and
    setid.mat as torchvision reads them (image ids in setid's order, labels - 1), without torchvision's MD5 check
    of the two files (so any copy of them opens; a damaged one fails in scipy's reader)."""
    from scipy.io import loadmat
    from torchvision.datasets import Flowers102

    folder = root / "flowers-102"
    _require(folder / "jpg", folder / "imagelabels.mat", folder / "setid.mat")
    set_ids = loadmat(folder / "setid.mat", squeeze_me=True)
    labels = dict(
        enumerate((np.atleast_1d(loadmat(folder / "imagelabels.mat", squeeze_me=True)["labels"]) - 1).tolist(), 1)
    )
    parts = {}
    for split, key in (("train", "trnid"), ("val", "valid"), ("test", "tstid")):
        ids = np.atleast_1d(set_ids[key]).tolist()
        base = ImageFiles([folder / "jpg" / f"image_{i:05d}.jpg" for i in ids], [labels[i] for i in ids])
        parts[split] = ImageSource(base, base.labels, Flowers102.classes, size, files=base.files)
    return parts


def open_oxford_pets(root: Path, size: int) -> dict[str, ImageSource]:
    """Oxford-IIIT Pet's official trainval (as train) and test splits, breed level (37 classes)."""
    folder = root / "oxford-iiit-pet"
    _require(folder / "images", folder / "annotations" / "trainval.txt", folder / "annotations" / "test.txt")
    parts = {}
    for split, key in (("trainval", "train"), ("test", "test")):
        base = _torchvision("OxfordIIITPet", root, split=split, target_types="category")
        parts[key] = ImageSource(base, base._labels, base.classes, size, files=base._images)
    parts["test"].classes = parts["train"].classes  # torchvision derives the names per split; keep one list
    return parts


def open_stanford_cars(root: Path, size: int) -> dict[str, ImageSource]:
    """Stanford Cars' official train and test splits (196 classes)."""
    folder = root / "stanford_cars"
    _require(
        folder / "devkit" / "cars_meta.mat",
        folder / "devkit" / "cars_train_annos.mat",
        folder / "cars_train",
        folder / "cars_test",
        folder / "cars_test_annos_withlabels.mat",
    )
    parts = {}
    for split in ("train", "test"):
        base = _torchvision("StanfordCars", root, split=split)
        labels, files = [label for _, label in base._samples], [path for path, _ in base._samples]
        parts[split] = ImageSource(base, labels, base.classes, size, files=files)
    return parts


def uc_merced_folder(root: Path) -> Path:
    """The folder holding UC Merced's 21 class folders: <root>/UCMerced_LandUse/Images, <root>/Images or <root>."""
    candidates = (root / "UCMerced_LandUse" / "Images", root / "Images", root)
    for folder in candidates:
        if folder.is_dir() and sum(p.is_dir() for p in folder.iterdir()) == UC_MERCED_CLASSES:
            return folder
    raise FileNotFoundError(f"none of {', '.join(map(str, candidates))} holds {UC_MERCED_CLASSES} class folders")


def open_uc_merced(root: Path, size: int) -> dict[str, ImageSource]:
    """All of UC Merced Land Use (21 classes x 100 256x256 TIFFs) through torchvision's ImageFolder."""
    from torchvision.datasets import ImageFolder

    base = ImageFolder(str(uc_merced_folder(root)))  # raises FileNotFoundError itself for an empty class folder
    files = [path for path, _ in base.samples]
    return {"train": ImageSource(base, base.targets, base.classes, size, files=files)}


class _DigitsImages:
    """scikit-learn's 8x8 digits as grayscale PIL images (values 0..16 scaled to 0..255)."""

    def __init__(self, n_classes: int = 10) -> None:
        from sklearn.datasets import load_digits

        digits = load_digits()
        keep = digits.target < n_classes
        self.pixels = np.rint(digits.images[keep] / 16.0 * 255.0).astype(np.uint8)
        self.targets = digits.target[keep].astype(np.int64)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        return Image.fromarray(self.pixels[index]), int(self.targets[index])

    def digest(self) -> str:
        return hashlib.blake2b(self.pixels.tobytes() + self.targets.tobytes(), digest_size=16).hexdigest()


def open_digits(root: Path | None, size: int) -> dict[str, ImageSource]:
    """scikit-learn's digits (1,797 images, 10 classes), shipped with scikit-learn: `root` is ignored."""
    base = _DigitsImages()
    return {"train": ImageSource(base, base.targets, [str(d) for d in range(10)], size, content=base.digest())}


def open_digits3(root: Path | None, size: int) -> dict[str, ImageSource]:
    """The digits 0, 1 and 2 of scikit-learn's digits (537 images): a few-class task for AutoAttack's
    small-C rules, built in like `digits`."""
    base = _DigitsImages(n_classes=3)
    return {"train": ImageSource(base, base.targets, ["0", "1", "2"], size, content=base.digest())}
