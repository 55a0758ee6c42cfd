"""Precision (rft_fast.precision): amp "auto" resolved from the device's detected bf16 features, recorded in the
run's checkpoint and metrics and kept on resume; fp16 training with loss scaling (one unscale per optimizer step
under gradient accumulation, skipped steps counted, exact resume); bf16 / fp16 runs learn as float32 does; the
evaluation's forward passes under the resolved autocast, AutoAttack's decisive predictions in float32.

The model is tests/train/mlp.py's tiny_mlp on digits at 8 px: emulated bf16 / fp16 (CPUs without native support)
costs 5-20x float32 on timm's test convnets, which a two-layer MLP keeps to about a second per run.
"""

from __future__ import annotations

import importlib

import mlp
import pytest
import torch
from torch import nn

from rft_fast import data, precision
from rft_fast.eval import EvalSettings, RunInfo, evaluate
from rft_fast.train import TrainConfig, checkpoint, fit
from rft_fast.train.grace import CurvatureSAM
from rft_fast.train.stepper import SharpnessAwareStepper, Stepper

NATIVE = {"cpu_capability": "AVX512", "architecture": "x86_64", "avx512_bf16": True, "amx_bf16": False}
EMULATED = {"cpu_capability": "AVX2", "architecture": "x86_64", "avx512_bf16": False, "amx_bf16": False}


@pytest.fixture(scope="module", autouse=True)
def _mlp_backbone():
    with mlp.registered():
        yield


def config(**kw) -> TrainConfig:
    base = dict(
        backbone=mlp.NAME,
        dataset="digits",
        random_init=True,
        protocol="FFT-5",
        loss="ce",
        batch_size=64,
        effective_batch=64,
        lr_backbone=1e-2,
        lr_head=1e-2,
        wd_backbone=0.0,
        wd_head=0.0,
        cosine=True,
        epochs=1,
        image_size=8,
        device="cpu",
        workers=0,
        val_samples=64,
        val_steps=1,
        attack_steps=1,
    )
    base.update(kw)
    return TrainConfig(**base)


def detected(monkeypatch: pytest.MonkeyPatch, features: dict) -> None:
    monkeypatch.delenv(precision.AUTO_ENV, raising=False)  # tests/conftest.py pins "auto" to float32
    monkeypatch.setattr(precision, "cpu_features", lambda: dict(features))


# ---------------------------------------------------------------- resolution


@pytest.mark.parametrize(
    "features, expected",
    [
        (NATIVE, "bf16"),
        ({**EMULATED, "amx_bf16": True}, "bf16"),
        ({"cpu_capability": "SVE256", "architecture": "aarch64", "bf16": False, "sve_bf16": True}, "bf16"),
        (EMULATED, "none"),
        ({"cpu_capability": "DEFAULT", "architecture": "unknown"}, "none"),
    ],
)
def test_auto_resolves_per_detected_cpu_features(monkeypatch, features, expected):
    detected(monkeypatch, features)
    chosen = precision.resolve("auto", "cpu")
    assert (chosen.amp, chosen.requested, chosen.device) == (expected, "auto", "cpu")
    assert chosen.record()["features"] == {"device": "cpu", **features}
    assert chosen.dtype == {"bf16": torch.bfloat16, "none": None}[expected]
    for amp in ("bf16", "fp16", "none"):  # an explicit amp is what it says, whatever the device has
        assert precision.resolve(amp, "cpu").amp == amp


@pytest.mark.parametrize("native", [True, False])
def test_auto_resolves_per_detected_cuda_features(monkeypatch, native):
    monkeypatch.delenv(precision.AUTO_ENV, raising=False)
    monkeypatch.setattr(precision, "cuda_features", lambda device: {"name": "gpu", "cuda_bf16": native})
    assert precision.resolve("auto", "cuda:0").amp == ("bf16" if native else "none")


