"""Grid specs and hub weights: how `pretrained`, `weights_dir` and the hub combine, the robust backbones refused
without a file when the spec loads, and `rft-fast models fetch --spec` over a fake local hub cache (offline)."""

from __future__ import annotations

import pytest
import yaml
from helpers import spec_from
from models.fake_hub import TIMM_ID, offline_home, write_fake_hub

from rft_fast import cli
from rft_fast.grid import Config
from rft_fast.grid.configs import hub_backbones, weights_path
from rft_fast.train import TrainConfig

BASE = {
    "backbones": ["test_resnet", "deit_tiny_patch16_224.fb_in1k"],
    "losses": ["classic_at"],
    "protocols": ["FFT-5"],
    "datasets": ["digits"],
    "search": {"lr_head": {"loguniform": [1e-6, 1e-1]}},
    "budget_minutes": 30,
    "store": "runs/t/results.sqlite",
    "out_dir": "runs/t",
}


def _fields(spec, backbone):
    return Config(backbone, "classic_at", "FFT-5", "digits").train_fields(spec)


def test_no_file_and_no_weights_dir_means_hub_weights():
    spec = spec_from(BASE)
    assert spec.backbones == (TIMM_ID, "deit_tiny_patch16_224.fb_in1k")  # any timm name, canonical spelling
    assert hub_backbones(spec) == list(spec.backbones)
    for backbone in spec.backbones:
        fields = _fields(spec, backbone)
        assert fields["pretrained_path"] is None and "random_init" not in fields
        config = TrainConfig(**fields)
        assert not config.random_init and config.pretrained_path is None  # create() loads the hub weights


def test_pretrained_entries_win_then_weights_dir_then_hub():
    mixed = spec_from(BASE, pretrained={"test_resnet": "/w/mine.safetensors"})
    assert [weights_path(mixed, b) for b in mixed.backbones] == ["/w/mine.safetensors", None]
    assert hub_backbones(mixed) == ["deit_tiny_patch16_224.fb_in1k"]
    from_dir = spec_from(BASE, weights_dir="/d")
    assert [weights_path(from_dir, b) for b in from_dir.backbones] == [
        f"/d/{TIMM_ID}.safetensors",
        "/d/deit_tiny_patch16_224.fb_in1k.safetensors",
    ]
    assert hub_backbones(from_dir) == []
    random = spec_from(BASE, random_init=True)
    assert hub_backbones(random) == [] and _fields(random, TIMM_ID)["random_init"] is True


def test_a_robust_backbone_without_a_file_is_refused_when_the_spec_loads():
    with pytest.raises(ValueError, match=r"no hub carries the weights of \['robust_resnet50'\].*imagenet_linf_4\.pt"):
        spec_from(BASE, backbones=["test_resnet", "robust_resnet50"])
    spec = spec_from(BASE, backbones=["test_resnet", "robust_resnet50"], pretrained={"robust_resnet50": "/r.pt"})
    assert hub_backbones(spec) == [TIMM_ID]
    assert hub_backbones(spec_from(BASE, backbones=["robust_resnet50"], weights_dir="/d")) == []


def test_fetch_spec_caches_hub_backbones_and_skips_local_files(tmp_path, monkeypatch, capsys):
    write_fake_hub(offline_home(monkeypatch, tmp_path / "hf"))
    path = tmp_path / "grid.yaml"
    raw = {**BASE, "backbones": ["test_resnet", "robust_resnet50"], "pretrained": {"robust_resnet50": "/r.pt"}}
    path.write_text(yaml.safe_dump(raw))
    assert cli.main(["models", "fetch", "--spec", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:2] == ["cached", TIMM_ID]
    assert lines[1].split() == ["skipped", "robust_resnet50", "local", "file", "/r.pt"]
    assert lines[2].startswith("0 fetched, 1 cached, 1 skipped")
