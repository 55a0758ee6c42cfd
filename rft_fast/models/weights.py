"""Reading pretrained weights: file formats, checkpoint layouts (timm, Madry lab, Singh et al.) and the converter.

Every layout is turned into timm's state dict of the spec's architecture. The classifier is always dropped (each
task gets a fresh head) and everything else must match exactly: a missing, unexpected or mis-shaped key is an
error, never a silent partial load. Conversions are idempotent, so a converted file loads under its own name.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Mapping
from pathlib import Path

import safetensors.torch
import torch
from torch import nn

from rft_fast.models.registry import BackboneSpec, build_timm, get
from rft_fast.models.wrapper import head_prefix

StateDict = dict[str, torch.Tensor]

_NESTED = ("state_dict", "model", "model_ema", "state_dict_ema")  # where training scripts put the weights
_LIST_AT_MOST = 10
# BatchNorm's step counter: absent from some old checkpoints, and unused unless momentum=None.
_OPTIONAL_SUFFIX = ".num_batches_tracked"


def read_checkpoint(path: Path) -> object:
    """The object stored in `path`: .safetensors directly, anything else with torch.load(weights_only=True).

    Pickled Python objects other than tensors and containers are refused rather than executed.
    """
    if path.suffix == ".safetensors":
        return safetensors.torch.load_file(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(
            f"{path} holds pickled Python objects besides tensors, which are not loaded (torch.load with "
            f"weights_only=True). If you trust the file, re-save its tensors, e.g. torch.save(torch.load(f, "
            f"weights_only=False)['model'], 'clean.pt'), and pass that file. ({str(err).splitlines()[0]})"
        ) from err


def state_dict_in(obj: object, source: Path) -> StateDict:
    """The tensor mapping in `obj`: `obj` itself, or the first of `_NESTED` it holds."""
    if isinstance(obj, Mapping):
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return dict(obj)
        for key in _NESTED:
            if isinstance(obj.get(key), Mapping):
                return state_dict_in(obj[key], source)
        shown = ", ".join(map(repr, list(obj)[:_LIST_AT_MOST]))
        raise ValueError(f"{source}: no state dict found (top-level keys: {shown}; looked for {', '.join(_NESTED)})")
    raise ValueError(f"{source}: expected a state dict (a mapping of tensors), found {type(obj).__name__}")


def _strip(key: str, prefixes: tuple[str, ...]) -> str:
    """`key` without any leading run of `prefixes` (in any order, each possibly repeated)."""
    stripped = True
    while stripped:
        stripped = False
        for prefix in prefixes:
            if key.startswith(prefix):
                key, stripped = key[len(prefix) :], True
    return key


def _from_timm(state: StateDict) -> StateDict:
    """timm layout; a DistributedDataParallel "module." prefix is removed."""
    return {_strip(k, ("module.",)): v for k, v in state.items()}


def _from_madry(state: StateDict) -> StateDict:
    """Madry lab `robustness`: drop the normalizer and the attacker's copy, strip "module.model."."""
    drop = ("module.normalizer.", "module.attacker.")
    return {_strip(k, ("module.model.",)): v for k, v in state.items() if not k.startswith(drop)}


def _from_singh(state: StateDict) -> StateDict:
    """Singh et al. 2023: strip "module.", "base_model.", "model." prefixes, drop the "normalize.*" layer."""
    out = {_strip(k, ("module.", "base_model.", "model.")): v for k, v in state.items()}
    return {k: v for k, v in out.items() if not k.startswith("normalize.")}


_LAYOUTS: dict[str, Callable[[StateDict], StateDict]] = {"timm": _from_timm, "madry": _from_madry, "singh": _from_singh}


def _listed(keys: list[str]) -> str:
    more = f", ... ({len(keys) - _LIST_AT_MOST} more)" if len(keys) > _LIST_AT_MOST else ""
    return ", ".join(keys[:_LIST_AT_MOST]) + more


def backbone_state(spec: BackboneSpec, path: Path, backbone: nn.Module) -> StateDict:
    """The weights in `path`, in timm's layout for `backbone`, classifier dropped, checked key by key.

    `backbone` (a timm model of `spec.timm_name`, possibly on the meta device) supplies the expected keys and
    shapes and the classifier's name. Raises ValueError naming the file and the offending keys.
    """
    state = _LAYOUTS[spec.checkpoint_format](state_dict_in(read_checkpoint(path), path))
    head = head_prefix(backbone)

    def is_head(key: str) -> bool:
        return key == head or key.startswith(head + ".")

    state = {k: v for k, v in state.items() if not is_head(k)}
    expected = {k: v.shape for k, v in backbone.state_dict().items() if not is_head(k)}
    missing = [k for k in expected if k not in state and not k.endswith(_OPTIONAL_SUFFIX)]
    unexpected = [k for k in state if k not in expected]
    where = (
        f"{path} does not fit backbone {spec.name!r} (timm {spec.timm_name}, "
        f"{spec.checkpoint_format} layout; expected file: {spec.weights})"
    )
    if missing or unexpected:
        parts = [
            f"{len(keys)} {what} key(s): {_listed(keys)}"
            for what, keys in (("missing", missing), ("unexpected", unexpected))
            if keys
        ]
        raise ValueError(f"{where}: {'; '.join(parts)}")
    mismatched = [
        f"{k} {tuple(v.shape)} in the file, {tuple(expected[k])} in the model"
        for k, v in state.items()
        if v.shape != expected[k]
    ]
    if mismatched:
        raise ValueError(
            f"{where}: {len(mismatched)} shape mismatch(es) (weights of another model variant or "
            f"resolution? pretrained at {spec.input_size} px): {_listed(mismatched)}"
        )
    return state


def load_backbone_weights(backbone: nn.Module, spec: BackboneSpec, path: Path) -> None:
    """Copy the weights in `path` into every parameter and buffer of `backbone` except its classifier."""
    backbone.load_state_dict(backbone_state(spec, path, backbone), strict=False)


def existing_file(path: str | Path, spec: BackboneSpec) -> Path:
    """`path` as a Path; FileNotFoundError naming it and where the expected file comes from if it is absent."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file for backbone {spec.name!r} not found: {path} (expected: {spec.weights})")
    return path


def convert_checkpoint(name: str, src: str | Path, dst: str | Path) -> Path:
    """Turn a downloaded checkpoint of backbone `name` into the registry's expected file; returns `dst`.

    Reads any supported file (.safetensors, .pt/.pth/.bin) in the spec's layout (Madry lab, Singh et al., timm),
    checks it against the timm architecture, and writes the backbone's tensors (classifier dropped) to `dst`,
    which must end in .safetensors. `create(name, ..., pretrained_path=dst)` then loads it.
    """
    spec = get(name)
    src = existing_file(src, spec)
    dst = Path(dst)
    if dst.suffix != ".safetensors":
        raise ValueError(f"dst must be a .safetensors file, got {dst}")
    with torch.device("meta"):  # shapes and key names only: nothing is allocated or initialized
        backbone = build_timm(spec.timm_name, 1, spec.input_size)
    state = backbone_state(spec, src, backbone)
    dst.parent.mkdir(parents=True, exist_ok=True)
    safetensors.torch.save_file(
        {k: v.contiguous().clone() for k, v in state.items()},  # own storage each: safetensors refuses shared memory
        dst,
        metadata={"backbone": spec.name, "timm_name": spec.timm_name, "source": src.name},
    )
    return dst
