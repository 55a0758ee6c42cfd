"""The paper's frozen evaluation images: the HF hub dataset MaxHeuillet/RobustGenBench.

The study's code (github MaxHeuillet/robust_training, save_final_dataset.py) wrote, per dataset, one archive
`<paper name>_processed.tar.zst` at the repository's root: a tar stream, zstd-compressed, holding `train/`,
`val/`, `test/` and `test_common/` folders of PNGs (`00000.png`, ...) each with a `labels.csv` (columns
filename,label) and a `metadata.json` ({"N": <classes>, "splits": {<split>: {"count": ...}}}). `test/` is its
1,000-image stratified test subset resized to 224 x 224; `test_common/` the same images in the same order, each
corrupted at its native resolution with one of the 11 study types at severity 3 in the paper's blocks
(corruptions.assign(N, blocks="study")) and then resized. Labels are torchvision's class indices, which are
rft-fast's for the six study datasets (PAPER_NAMES).

Reading: `huggingface_hub.hf_hub_download(repo_type="dataset")` fetches the archive into the hub cache
(honouring HF_HOME, HF_HUB_CACHE and HF_HUB_OFFLINE: with HF_HUB_OFFLINE=1 only the cache is read), and the
`test/`, `test_common/` and `metadata.json` members are extracted once into `<extract_root>/<commit>/<paper
name>/` (written to a temporary folder, then renamed into place). Decompressing needs the `zstandard` package.

    test, corrupted, stamp = load("uc_merced")   # a Dataset of (uint8 (3, 224, 224), label), a CorruptedSet
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from rft_fast.eval.corruptions import STUDY, CorruptedSet, assign
from rft_fast.study import PAPER_DATASET_NAMES

REPO_ID = "MaxHeuillet/RobustGenBench"
# rft-fast's dataset name -> the study's (its archive is <study name>_processed.tar.zst)
PAPER_NAMES = PAPER_DATASET_NAMES
SPLITS = ("test", "test_common")  # the clean and the corrupted frozen images
IMAGE_SIZE = 224
SEVERITY = 3
_MEMBER = re.compile(r"(?:\./)?((?:test|test_common)/[A-Za-z0-9_.-]+|metadata\.json)")


def default_extract_root() -> Path:
    """~/.cache/rft-fast/robustgenbench (under $XDG_CACHE_HOME when set)."""
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "rft-fast" / "robustgenbench"


def archive_name(dataset: str) -> str:
    """The archive of rft-fast dataset `dataset` in the hub repository; ValueError for a dataset it lacks."""
    if dataset not in PAPER_NAMES:
        raise ValueError(f"dataset: {REPO_ID} holds the study's six datasets {sorted(PAPER_NAMES)}, got {dataset!r}")
    return f"{PAPER_NAMES[dataset]}_processed.tar.zst"


def fetch(dataset: str, *, revision: str | None = None) -> Path:
    """The local path of `dataset`'s archive: downloaded into the hub cache unless there already (offline with
    HF_HUB_OFFLINE=1: the cache only, FileNotFoundError saying how to fill it when the file is not there)."""
    from huggingface_hub import hf_hub_download

    name = archive_name(dataset)
    try:
        return Path(hf_hub_download(REPO_ID, name, repo_type="dataset", revision=revision))
    except FileNotFoundError as err:  # huggingface_hub's LocalEntryNotFoundError (offline, not cached) is one
        raise FileNotFoundError(
            f"{REPO_ID}/{name} is not in the hub cache and cannot be downloaded ({err}); on a machine with "
            f'internet run: python -c "from huggingface_hub import hf_hub_download; hf_hub_download('
            f"'{REPO_ID}', '{name}', repo_type='dataset')\" with the same HF_HOME"
        ) from err


def _zstd_reader(f: Any) -> Any:
    try:
        import zstandard
    except ImportError as err:
        raise ImportError(
            f"reading {REPO_ID}'s .tar.zst archives needs the zstandard package: pip install zstandard"
        ) from err
    return zstandard.ZstdDecompressor().stream_reader(f)


def extract(archive: Path, dest: Path) -> Path:
    """Extracts the archive's test/, test_common/ and metadata.json into `dest` (nothing else: train/ and val/
    are skipped, and only plain files with plain names are written) and returns `dest`. An existing `dest` is
    reused as it is; a new one appears complete or not at all."""
    if (dest / "test_common" / "labels.csv").is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    try:
        with open(archive, "rb") as f, tarfile.open(fileobj=_zstd_reader(f), mode="r|") as tar:
            for member in tar:
                match = _MEMBER.fullmatch(member.name)
                if match is None or not member.isfile():
                    continue
                target = tmp / match.group(1)
                target.parent.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(member) as src, open(target, "wb") as out:  # type: ignore[union-attr]
                    shutil.copyfileobj(src, out)
        missing = [split for split in SPLITS if not (tmp / split / "labels.csv").is_file()]
        if missing:
            raise ValueError(f"{archive}: no {', '.join(s + '/labels.csv' for s in missing)} in the archive")
        try:
            os.replace(tmp, dest)
        except OSError:  # another process put it there first
            if not (dest / "test_common" / "labels.csv").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


class FrozenImages(Dataset):
    """One extracted split: (uint8 (3, H, W) image, label) items read from its PNGs in labels.csv's order."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        with open(self.folder / "labels.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        if rows and not {"filename", "label"} <= set(rows[0]):
            raise ValueError(f"{self.folder / 'labels.csv'}: expected columns filename,label, got {list(rows[0])}")
        self.files = [self.folder / row["filename"] for row in rows]
        try:
            self.labels = np.asarray([int(row["label"]) for row in rows], dtype=np.int64)
        except ValueError as err:
            raise ValueError(f"{self.folder / 'labels.csv'}: a label is not an integer ({err})") from None

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        with Image.open(self.files[index]) as image:
            array = np.asarray(image.convert("RGB"), dtype=np.uint8)
        return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous(), int(self.labels[index])


