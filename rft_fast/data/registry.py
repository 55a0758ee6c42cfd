"""The dataset registry (the study's six datasets plus built-in ones for tests and demos) and `build`.

Each entry is one DatasetInfo registered in REGISTRY: where the files must sit under the data root, where to get
them (nothing is ever downloaded here), the study's split rule, which `build` applies with stratified, seeded
index splits, and `open`, the reader of its official parts. `register_dataset(DatasetInfo(...))` adds one
(docs/extending.md); DATASETS is a read-only name -> DatasetInfo view of the registry (what the CLI and
the grid spec list and check names against).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from torch.utils.data import Dataset

from rft_fast.checks import is_int
from rft_fast.data import sources
from rft_fast.data.augment import Augmented
from rft_fast.data.splits import LabeledSubset, carve
from rft_fast.registry import Registry

MIN_IMAGE_SIZE = 8


@dataclass(frozen=True)
class DatasetInfo:
    """One registry row. test_fraction / val_fraction: share carved (stratified, seeded) from what precedes
    it, None where the dataset ships that split officially."""

    name: str
    title: str
    num_classes: int
    layout: tuple[str, ...]  # expected paths, relative to the data root
    get: str  # where to obtain the files
    test_fraction: float | None
    val_fraction: float | None
    builtin: bool = False
    # open(root, image_size) -> the official parts {"train": ImageSource, and "val" / "test" where official}
    open: Callable[[Path | None, int], dict[str, sources.ImageSource]] | None = field(default=None, repr=False)

    @property
    def split_rule(self) -> str:
        test = "official test" if self.test_fraction is None else f"{self.test_fraction:.0%} of all as test"
        if self.val_fraction is None:
            return f"{test}; official train / val"
        rest = "official train" if self.test_fraction is None else "the rest"
        return f"{test}; {self.val_fraction:.0%} of {rest} as val"


def _tv(cls: str) -> str:
    return f"torchvision.datasets.{cls}(<root>, download=True) on a machine with internet, then copy <root> here"


class _View(Mapping[str, "DatasetInfo"]):
    """A read-only name -> DatasetInfo mapping that always shows the registry's current entries."""

    def __getitem__(self, name: str) -> DatasetInfo:
        if name not in REGISTRY.names():
            raise KeyError(name)
        return REGISTRY.get(name)

    def __iter__(self) -> Iterator[str]:
        return iter(REGISTRY.names())

    def __len__(self) -> int:
        return len(REGISTRY)


REGISTRY: Registry[DatasetInfo] = Registry("dataset")
DATASETS: Mapping[str, DatasetInfo] = _View()


def register_dataset(info: DatasetInfo, *, replace: bool = False) -> DatasetInfo:
    """Adds a dataset (its `open` reader is required)."""
    if info.open is None:
        raise ValueError(f"dataset {info.name!r} needs open=<reader of its official parts>")
    return REGISTRY.register(info.name, info, replace=replace)


def unregister_dataset(name: str) -> DatasetInfo:
    return REGISTRY.unregister(name)


register_dataset(
    DatasetInfo(
        "caltech101",
        "Caltech-101",
        101,
        (
            "caltech101/101_ObjectCategories/<class>/image_0001.jpg ... (102 folders: the 101 classes and "
            "BACKGROUND_Google, which torchvision leaves out)",
        ),
        "https://data.caltech.edu/records/mzrjq-6wc02 (extract 101_ObjectCategories.tar.gz into "
        f"<root>/caltech101/), or {_tv('Caltech101')}",
        0.2,
        0.15,
        open=sources.open_caltech101,
    )
)

register_dataset(
    DatasetInfo(
        "fgvc_aircraft",
        "FGVC-Aircraft (variants)",
        100,
        (
            "fgvc-aircraft-2013b/data/images/<id>.jpg",
            "fgvc-aircraft-2013b/data/variants.txt",
            "fgvc-aircraft-2013b/data/images_variant_{train,val,test}.txt",
        ),
        f"https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/ (fgvc-aircraft-2013b.tar.gz), or {_tv('FGVCAircraft')}",
        None,
        None,
        open=sources.open_fgvc_aircraft,
    )
)

register_dataset(
    DatasetInfo(
        "flowers102",
        "Oxford Flowers-102",
        102,
        ("flowers-102/jpg/image_00001.jpg ...", "flowers-102/imagelabels.mat", "flowers-102/setid.mat"),
        "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/ (102flowers.tgz, imagelabels.mat, setid.mat), "
        f"or {_tv('Flowers102')}",
        None,
        None,
        open=sources.open_flowers102,
    )
)

register_dataset(
    DatasetInfo(
        "oxford_pets",
        "Oxford-IIIT Pet (breeds)",
        37,
        ("oxford-iiit-pet/images/<Breed>_<n>.jpg", "oxford-iiit-pet/annotations/{trainval,test}.txt"),
        f"https://www.robots.ox.ac.uk/~vgg/data/pets/ (images.tar.gz, annotations.tar.gz), or {_tv('OxfordIIITPet')}",
        None,
        0.15,
        open=sources.open_oxford_pets,
    )
)

