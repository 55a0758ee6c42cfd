"""The grid spec: loading and validation (every error names its key), expansion, search spaces, the files a
grid needs, and the dry-run arithmetic of plan() / estimate(), checked by hand."""

from __future__ import annotations

import importlib
import json

import pytest
from helpers import ROOT, spec_from

from rft_fast.data.registry import DATASETS
from rft_fast.grid import Config, check_paths, estimate, expand, load_spec, plan, read_bench, search_space
from rft_fast.grid.plan import SPLIT_SIZES, asha_expected_epochs
from rft_fast.models import REGISTRY
from rft_fast.train import TrainConfig

EXAMPLES = ROOT / "examples"
plan_module = importlib.import_module("rft_fast.grid.plan")  # the package's `plan` is the function

BASE = {
    "backbones": ["resnet50.a1_in1k", "deit_tiny_patch16_224.fb_in1k"],
    "losses": ["classic_at"],
    "protocols": ["FFT-5", "LP-50"],
    "datasets": ["digits"],
    "random_init": True,
    "search": {
        "lr_backbone": {"loguniform": [1e-6, 1e-1]},
        "lr_head": {"loguniform": [1e-6, 1e-1]},
        "wd_backbone": {"loguniform": [1e-6, 1e-2]},
        "cosine": {"choice": [True, False]},
    },
    "budget_minutes": 30,
    "store": "runs/t/results.sqlite",
    "out_dir": "runs/t",
}


def spec_with(**changes):
    return spec_from(BASE, **changes)


def test_study_example_is_the_papers_grid():
    spec = load_spec(EXAMPLES / "study.yaml")
    configs = expand(spec)
    assert spec.backbones == tuple(REGISTRY)
    assert len(configs) == 40 * 2 * 3 * 6 == 1440
    assert len({c.key for c in configs}) == 1440
    assert spec.budget_minutes == 140 and spec.num_samples is None
    assert (spec.asha.metric, spec.asha.mode, spec.asha.grace_period, spec.asha.reduction_factor) == (
        "val_loss",
        "min",
        1,
        2,
    )
    lr = next(d for d in spec.search if d.name == "lr_backbone")
    assert (lr.kind, lr.low, lr.high) == ("loguniform", 1e-6, 1e-1)  # YAML's 1e-6 read as a float
    assert spec.fixed == {"batch_size": 64, "effective_batch": 1024, "image_size": 224, "normalization": "study"}
    assert spec.eval.threats == ("clean", "Linf", "L2", "L1", "corruptions") and spec.eval.n == 1000
    fields = configs[0].train_fields(spec)
    assert fields["pretrained_path"] is None and "random_init" not in fields  # hub weights
    robust = next(c for c in configs if c.backbone == "robust_resnet50").train_fields(spec)
    assert robust["pretrained_path"] == "/weights/robust_resnet50.safetensors"
    assert fields["data_root"] == "/data/caltech101"
    problems = check_paths(spec)  # placeholders: no data, no converted robust weights here
    assert len([p for p in problems if p.startswith(("data_roots.", "pretrained.robust_"))]) == 6 + 5


def test_quick_example_builds_train_configs():
    spec = load_spec(EXAMPLES / "quick.yaml")
    configs = expand(spec)
    assert [c.key for c in configs] == [
        "deit_tiny_patch16_224.fb_in1k|classic_at|FFT-5|digits",
        "deit_tiny_patch16_224.fb_in1k|trades|FFT-5|digits",
        "mobilenetv3_large_100.ra_in1k|classic_at|FFT-5|digits",
        "mobilenetv3_large_100.ra_in1k|trades|FFT-5|digits",
    ]
    assert check_paths(spec) == []
    for config in configs:
        hparams = {d.name: d.low if d.low is not None else d.values[0] for d in search_space(spec, config)}
        train = TrainConfig(**config.train_fields(spec), **hparams)
        assert train.random_init and train.num_epochs == 2 and train.data_root is None


