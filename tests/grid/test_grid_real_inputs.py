"""Issue 17's front door: a grid spec naming a timm model that is not in the registry and a `folder:` dataset,
nothing prepared by hand. `rft-fast models fetch --spec` fills the hub cache (huggingface_hub's downloader
replaced by one that writes the real cache layout: no network), then the grid runs on Ray with HF_HUB_OFFLINE=1,
trains from those hub weights, evaluates and stores rows under the resolved names."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import huggingface_hub
import numpy as np
import pytest
import yaml
from helpers import ROOT
from models.fake_hub import SHA, TIMM_ID, write_fake_hub
from PIL import Image

from rft_fast import cli
from rft_fast.results import Store

pytestmark = pytest.mark.filterwarnings("ignore")

CLASSES = ("cat", "dog", "owl")


def write_folder(root: Path) -> None:
    """8 images per class, of mixed sizes and modes (RGB, L, RGBA, P), each class a different mean colour."""
    rng = np.random.default_rng(0)
    for c, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for i in range(8):
            size = (20 + 3 * i, 24 + 2 * c)
            pixels = np.clip(rng.normal(60 + 70 * c, 30, (*size[::-1], 3)), 0, 255).astype(np.uint8)
            image = Image.fromarray(pixels).convert(("RGB", "L", "RGBA", "P")[i % 4])
            image.save(root / name / f"{i}.png")


def spec(tmp_path: Path, folder: Path) -> Path:
    raw = {
        "name": "real-inputs",
        "backbones": ["test_resnet"],  # a timm name, not a registry entry: resolves to test_resnet.r160_in1k
        "losses": ["classic_at"],
        "protocols": ["FFT-5"],
        "datasets": [f"folder:{folder}"],
        "search": {"lr_head": {"loguniform": [1e-3, 1e-2]}},
        "fixed": {
            "image_size": 32,
            "epochs": 1,
            "batch_size": 8,
            "effective_batch": 8,
            "max_batches": 1,
            "attack_steps": 1,
            "val_steps": 1,
            "workers": 0,
        },
        "budget_minutes": 5,
        "num_samples": 1,
        "resources": {"gpus_per_trial": 1, "cpus_per_trial": 1},
        "eval": {"threats": ["clean", "corruptions"], "n": 6, "mode": "fast"},
        "store": str(tmp_path / "runs" / "results.sqlite"),
        "out_dir": str(tmp_path / "runs"),
    }
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_grid_on_a_timm_name_and_a_folder_runs_offline_after_fetch(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "my data"
    write_folder(folder)
    path = spec(tmp_path, folder)
    home = tmp_path / "hf"
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # the login node: online

    def download(repo_id, filename, *, revision, cache_dir):
        assert (repo_id, filename) == (f"timm/{TIMM_ID}", "model.safetensors")
        write_fake_hub(Path(cache_dir).parent)
        return str(Path(cache_dir) / f"models--timm--{TIMM_ID}" / "snapshots" / SHA / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    assert cli.main(["models", "fetch", "--spec", str(path)]) == 0
    assert capsys.readouterr().out.splitlines()[0].split()[:2] == ["fetched", TIMM_ID]

    env = {  # the compute node: offline, the same HF_HOME
        **os.environ,
        "HF_HOME": str(home),
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [sys.executable, "-m", "rft_fast.cli", "grid", str(path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    with Store(tmp_path / "runs" / "results.sqlite") as store:
        rows = store.query()
    assert {(m.backbone, m.dataset) for m in rows} == {(TIMM_ID, f"folder:{folder.resolve()}")}
    assert {m.threat for m in rows} == {"clean", "corruption"}
    (clean,) = [m for m in rows if m.threat == "clean"]
    assert clean.n == 5  # the whole test split (n: 6 asked): 20% of 24 images, rounded up as train_test_split does
    assert not any(m.hparams.get("random_init") for m in rows)  # trained from the fetched hub weights