register_dataset(
    DatasetInfo(
        "stanford_cars",
        "Stanford Cars",
        196,
        (
            "stanford_cars/devkit/{cars_meta.mat,cars_train_annos.mat}",
            "stanford_cars/cars_train/<id>.jpg",
            "stanford_cars/cars_test/<id>.jpg",
            "stanford_cars/cars_test_annos_withlabels.mat",
        ),
        "a mirror of the original release (its host and torchvision's download are gone), e.g. the Kaggle "
        "copies of cars_train, cars_test, the devkit and cars_test_annos_withlabels.mat",
        None,
        0.15,
        open=sources.open_stanford_cars,
    )
)

register_dataset(
    DatasetInfo(
        "uc_merced",
        "UC Merced Land Use",
        21,
        (
            "UCMerced_LandUse/Images/<class>/<class>00.tif ... (21 class folders; <root>/Images/<class>/ or "
            "<root>/<class>/ also work)",
        ),
        "http://weegee.vision.ucmerced.edu/datasets/landuse.html (UCMerced_LandUse.zip, extract into <root>)",
        0.2,
        0.15,
        open=sources.open_uc_merced,
    )
)

register_dataset(
    DatasetInfo(
        "digits",
        "scikit-learn digits (8x8, upscaled; built in)",
        10,
        ("(nothing: shipped with scikit-learn; the data root is ignored)",),
        "built in (sklearn.datasets.load_digits)",
        0.2,
        0.15,
        builtin=True,
        open=sources.open_digits,
    )
)

register_dataset(
    DatasetInfo(
        "digits3",
        "scikit-learn digits 0, 1, 2 only (a 3-class task; built in)",
        3,
        ("(nothing: shipped with scikit-learn; the data root is ignored)",),
        "built in (sklearn.datasets.load_digits, classes 0-2)",
        0.2,
        0.15,
        builtin=True,
        open=sources.open_digits3,
    )
)


@dataclass
class Splits:
    """A built dataset: `train` (augmented, with set_epoch), `val` and `test` (unaugmented); items are
    (uint8 (3, S, S) image, int label)."""

    name: str
    train: Augmented
    val: Dataset
    test: Dataset
    num_classes: int
    classes: list[str] = field(repr=False)


def missing_message(info: DatasetInfo, problem: str) -> str:
    """What is wrong, the layout `info` expects under the data root, and where to get the files."""
    layout = "\n".join(f"  <root>/{line}" for line in info.layout)
    return (
        f"dataset {info.name!r} ({info.title}) not found: {problem}.\nExpected layout under the data root:\n"
        f"{layout}\nNothing is downloaded here (no network access is assumed). Get it from {info.get}."
    )


def _info(name: str) -> DatasetInfo:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    return DATASETS[name]


def build(
    name: str, root: str | Path | None = None, *, image_size: int = 224, seed: int = 42, augment_seed: int | None = None
) -> Splits:
    """The train / val / test splits of dataset `name` found under `root`, images resized to image_size.

    Split rule (DATASETS[name].split_rule): official splits where the dataset has them; otherwise a
    stratified test_fraction of all images as test, then a stratified val_fraction of the rest (or of the
    official train split) as val, both drawn with `seed` (the study: 42). `augment_seed` (default: `seed`)
    seeds the training augmentation, so runs can share a split and differ in their draws.
    """
    info = _info(name)
    if not is_int(image_size) or image_size < MIN_IMAGE_SIZE:
        raise ValueError(f"image_size must be an int >= {MIN_IMAGE_SIZE}, got {image_size!r}")
    for arg, value in (("seed", seed), ("augment_seed", seed if augment_seed is None else augment_seed)):
        if not is_int(value):
            raise ValueError(f"{arg} must be an int, got {value!r}")
    if root is None and not info.builtin:
        raise FileNotFoundError(missing_message(info, "no data root was given"))
    try:
        parts = info.open(None if root is None else Path(root), image_size)
    except FileNotFoundError as err:
        raise FileNotFoundError(missing_message(info, str(err))) from err

    train = LabeledSubset(parts["train"], range(len(parts["train"])))
    if info.test_fraction is None:
        test = LabeledSubset(parts["test"], range(len(parts["test"])))
    else:
        train, test = carve(train, info.test_fraction, seed)
    if info.val_fraction is None:
        val = LabeledSubset(parts["val"], range(len(parts["val"])))
    else:
        train, val = carve(train, info.val_fraction, seed)
    return Splits(
        name,
        Augmented(train, seed if augment_seed is None else augment_seed),
        val,
        test,
        len(parts["train"].classes),
        parts["train"].classes,
    )


def format_table() -> str:
    """The registry as a text table: name, classes, split rule, then the expected layout under the data root."""
    header = ("name", "classes", "splits (carved ones stratified, seeded)", "layout under the data root")
    rows = [(i.name, str(i.num_classes), i.split_rule, i.layout[0]) for i in DATASETS.values()]
    widths = [max(len(r[k]) for r in [header, *rows]) for k in range(3)]
    lines = []
    for info, row in zip([None, *DATASETS.values()], [header, *rows]):
        lines.append("  ".join(c.ljust(w) for c, w in zip(row[:3], widths)) + "  " + row[3])
        for extra in info.layout[1:] if info else ():
            lines.append(" " * (sum(widths) + 6) + extra)
    return "\n".join(lines)