def test_expand_order_and_linear_probe_drops_backbone_dims():
    spec = spec_with()
    keys = [c.key for c in expand(spec)]
    assert keys == [
        "resnet50.a1_in1k|classic_at|FFT-5|digits",
        "deit_tiny_patch16_224.fb_in1k|classic_at|FFT-5|digits",
        "resnet50.a1_in1k|classic_at|LP-50|digits",
        "deit_tiny_patch16_224.fb_in1k|classic_at|LP-50|digits",
    ]
    fft = Config("resnet50.a1_in1k", "classic_at", "FFT-5", "digits")
    lp = Config("resnet50.a1_in1k", "classic_at", "LP-50", "digits")
    assert [d.name for d in search_space(spec, fft)] == ["lr_backbone", "lr_head", "wd_backbone", "cosine"]
    assert [d.name for d in search_space(spec, lp)] == ["lr_head", "cosine"]


def test_aliases_resolve_and_weights_paths():
    spec = spec_with(
        backbones=["mobilevit-small", "resnet50.a1_in1k"],
        random_init=None,
        weights_dir="/w",
        pretrained={"resnet50.a1_in1k": "/elsewhere/r50.pth"},
    )
    assert spec.backbones == ("mobilevit_s.cvnets_in1k", "resnet50.a1_in1k")
    paths = [Config(b, "classic_at", "FFT-5", "digits").train_fields(spec)["pretrained_path"] for b in spec.backbones]
    assert paths == ["/w/mobilevit_s.cvnets_in1k.safetensors", "/elsewhere/r50.pth"]


