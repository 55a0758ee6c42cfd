"""The paper's frozen images (HF hub dataset MaxHeuillet/RobustGenBench) read from a fake local hub cache written
here in the real layout (datasets--MaxHeuillet--RobustGenBench/{refs/main, blobs/, snapshots/<sha>/}, the study's
<name>_processed.tar.zst archive: train/ val/ test/ test_common/ PNG folders with labels.csv, metadata.json),
offline (HF_HUB_OFFLINE=1): extraction, checks, and a whole evaluate() on them. Never the network."""

from __future__ import annotations

import csv
import io
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from rft_fast.eval import EvalSettings, RunInfo, evaluate
from rft_fast.eval import corruptions as C
from rft_fast.eval import robustgenbench as R
from rft_fast.eval.autoattack import predict
from rft_fast.results import Store

zstandard = pytest.importorskip("zstandard")

SHA = "0123456789abcdef0123456789abcdef01234567"
N, SIZE = 12, 16


def png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def split_members(split: str, images: list[np.ndarray], labels: list[int]) -> dict[str, bytes]:
    rows = io.StringIO()
    writer = csv.writer(rows)
    writer.writerow(["filename", "label"])
    out = {}
    for i, (image, label) in enumerate(zip(images, labels)):
        out[f"{split}/{i:05d}.png"] = png(image)
        writer.writerow([f"{i:05d}.png", label])
    out[f"{split}/labels.csv"] = rows.getvalue().encode()
    return out


def write_archive(path: Path, members: dict[str, bytes]) -> None:
    """A tar stream, zstd-compressed, as the study's save_final_dataset.py writes it."""
    with open(path, "wb") as f, zstandard.ZstdCompressor(level=3).stream_writer(f) as zst:
        with tarfile.open(fileobj=zst, mode="w|") as tar:
            for name, payload in members.items():
                info = tarfile.TarInfo(name)
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))


