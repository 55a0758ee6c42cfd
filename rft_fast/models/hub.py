"""Hub weights: where timm's pretrained file of a backbone lives on the Hugging Face hub and in the local cache,
downloading it (`hub_file`, `fetch`) or refusing clearly when offline with an empty cache.

huggingface_hub reads HF_HOME / HF_HUB_CACHE / HF_HUB_OFFLINE once, when it is imported, into
`huggingface_hub.constants`. Here they are read from the environment at each call (falling back to those
constants when unset), so a variable set after import (a test, a notebook, a job script that imports first)
still decides; the cache folder and offline mode are then passed to huggingface_hub explicitly.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import huggingface_hub
from huggingface_hub import constants
from huggingface_hub.errors import LocalEntryNotFoundError, RemoteEntryNotFoundError

from rft_fast.models import timm_names
from rft_fast.models.registry import BackboneSpec, get

# timm's file names (timm.models._hub): the .bin name it asks for and the safetensors it tries first.
_WEIGHTS = "pytorch_model.bin"
_SAFE = {"pytorch_model.bin": "model.safetensors", "open_clip_pytorch_model.bin": "open_clip_model.safetensors"}
FETCH_STATUSES = ("fetched", "cached", "skipped")


def hub_cache_dir() -> Path:
    """The hub cache folder now: $HF_HUB_CACHE, else $HF_HOME/hub, else huggingface_hub's (import-time) default."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    return Path(constants.HF_HUB_CACHE)


def hub_offline() -> bool:
    """Whether hub downloads are off now: $HF_HUB_OFFLINE when set ("1", "ON", "YES", "TRUE"), else
    huggingface_hub's import-time value."""
    value = os.environ.get("HF_HUB_OFFLINE")
    if value is None:
        return bool(constants.HF_HUB_OFFLINE)
    return value.upper() in constants.ENV_VARS_TRUE_VALUES


@dataclass(frozen=True)
class HubWeights:
    """A backbone's weights on the hub: repository, revision (None: main) and the file names timm would load,
    preferred first (safetensors, then the pickled file)."""

    repo_id: str
    revision: str | None
    filenames: tuple[str, ...]


def hub_weights(spec: BackboneSpec) -> HubWeights | None:
    """Where timm loads `spec`'s pretrained weights from (its pretrained config), None when no hub carries them
    (the robust checkpoints, an architecture without a pretrained tag)."""
    if spec.hub_id is None or spec.pretrained_tag is None:
        return None
    cfg = timm_names.pretrained_cfg(spec.timm_id) or {}
    repo_id, _, revision = spec.hub_id.partition("@")
    filename = cfg.get("hf_hub_filename") or _WEIGHTS
    safe = _SAFE.get(filename, filename[:-4] + ".safetensors" if filename.endswith(".bin") else None)
    return HubWeights(repo_id, revision or None, tuple(dict.fromkeys(f for f in (safe, filename) if f)))


def _no_hub(spec: BackboneSpec) -> ValueError:
    return ValueError(
        f"backbone {spec.name!r} needs its pretrained weights as a local file, which no hub carries: pass "
        f"pretrained_path=<file> (expected: {spec.weights}; convert robust checkpoints with `rft-fast models "
        "convert`), or random_init=True for tests"
    )


def cached_file(spec: BackboneSpec) -> Path | None:
    """The weights file of `spec` already in the hub cache, None when it is not there (never the network)."""
    source = hub_weights(spec)
    if source is None:
        return None
    for filename in source.filenames:
        found = huggingface_hub.try_to_load_from_cache(
            source.repo_id, filename, cache_dir=hub_cache_dir(), revision=source.revision
        )
        if isinstance(found, str):
            return Path(found)
    return None


def hub_file(spec: BackboneSpec) -> Path:
    """The local path of `spec`'s hub weights, downloaded into the cache unless there already.

    Offline (HF_HUB_OFFLINE) with the file not cached: FileNotFoundError naming the backbone, the cache folder
    and `rft-fast models fetch`. No hub weights (robust checkpoints): ValueError saying which file to pass.
    """
    source = hub_weights(spec)
    if source is None:
        raise _no_hub(spec)
    found = cached_file(spec)
    if found is not None:
        return found
    cache = hub_cache_dir()
    if hub_offline():
        raise FileNotFoundError(
            f"hub weights of backbone {spec.name!r} ({source.repo_id}: {' or '.join(source.filenames)}) are not in "
            f"the hub cache {cache} and HF_HUB_OFFLINE is set: run `rft-fast models fetch {spec.name}` on a machine "
            "with internet (with the same HF_HOME), or pass a local file (pretrained_path)"
        )
    for filename in source.filenames:
        try:
            path = huggingface_hub.hf_hub_download(source.repo_id, filename, revision=source.revision, cache_dir=cache)
        except RemoteEntryNotFoundError:
            continue  # the repository lacks this name: try the next one timm would
        except LocalEntryNotFoundError as err:  # the hub could not be reached, nothing cached
            raise FileNotFoundError(
                f"hub weights of backbone {spec.name!r} could not be downloaded from {source.repo_id} into {cache} "
                f"({str(err).splitlines()[0]}): run `rft-fast models fetch {spec.name}` on a machine with internet "
                "(with the same HF_HOME) and set HF_HUB_OFFLINE=1 here, or pass a local file (pretrained_path)"
            ) from None
        return Path(path)
    raise FileNotFoundError(f"{source.repo_id} holds none of {list(source.filenames)} (weights of {spec.name!r})")


@dataclass(frozen=True)
class Fetched:
    """What `fetch` did for one backbone: status "fetched" | "cached" | "skipped", and the file or the reason."""

    name: str
    status: str
    detail: str


def fetch(name: str) -> Fetched:
    """Puts backbone `name`'s hub weights into the hub cache (so that offline runs find them); says whether it
    downloaded them, found them cached, or skipped a backbone that no hub carries."""
    spec = get(name)
    if hub_weights(spec) is None:
        return Fetched(spec.name, "skipped", f"no hub weights; needs a local file ({spec.weights})")
    found = cached_file(spec)
    if found is not None:
        return Fetched(spec.name, "cached", str(found))
    return Fetched(spec.name, "fetched", str(hub_file(spec)))
