"""The dataset registry (the study's six datasets plus built-in ones for tests and demos), `lookup` and `build`.

Each entry is one DatasetInfo registered in REGISTRY: where the files must sit under the data root, where to get
them, its `fetch` (the download `rft-fast datasets fetch` runs; loading never downloads), the study's split
rule, which `build` applies with stratified, seeded index splits, and `open`, the reader of its official parts.
`register_dataset(DatasetInfo(...))` adds one (docs/extending.md); DATASETS is a read-only name -> DatasetInfo
view of the registry. `lookup(name)` is the one place a dataset name is resolved (the CLI, the grid spec, the
training loop, the evaluation): a registered name, or your own data as `folder:<dir>` / `csv:<file>`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from torch.utils.data import Dataset

from rft_fast.checks import is_int, suggest
from rft_fast.data import custom, fetch, sources
from rft_fast.data.augment import Augmented
from rft_fast.data.splits import SPLIT_RULES, LabeledSubset, carve
from rft_fast.registry import Registry

MIN_IMAGE_SIZE = 8


@dataclass(frozen=True)
class DatasetInfo:
    """One registry row. test_fraction / val_fraction: the share carved (stratified, seeded) from what precedes
    it where the reader gives no such split (None where the dataset always ships it). `fetch(root)` downloads
    the files into <root> (`rft-fast datasets fetch`), None where no download exists. `location`: the folder
    or CSV file of a dataset of your own (`folder:` / `csv:` names, from `lookup`), which needs no data root."""

    name: str
    title: str
    num_classes: int | None  # None: read from the files (a dataset of your own)
    layout: tuple[str, ...]  # expected paths, relative to the data root
    get: str  # where to obtain the files
    test_fraction: float | None
    val_fraction: float | None
    builtin: bool = False
    # open(root, image_size) -> the official parts {"train": ImageSource, and "val" / "test" where official}
    open: Callable[[Path | None, int], dict[str, sources.ImageSource]] | None = field(default=None, repr=False)
    fetch: Callable[[Path], None] | None = field(default=None, repr=False)
    location: Path | None = None

    @property
    def needs_root(self) -> bool:
        """Whether `build` needs a data root (not for built-in sets nor for your own folder / CSV)."""
        return not self.builtin and self.location is None

    @property
    def split_rule(self) -> str:
        test = "official test" if self.test_fraction is None else f"{self.test_fraction:.0%} of all as test"
        if self.val_fraction is None:
            return f"{test}; official train / val"
        rest = "official train" if self.test_fraction is None else "the rest"
        rule = f"{test}; {self.val_fraction:.0%} of {rest} as val"
        return rule if self.location is None else f"the files' train / val / test where given, else {rule}"


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
        fetch=fetch.fetch_caltech101,
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
        fetch=fetch.fetch_fgvc_aircraft,
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
        fetch=fetch.fetch_flowers102,
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
        fetch=fetch.fetch_oxford_pets,
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
        fetch=fetch.fetch_stanford_cars,
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
        fetch=fetch.fetch_uc_merced,
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
    how = f"`rft-fast datasets fetch {info.name} --root <root>` downloads it, or get" if info.fetch else "Get"
    return (
        f"dataset {info.name!r} ({info.title}) not found: {problem}.\nExpected layout under the data root:\n"
        f"{layout}\nNothing is downloaded when loading. {how} it from {info.get}."
    )


def lookup(name: str) -> DatasetInfo:
    """The DatasetInfo of a dataset name: a registered one (`rft-fast datasets`), or your own data as
    `folder:<dir>` / `csv:<file>`, optionally with `?skip_bad=1` (rft_fast.data.custom). The folder / file need
    not exist yet (a grid can be planned elsewhere). The info's name is the canonical one, the path resolved, so
    runs keep one name whatever the working folder. ValueError for anything else, listing the known names."""
    if not isinstance(name, str):
        raise ValueError(f"dataset name must be a string, got {name!r}")
    if name in REGISTRY.names():
        return REGISTRY.get(name)
    kind, sep, rest = name.partition(":")
    if sep and kind in custom.KINDS:
        path_text, _, query = rest.partition("?")
        if not path_text:
            raise ValueError(f"dataset {name!r}: give the path after {kind}:")
        options = custom.parse_options(name, query)
        path = Path(path_text).expanduser().resolve()
        skip_bad = options.get("skip_bad") == "1"
        canonical = f"{kind}:{path}" + ("?skip_bad=1" if skip_bad else "")
        reader, layout = custom.KINDS[kind]

        def open_own(root: Path | None, size: int) -> dict[str, sources.ImageSource]:
            return custom.open_entries(canonical, reader(path), size, skip_bad)

        title = f"your {kind} {path}"
        return DatasetInfo(canonical, title, None, (layout,), "your own files", 0.2, 0.15, open=open_own, location=path)
    own = " | ".join(f"{kind}:<path>" for kind in custom.KINDS)
    raise ValueError(
        f"unknown dataset {name!r}{suggest(name, REGISTRY.names())}; known: {', '.join(REGISTRY.names())}; "
        f"or your own data as {own}"
    )


def present(info: DatasetInfo, root: str | Path) -> bool:
    """Whether `info`'s files are found under `root` (its reader opens them; no image is read)."""
    try:
        info.open(Path(root), MIN_IMAGE_SIZE)
    except FileNotFoundError:
        return False
    return True


