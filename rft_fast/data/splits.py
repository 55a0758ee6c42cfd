"""Stratified, seeded index splits and the subset views built from them.

Splits are computed from label arrays only (no image is read). Two rules (SPLIT_RULES):

- "study" (the default): scikit-learn's `train_test_split(positions, test_size=..., stratify=labels,
  random_state=seed)`, as the study's code draws its splits (seed 42) and its 1,000-image test subset
  (`train_size=n`, seed 0). The positions keep the order scikit-learn returns them in: the study splits the
  val set off the train+val positions in that order, and its corruption blocks follow the subset's order.
- "proportional": rft-fast's earlier rule: per class a share within one sample of proportional (largest
  remainders), chosen by a numpy RandomState(seed) permutation per class; positions sorted (a subset in a
  RandomState(seed) order).

Where the study's rule cannot stratify (a class with a single sample, or fewer held / kept samples than classes:
scikit-learn refuses, and so would the study's code), the proportional rule is used instead, with a
`StratificationWarning` saying why: the study's numbers are never drawn that way, and a small custom dataset
still splits.
"""

from __future__ import annotations

import warnings

import numpy as np
from torch.utils.data import Dataset, Subset

from rft_fast.checks import is_int

SPLIT_RULES = ("study", "proportional")


class StratificationWarning(UserWarning):
    """The study's stratified draw was impossible for these labels; the proportional rule was used."""


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


def _proportional(labels: np.ndarray, n_held: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    classes, counts = np.unique(labels, return_counts=True)
    rng = np.random.RandomState(seed)
    shares = _allocate(counts, n_held)
    held = [rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in zip(classes, shares)]
    held_idx = np.sort(np.concatenate(held)) if held else np.zeros(0, dtype=np.int64)
    mask = np.ones(len(labels), dtype=bool)
    mask[held_idx] = False
    return np.flatnonzero(mask), held_idx


def _check_rule(rule: str) -> None:
    if rule not in SPLIT_RULES:
        raise ValueError(f"split rule must be one of {list(SPLIT_RULES)}, got {rule!r}")


def stratified_split(
    labels: np.ndarray, held: float | int, seed: int, *, rule: str = "study"
) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held): positions into `labels`. `held` is a fraction in (0, 1) (scikit-learn's float test_size:
    ceil(held * n) positions; "proportional": round(held * n)) or a count in [1, n).

    "study": `train_test_split(arange(n), test_size=held, stratify=labels, random_state=seed)`, both arrays in
    the order scikit-learn returns; "proportional": see the module docstring (both sorted)."""
    _check_rule(rule)
    labels = np.asarray(labels, dtype=np.int64)
    n = len(labels)
    if is_int(held):
        if not 1 <= held < n:
            raise ValueError(f"cannot hold out {held} of {n} samples (need 1 <= held < {n})")
    elif not (isinstance(held, float) and 0 < held < 1):
        raise ValueError(f"held must be a fraction in (0, 1) or a count, got {held!r}")
    if rule == "study":
        from sklearn.model_selection import train_test_split

        try:
            kept, out = train_test_split(np.arange(n), test_size=held, stratify=labels, random_state=seed)
            return np.asarray(kept, dtype=np.int64), np.asarray(out, dtype=np.int64)
        except ValueError as err:  # too few samples per class, or fewer held / kept than classes
            warnings.warn(
                f"stratified split of {n} samples ({len(np.unique(labels))} classes, holding {held}) as the study "
                f"draws it is impossible: {err}; used the proportional rule instead",
                StratificationWarning,
                stacklevel=3,
            )
    return _proportional(labels, held if is_int(held) else round(held * n), seed)


class LabeledSubset(Subset):
    """A `Subset` that also knows its labels and class names (so it can be split again without reading images)."""

    def __init__(self, dataset: Dataset, indices: np.ndarray | list[int]) -> None:
        super().__init__(dataset, np.asarray(indices, dtype=np.int64).tolist())
        self.labels = labels_of(dataset)[np.asarray(self.indices, dtype=np.int64)]
        self.classes: list[str] = list(getattr(dataset, "classes", []))


def carve(
    view: LabeledSubset, fraction: float, seed: int, *, rule: str = "study"
) -> tuple[LabeledSubset, LabeledSubset]:
    """(rest, held) of `view`, `held` a stratified `fraction` of it (`stratified_split`), both over view's
    dataset, in the order the rule returns them."""
    rest, held = stratified_split(view.labels, fraction, seed, rule=rule)
    idx = np.asarray(view.indices, dtype=np.int64)
    return LabeledSubset(view.dataset, idx[rest]), LabeledSubset(view.dataset, idx[held])


def stratified_subset(dataset: Dataset, n: int, seed: int, *, rule: str = "study") -> LabeledSubset:
    """A stratified `n`-sample subset of `dataset`, e.g. the study's 1,000 evaluation images (seed 0); all of
    it, in its own order, when len <= n (the study keeps a smaller test set whole).

    "study": the first part of `train_test_split(arange(len), train_size=n, stratify=labels, random_state=seed)`
    in scikit-learn's order (mixed classes: the corruption blocks assigned by position do not follow classes);
    "proportional": the earlier rule's positions in a RandomState(seed) order."""
    _check_rule(rule)
    if not is_int(n) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    labels = labels_of(dataset)
    if n >= len(labels):
        return LabeledSubset(dataset, np.arange(len(labels)))
    if rule == "study":
        from sklearn.model_selection import train_test_split

        try:
            chosen, _ = train_test_split(np.arange(len(labels)), train_size=n, stratify=labels, random_state=seed)
            return LabeledSubset(dataset, chosen)
        except ValueError as err:
            warnings.warn(
                f"stratified {n}-sample subset of {len(labels)} ({len(np.unique(labels))} classes) as the study "
                f"draws it is impossible: {err}; used the proportional rule instead",
                StratificationWarning,
                stacklevel=2,
            )
    _, held = _proportional(labels, n, seed)
    return LabeledSubset(dataset, np.random.RandomState(seed).permutation(held))
