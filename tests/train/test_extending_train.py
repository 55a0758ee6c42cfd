"""The training registries from outside the package (docs/extending.md): a toy loss, a toy training attack and a
toy protocol registered by the test itself are accepted by TrainConfig (hparams, run_id), used by `fit`, and
taken out again; the worked examples of docs/extending.md register and train as written."""

from __future__ import annotations

import re

import pytest
import tiny
import torch
import torch.nn.functional as F
from helpers import ROOT
from torch import nn

from rft_fast import models
from rft_fast.modes import eval_mode
from rft_fast.train import (
    ATTACK_REGISTRY,
    LOSS_REGISTRY,
    PROTOCOLS,
    AttackSpec,
    LossSpec,
    Protocol,
    Recipe,
    Stage,
    TrainConfig,
    fit,
    load_trained,
)
from rft_fast.train.optim import make_optimizer, param_groups
from rft_fast.train.stepper import make_stepper

DOC = ROOT / "docs" / "extending.md"
TOY_VAL = 7.0  # the toy loss's validation objective per sample: val_loss must be exactly it
CALLS = {"loss": 0, "attack": 0}


class ToyAttack:
    """One signed-gradient step of eps on the CE (FGSM without random start); counts its calls."""

    def __init__(self, eps: float) -> None:
        self.eps = eps

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float | None = None) -> torch.Tensor:
        CALLS["attack"] += 1
        x_adv = x.detach().clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(model(x_adv).float(), y), [x_adv])
        return (x + (self.eps if eps is None else eps) * grad.sign()).clamp(0, 1).detach()


class ToyLoss:
    """CE on the attack's examples (the attack run in eval mode); counts its calls."""

    def __init__(self, attack) -> None:
        self.attack = attack

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        CALLS["loss"] += 1
        with eval_mode(model):
            x_adv = self.attack(model, x, y)
        return F.cross_entropy(model(x_adv).float(), y)


class HeadFirst(Recipe):
    """Phase 1 (epoch 0) trains the head only, phase 2 everything; labels {"toy_phase": phase}."""

    def phase(self, config, epoch):
        return 1 if epoch == 0 else 2

    def resume_phase(self, state):
        return state["toy_phase"]

    def stage(self, model, config, phase, criterion):
        backbone, head = models.split_parameters(model)
        for p in backbone:
            p.requires_grad_(phase == 2)
        optimizer = make_optimizer(param_groups(backbone, head, config), config)
        return Stage(phase, make_stepper(optimizer, criterion, config), None, labels={"toy_phase": phase})


@pytest.fixture(scope="module", autouse=True)
def toys():
    LOSS_REGISTRY.register(
        "toy_loss",
        LossSpec(
            build=lambda config, attack: ToyLoss(attack),
            objective_sum=lambda model, x, x_adv, y, config: torch.tensor(TOY_VAL) * x.shape[0],
        ),
    )
    ATTACK_REGISTRY.register(
        "toy_attack", AttackSpec(build=lambda config: ToyAttack(config.attack_eps), norms=("Linf",))
    )
    PROTOCOLS.register("TOY-2", Protocol("TOY-2", 2, False, "head first, then everything", recipe=HeadFirst()))
    with tiny.registered_single_thread():
        yield
    LOSS_REGISTRY.unregister("toy_loss")
    ATTACK_REGISTRY.unregister("toy_attack")
    PROTOCOLS.unregister("TOY-2")


def config(**kw) -> TrainConfig:
    base = dict(
        backbone="tiny_resnet",
        dataset="digits",
        random_init=True,
        protocol="TOY-2",
        loss="toy_loss",
        attack="toy_attack",
        batch_size=32,
        effective_batch=32,
        cosine=False,
        image_size=32,
        device="cpu",
        workers=0,
        val_samples=32,
        val_steps=1,
        attack_steps=1,
        max_batches=2,
    )
    base.update(kw)
    return TrainConfig(**base)


