"""Every registered loader on its real on-disk format, written here in tmp_path: Flowers-102's JPEGs with
imagelabels.mat / setid.mat, Oxford-IIIT Pet's annotations lists, FGVC-Aircraft's variants.txt and
images_variant_*.txt, Stanford Cars' devkit .mat structs, Caltech-101's folders with BACKGROUND_Google, UC Merced's
.tif files. Each is built with data.build, split with the study's rule (checked against scikit-learn's calls
where carved), and a batch is loaded. Few classes and 8-16 px images keep it fast."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image
from sklearn.model_selection import train_test_split

from rft_fast import data

SIZE = 16


def image(path: Path, k: int, mode: str = "RGB") -> None:
    """A small image of varied size (8-15 px) and content."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(k).integers(0, 256, (8 + k % 8, 8 + (k * 3) % 8, 3), dtype=np.uint8)
    Image.fromarray(pixels).convert(mode).save(path)


def loaded(splits: data.Splits, classes: int) -> None:
    """A batch of each split: uint8 images at SIZE, labels in range, matching the split's labels."""
    assert splits.num_classes == classes == len(splits.classes)
    for split in (splits.train, splits.val, splits.test):
        images, labels = next(iter(data.loader(split, 4, shuffle=False)))
        assert images.dtype == torch.uint8 and images.shape[1:] == (3, SIZE, SIZE)
        assert labels.tolist() == [split[i][1] for i in range(len(labels))]
        assert 0 <= labels.min() and labels.max() < classes


def study_carved(labels: np.ndarray) -> tuple[list[int], list[int], list[int]]:
    train_val, test = train_test_split(range(len(labels)), test_size=0.2, stratify=labels, random_state=42)
    train, val = train_test_split(train_val, test_size=0.15, stratify=labels[train_val], random_state=42)
    return list(train), list(val), list(test)


def study_train_val(labels: np.ndarray) -> tuple[list[int], list[int]]:
    train, val = train_test_split(range(len(labels)), test_size=0.15, stratify=labels, random_state=42)
    return list(train), list(val)


