"""Hub weights through a fake local hub cache (tests/models/fake_hub.py), HF_HUB_OFFLINE=1, never the network:
create loads exactly the cached tensors with timm's own loading, fetch reports them cached, an empty cache is an
error naming the model, the folder and the fetch command; HF_HOME / HF_HUB_OFFLINE are read at call time."""

from __future__ import annotations

from pathlib import Path

import httpx2
import huggingface_hub
import pytest
import torch
from fake_hub import TIMM_ID, offline_home, write_fake_hub
from huggingface_hub import constants
from huggingface_hub.errors import LocalEntryNotFoundError, RemoteEntryNotFoundError

from rft_fast import cli, models
from rft_fast.models import hub


@pytest.fixture
def cached(tmp_path, monkeypatch) -> dict[str, torch.Tensor]:
    """The fake cache holds test_resnet.r160_in1k; offline."""
    home = offline_home(monkeypatch, tmp_path / "hf")
    return write_fake_hub(home)


def _backbone_equals(model: models.Normalized, state: dict[str, torch.Tensor]) -> None:
    loaded = model.backbone.state_dict()
    body = [k for k in state if not k.startswith("fc.")]
    assert body and all(torch.equal(loaded[k], state[k]) for k in body)


@pytest.mark.parametrize("num_classes", [5, 1000])
def test_create_loads_exactly_the_cached_weights_with_a_fresh_head(cached, num_classes):
    model = models.create("test_resnet", num_classes)  # bare architecture: timm's default tag, hub weights
    assert model.spec.name == TIMM_ID and not model.spec.study
    _backbone_equals(model, cached)
    head = model.backbone.get_classifier()
    assert head.weight.shape == (num_classes, cached["fc.weight"].shape[1])
    if num_classes == 1000:  # same class count as the pretrained head: still not the pretrained one
        assert not torch.equal(head.weight, cached["fc.weight"])


def test_fetch_reports_cached_and_skips_what_no_hub_carries(cached):
    result = models.fetch(TIMM_ID)
    assert (result.name, result.status) == (TIMM_ID, "cached")
    assert Path(result.detail).name == "model.safetensors" and Path(result.detail).is_file()
    skipped = models.fetch("robust_resnet50")
    assert skipped.status == "skipped" and "imagenet_linf_4.pt" in skipped.detail


def test_offline_with_an_empty_cache_names_the_model_the_folder_and_fetch(tmp_path, monkeypatch):
    home = offline_home(monkeypatch, tmp_path / "empty")
    with pytest.raises(FileNotFoundError) as err:
        models.create("test_resnet.r160_in1k", 3)
    text = str(err.value)
    assert TIMM_ID in text and str(home / "hub") in text and f"rft-fast models fetch {TIMM_ID}" in text
    with pytest.raises(FileNotFoundError, match="rft-fast models fetch"):
        models.fetch(TIMM_ID)


def test_robust_backbone_without_a_file_says_which_file(tmp_path, monkeypatch):
    offline_home(monkeypatch, tmp_path)
    with pytest.raises(ValueError, match="needs its pretrained weights as a local file") as err:
        models.create("robust_convnext_tiny", 3)
    assert "weights_convnext_t.pt" in str(err.value) and "rft-fast models convert" in str(err.value)


def test_environment_is_read_at_call_time(tmp_path, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # as imported without the variable
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub.hub_offline()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert not hub.hub_offline()
    monkeypatch.delenv("HF_HUB_OFFLINE")
    assert hub.hub_offline()  # unset: huggingface_hub's own value
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    assert hub.hub_cache_dir() == tmp_path / "home" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    assert hub.hub_cache_dir() == tmp_path / "cache"


def test_online_download_tries_safetensors_then_the_pickled_file(tmp_path, monkeypatch):
    """The download path with huggingface_hub's downloader replaced (no network): the file names timm would try,
    in its order, into the cache folder the environment names."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    asked = []

    def download(repo_id, filename, *, revision, cache_dir):
        asked.append((repo_id, filename, revision, Path(cache_dir)))
        if filename == "model.safetensors":
            response = httpx2.Response(404, request=httpx2.Request("HEAD", f"https://hub/{repo_id}/{filename}"))
            raise RemoteEntryNotFoundError("no safetensors in this repository", response=response)
        path = tmp_path / filename
        path.write_bytes(b"")
        return str(path)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    result = models.fetch("test_vit")
    assert (result.name, result.status, Path(result.detail).name) == (
        "test_vit.r160_in1k",
        "fetched",
        "pytorch_model.bin",
    )
    assert asked == [
        ("timm/test_vit.r160_in1k", name, None, tmp_path / "cache")
        for name in ("model.safetensors", "pytorch_model.bin")
    ]


def test_unreachable_hub_says_to_fetch_elsewhere(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))

    def unreachable(repo_id, filename, **kwargs):
        raise LocalEntryNotFoundError("connection error, and the file is not in the cache")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", unreachable)
    with pytest.raises(
        FileNotFoundError, match=r"could not be downloaded from timm/test_vit\.r160_in1k .*models fetch"
    ):
        models.create("test_vit", 3)


def test_fetch_command_prints_each_backbone(cached, capsys):
    assert cli.main(["models", "fetch", "test_resnet", "robust_resnet50"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:2] == ["cached", TIMM_ID]
    assert lines[1].split()[:2] == ["skipped", "robust_resnet50"]
    assert lines[2].startswith("0 fetched, 1 cached, 1 skipped; hub cache: ")
    with pytest.raises(SystemExit, match="NAMES or --spec"):
        cli.main(["models", "fetch"])
