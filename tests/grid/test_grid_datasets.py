"""Datasets in a grid spec: your own folder: / csv: data on the datasets axis (canonical names, no data root,
the folder checked by check_paths, split sizes counted for the plan), and fetch_missing, which downloads the
registered datasets missing under their data roots."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rft_fast.grid import validation
from rft_fast.grid.plan import split_sizes
from rft_fast.grid.spec import check_paths, expand, load_spec

BASE = {
    "backbones": ["resnet50.a1_in1k"],
    "losses": ["classic_at"],
    "protocols": ["FFT-5"],
    "random_init": True,
    "search": {"lr_head": {"loguniform": [1e-6, 1e-1]}},
    "budget_minutes": 30,
}


def spec(tmp_path: Path, **changes):
    return load_spec({**BASE, "store": str(tmp_path / "r.sqlite"), "out_dir": str(tmp_path / "runs"), **changes})


def images(folder: Path, classes: tuple[str, ...], per: int) -> None:
    for c, name in enumerate(classes):
        (folder / name).mkdir(parents=True)
        for k in range(per):
            Image.fromarray(np.full((8, 8, 3), 20 * c + k, dtype=np.uint8)).save(folder / name / f"{k}.png")


def test_own_folder_on_the_datasets_axis(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    grid = spec(tmp_path, datasets=["folder:pics", "digits"])
    name = f"folder:{tmp_path.resolve() / 'pics'}"
    assert grid.datasets == (name, "digits")  # resolved: the store's run names do not depend on the working folder
    assert check_paths(grid) == [f"datasets: {name}: {tmp_path.resolve() / 'pics'} does not exist"]
    images(tmp_path / "pics", ("a", "b"), 20)
    assert check_paths(grid) == []  # no data_roots entry needed
    assert split_sizes(name) == (27, 5)  # 40 -> 8 test -> ceil(.15 * 32) = 5 val
    assert [c.train_fields(grid)["dataset"] for c in expand(grid)] == [name, "digits"]
    with pytest.raises(ValueError, match="datasets: unknown dataset 'folders:pics'.*your own data as folder:<path>"):
        spec(tmp_path, datasets=["folders:pics"])


def test_fetch_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fetched = []
    monkeypatch.setattr(validation, "download", lambda name, root: fetched.append((name, root)) or True)
    caltech = tmp_path / "caltech"
    (caltech / "caltech101" / "101_ObjectCategories" / "BACKGROUND_Google").mkdir(parents=True)  # present
    grid = spec(
        tmp_path,
        datasets=["uc_merced", "caltech101", "digits"],
        data_roots={"uc_merced": str(tmp_path / "ucm"), "caltech101": str(caltech)},
    )
    assert validation.fetch_missing(grid) == ["uc_merced"]
    assert fetched == [("uc_merced", str(tmp_path / "ucm"))]