def test_detected_cpu_features_are_torchs_and_bad_amp_is_refused(monkeypatch):
    got = precision.features("cpu")
    assert got["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert got["avx512_bf16"] == torch.cpu._is_avx512_bf16_supported()
    assert precision.native_bf16(got) == any(torch.cpu.get_capabilities().get(k) for k in precision.CPU_BF16_FEATURES)
    with pytest.raises(ValueError, match=r"amp must be one of \['auto', 'bf16', 'fp16', 'none'\], got 'fp8'"):
        precision.resolve("fp8", "cpu")
    monkeypatch.setenv(precision.AUTO_ENV, "fp16")  # the override: what "auto" means, recorded
    chosen = precision.resolve("auto", "cpu")
    assert chosen.amp == "fp16" and chosen.record()["features"][precision.AUTO_ENV] == "fp16"
    monkeypatch.setenv(precision.AUTO_ENV, "fp8")
    with pytest.raises(ValueError, match=r"RFT_FAST_AUTO_AMP must be one of \['bf16', 'fp16', 'none'\]"):
        precision.resolve("auto", "cpu")
    with pytest.raises(ValueError, match="amp must be one of"):
        config(amp="float16")


def test_fp16_and_compile_refuse_the_sharpness_aware_losses():
    with pytest.raises(ValueError, match="amp='fp16' does not combine with loss='classic_at\\+grace'"):
        config(amp="fp16", loss="classic_at+grace")
    with pytest.raises(ValueError, match="compile=True does not combine with loss='trades\\+grace'"):
        config(compile=True, loss="trades+grace")
    model = nn.Linear(2, 2)
    sam = SharpnessAwareStepper(CurvatureSAM(torch.optim.SGD(model.parameters(), lr=0.1)), criterion=None)
    with pytest.raises(ValueError, match="loss scaling"):
        sam.use_scaler(torch.amp.GradScaler("cpu"))


# ---------------------------------------------------------------- the fp16 step


def _grads_step(stepper: Stepper, model: nn.Module, batches: list, inf: bool = False) -> None:
    """One optimizer step over micro-batches (x, y, share), as the loop drives it; `inf` poisons one gradient."""
    for x, y, share in batches:
        stepper.backward(nn.functional.cross_entropy(model(x), y), share)
    if inf:
        model.weight.grad[0, 0] = float("inf")
    assert stepper.step(model) == ""


def test_fp16_scaling_unscales_once_per_accumulated_step_and_skips_non_finite_steps():
    torch.manual_seed(0)
    x, y = torch.randn(6, 4), torch.tensor([0, 1, 2, 0, 1, 2])
    batches = [(x[:4], y[:4], 4 / 6), (x[4:], y[4:], 2 / 6)]  # odd split: shares of the group
    plain_model = nn.Linear(4, 3)
    scaled_model = nn.Linear(4, 3)
    scaled_model.load_state_dict(plain_model.state_dict())
    plain = Stepper(torch.optim.SGD(plain_model.parameters(), lr=0.5), criterion=None)
    scaled = Stepper(torch.optim.SGD(scaled_model.parameters(), lr=0.5), criterion=None)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    scaled.use_scaler(scaler)
    for _ in range(2):  # power-of-two scaling is exact: the same weights, bit for bit
        _grads_step(plain, plain_model, batches)
        _grads_step(scaled, scaled_model, batches)
    assert all(torch.equal(a, b) for a, b in zip(plain_model.parameters(), scaled_model.parameters()))
    assert scaled.skipped_steps == 0 and scaler.get_scale() == 2.0**16
    before = [p.detach().clone() for p in scaled_model.parameters()]
    _grads_step(scaled, scaled_model, batches, inf=True)
    assert all(torch.equal(a, b) for a, b in zip(before, scaled_model.parameters()))  # the step was skipped
    assert scaled.skipped_steps == 1 and scaler.get_scale() == 2.0**15  # and the scale backed off
    assert all(p.grad is None for p in scaled_model.parameters())
    _grads_step(scaled, scaled_model, batches)
    assert scaled.skipped_steps == 1 and not torch.equal(before[0], scaled_model.weight)


# ---------------------------------------------------------------- fit


def _poison(monkeypatch: pytest.MonkeyPatch, calls: set[int]) -> None:
    """Stepper.backward sets an infinite gradient at the given 0-based backward calls of the process."""
    real, count = Stepper.backward, [0]

    def backward(self, loss, share):
        real(self, loss, share)
        if count[0] in calls:
            next(p for g in self.optimizer.param_groups for p in g["params"]).grad.view(-1)[0] = float("inf")
        count[0] += 1

    monkeypatch.setattr(Stepper, "backward", backward)


def test_fp16_counts_skipped_steps_without_diverging(monkeypatch):
    kw = dict(amp="fp16", max_batches=6)
    clean = fit(config(**kw))
    _poison(monkeypatch, {3})
    poisoned = fit(config(**kw))
    assert clean.status == poisoned.status == "completed"
    assert poisoned.metrics[0]["amp_skipped_steps"] == clean.metrics[0]["amp_skipped_steps"] + 1
    assert poisoned.metrics[0]["optimizer_steps"] == 6 and poisoned.metrics[0]["amp"] == "fp16"


def test_fp16_resume_is_exact(tmp_path, monkeypatch):
    """Two epochs straight vs one, then a resumed one: the same weights, optimizer and scaler state. A forced skip
    in epoch 1 halves the scale, so a scaler not restored would restart at another scale."""
    kw = dict(amp="fp16", epochs=2, max_batches=4, cosine=True)
    _poison(monkeypatch, {1})
    straight = fit(config(out_dir=str(tmp_path / "a"), **kw))
    _poison(monkeypatch, {1})
    fit(config(out_dir=str(tmp_path / "b"), **kw), callback=lambda m: m["epoch"] == 1)
    _poison(monkeypatch, set())
    resumed = fit(config(out_dir=str(tmp_path / "b"), **kw))
    assert straight.status == resumed.status == "completed"
    a, b = (checkpoint.load(tmp_path / d / "checkpoint.pt") for d in ("a", "b"))
    assert a["scaler"] == b["scaler"] and a["scaler"]["scale"] < 2.0**16
    assert a["scaler"]["_growth_tracker"] == b["scaler"]["_growth_tracker"] > 0
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert all(
        torch.equal(sa[k], sb[k])
        for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values())
        for k in sa
    )
    assert [m["amp_skipped_steps"] for m in straight.metrics] == [m["amp_skipped_steps"] for m in resumed.metrics]
    assert a["precision"]["amp"] == "fp16" and b["precision"]["source"] == "checkpoint"


