"""`create`: a registry backbone with a fresh `num_classes` head, its pretrained weights, inside `Normalized`."""

from __future__ import annotations

from pathlib import Path

from rft_fast.checks import is_int
from rft_fast.models.registry import build_timm, get
from rft_fast.models.weights import existing_file, load_backbone_weights, read_checkpoint, state_dict_in
from rft_fast.models.wrapper import Normalized


def create(
    name: str,
    num_classes: int,
    *,
    pretrained_path: str | Path | None = None,
    random_init: bool = False,
    image_size: int | None = None,
) -> Normalized:
    """Build backbone `name` (name or alias) for a `num_classes` task; it takes [0,1] images.

    Weights never come from the network: pass `pretrained_path` (the file `get(name).weights` describes, or the
    output of `convert_checkpoint`); everything but the classifier is loaded and checked, the classifier is new.
    `random_init=True` skips weights, for tests. `image_size` (default: the spec's pretrained resolution) sets
    the resolution of models whose layers depend on it (ViT, Swin, ...); conv nets take any size anyway.
    """
    spec = get(name)
    if not is_int(num_classes) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    if image_size is not None and (not is_int(image_size) or image_size < 1):
        raise ValueError(f"image_size must be a positive int or None, got {image_size!r}")
    if pretrained_path is None and not random_init:
        raise ValueError(
            f"backbone {spec.name!r} needs its pretrained weights: pass pretrained_path=<file> (expected: "
            f"{spec.weights}; convert robust checkpoints with `rft-fast models convert`), or random_init=True for tests"
        )
    if pretrained_path is not None and random_init:
        raise ValueError("pass either pretrained_path or random_init=True, not both")
    path = None if pretrained_path is None else existing_file(pretrained_path, spec)
    backbone = build_timm(spec.timm_name, num_classes, image_size or spec.input_size)
    if path is not None:
        load_backbone_weights(backbone, spec, path)
    return Normalized(backbone, spec, num_classes)


def load_finetuned(name: str, num_classes: int, path: str | Path, *, image_size: int | None = None) -> Normalized:
    """A fine-tuned network, head included: every weight of backbone `name` with a `num_classes` head comes
    from `path` (a state dict of the wrapped model, keys "backbone.*", or of the bare timm model). Any missing,
    unexpected or mis-shaped key is an error naming the file: evaluating half-loaded weights would be silent
    nonsense."""
    spec = get(name)
    file = existing_file(path, spec)
    model = create(name, num_classes, random_init=True, image_size=image_size)
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
