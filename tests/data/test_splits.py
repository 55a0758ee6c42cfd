"""The study's splits and test subset, index for index against scikit-learn's own calls as the study's code makes
them (databases/data_processing.py of github MaxHeuillet/robust_training): train+val / test (test_size=0.2) then
train / val (test_size=0.15 of the train+val positions, in the order returned), random_state=42; Pets / Cars:
train / val (0.15) of the official train split; the test subset: train_size=1000, random_state=0, kept in
scikit-learn's order. Plus the fallback where stratification is impossible and the named older rule."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.model_selection import train_test_split

from rft_fast import data
from rft_fast.data.splits import LabeledSubset, carve, stratified_split


class Labels:
    """A dataset of labels only (no image): what splitting reads."""

    def __init__(self, labels: np.ndarray) -> None:
        self.labels = np.asarray(labels)
        self.classes = [str(c) for c in range(int(self.labels.max()) + 1)]

    def __len__(self) -> int:
        return len(self.labels)


def synthetic(n_classes: int, low: int, high: int, seed: int) -> np.ndarray:
    """Unbalanced labels, class sizes in [low, high], in a shuffled order."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(n_classes), rng.integers(low, high, n_classes))
    return rng.permutation(labels)


def study_carved(labels: np.ndarray) -> tuple[list[int], list[int], list[int]]:
    """The study's process_trainvaltest, written out with scikit-learn (positions in its order)."""
    train_val, test = train_test_split(range(len(labels)), test_size=0.2, stratify=labels, random_state=42)
    train, val = train_test_split(train_val, test_size=0.15, stratify=[labels[i] for i in train_val], random_state=42)
    return list(train), list(val), list(test)


@pytest.mark.parametrize("n_classes, low, high", [(21, 100, 101), (101, 31, 800), (7, 5, 40)])
def test_carved_splits_are_the_studys(n_classes: int, low: int, high: int) -> None:
    labels = synthetic(n_classes, low, high, seed=n_classes)
    train, val, test = study_carved(labels)
    rest, held = carve(LabeledSubset(Labels(labels), range(len(labels))), 0.2, 42)
    assert held.indices == test  # index for index, in scikit-learn's order
    kept, val_part = carve(rest, 0.15, 42)
    assert kept.indices == train and val_part.indices == val
    assert np.array_equal(val_part.labels, labels[val])


def test_official_train_val_split_is_the_studys() -> None:  # Pets and Cars: process_trainval
    labels = synthetic(37, 90, 110, seed=3)
    train, val = train_test_split(range(len(labels)), test_size=0.15, stratify=labels, random_state=42)
    kept, held = stratified_split(labels, 0.15, 42)
    assert kept.tolist() == list(train) and held.tolist() == list(val)


@pytest.mark.parametrize("n", [1000, 150, 1234])
def test_test_subset_is_the_studys(n: int) -> None:  # stratified_subsample, kept in the order returned
    labels = synthetic(102, 5, 60, seed=n)
    expected, _ = train_test_split(range(len(labels)), train_size=n, stratify=labels, random_state=0)
    subset = data.stratified_subset(Labels(labels), n, seed=0)
    assert subset.indices == list(expected) and np.array_equal(subset.labels, labels[expected])


def test_subset_of_a_carved_test_split_follows_its_order() -> None:
    """The study subsamples its carved test Subset, whose labels follow the first split's order."""
    labels = synthetic(21, 100, 101, seed=0)
    _, _, test = study_carved(labels)
    chosen, _ = train_test_split(range(len(test)), train_size=100, stratify=labels[test], random_state=0)
    _, held = carve(LabeledSubset(Labels(labels), range(len(labels))), 0.2, 42)
    subset = data.stratified_subset(held, 100, seed=0)
    assert [held.indices[i] for i in subset.indices] == [test[i] for i in chosen]


def test_digits_build_is_the_studys() -> None:
    splits = data.build("digits", image_size=8)
    labels = splits.test.dataset.labels  # the whole set, in load_digits' order
    train, val, test = study_carved(labels)
    assert (splits.train.base.indices, splits.val.indices, splits.test.indices) == (train, val, test)
    assert (len(train), len(val), len(test)) == (1221, 216, 360)  # ceil(.2 * 1797); ceil(.15 * 1437)


def test_small_sets_whole_and_in_order() -> None:
    labels = synthetic(5, 3, 6, seed=1)
    for n in (len(labels), len(labels) + 5):
        assert data.stratified_subset(Labels(labels), n, seed=0).indices == list(range(len(labels)))
    with pytest.raises(ValueError, match="n must"):
        data.stratified_subset(Labels(labels), 0, seed=0)


def test_impossible_stratification_falls_back_with_a_warning() -> None:
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1, 2])  # class 2 has a single sample: scikit-learn refuses
    with pytest.warns(data.StratificationWarning, match="1 member"):
        kept, held = stratified_split(labels, 0.25, 42)
    assert sorted([*kept, *held]) == list(range(9)) and len(held) == round(0.25 * 9)
    with pytest.warns(data.StratificationWarning, match="proportional"):  # fewer than one per class
        subset = data.stratified_subset(Labels(np.repeat(np.arange(10), 5)), 6, seed=0)
    assert len(subset) == 6 and len(set(subset.indices)) == 6


def test_proportional_rule_is_a_named_option() -> None:
    labels = synthetic(10, 30, 60, seed=2)
    kept, held = stratified_split(labels, 0.2, 42, rule="proportional")
    assert held.tolist() == sorted(held.tolist()) and len(held) == round(0.2 * len(labels))
    counts, held_counts = np.bincount(labels), np.bincount(labels[held], minlength=10)
    assert np.all(np.abs(held_counts - 0.2 * counts) <= 1)
    assert not np.array_equal(held, np.sort(stratified_split(labels, 0.2, 42)[1]))
    a = data.build("digits", image_size=8, split_rule="proportional")
    assert (len(a.train), len(a.val), len(a.test)) == (1222, 216, 359)  # round(.2 * 1797), round(.15 * 1438)
    with pytest.raises(ValueError, match="split_rule must be one of"):
        data.build("digits", split_rule="random")
    with pytest.raises(ValueError, match="split rule must be one of"):
        data.stratified_subset(Labels(labels), 5, seed=0, rule="x")
