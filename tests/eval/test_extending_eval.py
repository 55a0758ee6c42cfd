"""docs/extending.md, checked: a threat and a dataset registered from outside the package (here, the test)
run through evaluate() into a store, are stored under their key rule, and count for the grid's done check."""

from __future__ import annotations

import re
import time

import numpy as np
import pytest
import torch
from helpers import ROOT
from PIL import Image
from torch import nn

from rft_fast import data
from rft_fast.eval import EvalSettings, RunInfo, evaluate
from rft_fast.grid.status import missing_threats
from rft_fast.results import (
    NO_MODE,
    POSITIVE_EPS,
    KeyRule,
    RowKey,
    Store,
    ThreatSpec,
    register_threat,
    stored_threats,
    unregister_threat,
)

SHIFT = 0.2  # the toy threat: accuracy with every pixel brightened by SHIFT (stored as its eps)


def brightness(ctx) -> None:
    t0 = time.perf_counter()
    accuracy = ctx.accuracy((ctx.x + SHIFT).clamp(0, 1), ctx.y, "brightened images")
    ctx.record(accuracy, len(ctx.y), time.perf_counter() - t0, eps=SHIFT)


class _Squares:
    """24 PIL images, 3 classes: dark, mid and bright squares."""

    def __init__(self) -> None:
        self.targets = np.arange(24) % 3

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        level = 40 + 80 * int(self.targets[i]) + i % 5
        return Image.fromarray(np.full((8, 8, 3), level, dtype=np.uint8)), int(self.targets[i])


def open_squares(root, size):
    base = _Squares()
    return {"train": data.ImageSource(base, base.targets, ["dark", "mid", "bright"], size)}


@pytest.fixture
def toy():
    register_threat(
        ThreatSpec(
            "brightness", brightness, lambda settings: [RowKey(eps=SHIFT)], KeyRule(eps=POSITIVE_EPS), default=False
        )
    )
    data.register_dataset(
        data.DatasetInfo(
            "squares",
            "toy squares (built in)",
            3,
            ("(nothing)",),
            "built in",
            0.5,
            0.25,
            builtin=True,
            open=open_squares,
        )
    )
    try:
        yield
    finally:
        unregister_threat("brightness")
        data.unregister_dataset("squares")


def test_a_registered_threat_and_dataset_run_store_and_count_as_done(toy, tmp_path) -> None:
    assert "brightness" in stored_threats() and "squares" in data.DATASETS
    splits = data.build("squares", image_size=8)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 3))
    run = RunInfo("toy-run", "squares", "linear", "ce", "FFT-5", {})
    settings = EvalSettings(threats=("clean", "brightness"), n=6)
    with Store(tmp_path / "r.sqlite") as store:
        assert missing_threats(store, run, settings) == ["clean", "brightness"]
        rows = evaluate(model, splits.test, run, settings, store=store)
        stored = store.query(threat="brightness")
        assert [(m.threat, m.eps, m.corruption, m.severity, m.mode) for m in stored] == [
            ("brightness", SHIFT, None, None, NO_MODE)
        ]
        assert stored[0] == rows[1] and rows[0].threat == "clean"
        assert missing_threats(store, run, settings) == []
        with pytest.raises(ValueError, match="eps"):  # its key rule holds: eps > 0
            store.put(type(rows[1])(**{**rows[1].__dict__, "eps": None}))
    assert "brightness" not in EvalSettings().threats  # opt-in (default=False)


def test_a_store_made_before_the_threat_was_registered_is_widened_on_open(tmp_path) -> None:
    import sqlite3

    path = tmp_path / "old.sqlite"
    Store(path).close()  # the built-in threats only
    with sqlite3.connect(path) as db:
        before = db.execute("SELECT sql FROM sqlite_master WHERE name = 'measurements'").fetchone()[0]
    assert "brightness" not in before
    register_threat(
        ThreatSpec(
            "brightness", brightness, lambda settings: [RowKey(eps=SHIFT)], KeyRule(eps=POSITIVE_EPS), default=False
        )
    )
    try:
        with Store(path) as store:  # the table now accepts the new threat's rows
            from rft_fast.results import Measurement

            store.put(
                Measurement(
                    "r", "digits", "b", "ce", "FFT-5", {}, "brightness", SHIFT, None, None, NO_MODE, 0.5, 4, 0.0
                )
            )
            assert len(store.query(threat="brightness")) == 1
    finally:
        unregister_threat("brightness")
    with Store(path) as store:  # without the plugin its rows are not read, and the table is not narrowed
        assert store.query() == []


def test_the_worked_examples_of_docs_extending_register_a_threat_and_a_dataset() -> None:
    doc = ROOT / "docs" / "extending.md"
    blocks = re.findall(r"```python\n(.*?)```", doc.read_text().split("## Add a threat")[1], flags=re.S)
    modules = [b for b in blocks if b.startswith(("# my_threats.py", "# my_datasets.py"))]
    assert len(modules) == 2
    scope: dict = {}
    try:
        for block in modules:
            exec(compile(block, str(doc), "exec"), scope)
        assert "brightness" in stored_threats()
        assert scope["splits"].num_classes == 3 and len(scope["splits"].test) == 12  # test_fraction 0.5 of 24
    finally:
        if "brightness" in stored_threats():
            unregister_threat("brightness")
        if "squares" in data.DATASETS:
            data.unregister_dataset("squares")
