"""rft_fast.data: registry and errors, stratified seeded splits, deterministic augmentation, loaders.

Runs offline: the built-in digits set and small fake dataset folders written to tmp_path.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits
from torchvision.transforms.v2 import functional as F

from rft_fast import data
from rft_fast.data.augment import item_seed, study_transform
from rft_fast.data.loading import default_workers

N_DIGITS = 1797


@pytest.fixture(scope="module")
def digits() -> data.Splits:
    return data.build("digits", image_size=32)


def resized_digit(index: int, size: int) -> torch.Tensor:
    """The expected unaugmented item: pixel values / 16 as uint8, antialiased resize, gray repeated to RGB."""
    gray = torch.from_numpy(np.rint(load_digits().images[index] / 16 * 255).astype(np.uint8))
    return F.resize(gray[None].repeat(3, 1, 1), [size, size], antialias=True)


def positions(splits: data.Splits) -> tuple[set[int], set[int], set[int]]:
    """Source positions of the train / val / test items."""
    return set(splits.train.base.indices), set(splits.val.indices), set(splits.test.indices)


def stack(dataset, indices) -> tuple[torch.Tensor, torch.Tensor]:
    items = [dataset[i] for i in indices]
    return torch.stack([x for x, _ in items]), torch.tensor([y for _, y in items])


# --- digits and splits -------------------------------------------------------------------------------------


def test_digits_splits_partition_and_stratify(digits: data.Splits) -> None:
    train, val, test = positions(digits)
    assert (len(train), len(val), len(test)) == (1221, 216, 360)  # ceil(.2 * 1797), ceil(.15 * 1437): sklearn
    assert len(train | val | test) == N_DIGITS and not (train & val or train & test or val & test)
    labels = load_digits().target
    counts = np.bincount(labels, minlength=10)
    test_counts = np.bincount(labels[sorted(test)], minlength=10)
    assert np.all(np.abs(test_counts - 0.2 * counts) <= 1)
    assert np.array_equal(digits.test.labels, labels[digits.test.indices])
    assert digits.num_classes == 10 and digits.classes == [str(d) for d in range(10)] and digits.name == "digits"


@pytest.mark.parametrize("size", [8, 32])
def test_digits_items(size: int) -> None:
    splits = data.build("digits", image_size=size)
    for dataset in (splits.train, splits.val, splits.test):
        for i in (0, len(dataset) - 1):
            image, label = dataset[i]
            assert image.dtype == torch.uint8 and image.shape == (3, size, size)
            assert isinstance(label, int) and 0 <= label < 10


def test_digits_full_resolution_item() -> None:
    image, _ = data.build("digits").test[0]
    assert image.dtype == torch.uint8 and image.shape == (3, 224, 224)


def test_split_depends_on_seed_only(digits: data.Splits) -> None:
    assert positions(data.build("digits", image_size=8)) == positions(digits)  # image size does not matter
    assert positions(data.build("digits", image_size=8, seed=7)) != positions(digits)


# --- augmentation ------------------------------------------------------------------------------------------


def test_study_transform_is_literal() -> None:
    flip, jitter, rotate = study_transform().transforms
    assert flip.p == 0.5 and list(rotate.degrees) == [-2.0, 2.0]
    assert jitter.brightness == (0.75, 1.25) and jitter.contrast is None
    assert jitter.saturation is None and jitter.hue is None  # ColorJitter(0.25): brightness only


def test_item_seed_is_pinned() -> None:  # a process restart must reproduce it: no salted hash()
    assert item_seed(42, 3, 17) == item_seed(42, 3, 17) != item_seed(42, 4, 17)
    assert item_seed(0, 0, 0) == 4808561972376111626


def test_augmentation_is_a_function_of_seed_epoch_index(digits: data.Splits) -> None:
    train = digits.train
    idx = list(range(64))
    train.set_epoch(3)
    first = stack(train, idx)[0]
    assert torch.equal(stack(train, reversed(idx))[0].flip(0), first)  # read order does not matter
    assert torch.equal(train[-len(train)][0], train[0][0])
    train.set_epoch(4)
    assert (stack(train, idx)[0] != first).flatten(1).any(1).sum() > 10  # other epoch, other augmentation
    again = data.build("digits", image_size=32).train
    again.set_epoch(3)
    assert torch.equal(stack(again, idx)[0], first)  # a fresh build (as after a restart) agrees
    unaugmented = stack(train.base, idx)[0]
    assert (first != unaugmented).flatten(1).any(1).sum() > 10


def test_augmentation_same_with_or_without_workers(digits: data.Splits) -> None:
    batches = {}
    for workers in (0, 2):
        batches[workers] = list(data.loader(digits.train, 50, shuffle=True, seed=1, epoch=5, workers=workers))[:4]
    for (x0, y0), (x2, y2) in zip(batches[0], batches[2]):
        assert torch.equal(x0, x2) and torch.equal(y0, y2)
    assert digits.train.epoch == 5


def test_val_and_test_unaugmented() -> None:
    splits = data.build("digits", image_size=16)
    splits.train.set_epoch(9)
    for dataset in (splits.val, splits.test):
        for i in (0, 5, len(dataset) - 1):
            image, label = dataset[i]
            assert torch.equal(image, resized_digit(dataset.indices[i], 16)) and torch.equal(image, dataset[i][0])
    assert torch.equal(splits.train.base[0][0], resized_digit(splits.train.base.indices[0], 16))


# --- loader and to_device ----------------------------------------------------------------------------------


def test_loader_order_is_a_function_of_seed_and_epoch(digits: data.Splits) -> None:
    def labels(**kw) -> torch.Tensor:
        return torch.cat([y for _, y in data.loader(digits.test, 64, shuffle=True, **kw)])

    a = labels(seed=3, epoch=2)
    assert torch.equal(a, labels(seed=3, epoch=2))
    assert not torch.equal(a, labels(seed=3, epoch=1)) and not torch.equal(a, labels(seed=4, epoch=2))
    assert torch.equal(torch.sort(a).values, torch.sort(torch.as_tensor(digits.test.labels)).values)
    unshuffled = torch.cat([y for _, y in data.loader(digits.test, 64, shuffle=False)])
    assert torch.equal(unshuffled, torch.as_tensor(digits.test.labels))


def test_loader_batches(digits: data.Splits) -> None:
    batches = list(data.loader(digits.test, 100, shuffle=False, drop_last=True))
    assert len(batches) == len(digits.test) // 100
    images, labels = batches[0]
    assert images.dtype == torch.uint8 and images.shape == (100, 3, 32, 32) and labels.dtype == torch.int64
    assert torch.equal(images, stack(digits.test, range(100))[0])
    cpu = data.loader(digits.test, 8, shuffle=False)
    assert cpu.num_workers == 0 and not cpu.pin_memory and not cpu.persistent_workers
    assert default_workers(torch.device("cpu")) == 0 and 0 <= default_workers(torch.device("cuda")) <= 8


@pytest.mark.parametrize("channels_last", [False, True])
def test_to_device(channels_last: bool) -> None:
    images = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    x, y = data.to_device(images, torch.tensor([1, 2, 3, 4], dtype=torch.int32), "cpu", channels_last=channels_last)
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert torch.equal(x, images.float() / 255) and x.min() >= 0 and x.max() <= 1
    assert x.is_contiguous(memory_format=torch.channels_last) == channels_last
    with pytest.raises(TypeError, match="uint8"):
        data.to_device(x, y, "cpu")


# --- datasets on disk (fake layouts) -----------------------------------------------------------------------


def write_images(folder: Path, names: list[str]) -> None:
    """Small images of varied sizes and modes (RGB, grayscale and, except in JPEGs, RGBA), as real sets have."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(len(names) + len(str(folder)))
    modes = ["RGB", "L"] if names[0].endswith(".jpg") else ["RGB", "L", "RGBA"]
    for k, name in enumerate(names):
        pixels = rng.integers(0, 256, (12 + k, 20, 3), dtype=np.uint8)
        Image.fromarray(pixels).convert(modes[k % len(modes)]).save(folder / name)


