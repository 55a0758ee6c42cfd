"""The TORA protocol in fit(): protocol parsing and config fields, the phase switch, resume across the phase
boundary, load_trained, and the lambda trade-off on the built-in digits with a tiny ViT."""
from __future__ import annotations

import pytest
import torch

import tiny
from rft_fast import data, models
from rft_fast.train import TrainConfig, fit, get_protocol, load_trained
from rft_fast.train.loop import _Run


@pytest.fixture(scope="module", autouse=True)
def _tiny_backbones():
    with tiny.registered_single_thread():
        yield


BASE = dict(backbone="tiny_vit", dataset="digits", batch_size=64, effective_batch=64, wd_backbone=0.0,
            wd_head=0.0, cosine=False, image_size=32, device="cpu", workers=0, attack_steps=3, val_steps=5, seed=0)


def config(**kw) -> TrainConfig:
    base = dict(BASE, random_init=True, protocol="TORA-2", loss="classic_at", val_samples=32, max_batches=2)
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> str:
    """tiny_vit after 3 epochs of standard training on digits: TORA adapts a frozen backbone, so it needs one
    whose features mean something."""
    result = fit(TrainConfig(**BASE, random_init=True, protocol="FFT-5", loss="ce", epochs=3, lr_backbone=3e-3,
                             lr_head=3e-3, val_samples=64))
    assert result.metrics[-1]["val_clean_acc"] > 0.4
    path = tmp_path_factory.mktemp("weights") / "tiny_vit.pth"
    torch.save({k.removeprefix("backbone."): v for k, v in result.model.state_dict().items()}, path)
    return str(path)


def test_protocol_names_and_fields():
    assert get_protocol("tora-10").name == "TORA-10" and get_protocol("TORA-10").epochs == 10
    assert get_protocol("TORA-50").tora and not get_protocol("FFT-50").tora
    tora = config(protocol="TORA-5", tora_lambda=0.9)
    assert tora.tora and tora.tora_phase1_epochs_resolved == 3 and tora.hparams()["tora_lambda"] == 0.9
    assert config(protocol="TORA-5", tora_lambda=0.1).run_id() != tora.run_id()
    fft = config(protocol="FFT-5")
    assert not any(k.startswith("tora_") for k in fft.hparams())
    assert config(protocol="FFT-5", tora_lambda=0.9).run_id() == fft.run_id()  # no effect, same run


@pytest.mark.parametrize("kw, match", [
    (dict(protocol="TORA-1"), "unknown protocol"),
    (dict(protocol="TORA-x"), "unknown protocol"),
    (dict(tora_lambda=1.5), "tora_lambda must be a number in \\[0, 1\\]"),
    (dict(tora_lambda="high"), "tora_lambda"),
    (dict(tora_bottleneck=0), "tora_bottleneck must be an int >= 1"),
    (dict(tora_fusion_dim=None), "tora_fusion_dim must be an int >= 1"),
    (dict(protocol="TORA-4", tora_phase1_epochs=4), "tora_phase1_epochs < epochs"),
    (dict(protocol="TORA-4", epochs=1), "tora_phase1_epochs < epochs"),
])
def test_bad_config_is_rejected(kw, match):
    with pytest.raises(ValueError, match=match):
        config(**kw)


def test_unsupported_backbone_fails_clearly():
    with pytest.raises(ValueError, match="not supported by TORA adapters"):
        fit(config(backbone="tiny_resnet"))


def test_phases_switch_and_resume_across_the_boundary_is_exact(tmp_path):
    kw = dict(protocol="TORA-3", loss="trades", cosine=True, tora_phase1_epochs=1)
    straight = fit(config(out_dir=str(tmp_path / "a"), **kw))
    assert [m["tora_phase"] for m in straight.metrics] == [1, 2, 2]
    assert "lr_adapters" in straight.metrics[0] and "lr_heads" in straight.metrics[0]
    assert set(k for k in straight.metrics[1] if k.startswith("lr_")) == {"lr_fusion"}
    stopped = fit(config(out_dir=str(tmp_path / "b"), **kw), callback=lambda m: m["epoch"] == 1)
    assert stopped.status == "stopped"
    assert torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=False)["tora_phase"] == 1
    resumed = fit(config(out_dir=str(tmp_path / "b"), **kw))
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.metrics[1:] == [{**m, "train_seconds": r["train_seconds"], "images_per_s": r["images_per_s"]}
                                   for m, r in zip(straight.metrics[1:], resumed.metrics[1:])]
    # phase 1 trained the adapters, phase 2 the fusion; the backbone never moved
    init = _Run(config(**kw), progress=False).model
    before = init.state_dict()
    moved = {k for k in a if not torch.equal(before[k], a[k])}
    assert moved and all(k.startswith(("adapters_", "fusion.", "head_", "acc_token", "rob_token")) for k in moved)
    assert any(k.startswith("fusion.") for k in moved) and any(k.startswith("adapters_rob.") for k in moved)

    model, cfg = load_trained(tmp_path / "a")
    assert isinstance(model, models.ToraViT) and cfg.tora
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), straight.model.eval()(x))


def _mean_rob_gate(model: models.ToraViT, x: torch.Tensor) -> float:
    """Mean weight of psi_R in the fusion gates over the blocks and tokens of `x`."""
    gates = []
    hooks = [phi.register_forward_hook(lambda m, inp, out: gates.append(m.gate(*inp)[..., 1].mean()))
             for phi in model.fusion]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return torch.stack(gates).mean().item()


def test_higher_lambda_buys_robustness_after_phase_2(pretrained):
    """lambda weighs the robust loss in phase 2: at 0.9 the gates lean more to psi_R than at 0.1, and PGD
    accuracy is at least that of lambda 0.1 (within 2 points: 216 validation images, a short run)."""
    runs = {}
    for lam in (0.1, 0.9):
        cfg = TrainConfig(**BASE, pretrained_path=pretrained, protocol="TORA-3", tora_phase1_epochs=2,
                          loss="classic_at", attack_eps=4 / 255, lr_backbone=1e-2, lr_head=1e-2, tora_lambda=lam)
        runs[lam] = fit(cfg)
    x = torch.stack([data.build("digits", None, image_size=32, seed=42).val[i][0] for i in range(64)]).float() / 255
    gate = {lam: _mean_rob_gate(r.model.eval(), x) for lam, r in runs.items()}
    assert gate[0.9] > gate[0.1] + 0.02, gate
    pgd = {lam: r.metrics[-1]["val_pgd_acc"] for lam, r in runs.items()}
    assert pgd[0.9] >= pgd[0.1] - 0.02, pgd
    assert all(r.metrics[-1]["val_clean_acc"] > 0.4 for r in runs.values())