def test_auto_precision_is_recorded_and_a_resumed_run_keeps_it(tmp_path, monkeypatch):
    kw = dict(epochs=2, max_batches=3, out_dir=str(tmp_path))
    detected(monkeypatch, NATIVE)
    first = fit(config(**kw), callback=lambda m: m["epoch"] == 1)
    state = checkpoint.load(tmp_path / "checkpoint.pt")
    assert first.metrics[0]["amp"] == "bf16" and state["precision"]["amp"] == "bf16"
    assert state["precision"]["requested"] == "auto" and state["precision"]["features"]["avx512_bf16"] is True
    assert state["scaler"] == {}  # no loss scaling outside fp16
    detected(monkeypatch, EMULATED)  # resumed where auto would be float32: the run stays bf16
    resumed = fit(config(**kw))
    assert [m["amp"] for m in resumed.metrics] == ["bf16", "bf16"]
    assert checkpoint.load(tmp_path / "checkpoint.pt")["precision"]["source"] == "checkpoint"
    assert fit(config(max_batches=1)).metrics[0]["amp"] == "none"  # a fresh run there resolves to float32


def test_bf16_and_fp16_runs_learn_as_float32_does():
    # Measured (3 epochs, cosine, 20 steps each): val_clean_acc 0.926 float32, 0.931 bf16, 0.931 fp16; chance is 0.1.
    kw = dict(epochs=3, val_samples=216)
    accuracy = {amp: fit(config(amp=amp, **kw)).metrics[-1]["val_clean_acc"] for amp in ("none", "bf16", "fp16")}
    assert accuracy["none"] > 0.85
    assert abs(accuracy["bf16"] - accuracy["none"]) < 0.05 and abs(accuracy["fp16"] - accuracy["none"]) < 0.05


# ---------------------------------------------------------------- evaluation


def test_evaluation_runs_under_the_resolved_autocast_and_records_it(monkeypatch):
    detected(monkeypatch, NATIVE)
    trained = fit(config(max_batches=2)).model.eval()
    test_set = data.build("digits", None, image_size=8).test
    seen: dict[str, list[type]] = {"runs": [], "autoattack": []}
    for name in ("runs", "autoattack"):
        module = importlib.import_module(f"rft_fast.eval.{name}")  # the module (rft_fast.eval.autoattack: a function)
        real = module.predict

        def spy(model, *args, _real=real, _name=name, **kwargs):
            seen[_name].append(type(model))
            return _real(model, *args, **kwargs)

        monkeypatch.setattr(module, "predict", spy)
    settings = EvalSettings(threats=("clean", "Linf"), n=10, mode="fast", workers=0)
    rows = evaluate(trained, test_set, RunInfo("r", "digits", mlp.NAME, "ce", "FFT-5"), settings)
    assert len(rows) == 2 and all(m.versions["precision"]["amp"] == "bf16" for m in rows)
    assert all(m.versions["eval"] == settings.identity() and m.versions["eval"]["precision"] == "bf16" for m in rows)
    assert seen["runs"] == [precision.AutocastModel]  # the clean threat's forward pass: under autocast
    assert seen["autoattack"] and all(t is not precision.AutocastModel for t in seen["autoattack"])  # float32
    detected(monkeypatch, EMULATED)
    assert "precision" not in settings.identity()  # float32 rows (and those of earlier versions) carry none
    assert EvalSettings(amp="fp16").identity()["precision"] == "fp16"