def download(name: str, root: str | Path) -> bool:
    """Downloads registered dataset `name` into `root`, in the layout its reader expects, unless it is already
    there; True when something was downloaded. rft_fast.data.fetch.FetchError where no download exists (Stanford
    Cars: the message says where the mirrors are) or it failed; ValueError for a dataset without a download."""
    info = lookup(name)
    if info.fetch is None:
        raise ValueError(f"dataset {info.name!r} has no download ({info.get})")
    root = Path(root).expanduser()
    if present(info, root):
        return False
    info.fetch(root)
    if not present(info, root):
        raise fetch.FetchError(missing_message(info, f"the download did not give the expected layout under {root}"))
    return True


def build(
    name: str,
    root: str | Path | None = None,
    *,
    image_size: int = 224,
    seed: int = 42,
    augment_seed: int | None = None,
    split_rule: str = "study",
) -> Splits:
    """The train / val / test splits of dataset `name` (`lookup`) found under `root`, images resized to image_size.

    Split rule (lookup(name).split_rule): the splits the reader gives (the official ones, or your files'); the
    test split missing, a stratified test_fraction of all images as test; the val split missing, a stratified
    val_fraction of the rest (or of the official train split) as val. `split_rule` "study" draws them as the
    study's code does (scikit-learn's train_test_split, random_state=`seed`, the study's 42), "proportional" by
    rft-fast's earlier rule (rft_fast.data.splits). `augment_seed` (default: `seed`) seeds the training
    augmentation, so runs can share a split and differ in their draws.
    """
    info = lookup(name)
    if not is_int(image_size) or image_size < MIN_IMAGE_SIZE:
        raise ValueError(f"image_size must be an int >= {MIN_IMAGE_SIZE}, got {image_size!r}")
    for arg, value in (("seed", seed), ("augment_seed", seed if augment_seed is None else augment_seed)):
        if not is_int(value):
            raise ValueError(f"{arg} must be an int, got {value!r}")
    if split_rule not in SPLIT_RULES:
        raise ValueError(f"split_rule must be one of {list(SPLIT_RULES)}, got {split_rule!r}")
    if root is None and info.needs_root:
        raise FileNotFoundError(missing_message(info, "no data root was given"))
    try:
        parts = info.open(None if root is None else Path(root), image_size)
    except FileNotFoundError as err:
        if not info.needs_root:
            raise
        raise FileNotFoundError(missing_message(info, str(err))) from err
    for part_name, part in parts.items():
        if isinstance(part, sources.ImageSource):
            part.origin = (info.name, part_name)  # the decoded cache's key (rft_fast.data.cache)

    def split_off(split: str, fraction: float | None, rest: LabeledSubset) -> tuple[LabeledSubset, LabeledSubset]:
        if split in parts:
            return rest, LabeledSubset(parts[split], range(len(parts[split])))
        if fraction is None:
            raise ValueError(f"dataset {info.name!r}: its reader gave no {split} split and none is carved")
        return carve(rest, fraction, seed, rule=split_rule)

    train, test = split_off("test", info.test_fraction, LabeledSubset(parts["train"], range(len(parts["train"]))))
    train, val = split_off("val", info.val_fraction, train)
    return Splits(
        info.name,
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