@pytest.fixture(autouse=True)
def _study_rule_applies():
    """The layouts are sized so that the study's stratified draw is possible: no fallback."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", data.StratificationWarning)
        yield


def test_flowers102(tmp_path: Path) -> None:
    folder = tmp_path / "flowers-102"
    labels = np.array([1, 2, 3] * 4)  # 1-based, image ids 1..12
    for i in range(1, 13):
        image(folder / "jpg" / f"image_{i:05d}.jpg", i)
    scipy.io.savemat(folder / "imagelabels.mat", {"labels": labels[None].astype(np.uint8)})
    ids = {"trnid": [1, 2, 3, 4, 5, 6], "valid": [7, 8, 9], "tstid": [12, 10, 11]}
    scipy.io.savemat(folder / "setid.mat", {k: np.array([v], dtype=np.uint16) for k, v in ids.items()})
    splits = data.build("flowers102", tmp_path, image_size=SIZE)
    assert [len(splits.train), len(splits.val), len(splits.test)] == [6, 3, 3]
    assert splits.test.labels.tolist() == [2, 0, 1]  # setid's order, labels - 1
    assert splits.classes[:2] == ["pink primrose", "hard-leaved pocket orchid"]  # torchvision's names
    loaded(splits, 102)


def test_oxford_pets(tmp_path: Path) -> None:
    folder = tmp_path / "oxford-iiit-pet"
    breeds = [("Abyssinian", 1, 1), ("american_bulldog", 2, 2), ("american_pit_bull_terrier", 3, 2)]
    for split, per in (("trainval", 7), ("test", 2)):
        lines = []
        for b, (breed, class_id, species) in enumerate(breeds):
            for k in range(per):
                name = f"{breed}_{k + 1 + (100 if split == 'test' else 0)}"
                image(folder / "images" / f"{name}.jpg", 10 * b + k)
                lines.append(f"{name} {class_id} {species} {k + 1}")
        (folder / "annotations").mkdir(parents=True, exist_ok=True)
        (folder / "annotations" / f"{split}.txt").write_text("\n".join(lines) + "\n")
    splits = data.build("oxford_pets", tmp_path, image_size=SIZE)
    assert splits.classes == ["Abyssinian", "American Bulldog", "American Pit Bull Terrier"]
    train, val = study_train_val(np.repeat([0, 1, 2], 7))
    assert splits.train.base.indices == train and splits.val.indices == val and len(splits.test) == 6
    loaded(splits, 3)


def test_fgvc_aircraft(tmp_path: Path) -> None:
    folder = tmp_path / "fgvc-aircraft-2013b" / "data"
    variants = ["707-320", "A300B4", "Cessna 172"]  # a variant name may hold a space
    folder.mkdir(parents=True)
    (folder / "variants.txt").write_text("\n".join(variants) + "\n")
    k = 0
    for split, per in (("train", 2), ("val", 1), ("test", 1)):
        lines = []
        for variant in variants:
            for _ in range(per):
                k += 1
                image(folder / "images" / f"{1000000 + k}.jpg", k)
                lines.append(f"{1000000 + k} {variant}")
        (folder / f"images_variant_{split}.txt").write_text("\n".join(lines) + "\n")
    splits = data.build("fgvc_aircraft", tmp_path, image_size=SIZE)
    assert [len(splits.train), len(splits.val), len(splits.test)] == [6, 3, 3]
    assert splits.classes == variants and splits.test.labels.tolist() == [0, 1, 2]
    loaded(splits, 3)


def cars_annotations(path: Path, labels: list[int], prefix: str) -> None:
    """A devkit annotations .mat: a 1 x N struct array with the fields torchvision reads (class 1-based)."""
    fields = ["bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname"]
    annos = np.zeros((1, len(labels)), dtype=[(f, "O") for f in fields])
    for i, label in enumerate(labels):
        box = [np.array([[v]], dtype=np.uint8) for v in (1, 1, 7, 7)]
        annos[0, i] = (*box, np.array([[label + 1]], dtype=np.uint8), np.array([f"{prefix}{i + 1:05d}.jpg"]))
    scipy.io.savemat(path, {"annotations": annos})


def test_stanford_cars(tmp_path: Path) -> None:
    folder = tmp_path / "stanford_cars"
    names = ["AM General Hummer SUV 2000", "Acura RL Sedan 2012", "Acura TL Sedan 2012"]
    (folder / "devkit").mkdir(parents=True)
    class_names = np.empty((1, 3), dtype=object)
    class_names[0, :] = names
    scipy.io.savemat(folder / "devkit" / "cars_meta.mat", {"class_names": class_names})
    train_labels, test_labels = [0, 1, 2] * 7, [2, 1, 0]
    cars_annotations(folder / "devkit" / "cars_train_annos.mat", train_labels, "")
    cars_annotations(folder / "cars_test_annos_withlabels.mat", test_labels, "")
    for split, labels in (("cars_train", train_labels), ("cars_test", test_labels)):
        for i in range(len(labels)):
            image(folder / split / f"{i + 1:05d}.jpg", i)
    splits = data.build("stanford_cars", tmp_path, image_size=SIZE)
    assert splits.classes == names and splits.test.labels.tolist() == test_labels
    train, val = study_train_val(np.array(train_labels))
    assert splits.train.base.indices == train and splits.val.indices == val
    loaded(splits, 3)


def test_caltech101(tmp_path: Path) -> None:
    objects = tmp_path / "caltech101" / "101_ObjectCategories"
    for k in range(1, 4):
        image(objects / "BACKGROUND_Google" / f"image_{k:04d}.jpg", k)
    for c, name in enumerate(("Faces_easy", "accordion", "ant")):  # torchvision sorts: upper case first
        for k in range(1, 10):
            image(objects / name / f"image_{k:04d}.jpg", 10 * c + k, "L" if k % 3 == 0 else "RGB")
    splits = data.build("caltech101", tmp_path, image_size=SIZE)
    assert splits.classes == ["Faces_easy", "accordion", "ant"]
    train, val, test = study_carved(np.repeat([0, 1, 2], 9))
    assert (splits.train.base.indices, splits.val.indices, splits.test.indices) == (train, val, test)
    loaded(splits, 3)


def test_uc_merced_tifs(tmp_path: Path) -> None:
    images = tmp_path / "UCMerced_LandUse" / "Images"
    classes = [f"class{c:02d}" for c in range(21)]
    for c, name in enumerate(classes):
        for k in range(9):  # 189 images: every class can give the val split a member
            image(images / name / f"{name}{k:02d}.tif", 9 * c + k)
    splits = data.build("uc_merced", tmp_path, image_size=SIZE)
    assert splits.classes == classes
    train, val, test = study_carved(np.repeat(np.arange(21), 9))
    assert (splits.train.base.indices, splits.val.indices, splits.test.indices) == (train, val, test)
    assert Image.open(images / "class00" / "class0000.tif").format == "TIFF"
    loaded(splits, 21)