def frozen_members(labels: list[int] | None = None, classes: int = 21) -> tuple[dict[str, bytes], dict]:
    rng = np.random.default_rng(0)
    clean = [rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8) for _ in range(N)]
    corrupted = [np.clip(img.astype(int) + 40, 0, 255).astype(np.uint8) for img in clean]
    labels = labels or [i % 4 for i in range(N)]
    members = {
        **split_members("train", clean[:3], [0, 1, 2]),  # skipped by the extraction
        **split_members("test", clean, labels),
        **split_members("test_common", corrupted, labels),
        "metadata.json": f'{{"N": {classes}, "splits": {{"test": {{"count": {N}}}}}}}'.encode(),
        "../outside.txt": b"never written",
    }
    return members, {"clean": clean, "corrupted": corrupted, "labels": labels}


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An offline hub cache under $HF_HOME/hub; returns a function placing an archive in it."""
    from huggingface_hub import constants

    home = tmp_path / "hf"
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))  # constants are read at import
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    repo = home / "hub" / "datasets--MaxHeuillet--RobustGenBench"

    def place(dataset: str, members: dict[str, bytes]) -> Path:
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / "main").write_text(SHA)
        blob = repo / "blobs" / f"blob-{dataset}"
        blob.parent.mkdir(parents=True, exist_ok=True)
        write_archive(blob, members)
        link = repo / "snapshots" / SHA / R.archive_name(dataset)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(Path("..") / ".." / "blobs" / blob.name)
        return link

    return place


def test_load_extracts_and_checks(hub, tmp_path, monkeypatch):
    members, truth = frozen_members()
    archive = hub("uc_merced", members)
    assert archive.name == "uc-merced-land-use-dataset_processed.tar.zst"
    frozen = R.load("uc_merced", extract_root=tmp_path / "x", num_classes=21)
    folder = tmp_path / "x" / SHA / "uc-merced-land-use-dataset"
    assert sorted(p.name for p in folder.iterdir()) == ["metadata.json", "test", "test_common"]
    assert not (tmp_path / "x" / "outside.txt").exists() and not (tmp_path / "outside.txt").exists()
    assert len(frozen.test) == N and frozen.test.labels.tolist() == truth["labels"]
    image, label = frozen.test[5]
    assert image.dtype == torch.uint8 and torch.equal(image, torch.from_numpy(truth["clean"][5]).permute(2, 0, 1))
    assert label == truth["labels"][5]
    cs = frozen.corrupted
    assert (cs.setting, cs.severity) == ("study", 3) and cs.corruptions == C.assign(N)  # the paper's blocks
    assert torch.equal(cs.images, torch.stack([torch.from_numpy(a).permute(2, 0, 1) for a in truth["corrupted"]]))
    assert cs.labels.tolist() == truth["labels"]
    assert frozen.stamp == {"source": "robustgenbench", "repo": R.REPO_ID, "file": archive.name, "revision": SHA}

    def no_decompression(f):
        raise AssertionError("an extracted archive is reused")

    monkeypatch.setattr(R, "_zstd_reader", no_decompression)
    assert len(R.load("uc_merced", extract_root=tmp_path / "x").test) == N


def test_errors(hub, tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="six datasets"):
        R.archive_name("digits")
    with pytest.raises(FileNotFoundError, match="not in the hub cache.*hf_hub_download"):
        R.load("flowers102", extract_root=tmp_path)  # offline, not cached
    members, _ = frozen_members()
    hub("uc_merced", members)
    with pytest.raises(ValueError, match="N = 21 classes.*has 20"):
        R.load("uc_merced", extract_root=tmp_path / "a", num_classes=20)
    shuffled, _ = frozen_members()
    shuffled.update(split_members("test_common", [np.zeros((SIZE, SIZE, 3), np.uint8)] * N, [1] * N))
    hub("caltech101", shuffled)
    with pytest.raises(ValueError, match="same labels in the same order"):
        R.load("caltech101", extract_root=tmp_path / "b")
    no_common = {k: v for k, v in members.items() if not k.startswith("test_common/")}
    hub("oxford_pets", no_common)
    with pytest.raises(ValueError, match="test_common/labels.csv"):
        R.load("oxford_pets", extract_root=tmp_path / "c")
    assert not list((tmp_path / "c" / SHA).iterdir())  # nothing half-extracted left behind
    monkeypatch.setitem(sys.modules, "zstandard", None)
    with pytest.raises(ImportError, match="pip install zstandard"):
        R.load("uc_merced", extract_root=tmp_path / "d")


def test_settings_fix_the_frozen_protocol():
    assert EvalSettings(images="robustgenbench").identity()["images"] == "robustgenbench"
    for field, value in [("n", 500), ("corruption_setting", "full"), ("severity", 2), ("corruption_blocks", "even")]:
        with pytest.raises(ValueError, match=f"images 'robustgenbench' supports only {field}="):
            EvalSettings(images="robustgenbench", **{field: value})


def test_evaluate_on_the_frozen_images(hub, tmp_path):
    members, truth = frozen_members()
    hub("uc_merced", members)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * SIZE * SIZE, 21)).eval()
    run = RunInfo("frozen-run", "uc_merced", "linear", "ce", "FFT-5", {})
    settings = EvalSettings(threats=("clean", "corruptions"), images="robustgenbench", cache_dir=str(tmp_path / "c"))
    with Store(tmp_path / "r.sqlite") as store:
        rows = evaluate(model, None, run, settings, store=store)  # no local copy of the dataset needed
    y = torch.tensor(truth["labels"])

    def accuracy(images: list[np.ndarray]) -> torch.Tensor:
        x = torch.stack([torch.from_numpy(a).permute(2, 0, 1) for a in images]).float() / 255
        return predict(model, x, 64, "images") == y

    clean = next(m for m in rows if m.threat == "clean")
    assert clean.n == N and clean.accuracy == pytest.approx(accuracy(truth["clean"]).float().mean().item())
    study = next(m for m in rows if m.corruption == "study")
    correct = accuracy(truth["corrupted"])
    assert study.severity == 3 and study.accuracy == pytest.approx(correct.float().mean().item())
    names = np.array(C.assign(N))
    per_type = {m.corruption: m for m in rows if m.threat == "corruption" and m.corruption != "study"}
    assert set(per_type) == set(names)
    for name, m in per_type.items():
        mask = torch.from_numpy(names == name)
        assert m.n == int(mask.sum()) and m.accuracy == pytest.approx(correct[mask].float().mean().item())
    for m in rows:
        assert m.versions["images"]["revision"] == SHA and m.versions["eval"]["images"] == "robustgenbench"
    assert (tmp_path / "c" / "robustgenbench" / SHA / "uc-merced-land-use-dataset" / "test").is_dir()


def test_evaluate_weights_needs_no_local_dataset(hub, tmp_path):
    """`rft-fast evaluate --weights ... --images robustgenbench`: no data root; the registry gives the classes."""
    from rft_fast import models
    from rft_fast.eval.entry import evaluate_weights

    members, truth = frozen_members()
    hub("uc_merced", members)
    torch.manual_seed(0)
    model = models.create("mobilenetv3_large_100.ra_in1k", 21, random_init=True, image_size=SIZE).eval()
    torch.save(model.state_dict(), tmp_path / "w.pt")
    settings = EvalSettings(threats=("clean",), images="robustgenbench", cache_dir=str(tmp_path / "c"))
    with Store(tmp_path / "r.sqlite") as store:
        outcome = evaluate_weights(
            "mobilenetv3_large_100.ra_in1k", tmp_path / "w.pt", "uc_merced", settings, store, image_size=SIZE
        )
    x = torch.stack([torch.from_numpy(a).permute(2, 0, 1) for a in truth["clean"]]).float() / 255
    expected = (predict(model, x, 64, "images") == torch.tensor(truth["labels"])).float().mean().item()
    (row,) = outcome.rows
    assert row.threat == "clean" and row.n == N and row.accuracy == pytest.approx(expected)