@pytest.mark.parametrize("layout", ["UCMerced_LandUse/Images", "Images", "."])
def test_uc_merced_fake(tmp_path: Path, layout: str) -> None:
    for c in range(21):
        write_images(tmp_path / layout / f"class{c:02d}", [f"class{c:02d}{k:02d}.png" for k in range(5)])
    splits = data.build("uc_merced", tmp_path, image_size=16)
    train, val, test = positions(splits)
    assert (len(train), len(val), len(test)) == (71, 13, 21)  # 20% of 105; then ceil(.15 * 84)
    assert len(train | val | test) == 105
    assert np.array_equal(np.bincount(splits.test.labels), np.ones(21))
    assert splits.num_classes == 21 and splits.classes[0] == "class00"
    for dataset in (splits.train, splits.val, splits.test):
        image, label = dataset[0]
        assert image.dtype == torch.uint8 and image.shape == (3, 16, 16) and 0 <= label < 21


def test_uc_merced_wrong_class_count(tmp_path: Path) -> None:
    for c in range(3):
        write_images(tmp_path / "Images" / f"c{c}", ["a.png"])
    with pytest.raises(FileNotFoundError, match="21 class folders"):
        data.build("uc_merced", tmp_path)


def test_caltech101_fake(tmp_path: Path) -> None:
    objects = tmp_path / "caltech101" / "101_ObjectCategories"
    write_images(objects / "BACKGROUND_Google", [f"image_{k:04d}.jpg" for k in range(1, 4)])
    for name in ("accordion", "airplanes", "ant"):
        write_images(objects / name, [f"image_{k:04d}.jpg" for k in range(1, 6)])
    splits = data.build("caltech101", str(tmp_path), image_size=24, seed=42)
    assert splits.classes == ["accordion", "airplanes", "ant"] and splits.num_classes == 3  # no BACKGROUND_Google
    train, val, test = positions(splits)
    assert (len(train), len(val), len(test)) == (10, 2, 3) and len(train | val | test) == 15
    image, label = splits.test[0]
    assert image.shape == (3, 24, 24) and image.dtype == torch.uint8 and 0 <= label < 3


