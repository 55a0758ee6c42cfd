"""A local Hugging Face hub cache written by the test, in the real layout huggingface_hub reads offline:

    $HF_HOME/hub/models--timm--<name>/refs/main                      (the snapshot's commit hash)
    $HF_HOME/hub/models--timm--<name>/snapshots/<sha>/model.safetensors
    $HF_HOME/hub/models--timm--<name>/snapshots/<sha>/config.json

holding the weights of one of timm's tiny test networks (random, seeded), so hub loading is tested offline.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import safetensors.torch
import timm
import torch

TIMM_ID = "test_resnet.r160_in1k"  # 0.5M parameters; timm's pretrained cfg: hub timm/test_resnet.r160_in1k
SHA = "0123456789abcdef0123456789abcdef01234567"


def write_fake_hub(hf_home: Path, timm_id: str = TIMM_ID, seed: int = 0) -> dict[str, torch.Tensor]:
    """Writes `timm_id`'s weights (timm's own model, 1000-class head, seeded init) into the hub cache under
    `hf_home` and returns them."""
    torch.manual_seed(seed)
    state = {k: v.contiguous() for k, v in timm.create_model(timm_id.partition(".")[0]).state_dict().items()}
    repo = hf_home / "hub" / f"models--timm--{timm_id}"
    snapshot = repo / "snapshots" / SHA
    snapshot.mkdir(parents=True)
    safetensors.torch.save_file(state, snapshot / "model.safetensors")
    (snapshot / "config.json").write_text(json.dumps({"architecture": timm_id.partition(".")[0], "num_classes": 1000}))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(SHA)
    return state


def offline_home(monkeypatch: pytest.MonkeyPatch, hf_home: Path) -> Path:
    """HF_HOME=`hf_home`, HF_HUB_OFFLINE=1, no HF_HUB_CACHE, set after huggingface_hub was imported (as a job script
    would): what rft_fast.models.hub must honour at call time."""
    monkeypatch.setenv("HF_HOME", str(hf_home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    return hf_home
