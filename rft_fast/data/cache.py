"""Decode once: a dataset part's images decoded and resized to one size, kept as uint8 in a memory-mapped file.

One file per (dataset, part, size, source files): the key digests the dataset's name, the reader's part
("train", "val", "test"), the size, and the source's identity (each file's path, size and mtime, or a digest of
in-memory pixels) with its labels and class names, so a changed dataset is never served stale: it gets a new
key and is decoded again (the old file of the same dataset, part and size is removed).

File layout: the images (N, 3, S, S) uint8 from offset 0 (so they memory-map as they are), then a JSON trailer
(key, shape, labels, classes, crc32 of the images), then 16 bytes: the trailer's length and a magic. A file is
written whole beside its final name and renamed over it (rft_fast.files.atomic_write), under an exclusive
lock so that concurrent runs decode a part once; a kill -9 mid-write leaves only a temporary file, removed on
the next build. A file that is truncated, has no valid trailer, another key or a wrong checksum is rebuilt.

Location: `cache_dir()`: $RFT_FAST_DECODED_CACHE, else $XDG_CACHE_HOME/rft-fast/decoded (~/.cache/...);
RFT_FAST_DECODED_CACHE=off turns the cache off (training then decodes every epoch, as before).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from rft_fast.files import atomic_write, clean_orphans

ENV = "RFT_FAST_DECODED_CACHE"
OFF = "off"
FORMAT = 1
MAGIC = b"RFTDEC01"
SUFFIX = ".u8"
_TAIL = 16  # trailer length (8 bytes, little endian) + MAGIC
_CHUNK = 64 << 20
_ORPHAN_AGE_S = 24 * 3600.0  # a temporary file older than this is a killed write's (no decode takes a day)


class CacheError(ValueError):
    """The decoded-image cache folder cannot be used (not a folder, not writable)."""


class CorruptCache(Exception):
    """A cache file that must be rebuilt (truncated, foreign, or its checksum does not match)."""


def cache_dir(cache: str | Path | None = None) -> Path | None:
    """The cache folder: `cache` when given, else $RFT_FAST_DECODED_CACHE, else ~/.cache/rft-fast/decoded
    (under $XDG_CACHE_HOME when set); None when the choice is "off"."""
    value = str(cache) if cache is not None else os.environ.get(ENV, "")
    if value.strip().lower() == OFF:
        return None
    if value:
        return Path(value).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")).expanduser() / "rft-fast" / "decoded"


def _usable(folder: Path) -> Path:
    """`folder`, created if needed; CacheError naming it and the setting when it is not a writable folder."""
    hint = f"(set {ENV} to a writable folder, or to {OFF!r} to decode every epoch)"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CacheError(f"decoded-image cache folder {folder} cannot be created: {err} {hint}") from err
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise CacheError(f"decoded-image cache folder {folder} is not a writable folder {hint}")
    return folder


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")[-48:] or "data"


class DecodedImages:
    """The decoded images of one cache file: `images` a read-only uint8 (N, 3, S, S) numpy memmap, with
    `labels` (int64 (N,)) and `classes`. Pickles by path (a DataLoader worker maps the file itself)."""

    def __init__(self, path: Path, meta: dict[str, Any]) -> None:
        self.path, self.meta = path, meta
        self.labels = np.asarray(meta["labels"], dtype=np.int64)
        self.classes: list[str] = list(meta["classes"])
        self.images = np.memmap(path, dtype=np.uint8, mode="r", shape=tuple(meta["shape"]))

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return torch.from_numpy(np.array(self.images[index])), int(self.labels[index])

    def gather(self, indices: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """images[indices] copied into `out` (a fresh array when None): one batch."""
        return np.take(self.images, indices, axis=0, out=out)

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "meta": self.meta}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"], state["meta"])


def _read_meta(path: Path) -> dict[str, Any]:
    """The trailer of cache file `path`; CorruptCache when it is missing, unreadable or the size is wrong."""
    size = path.stat().st_size
    if size < _TAIL:
        raise CorruptCache(f"{path}: {size} bytes, no trailer")
    with open(path, "rb") as f:
        f.seek(size - _TAIL)
        tail = f.read(_TAIL)
        if tail[8:] != MAGIC:
            raise CorruptCache(f"{path}: no trailer (truncated or not a cache file)")
        length = int.from_bytes(tail[:8], "little")
        if length > size - _TAIL:
            raise CorruptCache(f"{path}: trailer length {length} exceeds the file")
        f.seek(size - _TAIL - length)
        try:
            meta = json.loads(f.read(length))
        except ValueError as err:
            raise CorruptCache(f"{path}: unreadable trailer ({err})") from err
    nbytes = int(np.prod(meta.get("shape", [-1])))
    if nbytes + length + _TAIL != size:
        raise CorruptCache(f"{path}: {size} bytes, expected {nbytes + length + _TAIL}")
    return meta


def _checksum(images: np.ndarray) -> int:
    flat = images.reshape(-1)
    crc = 0
    for start in range(0, flat.size, _CHUNK):
        crc = zlib.crc32(flat[start : start + _CHUNK], crc)
    return crc


def open_cache(path: Path, key: dict[str, Any]) -> DecodedImages:
    """The valid cache file `path` for `key`; CorruptCache when it is not (missing trailer, other key, wrong
    size or checksum)."""
    meta = _read_meta(path)
    if meta.get("key") != key:
        raise CorruptCache(f"{path}: written for another key")
    decoded = DecodedImages(path, meta)
    if _checksum(decoded.images) != meta["crc32"]:
        raise CorruptCache(f"{path}: checksum mismatch")
    return decoded


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on `path` (created if needed) where the platform has flock; else nothing."""
    try:
        import fcntl
    except ImportError:  # not POSIX: concurrent writers still each rename a complete file
        yield
        return
    with open(path, "a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _write(f: IO[bytes], batches: Iterator[np.ndarray], key: dict[str, Any], n: int, size: int, extra: dict) -> None:
    crc, count = 0, 0
    for batch in batches:
        block = np.ascontiguousarray(batch, dtype=np.uint8)
        if block.shape[1:] != (3, size, size):
            raise ValueError(f"decoded images must be (3, {size}, {size}), got {block.shape[1:]}")
        f.write(memoryview(block).cast("B"))
        crc = zlib.crc32(block, crc)
        count += len(block)
    if count != n:
        raise ValueError(f"decoded {count} images, expected {n}")
    meta = {"format": FORMAT, "key": key, "shape": [n, 3, size, size], "crc32": crc, **extra}
    trailer = json.dumps(meta).encode()
    f.write(trailer)
    f.write(len(trailer).to_bytes(8, "little") + MAGIC)


def decode_all(source: Any, workers: int) -> Iterator[np.ndarray]:
    """uint8 (b, 3, S, S) blocks of every item of `source`, in order, read by `workers` loader processes."""
    loader = DataLoader(source, batch_size=64, shuffle=False, num_workers=workers, persistent_workers=False)
    for images, _ in loader:
        yield images.numpy()


def decoded(
    source: Any,
    *,
    dataset: str,
    part: str,
    size: int,
    identity: str,
    labels: np.ndarray,
    classes: list[str],
    folder: Path,
    workers: int = 0,
) -> DecodedImages:
    """The decoded images of `source` (items (uint8 (3, size, size), label)) from the cache in `folder`,
    decoding and writing them first when no valid file exists for this key. `identity` names the source's
    contents (its files' paths, sizes and mtimes, or a digest of its pixels)."""
    folder = _usable(folder)
    labels = np.asarray(labels, dtype=np.int64)
    key = {
        "format": FORMAT,
        "dataset": dataset,
        "part": part,
        "size": int(size),
        "identity": identity,
        "labels": hashlib.blake2b(labels.tobytes(), digest_size=16).hexdigest(),
        "classes": hashlib.blake2b("\0".join(classes).encode(), digest_size=16).hexdigest(),
    }
    digest = hashlib.blake2b(json.dumps(key, sort_keys=True).encode(), digest_size=10).hexdigest()
    stem = f"{_slug(dataset)}-{hashlib.blake2b(dataset.encode(), digest_size=4).hexdigest()}-{_slug(part)}-{size}px"
    path = folder / f"{stem}-{digest}{SUFFIX}"
    with _locked(folder / f".{stem}.lock"):
        try:
            return open_cache(path, key)
        except (FileNotFoundError, CorruptCache):
            pass
        clean_orphans(folder, name=path.name, min_age_s=0.0)  # under the lock no other write of it is running
        clean_orphans(folder, name=f"{stem}-*{SUFFIX}", min_age_s=_ORPHAN_AGE_S)
        extra = {"labels": labels.tolist(), "classes": list(classes), "dataset": dataset, "part": part}
        atomic_write(path, lambda f: _write(f, decode_all(source, workers), key, len(labels), size, extra))
        for old in folder.glob(f"{stem}-*{SUFFIX}"):
            if old != path:  # this dataset part at this size before its files changed
                old.unlink(missing_ok=True)
        return open_cache(path, key)