def test_check_paths(tmp_path):
    (tmp_path / "pets").mkdir()
    (tmp_path / "resnet50.a1_in1k.safetensors").write_bytes(b"")
    spec = spec_with(
        backbones=["resnet50.a1_in1k", "deit_tiny_patch16_224.fb_in1k"],
        random_init=None,
        weights_dir=str(tmp_path),
        datasets=["oxford_pets", "uc_merced", "digits"],
        data_roots={"oxford_pets": str(tmp_path / "pets")},
    )
    problems = check_paths(spec)
    assert len(problems) == 2
    assert problems[0] == "data_roots: no entry for dataset 'uc_merced'"
    assert problems[1].startswith("weights_dir: weights of 'deit_tiny_patch16_224.fb_in1k' not found")


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"backbone": ["x"]}, "unknown key(s) 'backbone' (did you mean 'backbones'?); allowed: ['name', 'backbones'"),
        ({"store": None}, "missing key(s) ['store']"),
        (
            {"backbones": ["resnet50.a1_in1kk"]},
            "backbones: unknown backbone 'resnet50.a1_in1kk'; did you mean: resnet50.a1_in1k",
        ),
        ({"backbones": []}, "backbones must be a non-empty list"),
        ({"backbones": ["resnet50.a1_in1k", "resnet50.a1_in1k"]}, "backbones: listed more than once"),
        ({"losses": ["pgd"]}, "losses: unknown loss 'pgd'"),
        ({"protocols": ["FFT-10"]}, "protocols: unknown protocol 'FFT-10'"),
        ({"datasets": ["imagenet"]}, "datasets: unknown dataset 'imagenet'"),
        ({"data_roots": {"caltech101": "/d"}}, "data_roots: dataset(s) ['caltech101'] are not in datasets"),
        (
            {"random_init": None, "backbones": ["robust_resnet50"]},
            "pretrained: no hub carries the weights of ['robust_resnet50']",
        ),
        ({"pretrained": {"vit_base_patch16_224.mae": "/x"}}, "pretrained: backbone(s) ['vit_base_patch16_224.mae']"),
        ({"search": {"lr_head": {"loguniform": [1e-1, 1e-6]}}}, "search.lr_head: low (0.1) must be < high (1e-06)"),
        (
            {"search": {"lr_head": {"loguniform": [0, 1e-1]}}},
            "search.lr_head.loguniform[0] must be a number in (0, 10], got 0",
        ),
        ({"search": {"lr_heads": {"uniform": [0, 1]}}}, "search.lr_heads: not a searchable TrainConfig field"),
        ({"search": {"backbone": {"choice": ["a"]}}}, "search.backbone: not a searchable TrainConfig field"),
        ({"search": {"lr_head": {"normal": [0, 1]}}}, "search.lr_head: expected one of"),
        (
            {"search": {"optimizer": {"choice": ["adamw", "lion"]}}},
            "search.optimizer.choice[1] must be one of ['adamw', 'sgd'], got 'lion'",
        ),
        ({"search": {"lr_head": 0.1}, "fixed": {"lr_head": 0.2}}, "search.lr_head: also in fixed"),
        ({"fixed": {"batchsize": 64}}, "fixed.batchsize: not a TrainConfig field"),
        ({"fixed": {"out_dir": "x"}}, "fixed.out_dir: not a TrainConfig field; the grid sets it itself"),
        ({"fixed": {"batch_size": 48}}, "fixed: effective_batch (1024) must be a multiple of batch_size (48)"),
        ({"budget_minutes": 0}, "budget_minutes must be a number in (0, 525600], got 0"),
        ({"num_samples": 0}, "num_samples must be an int >= 1 and <= 100000 or null, got 0"),
        ({"asha": {"metric": "val_loss", "eta": 3}}, "asha: unknown key(s) 'eta'; allowed: ['metric', 'mode'"),
        ({"asha": {"mode": "low"}}, "asha.mode must be one of ['min', 'max'], got 'low'"),
        ({"asha": {"reduction_factor": 1}}, "asha.reduction_factor must be a number in [1.1, 100], got 1"),
        ({"resources": {"gpus_per_trial": 1.5}}, "resources.gpus_per_trial must be a fraction <= 1 or a whole number"),
        ({"eval": {"threats": ["Linf", "L3"]}}, "eval.threats must be a non-empty subset of"),
        ({"eval": {"threats": ["smoothing-L3"]}}, "eval.threats must be a non-empty subset of"),
        ({"eval": {"mode": "plus"}}, "eval.mode must be one of"),
        ({"axes": {"betta": [1.0]}}, "axes.betta: not a TrainConfig field an axis can vary"),
        ({"axes": {"loss": ["trades"]}}, "axes.loss: not a TrainConfig field an axis can vary"),
        ({"axes": {"beta": []}}, "axes.beta must be a non-empty list"),
        ({"axes": {"beta": [1.0, 1.0]}}, "axes.beta: a value is listed more than once"),
        ({"axes": {"beta": [1.0, -1.0]}}, "axes.beta[1] must be a number in [0, 1000], got -1.0"),
        ({"axes": {"lr_head": [0.1]}}, "axes.lr_head: also in search"),
        ({"axes": {"beta": [1.0]}, "fixed": {"beta": 2.0}}, "axes.beta: also in fixed"),
    ],
)
def test_errors_name_their_key(changes, message):
    with pytest.raises(ValueError) as err:
        spec_with(**changes)
    assert message in str(err.value)


def test_yaml_errors(tmp_path):
    path = tmp_path / "g.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ValueError, match="expected a mapping of grid keys"):
        load_spec(path)
    path.write_text(json.dumps({**BASE, "search": {"lr_head": {"loguniform": ["1e-6", "1e-1"]}}}))
    with pytest.raises(
        ValueError, match=r"search.lr_head.loguniform\[0\] must be a number in \(0, 10\], got '1e-6' \(str\)"
    ):
        load_spec(path)  # quoted numbers stay strings
    path.write_text(json.dumps(BASE))
    assert load_spec(path).name == "g"


