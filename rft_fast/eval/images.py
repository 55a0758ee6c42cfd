"""Where the evaluation images come from (EvalSettings.images): a registry of image sources.

    "drawn"           (default) the stratified, seeded subset of settings.n images drawn here from the dataset's
                      test split (data.stratified_subset, subset_seed); corruptions computed from it.
    "robustgenbench"  the paper's own frozen test and corrupted-test images (rft_fast.eval.robustgenbench, the HF
                      hub dataset MaxHeuillet/RobustGenBench): the study's numbers measured on its images. It
                      needs no local copy of the dataset and fixes the settings it was made with (`fixes`).

A source is one ImageSourceSpec registered with `register_image_source`; `draw(test_set, dataset, settings,
key)` returns the EvalImages every threat measures on.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch.utils.data import Dataset

from rft_fast.eval.corruptions import CorruptedSet
from rft_fast.registry import Registry
from rft_fast.study import STUDY_N


@dataclass(frozen=True)
class EvalImages:
    """What the threats measure on. subset: the clean images (uint8 (3, H, W) items, labelled); key: what
    identifies them for the corruption cache; corrupted: their frozen study-setting corruptions, or None when
    the corruptions threat computes them from subset; stamp: recorded in every row's versions["images"]."""

    subset: Dataset
    key: dict[str, Any]
    corrupted: CorruptedSet | None = None
    stamp: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ImageSourceSpec:
    """One image source. draw(test_set, dataset, settings, key) -> EvalImages (test_set: the dataset's test
    split, None when needs_test_set is False and the caller has none; key: dataset, split, image_size).
    fixes: EvalSettings fields the source only supports at one value (checked by EvalSettings)."""

    name: str
    help: str
    draw: Callable[[Dataset | None, str, Any, dict[str, Any]], EvalImages]
    fixes: Mapping[str, Any] = field(default_factory=dict)
    needs_test_set: bool = True


REGISTRY: Registry[ImageSourceSpec] = Registry("evaluation image source")


def register_image_source(spec: ImageSourceSpec, *, replace: bool = False) -> ImageSourceSpec:
    return REGISTRY.register(spec.name, spec, replace=replace)


def image_source(name: str) -> ImageSourceSpec:
    """The registered source `name` (ValueError listing the known ones otherwise)."""
    return REGISTRY.get(name)


def image_sources() -> tuple[str, ...]:
    """The registered sources' names, the default ("drawn") first."""
    return REGISTRY.names()


def _drawn(test_set: Dataset | None, dataset: str, settings: Any, key: dict[str, Any]) -> EvalImages:
    from rft_fast import data

    if test_set is None:
        raise ValueError("images 'drawn' draws its subset from the test split: test_set must be given")
    subset = data.stratified_subset(test_set, settings.n, seed=settings.subset_seed)
    return EvalImages(subset, {**key, "n": settings.n, "subset_seed": settings.subset_seed})


def _robustgenbench(test_set: Dataset | None, dataset: str, settings: Any, key: dict[str, Any]) -> EvalImages:
    from pathlib import Path

    from rft_fast.data import DATASETS
    from rft_fast.eval import robustgenbench

    root = None if settings.cache_dir is None else Path(settings.cache_dir).expanduser() / "robustgenbench"
    classes = DATASETS[dataset].num_classes if dataset in DATASETS else None
    frozen = robustgenbench.load(dataset, extract_root=root, num_classes=classes)
    shape = tuple(frozen.test[0][0].shape)
    if test_set is not None and len(test_set) and tuple(test_set[0][0].shape) != shape:
        raise ValueError(
            f"images 'robustgenbench': the frozen images are {shape[1]}x{shape[2]}, the model evaluates "
            f"{tuple(test_set[0][0].shape)[1:]}: evaluate at image_size {shape[1]}"
        )
    key = {"dataset": dataset, "split": "test", "image_size": shape[1], "images": "robustgenbench"}
    return EvalImages(frozen.test, {**key, "revision": frozen.stamp["revision"]}, frozen.corrupted, frozen.stamp)


register_image_source(ImageSourceSpec("drawn", "the stratified, seeded subset drawn here from the test split", _drawn))
register_image_source(
    ImageSourceSpec(
        "robustgenbench",
        "the paper's frozen test and corrupted-test images (HF hub dataset MaxHeuillet/RobustGenBench)",
        _robustgenbench,
        # the frozen set is the study's 1,000-image subset, corrupted in the study setting
        fixes={
            "n": STUDY_N,
            "subset_seed": 0,
            "corruption_setting": "study",
            "severity": 3,
            "corruption_resolution": "native",
            "corruption_blocks": "study",
        },
        needs_test_set=False,
    )
)
