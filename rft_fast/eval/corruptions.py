"""Common corruptions (the ImageNet-C types, computed by the `imagecorruptions` package) of an evaluation set.

The study's setting (the default): each image gets ONE of 11 corruption types at severity 3, the types in
the paper's blocks (`assign`: step = N // 11, image i gets type (i // step) % 11, so the last N % 11 images wrap
round to the first type), each image corrupted at its NATIVE resolution and then resized to the evaluation size,
as the paper's code does. Options: the full 15 types x 5 severities grid (setting "full"), even blocks
(blocks "even": numpy.array_split sizes), corrupting the already-resized image (resolution "evaluation").

    sets = build(subset, key={"dataset": "digits", "split": "test", "image_size": 224, "n": 1000, "subset_seed": 0},
                 cache_dir="~/.cache/rft_fast/corruptions")
    images, labels = sets[0].images, sets[0].labels  # uint8 (N, 3, H, W), int64 (N,)

resolution "native": item i is traced through its Subset views to its ImageSource (rft_fast.data.sources)
and corrupted as `source.native(index)` delivers it (RGB, before any resize; an image smaller than MIN_SIZE on a
side is first upsampled so its shorter side is MIN_SIZE, the least imagecorruptions accepts), then resized to
the evaluation size with the clean images' resize (antialiased bilinear; the paper's PIL bilinear Resize agrees
to within 2 grey levels). resolution "evaluation": the items are corrupted as the dataset delivers them (already
resized; any dataset of uint8 (3, H, W) items, at least MIN_SIZE on a side). Image i's corruption draws its randomness from a seed
derived from (seed, type, severity, i) (`image_seed`), so the result does not depend on the number of worker
processes nor on which worker an image lands in. Built sets can be cached on disk (`cache_path`), one file
per (type, severity) set, written atomically and validated on load (a bad file is rebuilt, never trusted).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import inspect
import json
import math
import multiprocessing
import os
import time
import warnings
from collections.abc import Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from rft_fast.checks import is_int
from rft_fast.data.splits import labels_of
from rft_fast.files import atomic_write, clean_orphans

STUDY: tuple[str, ...] = (
    "shot_noise",
    "impulse_noise",
    "defocus_blur",
    "motion_blur",
    "zoom_blur",
    "snow",
    "brightness",
    "contrast",
    "elastic_transform",
    "pixelate",
    "jpeg_compression",
)
"""The study's 11 types (gaussian_noise, glass_blur, frost and fog left out), in its block order."""

ALL: tuple[str, ...] = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "defocus_blur",
    "glass_blur",
    "motion_blur",
    "zoom_blur",
    "snow",
    "frost",
    "fog",
    "brightness",
    "contrast",
    "elastic_transform",
    "pixelate",
    "jpeg_compression",
)
"""The 15 ImageNet-C corruption types (imagecorruptions' "common" subset)."""

SETTINGS = ("study", "full")
RESOLUTIONS = ("native", "evaluation")  # where the corruption is applied: the study's first
BLOCKS = ("study", "even")  # how the study setting's types are laid out over the images: the paper's first
SEVERITIES = (1, 2, 3, 4, 5)
MIN_SIZE = 32  # imagecorruptions refuses smaller images
CACHE_FORMAT = 2  # 2: resolution and blocks in the identity
PACKAGE = "imagecorruptions-imaug"
CHUNK = 32  # images per task at most: keeps the progress bar moving and the workers evenly loaded
ORPHAN_AGE_S = 3600.0  # a cache write older than this (seconds) was killed: writing one set takes seconds


@dataclass
class CorruptedSet:
    """One corrupted copy of the evaluation set. setting: "study", or the corruption type for a full-grid
    set; corruptions: each image's type (all equal in a full-grid set)."""

    setting: str
    severity: int
    images: torch.Tensor  # uint8 (N, 3, H, W)
    labels: torch.Tensor  # int64 (N,)
    corruptions: list[str]
    from_cache: bool


