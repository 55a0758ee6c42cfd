"""Stratified, seeded index splits and the subset views built from them.

Splits are computed from label arrays only (no image is read). Randomness comes from numpy's legacy
`RandomState`, whose stream numpy keeps stable across versions, so a split is a function of (labels, seed).
"""

from __future__ import annotations

import numpy as np
from torch.utils.data import Dataset, Subset

from rft_fast.checks import is_int


def labels_of(dataset: Dataset) -> np.ndarray:
    """The int64 labels of `dataset`, from its `labels` / `targets` when it has them (else by reading items)."""
    if hasattr(dataset, "labels"):
        return np.asarray(dataset.labels, dtype=np.int64)
    if isinstance(dataset, Subset):
        return labels_of(dataset.dataset)[np.asarray(dataset.indices, dtype=np.int64)]
    if hasattr(dataset, "targets"):
        return np.asarray(dataset.targets, dtype=np.int64)
    return np.asarray([int(dataset[i][1]) for i in range(len(dataset))], dtype=np.int64)


def _allocate(counts: np.ndarray, total: int) -> np.ndarray:
    """Per-class shares of `total` proportional to `counts` (largest remainders, ties to the lower class),
    so that every share is within one of counts * total / counts.sum() and the shares sum to `total`."""
    num = counts * total
    share, rem = num // counts.sum(), num % counts.sum()
    order = np.lexsort((np.arange(len(counts)), -rem))  # largest remainder first, then class order
    share[order[: total - share.sum()]] += 1
    return share


def stratified_split(labels: np.ndarray, n_held: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held): positions into `labels`, both sorted; `held` has `n_held` positions drawn per class in
    proportion to the class sizes (within one sample), chosen by a RandomState(seed) permutation per class."""
    labels = np.asarray(labels)
    if not 0 <= n_held <= len(labels):
        raise ValueError(f"cannot hold out {n_held} of {len(labels)} samples")
    classes, counts = np.unique(labels, return_counts=True)
    shares = _allocate(counts, n_held)
    rng = np.random.RandomState(seed)
    held = [rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in zip(classes, shares)]
    held_idx = np.sort(np.concatenate(held)) if held else np.zeros(0, dtype=np.int64)
    mask = np.ones(len(labels), dtype=bool)
    mask[held_idx] = False
    return np.flatnonzero(mask), held_idx


class LabeledSubset(Subset):
    """A `Subset` that also knows its labels and class names (so it can be split again without reading images)."""

    def __init__(self, dataset: Dataset, indices: np.ndarray | list[int]) -> None:
        super().__init__(dataset, np.asarray(indices, dtype=np.int64).tolist())
        self.labels = labels_of(dataset)[np.asarray(self.indices, dtype=np.int64)]
        self.classes: list[str] = list(getattr(dataset, "classes", []))


def carve(view: LabeledSubset, fraction: float, seed: int) -> tuple[LabeledSubset, LabeledSubset]:
    """(rest, held) of `view`, `held` being a stratified round(fraction * len) share, both over view's dataset."""
    rest, held = stratified_split(view.labels, round(fraction * len(view)), seed)
    idx = np.asarray(view.indices, dtype=np.int64)
    return LabeledSubset(view.dataset, idx[rest]), LabeledSubset(view.dataset, idx[held])


def stratified_subset(dataset: Dataset, n: int, seed: int) -> LabeledSubset:
    """A stratified `n`-sample subset of `dataset` (all of it when len <= n), e.g. the 1,000 evaluation images.

    The items come in a RandomState(seed) order rather than grouped by class, so that contiguous blocks of
    the subset (one corruption type per block in the common-corruption evaluation) do not align with classes.
    """
    if not is_int(n) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    labels = labels_of(dataset)
    _, held = stratified_split(labels, min(n, len(labels)), seed)
    return LabeledSubset(dataset, np.random.RandomState(seed).permutation(held))