def test_asha_expected_epochs_by_hand():
    assert asha_expected_epochs(50, 1, 2) == pytest.approx(6 * 0.5 + 50 / 64)  # rungs 1, 2, 4, 8, 16, 32
    assert asha_expected_epochs(5, 1, 2) == pytest.approx(3 * 0.5 + 5 / 8)  # rungs 1, 2, 4
    assert asha_expected_epochs(2, 1, 2) == pytest.approx(0.5 + 2 / 2)  # rung 1
    assert asha_expected_epochs(10, 1, 3) == pytest.approx(3 * 2 / 3 + 10 / 27)  # rungs 1, 3, 9
    assert asha_expected_epochs(50, 1, 2, max_t=4) == pytest.approx(2 * 0.5 + 4 / 4)  # stops at max_t
    assert asha_expected_epochs(1, 1, 2) == 1  # no rung below 1 epoch


def test_plan_by_hand():
    spec = spec_with(resources={"gpus_per_trial": 0.5}, num_samples=8)
    out = plan(spec)
    assert out["n_configs"] == 4
    assert out["axes"] == {"backbones": 2, "losses": 1, "protocols": 2, "datasets": 1}
    assert out["search"] == {
        "FFT-5": ["lr_backbone", "lr_head", "wd_backbone", "cosine"],
        "LP-50": ["lr_head", "cosine"],
    }
    assert out["trials_per_config"] == 8
    assert out["concurrent_trials"] == 2  # two half-GPU trials on the one GPU
    assert out["budget_bound_hours"] == 4 * 30 / 60 == 2.0
    assert "estimate" not in out
    two = plan(spec_with(), gpus=2)
    assert two["trials_per_config"] == "unlimited within the budget"
    assert (two["concurrent_trials"], two["budget_bound_hours"], two["budget_bound_gpu_hours"]) == (2, 2.0, 4.0)
    with pytest.raises(ValueError, match="exceeds the 1 GPU"):
        plan(spec_with(resources={"gpus_per_trial": 2}))


def test_estimate_by_hand(monkeypatch):
    monkeypatch.setattr(plan_module, "_params", {"resnet50": 20e6, "deit_tiny_patch16_224": 5e6}.__getitem__)
    row = {"model": "resnet50", "loss": "classic_at", "impl": "rft-fast", "size": 32, "device": "gpu test"}
    bench = [
        {**row, "dtype": "bfloat16", "batch": 8, "median_s": 0.8},  # 0.1 s per image: the one used
        {**row, "dtype": "float32", "batch": 8, "median_s": 1.6},
        {**row, "dtype": "bfloat16", "batch": 8, "median_s": 9.9, "impl": "reference"},
        {**row, "dtype": "bfloat16", "batch": 8, "median_s": 9.9, "loss": "trades"},
    ]
    spec = spec_with(
        protocols=["FFT-5"],
        num_samples=2,
        budget_minutes=10,
        fixed={"image_size": 32, "epochs": 2, "val_samples": 100, "batch_size": 8, "effective_batch": 8},
    )
    out = estimate(spec, bench)
    measured, extrapolated = out["configs"]
    # epoch: 1,221 train images (digits, study split) + 100 validation images (val_steps 10 = attack_steps 10) at 0.1 s
    assert measured["source"] == "measured"
    assert measured["seconds_per_image"] == pytest.approx(0.1)
    assert measured["epoch_seconds"] == pytest.approx(0.1 * (1221 + 100))
    assert measured["asha_expected_epochs"] == pytest.approx(1.5)  # 2 epochs, rung 1
    assert measured["expected_trial_seconds"] == pytest.approx(1.5 * 132.1)
    assert measured["full_trial_seconds"] == pytest.approx(2 * 132.1)
    assert measured["trials_within_budget"] == pytest.approx(600 / 198.15)
    assert measured["hours"] == pytest.approx(2 * 198.15 / 3600)  # 2 trials end before the 10 minutes
    # deit_tiny has no rows: resnet50's time x 5M / 20M parameters
    assert extrapolated["source"] == "extrapolated from resnet50 by parameters"
    assert extrapolated["seconds_per_image"] == pytest.approx(0.025)
    assert extrapolated["hours"] == pytest.approx(2 * 1.5 * 0.025 * 1321 / 3600)
    assert (out["measured_configs"], out["extrapolated_configs"]) == (1, 1)
    assert out["budget_bound_hours"] == pytest.approx(2 * 10 / 60)
    assert out["estimated_hours"] == pytest.approx(measured["hours"] + extrapolated["hours"])
    assert out["bench_devices"] == ["gpu test"]

    # pixels (64 / 32)^2, attack passes (3 + 1) / (10 + 1), float32 without AMP; unlimited trials: the budget
    spec = spec_with(
        backbones=["resnet50.a1_in1k"],
        protocols=["FFT-5"],
        budget_minutes=10,
        fixed={
            "image_size": 64,
            "attack_steps": 3,
            "val_steps": 3,
            "amp": "none",
            "max_batches": 10,
            "batch_size": 8,
            "effective_batch": 8,
        },
    )
    (config,) = estimate(spec, bench)["configs"]
    sec = 1.6 / 8 * 4 * 4 / 11
    assert config["seconds_per_image"] == pytest.approx(sec)
    assert config["epoch_seconds"] == pytest.approx(sec * (80 + 216))  # 10 micro-batches of 8; whole val split
    assert config["asha_expected_epochs"] == pytest.approx(2.125)
    assert config["hours"] == pytest.approx(10 / 60)
    with pytest.raises(ValueError, match="no bench rows with impl 'rft-fast'"):
        estimate(spec, bench[2:3])


