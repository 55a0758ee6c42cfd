"""Your own data: folder:<dir> and csv:<file> datasets (layouts, split rule, sorted classes, image modes read as
torchvision reads them, unreadable files named or skipped on request), the names' canonical form, and the class
names a checkpoint records checked by evaluation."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import tiny
import torch
from PIL import Image
from sklearn.model_selection import train_test_split
from torchvision.datasets.folder import pil_loader

from rft_fast import data
from rft_fast.data.custom import SkippedImagesWarning

MODES = ["RGB", "L", "LA", "P", "RGBA", "CMYK", "I;16"]


def write(path: Path, k: int, mode: str = "RGB") -> Path:
    """An image of size (8 + k % 5) x (9 + k % 3) in `mode` (CMYK as JPEG, the others as PNG)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(k)
    shape = (8 + k % 5, 9 + k % 3)
    if mode == "I;16":
        img = Image.fromarray(rng.integers(0, 65535, shape, dtype=np.uint16))
    else:
        img = Image.fromarray(rng.integers(0, 256, (*shape, 3), dtype=np.uint8)).convert(mode)
    path = path.with_suffix(".jpg" if mode == "CMYK" else ".png")
    img.save(path)
    return path


def folder_dataset(root: Path, classes=("cat", "Dog", "bird"), per: int = 10) -> list[Path]:
    files = []
    for c, name in enumerate(classes):
        for k in range(per):
            files.append(write(root / name / f"{k}", 10 * c + k, MODES[(c + k) % len(MODES)]))
    return files


def test_folder_dataset(tmp_path: Path) -> None:
    folder_dataset(tmp_path / "pics")
    (tmp_path / "pics" / "cat" / "notes.txt").write_text("not an image")
    (tmp_path / "pics" / "cat" / ".hidden.png").write_bytes(b"")
    splits = data.build(f"folder:{tmp_path / 'pics'}", image_size=16)
    assert splits.classes == ["Dog", "bird", "cat"] and splits.num_classes == 3  # sorted, as ImageFolder does
    labels = np.repeat([0, 1, 2], 10)
    train_val, test = train_test_split(range(30), test_size=0.2, stratify=labels, random_state=42)
    train, val = train_test_split(train_val, test_size=0.15, stratify=labels[train_val], random_state=42)
    assert (splits.train.base.indices, splits.val.indices, splits.test.indices) == (train, val, test)
    source = splits.test.dataset
    for i in range(len(source)):  # every mode read as torchvision's loader reads it, at its own size
        assert np.array_equal(np.asarray(source.native(i)), np.asarray(pil_loader(source.base.files[i])))
    images, batch_labels = next(iter(data.loader(splits.test, 6, shuffle=False)))
    assert images.shape == (6, 3, 16, 16) and images.dtype == torch.uint8
    assert batch_labels.tolist() == splits.test.labels.tolist()


def test_folder_with_splits(tmp_path: Path) -> None:
    root = tmp_path / "given"
    for split, per in (("train", 4), ("val", 2), ("test", 3)):
        folder_dataset(root / split, classes=("b", "a") if split != "test" else ("a", "b", "c"), per=per)
    splits = data.build(f"folder:{root}", image_size=8)
    assert splits.classes == ["a", "b", "c"]  # one list over the splits
    assert [len(splits.train), len(splits.val), len(splits.test)] == [8, 4, 9]
    assert splits.test.labels.tolist() == [0] * 3 + [1] * 3 + [2] * 3
    only_train = tmp_path / "train_only"
    folder_dataset(only_train / "train", per=10)
    splits = data.build(f"folder:{only_train}", image_size=8)
    assert [len(splits.train), len(splits.val), len(splits.test)] == [20, 4, 6]  # carved by the study's rule


def test_csv_dataset(tmp_path: Path) -> None:
    files = folder_dataset(tmp_path / "imgs", classes=("x", "y"), per=6)
    rows = ["path,label,split"]
    for i, f in enumerate(files):
        rows.append(f"{f.relative_to(tmp_path)},{'zebra' if i < 6 else 'ant'},{['train', 'train', 'test'][i % 3]}")
    (tmp_path / "set.csv").write_text("\n".join(rows) + "\n")
    splits = data.build(f"csv:{tmp_path / 'set.csv'}", image_size=8)
    assert splits.classes == ["ant", "zebra"] and len(splits.test) == 4 and len(splits.train) + len(splits.val) == 8
    assert splits.test.dataset.base.files[0] == files[2]  # relative to the CSV's folder
    assert splits.test.labels.tolist() == [1, 1, 0, 0]

    def refused(text: str, error: type, match: str) -> None:
        (tmp_path / "bad.csv").write_text(text)
        with pytest.raises(error, match=match):
            data.build(f"csv:{tmp_path / 'bad.csv'}")

    first = files[0].relative_to(tmp_path)
    refused("file,class\na.png,x\n", ValueError, r"columns \['file', 'class'\]; expected path,label")
    refused(f"path,label\n{first},x\nmissing.png,y\n", FileNotFoundError, "line 3: image .*missing.png does not exist")
    refused(f"path,label,split\n{first},x,train\n{first},x,\n", ValueError, "line 3: no split")
    refused(f"path,label,split\n{first},x,holdout\n", ValueError, "split 'holdout'")


