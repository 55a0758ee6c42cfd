"""Training options (docs/regularizers.md) wired into fit(): GRACE losses (Gram alignment + CurvatureSAM), the consistency
loss, and the training attack's eps schedule, on the built-in digits dataset with timm's tiny models."""

from __future__ import annotations

import math

import pytest
import tiny
import torch

from rft_fast.attacks import APGD
from rft_fast.train import TrainConfig, fit
from rft_fast.train.criterion import ScheduledAttack, TrainingCriterion, make_criterion
from rft_fast.train.schedule import EpsSchedule

torch.set_num_threads(1)


@pytest.fixture(scope="module", autouse=True)
def _tiny_backbones():
    with tiny.registered():
        yield


def config(**kw) -> TrainConfig:
    base = dict(
        backbone="tiny_resnet",
        dataset="digits",
        random_init=True,
        protocol="FFT-5",
        loss="classic_at",
        batch_size=32,
        effective_batch=32,
        lr_backbone=3e-3,
        lr_head=3e-3,
        wd_backbone=0.0,
        wd_head=0.0,
        cosine=False,
        epochs=2,
        image_size=32,
        device="cpu",
        workers=0,
        val_samples=32,
        val_steps=2,
        attack_steps=2,
        max_batches=2,
    )
    base.update(kw)
    return TrainConfig(**base)


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _finite_rows(metrics: list[dict]) -> bool:
    return all(math.isfinite(v) for row in metrics for v in row.values() if isinstance(v, (int, float)))


@pytest.mark.parametrize(
    "kw",
    [
        dict(loss="classic_at+grace"),
        dict(loss="trades+grace", consistency_weight=0.5),
        dict(loss="classic_at", consistency_weight=1.0),
        dict(loss="trades", consistency_weight=1.0),
        dict(loss="ce", consistency_weight=1.0),
        dict(loss="classic_at", eps_schedule="linear", eps_warmup=1.0),
        dict(loss="trades", eps_schedule="cosine", eps_start=1 / 255, eps_warmup=0.5),
    ],
    ids=lambda kw: "-".join(f"{k}={v}" for k, v in kw.items()),
)
def test_each_option_trains_two_epochs_without_nan(kw):
    cfg = config(**kw)
    result = fit(cfg)
    assert result.status == "completed", result.message
    assert [m["epoch"] for m in result.metrics] == [1, 2]
    assert _finite_rows(result.metrics)
    assert all(m["optimizer_steps"] == 2 for m in result.metrics)
    assert all(torch.isfinite(v).all() for v in weights(result.model).values() if v.is_floating_point())
    if cfg.eps_schedule == "constant":
        assert "attack_eps_now" not in result.metrics[0]
    else:  # 2 epochs x 2 steps: the epoch's last step is 1, then 3
        schedule = EpsSchedule(cfg.eps_schedule, cfg.attack_eps, cfg.eps_start, cfg.eps_warmup)
        got = [m["attack_eps_now"] for m in result.metrics]
        assert got == [schedule(1, 4), schedule(3, 4)]
        assert cfg.eps_start < got[0] < got[1] <= cfg.attack_eps


def test_linear_schedule_ramps_per_epoch_and_starts_clean():
    eps = 8 / 255
    result = fit(config(eps_schedule="linear", eps_warmup=1.0, attack_eps=eps, epochs=3, max_batches=1))
    got = [m["attack_eps_now"] for m in result.metrics]  # one step per epoch, 3 steps: 0, eps/3, 2 eps/3
    assert got == pytest.approx([0.0, eps / 3, 2 * eps / 3])
    assert got[0] < got[1] < got[2] < eps
    # eps 0 trains on the clean batch: the scheduled attack returns x
    attack = ScheduledAttack(APGD(eps=eps, steps=2, random_start=False))
    attack.eps = 0.0
    x, y = torch.rand(4, 3, 32, 32), torch.randint(0, 10, (4,))
    assert torch.equal(attack(torch.nn.Identity(), x, y), x)


def test_make_criterion_plain_without_options_and_composed_with_them():
    assert not isinstance(make_criterion(config()), TrainingCriterion)
    crit = make_criterion(config(loss="trades+grace", consistency_weight=0.5, eps_schedule="cosine"))
    assert isinstance(crit, TrainingCriterion) and crit.grace is not None and crit.attack is not None