def test_toy_loss_attack_and_protocol_are_accepted_and_keyed():
    cfg = config()
    assert cfg.hparams()["attack"] == "toy_attack" and cfg.to_dict()["loss"] == "toy_loss"
    assert cfg.run_id() != config(attack="apgd").run_id() != config(loss="classic_at", attack="apgd").run_id()
    assert "attack" not in config(attack="apgd").hparams()  # the default attack is left out, as before it existed
    assert cfg.num_epochs == 2 and not cfg.tora and not cfg.linear_probe
    with pytest.raises(ValueError, match="supports attack_norm"):
        config(attack_norm="L2", attack_eps=0.5)
    with pytest.raises(ValueError, match="loss must be one of"):
        config(loss="toy_los")


def test_fit_runs_the_toy_loss_attack_and_protocol(tmp_path):
    CALLS.update(loss=0, attack=0)
    result = fit(config(out_dir=str(tmp_path)), callback=lambda m: None)
    assert result.status == "completed", result.message
    assert [m["toy_phase"] for m in result.metrics] == [1, 2]
    assert all(m["val_loss"] == TOY_VAL for m in result.metrics)  # the registry's objective_sum
    assert CALLS["loss"] == 4  # 2 epochs x 2 micro-batches
    assert CALLS["attack"] >= 4 + 2  # training (4 micro-batches) and validation (2 epochs x 1 batch)
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert state["toy_phase"] == 2 and "criterion" not in state
    model, cfg = load_trained(tmp_path)
    assert cfg.protocol == "TOY-2" and cfg.loss == "toy_loss"
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), result.model.state_dict().values()))


def test_the_worked_examples_of_docs_extending_register_and_train():
    training = DOC.read_text().split("## Add a threat")[0]  # the loss, attack and protocol sections
    blocks = re.findall(r"```python\n(.*?)```", training, flags=re.S)
    assert len(blocks) == 3
    names = [("alp", LOSS_REGISTRY), ("fgsm-rs", ATTACK_REGISTRY), ("LPFT-10", PROTOCOLS)]
    try:
        for block in blocks:
            exec(compile(block, str(DOC), "exec"), {})
        for name, registry in names:
            assert name in registry
        result = fit(config(protocol="LPFT-10", epochs=3, loss="alp", attack="fgsm-rs", beta=0.5))
        assert result.status == "completed", result.message
        assert [m["lpft_phase"] for m in result.metrics] == [1, 1, 2]
        assert all(m["val_loss"] > 0 for m in result.metrics)
    finally:
        for name, registry in names:
            if name in registry:
                registry.unregister(name)


@pytest.mark.parametrize("name", LOSS_REGISTRY.names())
def test_every_registered_loss_trains_and_validates_finitely(name):
    """Every registry entry (timm's test_models pattern): one criterion forward/backward and the validation
    objective on a tiny model, finite; the gradient reaches the weights."""
    from rft_fast.train.criterion import make_criterion, validation_sums

    cfg = config(protocol="FFT-5", loss=name, attack="apgd", attack_steps=2)
    torch.manual_seed(0)
    model = models.create("tiny_resnet", 10, random_init=True).train()
    x, y = torch.rand(4, 3, 32, 32), torch.randint(0, 10, (4,))
    loss = make_criterion(cfg)(model, x, y)
    loss.backward()
    assert torch.isfinite(loss) and any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    sums = validation_sums(model, x, y, cfg)
    assert torch.isfinite(sums["loss_sum"]) and sums["loss_sum"] >= 0


@pytest.mark.parametrize("name", ATTACK_REGISTRY.names())
def test_every_registered_training_attack_stays_in_the_ball(name):
    cfg = config(protocol="FFT-5", loss="classic_at", attack=name, attack_steps=2, attack_eps=8 / 255)
    model = models.create("tiny_resnet", 10, random_init=True)
    x, y = torch.rand(4, 3, 32, 32), torch.randint(0, 10, (4,))
    attack = ATTACK_REGISTRY.get(name).build(cfg)
    for eps in (None, 4 / 255):  # the config's radius, then the one an eps schedule passes
        x_adv = attack(model, x, y) if eps is None else attack(model, x, y, eps=eps)
        radius = cfg.attack_eps if eps is None else eps
        assert x_adv.shape == x.shape and (x_adv - x).abs().max() <= radius + 1e-6
        assert x_adv.min() >= 0 and x_adv.max() <= 1 and not torch.equal(x_adv, x)