def test_unreadable_file_is_named_or_skipped(tmp_path: Path) -> None:
    folder_dataset(tmp_path / "d", per=10)
    bad = tmp_path / "d" / "cat" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    splits = data.build(f"folder:{tmp_path / 'd'}", image_size=8)
    source = splits.train.base.dataset
    position = source.base.files.index(bad)
    with pytest.raises(ValueError, match=r"cannot read image .*broken.png.*skip_bad=1"):
        source[position]
    with pytest.warns(SkippedImagesWarning, match="skipped 1 unreadable image file.*broken.png"):
        kept = data.build(f"folder:{tmp_path / 'd'}?skip_bad=1", image_size=8)
    assert len(kept.train) + len(kept.val) + len(kept.test) == 30 and bad not in kept.test.dataset.base.files
    assert kept.test.dataset.skipped == [bad]


def test_names_and_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    info = data.lookup("folder:pics?skip_bad=1")
    assert info.name == f"folder:{tmp_path.resolve() / 'pics'}?skip_bad=1" and not info.needs_root
    assert data.lookup(info.name).name == info.name  # canonical: stable under lookup and the working folder
    assert data.lookup("digits").needs_root is False and data.lookup("uc_merced").needs_root
    with pytest.raises(ValueError, match=r"option .skip=1. unknown; allowed: skip_bad=0\|1"):
        data.lookup("folder:pics?skip=1")
    with pytest.raises(ValueError, match=r"or your own data as folder:<path> \| csv:<path>"):
        data.lookup("imagefolder:pics")
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        data.build("folder:pics")
    (tmp_path / "pics" / "a").mkdir(parents=True)
    with pytest.raises(ValueError, match="class folder .*a holds no image files"):
        data.build("folder:pics")


def test_single_image_class_falls_back_with_a_warning(tmp_path: Path) -> None:
    folder_dataset(tmp_path / "d", classes=("a", "b"), per=10)
    write(tmp_path / "d" / "rare" / "only", 99)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        splits = data.build(f"folder:{tmp_path / 'd'}", image_size=8)
    assert any(issubclass(w.category, data.StratificationWarning) for w in caught)
    assert len(splits.train) + len(splits.val) + len(splits.test) == 21


def test_checkpoint_records_classes_and_evaluation_checks_them(tmp_path: Path) -> None:
    from rft_fast.eval.entry import evaluate_checkpoint
    from rft_fast.eval.settings import EvalSettings, RunInfo
    from rft_fast.train import TrainConfig, fit
    from rft_fast.train.trained import load_run

    folder_dataset(tmp_path / "a", classes=("a", "b", "c"), per=10)
    folder_dataset(tmp_path / "b", classes=("a", "b", "d"), per=10)
    config = TrainConfig(
        backbone="tiny_resnet",
        dataset=f"folder:{tmp_path / 'a'}",
        random_init=True,
        protocol="FFT-5",
        epochs=1,
        image_size=8,
        batch_size=8,
        effective_batch=8,
        max_batches=1,
        attack_steps=1,
        val_steps=1,
        workers=0,
        device="cpu",
        out_dir=str(tmp_path / "run"),
    )
    with tiny.registered():
        fit(config)
        assert load_run(tmp_path / "run").classes == ["a", "b", "c"]
        settings = EvalSettings(threats=("clean",), n=6, mode="fast", workers=0)
        outcome = evaluate_checkpoint(tmp_path / "run", settings, None, device="cpu")
        assert outcome.rows and not outcome.failures
        other = RunInfo("x", f"folder:{tmp_path / 'b'}", "tiny_resnet", "trades", "FFT-5", {})
        expected = r"run's 3 classes \['a', 'b', 'c'\]; the dataset's 3 classes \['a', 'b', 'd'\]"
        with pytest.raises(ValueError, match=expected):
            evaluate_checkpoint(tmp_path / "run", settings, None, run=other, device="cpu")