def assign(n: int, names: Sequence[str] = STUDY, blocks: str = "study") -> list[str]:
    """Each of n images' corruption type, `names` in contiguous blocks.

    blocks "study" (the paper's code): step = max(1, n // len(names)); image i gets names[(i // step) %
    len(names)], so the last n % len(names) images wrap round to the first types (n = 1,000: 90 per type, and
    images 990-999 get names[0] too). "even": numpy.array_split's sizes (they differ by at most one, larger
    blocks first). Either way, with n < len(names) only the first n types are used, one image each."""
    if not is_int(n) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    if not names:
        raise ValueError("names must not be empty")
    if blocks not in BLOCKS:
        raise ValueError(f"blocks must be one of {BLOCKS}, got {blocks!r}")
    if blocks == "study":
        step = max(1, n // len(names))
        return [names[(i // step) % len(names)] for i in range(n)]
    sizes = [len(block) for block in np.array_split(np.arange(n), len(names))]
    return [name for name, size in zip(names, sizes) for _ in range(size)]


def image_seed(seed: int, name: str, severity: int, index: int) -> int:
    """The 32-bit seed of image `index`'s corruption (blake2b of the four), so every image has its own
    stream whatever process computes it."""
    digest = hashlib.blake2b(f"{seed}/{name}/{severity}/{index}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big")


def library_version() -> str:
    """The installed imagecorruptions version (part of the cache key: another version may corrupt differently)."""
    return importlib.metadata.version(PACKAGE)


def corrupt_one(image: np.ndarray, name: str, severity: int, seed: int) -> np.ndarray:
    """imagecorruptions.corrupt of one (H, W, 3) uint8 image, made deterministic: numpy's global RNG (which
    most types draw from) is seeded with `seed`, and the types with their own `seed` argument (impulse_noise,
    glass_blur; they would otherwise draw fresh OS entropy) get it too."""
    import imagecorruptions

    takes_seed = "seed" in inspect.signature(imagecorruptions.corruption_dict[name]).parameters
    np.random.seed(seed)
    kwargs = {"seed": seed} if takes_seed else {}
    return imagecorruptions.corrupt(image, severity=severity, corruption_name=name, **kwargs)


def _corrupt_chunk(images: Sequence[np.ndarray], names: list[str], severity: int, seeds: list[int]) -> list[np.ndarray]:
    """Corrupt a chunk of (H, W, 3) uint8 images (a worker task), each to (H', W', 3) uint8. numpy's global
    RNG state is restored afterwards, so an in-process build leaves the caller's stream alone."""
    state = np.random.get_state()
    try:
        return [_hwc_uint8(corrupt_one(img, name, severity, s)) for img, name, s in zip(images, names, seeds)]
    finally:
        np.random.set_state(state)


def _hwc_uint8(out: np.ndarray) -> np.ndarray:
    """A corruption's output as a writable (H, W, 3) uint8 array (some come read-only): rounded and clipped if
    a type returns floats, grey -> RGB."""
    out = np.array(out)
    if out.dtype != np.uint8:
        out = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    return np.repeat(out[..., None], 3, axis=2) if out.ndim == 2 else out


def native_source(dataset: Dataset, index: int) -> tuple[Any, int]:
    """(source, source_index) of item `index`: followed through Subset views (`.dataset`, `.indices`, nested
    to any depth) to the object that has `native(index)` (an rft_fast.data ImageSource). ValueError naming
    what was found instead when there is none (a plain tensor dataset: use resolution "evaluation")."""
    seen = dataset
    while not callable(getattr(seen, "native", None)):
        if not isinstance(seen, Subset):
            raise ValueError(
                f"resolution 'native' needs items that trace back (through Subset views) to a source with "
                f"native(index), such as rft_fast.data's ImageSource; {type(dataset).__name__} leads to "
                f"{type(seen).__name__}, which has none: corrupt at the evaluation resolution instead "
                f"(resolution='evaluation', --corruption-resolution evaluation)"
            )
        index = int(seen.indices[index])
        seen = seen.dataset
    return seen, index


def native_image(dataset: Dataset, index: int) -> np.ndarray:
    """Item `index` at its native resolution as an (H, W, 3) uint8 array (what resolution "native" corrupts):
    RGB, and upsampled (antialiased bilinear, aspect kept) so that its shorter side is MIN_SIZE when smaller,
    imagecorruptions refusing smaller images (the built-in digits are 8 x 8: corrupted at 32 x 32)."""
    source, inner = native_source(dataset, index)
    image = source.native(inner)
    image = image if image.mode == "RGB" else image.convert("RGB")
    width, height = image.size
    if min(width, height) < MIN_SIZE:
        scale = MIN_SIZE / min(width, height)
        size = [max(MIN_SIZE, round(height * scale)), max(MIN_SIZE, round(width * scale))]
        from torchvision.transforms.v2 import functional as F

        return F.resize(F.pil_to_tensor(image), size, antialias=True).permute(1, 2, 0).contiguous().numpy()
    return np.asarray(image, dtype=np.uint8).copy()


def _chw(out: np.ndarray, height: int, width: int) -> torch.Tensor:
    """(H', W', 3) uint8 -> (3, height, width) uint8, resized (antialiased bilinear, as rft_fast.data resizes
    its clean images) when the sizes differ: a native-resolution image, or a corruption that changed the size."""
    tensor = torch.from_numpy(out).permute(2, 0, 1)
    if tensor.shape[1:] != (height, width):
        from torchvision.transforms.v2 import functional as F

        tensor = F.resize(tensor, [height, width], antialias=True)
    return tensor.contiguous()


def _identity(
    key: dict, setting: str, severity: int, seed: int, corruption_names: Sequence[str], resolution: str, blocks: str
) -> dict[str, Any]:
    """What a cached set is a function of (besides the images the key stands for)."""
    return {
        "format": CACHE_FORMAT,
        "key": key,
        "setting": setting,
        "severity": severity,
        "seed": seed,
        "corruptions": list(corruption_names),
        "resolution": resolution,
        "blocks": blocks,
        "imagecorruptions": library_version(),
    }


def cache_path(
    key: dict,
    setting: str,
    severity: int,
    seed: int,
    cache_dir: str | Path,
    corruption_names: Sequence[str],
    *,
    resolution: str = "native",
    blocks: str = "study",
) -> Path:
    """The cache file of one set: setting "study" (with the study's types as corruption_names) or a corruption
    type (a full-grid set, corruption_names (type,)). Its name is readable (setting, severity) plus a hash of
    everything the set depends on: resolution and blocks included (format 2: no earlier file matches), and the
    imagecorruptions version."""
    try:
        text = json.dumps(_identity(key, setting, severity, seed, corruption_names, resolution, blocks), sort_keys=True)
    except TypeError as err:
        raise ValueError(f"key must be JSON-serializable, got {key!r}") from err
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    return Path(cache_dir).expanduser() / f"{setting}-severity{severity}-{digest}.pt"


def _save(path: Path, meta: dict[str, Any], result: CorruptedSet) -> None:
    """The set as one .pt file (metadata inside, checked on load) plus a readable .json sidecar."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"meta": meta, "images": result.images, "labels": result.labels, "corruptions": result.corruptions}
    atomic_write(path, lambda f: torch.save(payload, f), hidden=True)
    atomic_write(
        path.with_suffix(".json"), lambda f: f.write(json.dumps(meta, indent=2, sort_keys=True).encode()), hidden=True
    )


def _load(
    path: Path, meta: dict[str, Any], labels: torch.Tensor, names: list[str], shape: tuple[int, ...]
) -> CorruptedSet | None:
    """The cached set at `path` if it exists and matches (metadata, labels, per-image types, image shape);
    None otherwise, with a warning when a file was there but unusable (truncated, stale, foreign)."""
    if not path.exists():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        images, stored = payload["images"], payload["labels"]
        problem = (
            "metadata differ"
            if payload["meta"] != meta
            else "labels differ"
            if not torch.equal(stored, labels)
            else "corruption types differ"
            if payload["corruptions"] != names
            else "images have the wrong shape or dtype"
            if images.dtype != torch.uint8 or tuple(images.shape) != (len(names), *shape)
            else None
        )
    except Exception as err:  # a truncated or foreign file can fail in many ways; any of them means rebuild
        problem = f"unreadable ({type(err).__name__}: {err})"
    if problem is not None:
        warnings.warn(f"corruption cache {path}: {problem}; rebuilding it", stacklevel=3)
        return None
    return CorruptedSet(meta["setting"], meta["severity"], images, stored, names, from_cache=True)


def _init_worker() -> None:
    """One worker per core: keep OpenCV (used by several types) single-threaded to avoid oversubscription."""
    import cv2

    cv2.setNumThreads(1)


def _compute(
    images: Sequence[np.ndarray],
    shape: tuple[int, ...],
    names: list[str],
    severity: int,
    seed: int,
    pool: Executor | None,
    workers: int,
    bar: Any,
) -> torch.Tensor:
    """Corrupt images ((H_i, W_i, 3) uint8 each), image i with names[i] at `severity`, in chunks (in `pool` if
    any; at least 4 chunks per worker so that uneven chunk costs even out), each result resized to shape
    (3, H, W)."""
    n, (height, width) = len(images), shape[1:]
    seeds = [image_seed(seed, name, severity, i) for i, name in enumerate(names)]
    chunks = np.array_split(np.arange(n), max(math.ceil(n / CHUNK), min(n, 4 * workers)))
    args = (
        [[images[i] for i in c] for c in chunks],
        [[names[i] for i in c] for c in chunks],
        [severity] * len(chunks),
        [[seeds[i] for i in c] for c in chunks],
    )
    results = pool.map(_corrupt_chunk, *args) if pool is not None else map(_corrupt_chunk, *args)
    out = []
    for chunk in results:
        out.extend(_chw(img, height, width) for img in chunk)
        bar.update(len(chunk))
    return torch.stack(out)


def _check(
    dataset: Dataset,
    setting: str,
    severity: int,
    seed: int,
    workers: int | None,
    names: Sequence[str] | None,
    resolution: str,
    blocks: str,
) -> tuple[int, ...]:
    """ValueError naming the first bad argument; the (3, H, W) shape of the dataset's images otherwise."""
    if setting not in SETTINGS:
        raise ValueError(f"setting must be one of {SETTINGS}, got {setting!r}")
    if not is_int(severity) or severity not in SEVERITIES:
        raise ValueError(f"severity must be an int in 1..5, got {severity!r}")
    if not is_int(seed):
        raise ValueError(f"seed must be an int, got {seed!r}")
    if workers is not None and (not is_int(workers) or workers < 0):
        raise ValueError(f"workers must be a non-negative int or None, got {workers!r}")
    if names is not None and (not names or any(name not in ALL for name in names)):
        raise ValueError(f"names must be a non-empty selection of {ALL}, got {names!r}")
    if resolution not in RESOLUTIONS:
        raise ValueError(f"resolution must be one of {RESOLUTIONS}, got {resolution!r}")
    if blocks not in BLOCKS:
        raise ValueError(f"blocks must be one of {BLOCKS}, got {blocks!r}")
    if len(dataset) == 0:
        raise ValueError("dataset is empty")
    image = dataset[0][0]
    if not isinstance(image, torch.Tensor) or image.dtype != torch.uint8 or image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(
            f"dataset items must be uint8 (3, H, W) tensors, got {getattr(image, 'dtype', type(image))} "
            f"{tuple(getattr(image, 'shape', ()))}"
        )
    if resolution == "native":
        native_source(dataset, 0)  # the error for a dataset without native images, before any work
    elif min(image.shape[1:]) < MIN_SIZE:
        raise ValueError(
            f"dataset images must be at least {MIN_SIZE}x{MIN_SIZE} (imagecorruptions' minimum) to be corrupted "
            f"at the evaluation resolution, got {tuple(image.shape[1:])}"
        )
    return tuple(image.shape)


def _originals(dataset: Dataset, resolution: str) -> list[np.ndarray]:
    """The (H, W, 3) uint8 images that get corrupted: each item's native image, or the item itself."""
    if resolution == "native":
        return [native_image(dataset, i) for i in range(len(dataset))]
    images = [dataset[i][0].permute(1, 2, 0).numpy() for i in range(len(dataset))]
    bad = next((img.dtype for img in images if img.dtype != np.uint8), None)
    if bad is not None:
        raise ValueError(f"dataset items must be uint8 (3, H, W) tensors, got {bad} among them")
    return images


def build(
    dataset: Dataset,
    *,
    key: dict,
    setting: str = "study",
    severity: int = 3,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    workers: int | None = None,
    progress: bool = False,
    names: Sequence[str] | None = None,
    resolution: str = "native",
    blocks: str = "study",
) -> list[CorruptedSet]:
    """The corrupted copies of `dataset` (items (uint8 (3, H, W), label), at the evaluation resolution); every
    set's images have the items' shape.

    setting "study": one set, image i corrupted with assign(N, names, blocks)[i] at `severity` (names default:
    STUDY). setting "full": one set per type in `names` (default: ALL) and severity 1..5, type-major
    (`severity` ignored): 75 sets of all N images by default.
    resolution "native" (the study's): each image corrupted at its native resolution (`native_image`), then
    resized to the items' size; "evaluation": the items themselves are corrupted.
    key: identifies the images for the cache (e.g. dataset, split, image_size, n, subset_seed; JSON-able).
    cache_dir: None for no cache; else each set is loaded from there when present and valid (no corruption
    is computed then) or computed and written there, set by set, so an interrupted grid build resumes.
    workers: processes (default os.cpu_count()); 0 or 1 computes in this process. Results do not depend on it.
    """
    shape = _check(dataset, setting, severity, seed, workers, names, resolution, blocks)
    n = len(dataset)
    labels = torch.as_tensor(labels_of(dataset), dtype=torch.int64)
    if setting == "study":
        types = tuple(names or STUDY)
        plan = [("study", severity, types, assign(n, types, blocks))]
    else:
        plan = [(name, s, (name,), [name] * n) for name in (names or ALL) for s in SEVERITIES]
    results: list[CorruptedSet | None] = []
    todo = []
    for label, sev, types, per_image in plan:
        meta = {**_identity(key, label, sev, seed, types, resolution, blocks), "n_images": n}
        path = (
            None
            if cache_dir is None
            else cache_path(key, label, sev, seed, cache_dir, types, resolution=resolution, blocks=blocks)
        )
        results.append(None if path is None else _load(path, meta, labels, per_image, shape))
        if results[-1] is None:
            todo.append((len(results) - 1, label, sev, per_image, path, meta))
    if todo and cache_dir is not None and Path(cache_dir).expanduser().is_dir():
        # other processes may be writing sets here: only a write no build takes this long is an orphan
        clean_orphans(Path(cache_dir).expanduser(), min_age_s=ORPHAN_AGE_S)
    if todo:
        from tqdm.auto import tqdm

        workers = (os.cpu_count() or 1) if workers is None else workers
        images = _originals(dataset, resolution)
        # spawned, not forked: a fork of a process with running threads (torch's, Ray's) can inherit a held lock
        # and hang the worker forever
        pool = (
            ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker)
            if workers > 1
            else None
        )
        try:
            with tqdm(total=n * len(todo), desc="corruptions", unit="img", disable=not progress) as bar:
                for index, label, sev, per_image, path, meta in todo:
                    corrupted = _compute(images, shape, per_image, sev, seed, pool, workers, bar)
                    result = CorruptedSet(label, sev, corrupted, labels, per_image, from_cache=False)
                    if path is not None:
                        _save(path, meta, result)
                    results[index] = result
        finally:
            if pool is not None:
                pool.shutdown(cancel_futures=True)
    return results  # type: ignore[return-value]  # every None was filled above


def time_build(
    dataset: Dataset, *, workers: int, severity: int = 3, seed: int = 0, resolution: str = "native"
) -> float:
    """Seconds to build the study setting of `dataset` without a cache (reading the images included), for
    `rft-fast bench eval`."""
    start = time.perf_counter()
    build(dataset, key={}, setting="study", severity=severity, seed=seed, workers=workers, resolution=resolution)
    return time.perf_counter() - start