def test_grace_resume_is_exact(tmp_path):
    kw = dict(
        loss="trades+grace",
        consistency_weight=0.5,
        eps_schedule="linear",
        eps_warmup=1.0,
        batch_size=16,
        effective_batch=32,
        max_batches=4,
        cosine=True,
        optimizer="adamw",
    )
    straight = fit(config(out_dir=str(tmp_path / "a"), **kw))
    stopped = fit(config(out_dir=str(tmp_path / "b"), **kw), callback=lambda m: m["epoch"] == 1)
    assert stopped.status == "stopped" and len(stopped.metrics) == 1
    saved = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=False)
    assert saved["criterion"]["grace_shift"] == {"draws": 4} and saved["criterion"]["augment"] == {"draws": 8}
    curvature = saved["optimizer"]["curvature"]["state"]
    assert curvature and all(s["step"] == 2 for s in curvature.values())
    resumed = fit(config(out_dir=str(tmp_path / "b"), **kw))
    assert resumed.status == "completed"
    a, b = weights(straight.model), weights(resumed.model)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [m["train_loss"] for m in resumed.metrics] == [m["train_loss"] for m in straight.metrics]
    assert [m["attack_eps_now"] for m in resumed.metrics] == [m["attack_eps_now"] for m in straight.metrics]


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(loss="grace"), "loss must be one of"),
        (dict(grace_gram_weight=-1.0), "grace_gram_weight"),
        (dict(grace_rho=float("nan")), "grace_rho"),
        (dict(grace_beta2=1.0), "grace_beta2"),
        (dict(consistency_weight=-0.1), "consistency_weight"),
        (dict(eps_schedule="step"), "eps_schedule must be one of"),
        (dict(eps_start=-1.0), "eps_start"),
        (dict(eps_start=8 / 255, attack_eps=4 / 255), "eps_start"),
        (dict(eps_warmup=1.5), "eps_warmup"),
        (dict(loss="ce", eps_schedule="linear"), r"eps_schedule.*loss='ce'"),
        (dict(backbone="tiny_vit", protocol="TORA-2", epochs=None, loss="trades+grace"), r"TORA.*loss='trades\+grace'"),
        (
            dict(backbone="tiny_vit", protocol="TORA-2", epochs=None, consistency_weight=1.0),
            r"TORA.*consistency_weight",
        ),
        (dict(backbone="tiny_vit", protocol="TORA-2", epochs=None, eps_schedule="cosine"), r"TORA.*eps_schedule"),
    ],
)
def test_bad_values_name_the_field(kw, match):
    with pytest.raises(ValueError, match=match):
        config(**kw)


def test_defaults_keep_existing_run_ids_and_hparams():
    # computed before the options existed
    assert TrainConfig(backbone="tiny_resnet", dataset="digits", random_init=True).run_id() == "2c98ae370d7d"
    assert (
        TrainConfig(
            backbone="vit_b16", dataset="cifar10", pretrained_path="/x/w.pt", loss="trades", protocol="FFT-5"
        ).run_id()
        == "67e205dbf542"
    )
    new = {
        "grace_gram_weight",
        "grace_rho",
        "grace_beta2",
        "consistency_weight",
        "eps_schedule",
        "eps_start",
        "eps_warmup",
    }
    assert not new & set(config().hparams())
    assert {"grace_gram_weight", "grace_rho", "grace_beta2"} <= set(config(loss="trades+grace").hparams())
    assert "consistency_weight" in config(consistency_weight=0.5).hparams()
    assert {"eps_schedule", "eps_start", "eps_warmup"} <= set(config(eps_schedule="cosine").hparams())
    assert config(loss="trades+grace").run_id() != config(loss="trades").run_id()
    assert config(eps_schedule="cosine").run_id() != config(eps_schedule="linear").run_id()


def test_grid_loss_axis_and_schedule_axis():
    from rft_fast.grid.spec import expand, load_spec, search_space

    spec = load_spec(
        {
            "backbones": ["tiny_resnet"],
            "losses": ["trades", "trades+grace"],
            "protocols": ["FFT-5"],
            "datasets": ["digits"],
            "random_init": True,
            "search": {"lr_backbone": {"loguniform": [1e-5, 1e-3]}},
            "axes": {"eps_schedule": ["constant", "cosine"]},
            "budget_minutes": 1,
            "store": "runs/t/r.sqlite",
            "out_dir": "runs/t",
        }
    )
    configs = expand(spec)
    trains = []
    for c in configs:
        hparams = {d.name: d.low for d in search_space(spec, c)}
        trains.append(TrainConfig(**c.train_fields(spec), **hparams))
    assert sorted((t.loss, t.eps_schedule) for t in trains) == [
        ("trades", "constant"),
        ("trades", "cosine"),
        ("trades+grace", "constant"),
        ("trades+grace", "cosine"),
    ]
    assert len({t.run_id() for t in trains}) == 4
