"""Normalization rules: which mean/std `Normalized` applies inside the model.

"pretrained" (the default) is the backbone's own, from timm's pretrained config: right for its weights.
"study" is the rule of the study's code (MaxHeuillet/robust_training, transforms/load_transforms.py,
`load_module_transform`): CLIP's mean/std when the backbone's name contains "laion" (a case-sensitive substring
test on the name string), ImageNet's otherwise, whatever the weights were trained with. Use it to reproduce the
study exactly; `study_differences` lists the study's backbones where the two rules disagree.
"""

from __future__ import annotations

from collections.abc import Callable

from rft_fast.models.registry import CLIP, IMAGENET, REGISTRY, BackboneSpec

MeanStd = tuple[tuple[float, float, float], tuple[float, float, float]]


def _pretrained(spec: BackboneSpec) -> MeanStd:
    return spec.mean, spec.std


def _study(spec: BackboneSpec) -> MeanStd:
    return CLIP if "laion" in spec.name else IMAGENET


NORMALIZATIONS: dict[str, Callable[[BackboneSpec], MeanStd]] = {"pretrained": _pretrained, "study": _study}
DEFAULT_NORMALIZATION = "pretrained"


def mean_std(spec: BackboneSpec, normalization: str = DEFAULT_NORMALIZATION) -> MeanStd:
    """(mean, std) that rule `normalization` ("pretrained" | "study") gives backbone `spec`."""
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {list(NORMALIZATIONS)}, got {normalization!r}")
    return NORMALIZATIONS[normalization](spec)


def study_differences() -> list[tuple[str, MeanStd, MeanStd]]:
    """The study's backbones whose "pretrained" and "study" mean/std differ: (name, pretrained, study), in
    registry order."""
    out = []
    for spec in REGISTRY.values():
        if spec.study and mean_std(spec, "pretrained") != mean_std(spec, "study"):
            out.append((spec.name, mean_std(spec, "pretrained"), mean_std(spec, "study")))
    return out