def test_split_sizes_cover_the_datasets():
    assert set(SPLIT_SIZES) == set(DATASETS)


def test_read_bench(tmp_path):
    path = tmp_path / "train-x.json"
    path.write_text(json.dumps({"meta": {"device_type": "cuda", "device": "H100"}, "rows": [{"model": "m"}]}))
    assert read_bench([path]) == [{"model": "m", "device": "cuda H100"}]


def test_extra_axes_expand_label_the_protocol_and_reach_the_trials():
    spec = spec_with(axes={"beta": [1.0, 6.0], "attack_steps": [3, 10]}, protocols=["FFT-5"])
    configs = expand(spec)
    assert len(configs) == 2 * 2 * 2  # backbones x beta x attack_steps (one loss, protocol, dataset)
    assert [c.variant for c in configs[:2]] == [(("beta", 1.0), ("attack_steps", 3))] * 2  # backbones innermost
    assert configs[0].protocol_label == "FFT-5[beta=1.0,attack_steps=3]"
    assert configs[-1].key == "deit_tiny_patch16_224.fb_in1k|classic_at|FFT-5[beta=6.0,attack_steps=10]|digits"
    assert len({c.key for c in configs}) == len(configs)
    fields = configs[-1].train_fields(spec)
    assert fields["protocol"] == "FFT-5" and fields["beta"] == 6.0 and fields["attack_steps"] == 10
    assert plan(spec)["axes"] == {
        "backbones": 2,
        "losses": 1,
        "protocols": 1,
        "datasets": 1,
        "beta": 2,
        "attack_steps": 2,
    }
    assert expand(spec_with())[0].protocol_label == "FFT-5"  # no axes: the plain protocol


def test_tora_axes_only_multiply_tora_protocols():
    spec = spec_with(
        axes={"tora_lambda": [0.1, 0.9]}, protocols=["FFT-5", "TORA-4"], backbones=["deit_tiny_patch16_224.fb_in1k"]
    )
    assert [c.protocol_label for c in expand(spec)] == ["FFT-5", "TORA-4[tora_lambda=0.1]", "TORA-4[tora_lambda=0.9]"]
    assert expand(spec)[-1].train_fields(spec)["tora_lambda"] == 0.9


def test_resources_beyond_the_cluster_are_refused_up_front():
    from rft_fast.grid.runner import _check_resources

    spec = spec_with(resources={"cpus_per_trial": 4, "gpus_per_trial": 1})
    with pytest.raises(ValueError, match="resources: cpus_per_trial is 4 but the Ray cluster has 2 CPU"):
        _check_resources(spec, {"CPU": 2.0})
    _check_resources(spec_with(resources={"cpus_per_trial": 2}), {"CPU": 2.0})  # fits: no error
