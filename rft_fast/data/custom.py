"""Your own data as a dataset name: `folder:<dir>` and `csv:<file>`, optionally followed by `?skip_bad=1`.

- `folder:<dir>`: one sub-folder per class (`<dir>/<class>/...`, images found recursively), or the splits given
  as `<dir>/{train,val,test}/<class>/...` (when every sub-folder of <dir> is one of train / val / test, train
  among them).
- `csv:<file>`: a header row naming the columns `path,label` and optionally `split` (train | val | test, on
  every row or on none); relative paths are relative to the CSV's folder.

Classes are the class names sorted (folder names, or the label column's strings), shared by every split, and
recorded in the checkpoint so evaluation maps them the same way. Splits the files do not give are drawn with the
study's rule (20% of all as test, then 15% of the rest as val; stratified, seeded). Image files are those with
an extension PIL reads (hidden files and other files are not images); each is read as torchvision's loader reads
it (PIL, `.convert("RGB")`: L, LA, P, RGBA, CMYK, I;16 alike), at any size. A file that cannot be read is an
error naming it, when it is read; with `?skip_bad=1` every file is decoded up front and the unreadable ones are
left out, with a warning giving their count and names. A missing CSV path is an error naming its line.
"""

from __future__ import annotations

import csv
import warnings
from collections.abc import Callable
from pathlib import Path

from PIL import Image

from rft_fast.data.sources import ImageFiles, ImageSource, read_image

SPLIT_NAMES = ("train", "val", "test")
OPTIONS = {"skip_bad": ("0", "1")}
CSV_COLUMNS = ("path", "label", "split")


class SkippedImagesWarning(UserWarning):
    """Unreadable image files were left out of a `?skip_bad=1` dataset."""


def _image_extensions() -> frozenset[str]:
    Image.init()
    return frozenset(Image.registered_extensions())


def _images_under(folder: Path) -> list[Path]:
    """Image files under `folder`, recursively, sorted; hidden files and folders left out."""
    extensions = _image_extensions()
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file()
        and p.suffix.lower() in extensions
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _folder_entries(root: Path) -> dict[str, list[tuple[Path, str]]]:
    """{split: [(file, class name)]} of a folder dataset (only "train" unless the folder gives splits)."""
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder")
    subs = _subfolders(root)
    names = {p.name for p in subs}
    splits = {"train": root} if not ("train" in names and names <= set(SPLIT_NAMES)) else {p.name: p for p in subs}
    entries: dict[str, list[tuple[Path, str]]] = {}
    for split, folder in splits.items():
        classes = _subfolders(folder)
        if not classes:
            raise FileNotFoundError(f"{folder} holds no class sub-folders (expected {folder}/<class>/<image>)")
        entries[split] = []
        for class_dir in classes:
            files = _images_under(class_dir)
            if not files:
                raise ValueError(f"class folder {class_dir} holds no image files")
            entries[split] += [(f, class_dir.name) for f in files]
    return entries


def _csv_entries(path: Path) -> dict[str, list[tuple[Path, str]]]:
    """{split: [(file, label)]} of a CSV dataset (only "train" unless it has a split column)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} is not a file")
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        columns = [c.strip() for c in reader.fieldnames or []]
        if not {"path", "label"} <= set(columns) or not set(columns) <= set(CSV_COLUMNS):
            raise ValueError(f"{path}: columns {columns}; expected path,label and optionally split")
        reader.fieldnames = columns
        rows = [(reader.line_num, {k: (v or "").strip() for k, v in row.items()}) for row in reader]
    if not rows:
        raise ValueError(f"{path}: no rows after the header")
    has_split = [bool(row.get("split")) for _, row in rows]
    if any(has_split) and not all(has_split):
        line = rows[has_split.index(False)][0]
        raise ValueError(f"{path} line {line}: no split; give a split (train | val | test) on every row or on none")
    entries: dict[str, list[tuple[Path, str]]] = {}
    for line, row in rows:
        if not row["path"] or not row["label"]:
            raise ValueError(f"{path} line {line}: empty path or label")
        split = row.get("split") or "train"
        if split not in SPLIT_NAMES:
            raise ValueError(f"{path} line {line}: split {split!r}; expected one of {list(SPLIT_NAMES)}")
        file = Path(row["path"]).expanduser()
        file = file if file.is_absolute() else path.parent / file
        if not file.is_file():
            raise FileNotFoundError(f"{path} line {line}: image {file} does not exist")
        entries.setdefault(split, []).append((file, row["label"]))
    if "train" not in entries:
        raise ValueError(f"{path}: no train rows (splits given: {sorted(entries)})")
    return entries


def _readable(entries: list[tuple[Path, str]], skipped: list[Path]) -> list[tuple[Path, str]]:
    keep = []
    for file, label in entries:
        try:
            read_image(file)
            keep.append((file, label))
        except ValueError:
            skipped.append(file)
    return keep


def open_entries(
    name: str, entries: dict[str, list[tuple[Path, str]]], size: int, skip_bad: bool
) -> dict[str, ImageSource]:
    """The ImageSource parts of `entries`, labels indexing the sorted class names of all of them."""
    skipped: list[Path] = []
    if skip_bad:
        entries = {split: _readable(items, skipped) for split, items in entries.items()}
        if skipped:
            shown = ", ".join(map(str, skipped[:5])) + (", ..." if len(skipped) > 5 else "")
            warnings.warn(
                f"{name}: skipped {len(skipped)} unreadable image file(s): {shown}", SkippedImagesWarning, stacklevel=3
            )
    classes = sorted({label for items in entries.values() for _, label in items})
    index = {c: i for i, c in enumerate(classes)}
    hint = f"dataset {name}; add ?skip_bad=1 to its name to leave unreadable files out"
    parts = {}
    for split, items in entries.items():
        if not items:
            raise ValueError(f"{name}: no readable images in split {split!r}")
        base = ImageFiles([f for f, _ in items], [index[c] for _, c in items], hint)
        parts[split] = ImageSource(base, base.labels, classes, size, files=base.files)
        parts[split].skipped = list(skipped)
    return parts


def parse_options(name: str, text: str) -> dict[str, str]:
    """`skip_bad=1&...` -> {"skip_bad": "1"}; unknown keys and values are errors naming the dataset."""
    options: dict[str, str] = {}
    for item in filter(None, text.split("&")):
        key, _, value = item.partition("=")
        if key not in OPTIONS or value not in OPTIONS[key]:
            allowed = ", ".join(f"{k}={'|'.join(v)}" for k, v in OPTIONS.items())
            raise ValueError(f"dataset {name!r}: option {item!r} unknown; allowed: {allowed}")
        options[key] = value
    return options


Reader = Callable[[Path], dict[str, list[tuple[Path, str]]]]
KINDS: dict[str, tuple[Reader, str]] = {
    "folder": (_folder_entries, "<dir>/<class>/<image> ..., or <dir>/{train,val,test}/<class>/<image> ..."),
    "csv": (_csv_entries, "<file>.csv with columns path,label[,split]; paths relative to the CSV's folder"),
}
