"""`create`: a backbone (registered or any timm name) with a fresh `num_classes` head and its pretrained weights
(hub, local file or none), inside `Normalized`."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from rft_fast.checks import is_int
from rft_fast.models.hub import hub_file
from rft_fast.models.normalization import DEFAULT_NORMALIZATION, mean_std
from rft_fast.models.registry import BackboneSpec, build_timm, get
from rft_fast.models.weights import existing_file, load_backbone_weights, read_checkpoint, state_dict_in
from rft_fast.models.wrapper import Normalized


def create(
    name: str,
    num_classes: int,
    *,
    pretrained_path: str | Path | None = None,
    random_init: bool = False,
    image_size: int | None = None,
    normalization: str = DEFAULT_NORMALIZATION,
) -> Normalized:
    """Build backbone `name` (registered name, alias or any timm name) for a `num_classes` task; it takes [0,1]
    images and gets a fresh classifier.

    Weights, one of three: hub (the default: timm's own loading of the file huggingface_hub caches, see
    rft_fast.models.hub; HF_HOME and HF_HUB_OFFLINE are honoured), a local file `pretrained_path` (the file
    `get(name).weights` describes, or the output of `convert_checkpoint`; every key but the classifier's is
    loaded and checked), or none (`random_init=True`, for tests). The robust checkpoints no hub carries need
    the local file. `image_size` (default: the spec's pretrained resolution) sets the resolution of models whose
    layers depend on it (ViT, Swin, ...); conv nets take any size anyway. `normalization` picks the mean/std
    applied inside the model: "pretrained" (timm's config) or "study" (the study's rule, models.normalization).
    """
    spec = get(name)
    if not is_int(num_classes) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    if image_size is not None and (not is_int(image_size) or image_size < 1):
        raise ValueError(f"image_size must be a positive int or None, got {image_size!r}")
    if pretrained_path is not None and random_init:
        raise ValueError("pass either pretrained_path or random_init=True, not both")
    mean_std(spec, normalization)  # a bad rule fails before any weights are read
    size = image_size or spec.input_size
    if random_init:
        backbone = build_timm(spec.timm_name, num_classes, size)
    elif pretrained_path is not None:
        path = existing_file(pretrained_path, spec)
        backbone = build_timm(spec.timm_name, num_classes, size)
        load_backbone_weights(backbone, spec, path)
    else:
        backbone = _from_hub(spec, num_classes, size)
    return Normalized(backbone, spec, num_classes, normalization)


def _from_hub(spec: BackboneSpec, num_classes: int, image_size: int) -> nn.Module:
    """timm's own pretrained loading (its checkpoint filter: layout conversion, position embeddings resampled to
    `image_size`) from the hub file, which `hub_file` resolves in the cache (or downloads)."""
    file = hub_file(spec)
    # timm keeps the pretrained classifier only when its class count equals the model's: declaring 0 makes it
    # drop it, so every task gets a fresh head, as with a local file.
    overlay = {"file": str(file), "num_classes": 0}
    return build_timm(spec.timm_id, num_classes, image_size, pretrained=True, pretrained_cfg_overlay=overlay)


def load_finetuned(
    name: str,
    num_classes: int,
    path: str | Path,
    *,
    image_size: int | None = None,
    normalization: str = DEFAULT_NORMALIZATION,
) -> Normalized:
    """A fine-tuned network, head included: every weight of backbone `name` with a `num_classes` head comes
    from `path` (a state dict of the wrapped model, keys "backbone.*", or of the bare timm model). Any missing,
    unexpected or mis-shaped key is an error naming the file: evaluating half-loaded weights would be silent
    nonsense. `normalization` must be the rule it was fine-tuned with (rft_fast.models.normalization)."""
    spec = get(name)
    file = existing_file(path, spec)
    model = create(name, num_classes, random_init=True, image_size=image_size, normalization=normalization)
    state = state_dict_in(read_checkpoint(file), file)
    if not any(k.startswith("backbone.") for k in state):
        state = {f"backbone.{k}": v for k, v in state.items()}
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    if missing or unexpected or wrong:
        raise ValueError(
            f"{file} does not hold a fine-tuned {spec.name!r} with {num_classes} classes: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}, wrong shape {wrong[:5]}"
        )
    model.load_state_dict(state)
    return model