@dataclass(frozen=True)
class Frozen:
    """A dataset's frozen images: `test` (the clean subset), `corrupted` (its study-setting corruptions, the
    per-image types being the paper's blocks) and `stamp`, what the rows record about them."""

    test: FrozenImages
    corrupted: CorruptedSet
    stamp: dict[str, Any]


def load(
    dataset: str, *, extract_root: str | Path | None = None, revision: str | None = None, num_classes: int | None = None
) -> Frozen:
    """`dataset`'s frozen test and corrupted-test images (fetched, extracted once, checked: both splits hold the
    same labels in the same order, images of one shape, labels in 0..N-1 for metadata.json's N, which must
    equal num_classes when given)."""
    path = fetch(dataset, revision=revision)
    commit = path.parent.name  # the hub cache's snapshots/<commit>/<file>
    root = Path(extract_root).expanduser() if extract_root is not None else default_extract_root()
    folder = extract(path, root / commit / PAPER_NAMES[dataset])
    test, common = (FrozenImages(folder / split) for split in SPLITS)
    if len(test) == 0 or not np.array_equal(test.labels, common.labels):
        raise ValueError(
            f"{folder}: test/ and test_common/ must list the same labels in the same order (the same images, "
            f"clean and corrupted), got {len(test)} and {len(common)} rows"
        )
    meta_path = folder / "metadata.json"
    classes = json.loads(meta_path.read_text()).get("N") if meta_path.is_file() else None
    if num_classes is not None and classes is not None and classes != num_classes:
        raise ValueError(f"{meta_path}: N = {classes} classes, but dataset {dataset!r} has {num_classes}")
    bound = classes or num_classes
    if bound is not None and not (0 <= test.labels.min() and test.labels.max() < bound):
        raise ValueError(f"{folder}: labels must lie in 0..{bound - 1}, got {test.labels.min()}..{test.labels.max()}")
    try:
        images = torch.stack([common[i][0] for i in range(len(common))])
    except RuntimeError as err:
        raise ValueError(f"{folder / 'test_common'}: images of different sizes ({err})") from None
    if images.shape[1:] != test[0][0].shape:
        raise ValueError(
            f"{folder}: test/ images are {tuple(test[0][0].shape)}, test_common/ {tuple(images.shape[1:])}"
        )
    corrupted = CorruptedSet(
        "study", SEVERITY, images, torch.from_numpy(common.labels), assign(len(common), STUDY), from_cache=True
    )
    stamp = {"source": "robustgenbench", "repo": REPO_ID, "file": path.name, "revision": commit}
    return Frozen(test, corrupted, stamp)