def test_caltech101_without_background_folder(tmp_path: Path) -> None:
    write_images(tmp_path / "caltech101" / "101_ObjectCategories" / "ant", ["image_0001.jpg"])
    with pytest.raises(FileNotFoundError, match="BACKGROUND_Google"):
        data.build("caltech101", tmp_path)


# --- errors and the registry -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [n for n, info in data.DATASETS.items() if not info.builtin])
def test_missing_root_shows_layout(tmp_path: Path, name: str) -> None:
    info = data.DATASETS[name]
    for root in (tmp_path / "absent", None):
        with pytest.raises(FileNotFoundError) as err:
            data.build(name, root)
        message = str(err.value)
        assert all(f"<root>/{line}" in message for line in info.layout)
        assert "Nothing is downloaded" in message and info.get in message
    assert list(tmp_path.iterdir()) == []  # nothing was created under the root


def test_registry() -> None:
    assert set(data.DATASETS) == {
        "caltech101",
        "fgvc_aircraft",
        "flowers102",
        "oxford_pets",
        "stanford_cars",
        "uc_merced",
        "digits",
        "digits3",
    }
    table = data.format_table()
    for info in data.DATASETS.values():
        assert info.name in table and info.split_rule in table and info.layout[0] in table
    assert data.DATASETS["flowers102"].split_rule == "official test; official train / val"
    assert data.DATASETS["oxford_pets"].split_rule == "official test; 15% of official train as val"
    assert data.DATASETS["caltech101"].split_rule == "20% of all as test; 15% of the rest as val"


def test_digits3_is_the_digits_0_to_2_stratified() -> None:
    three = data.build("digits3", image_size=16)
    labels = load_digits().target
    assert three.num_classes == 3 and three.classes == ["0", "1", "2"]
    sizes = [len(three.train), len(three.val), len(three.test)]
    assert sum(sizes) == int((labels < 3).sum()) == 537
    for split in (three.train, three.val, three.test):
        counts = np.bincount([split[i][1] for i in range(len(split))], minlength=3)
        assert len(counts) == 3 and counts.min() >= 0.3 * len(split)  # stratified: about a third each


def test_argument_errors(digits: data.Splits) -> None:
    with pytest.raises(ValueError, match="known: caltech101, .*digits"):
        data.build("imagenet")
    for size in (4, 8.0, True, "224"):
        with pytest.raises(ValueError, match="image_size"):
            data.build("digits", image_size=size)
    for batch_size in (0, -1, 2.0):
        with pytest.raises(ValueError, match="batch_size"):
            data.loader(digits.test, batch_size, shuffle=False)
    with pytest.raises(ValueError, match="epoch"):
        digits.train.set_epoch(-1)


# --- stratified_subset -------------------------------------------------------------------------------------


def test_stratified_subset(digits: data.Splits) -> None:
    test = digits.test
    subset = data.stratified_subset(test, 100, seed=0)
    assert len(subset) == 100 and len(set(subset.indices)) == 100
    counts, sub_counts = np.bincount(test.labels, minlength=10), np.bincount(subset.labels, minlength=10)
    assert np.all(np.abs(sub_counts - 100 * counts / len(test)) <= 1)
    assert subset.indices == data.stratified_subset(test, 100, seed=0).indices
    assert subset.indices != data.stratified_subset(test, 100, seed=1).indices
    assert subset.indices != sorted(subset.indices)  # mixed order: blocks of the subset do not follow classes
    image, label = subset[0]
    assert torch.equal(image, test[subset.indices[0]][0]) and label == test.labels[subset.indices[0]]
    everything = data.stratified_subset(test, 1000, seed=0)
    assert sorted(everything.indices) == list(range(len(test)))
    with pytest.raises(ValueError, match="n must"):
        data.stratified_subset(test, 0, seed=0)


def test_augment_seed_changes_draws_not_the_split():
    a = data.build("digits", image_size=16, seed=42, augment_seed=1)
    b = data.build("digits", image_size=16, seed=42, augment_seed=2)
    assert [a.test[i][1] for i in range(50)] == [b.test[i][1] for i in range(50)]
    assert torch.equal(a.val[3][0], b.val[3][0])
    assert any(not torch.equal(a.train[i][0], b.train[i][0]) for i in range(20))
