"""Atomic, verified checkpoints with everything exact resume needs: model, optimizer, scheduler, epoch, RNG states.

A checkpoint is a plain `torch.save` archive (a zip), so `torch.load(path, weights_only=True)` opens it too.
Reading one never runs code and never trusts damaged bytes:
- every record's CRC-32 (torch writes one per record) is verified before anything is unpickled, so a flipped
  byte anywhere in the payload is an error, not a silently different model;
- the pickle is read with torch's restricted unpickler (weights_only=True): tensors, numbers, strings and
  containers only. What we write fits in that (the NumPy RNG state is stored as a tensor, not an ndarray);
  checkpoints of earlier versions held the NumPy state as an ndarray, allowed explicitly through
  NUMPY_RNG_GLOBALS and nothing else.
Any failure raises CheckpointError naming the file and what is wrong.
"""

from __future__ import annotations

import pickle
import random
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rft_fast.files import atomic_write


class CheckpointError(ValueError):
    """A checkpoint file that is missing, damaged, foreign or holds Python objects besides plain data."""


def _numpy_rng_globals() -> list[Any]:
    """What unpickling an ndarray of NumPy's MT19937 state needs: the array reconstructor, ndarray, dtype and
    the uint32 dtype class. Nothing else from NumPy is allowed."""
    multiarray = getattr(np, "_core", None) or np.core
    return [multiarray.multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]


NUMPY_RNG_GLOBALS = _numpy_rng_globals()


def rng_state() -> dict[str, Any]:
    """Python, NumPy, torch CPU and (when present) every CUDA device's generator state, as plain data."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    numpy_state = state["numpy"]
    if isinstance(numpy_state, dict):
        keys = numpy_state["keys"].numpy().astype(np.uint32)
        numpy_state = (numpy_state["kind"], keys, numpy_state["pos"], numpy_state["has_gauss"], numpy_state["gauss"])
    np.random.set_state(numpy_state)
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(path: Path, payload: dict[str, Any]) -> None:
    """Writes `payload` atomically (rft_fast.files.atomic_write): a crash leaves either the old or the new
    checkpoint, never a torn one, and at worst a temporary file that files.clean_orphans removes on the next start."""
    atomic_write(path, lambda f: torch.save(payload, f))


def verify(path: Path) -> None:
    """Raises CheckpointError unless `path` is a torch archive whose every record matches its CRC-32."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError) as error:
        raise CheckpointError(f"{path} is not a readable checkpoint (a torch.save archive): {error}") from None
    if bad is not None:
        raise CheckpointError(f"{path} is damaged: record {bad} does not match its CRC-32 checksum")


def load(path: Path) -> dict[str, Any]:
    """A checkpoint written by `save`, verified (module docstring) and unpickled without running code."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    verify(path)
    try:
        with torch.serialization.safe_globals(NUMPY_RNG_GLOBALS):
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(
            f"{path} holds Python objects besides tensors and plain data, which are never loaded "
            f"(torch.load with weights_only=True): {first[:200]}"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, TypeError, KeyError, AttributeError) as error:
        raise CheckpointError(f"{path} could not be read as a checkpoint: {error}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} holds a {type(state).__name__}, not a checkpoint's dictionary")
    return state
