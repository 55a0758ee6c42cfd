"""ClassicATLoss and TRADESLoss: semantics, and memory-saving TRADES == standard TRADES."""

from __future__ import annotations

import copy
import functools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rft_fast import reference
from rft_fast.attacks import NonFiniteError
from rft_fast.attacks.trades_pgd import TradesPGD
from rft_fast.bench.memory import saved_activation_peak
from rft_fast.losses import ClassicATLoss, TRADESLoss

timm = pytest.importorskip("timm")

NUM_CLASSES = 5
KL_PGD = functools.partial(reference.pgd_attack, eps=8 / 255, step_size=2 / 255, steps=2, loss="kl")
CE_PGD = functools.partial(reference.pgd_attack, eps=8 / 255, step_size=2 / 255, steps=2, loss="ce")


class SmallCNN(nn.Module):
    """BatchNorm + dropout: train-mode forwards depend on the batch and on the RNG."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.Dropout(0.3),
            nn.Conv2d(8, 8, 3, stride=2, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
        )
        self.head = nn.Linear(8, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


def _resnet() -> nn.Module:  # BatchNorm + stochastic depth
    return timm.create_model("resnet10t", num_classes=NUM_CLASSES, drop_path_rate=0.3, pretrained=False)


def _vit() -> nn.Module:  # LayerNorm + stochastic depth + dropout
    from timm.models.vision_transformer import VisionTransformer

    return VisionTransformer(
        img_size=32,
        patch_size=8,
        embed_dim=32,
        depth=2,
        num_heads=2,
        num_classes=NUM_CLASSES,
        drop_path_rate=0.3,
        drop_rate=0.1,
    )


MODELS = {"cnn_bn_dropout": SmallCNN, "resnet_drop_path": _resnet, "vit_layernorm": _vit}


def _batch(n: int = 6, seed: int = 0, channels_last: bool = False):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, 32, 32, generator=gen)
    y = torch.randint(0, NUM_CLASSES, (n,), generator=gen)
    return (x.contiguous(memory_format=torch.channels_last) if channels_last else x), y


def _run(model: nn.Module, criterion, batches, seed: int = 123):
    """Loss values, parameter grads and buffers after backward() of each batch (accumulating grads)."""
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    losses = []
    for x, y in batches:
        loss = criterion(model, x, y)
        loss.backward()
        losses.append(loss.detach())
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    return losses, grads, buffers


def _twins(name: str, seed: int = 0):
    torch.manual_seed(seed)
    a = MODELS[name]()
    b = MODELS[name]()
    b.load_state_dict(a.state_dict())
    return a.train(), b.train()


def _assert_same(run_a, run_b, rtol: float = 1e-4, atol: float = 1e-6):
    (la, ga, ba), (lb, gb, bb) = run_a, run_b
    for x, y in zip(la, lb):
        torch.testing.assert_close(x, y, rtol=rtol, atol=atol)
    assert ga.keys() == gb.keys() and ga
    for k in ga:
        torch.testing.assert_close(ga[k], gb[k], rtol=rtol, atol=atol, msg=lambda m, k=k: f"grad {k}: {m}")
    for k in ba:
        torch.testing.assert_close(ba[k], bb[k], rtol=rtol, atol=atol, msg=lambda m, k=k: f"buffer {k}: {m}")


@pytest.mark.parametrize("channels_last", (False, True))
@pytest.mark.parametrize("name", sorted(MODELS))
def test_memory_saving_trades_equals_standard(name, channels_last):
    """Same loss, gradients and BatchNorm statistics; dropout / drop-path replay the same randomness."""
    std_model, ms_model = _twins(name)
    batches = [_batch(seed=1, channels_last=channels_last)]
    std = _run(std_model, TRADESLoss(KL_PGD, beta=1.0, memory_saving=False), batches)
    ms = _run(ms_model, TRADESLoss(KL_PGD, beta=1.0, memory_saving=True), batches)
    _assert_same(std, ms)


def test_randomness_matters_so_the_replay_is_real():
    """Without the same RNG draws the two would differ: a different seed changes the gradients."""
    a, b = _twins("cnn_bn_dropout")
    batches = [_batch(seed=1)]
    ga = _run(a, TRADESLoss(KL_PGD, memory_saving=True), batches, seed=1)[1]
    gb = _run(b, TRADESLoss(KL_PGD, memory_saving=True), batches, seed=2)[1]
    assert any(not torch.allclose(ga[k], gb[k]) for k in ga)


def test_memory_saving_with_gradient_accumulation_and_beta():
    std_model, ms_model = _twins("cnn_bn_dropout")
    batches = [_batch(4, seed=s) for s in (1, 2, 3)]
    std = _run(std_model, TRADESLoss(CE_PGD, beta=6.0, memory_saving=False), batches)
    ms = _run(ms_model, TRADESLoss(CE_PGD, beta=6.0, memory_saving=True), batches)
    _assert_same(std, ms)


def test_memory_saving_under_bf16_autocast():
    std_model, ms_model = _twins("vit_layernorm")
    batches = [_batch(seed=4)]

    def autocast(criterion):
        def call(model, x, y):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return criterion(model, x, y)

        return call

    std = _run(std_model, autocast(TRADESLoss(KL_PGD, memory_saving=False)), batches)
    ms = _run(ms_model, autocast(TRADESLoss(KL_PGD, memory_saving=True)), batches)
    # Within one autocast region the standard computation reuses one bf16 copy of each weight for both
    # branches and sums their gradients in bf16; the recompute sums them in float32: bf16-ulp differences.
    _assert_same(std, ms, rtol=1e-2, atol=1e-4)


def _linear_probe(model: nn.Module) -> nn.Module:
    model.train()
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith("head"))
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eval()
    return model


def test_memory_saving_linear_probing_keeps_frozen_parts_and_bn_modes():
    std_model, ms_model = (_linear_probe(m) for m in _twins("cnn_bn_dropout"))
    batches = [_batch(seed=5)]
    std = _run(std_model, TRADESLoss(KL_PGD, memory_saving=False), batches)
    ms = _run(ms_model, TRADESLoss(KL_PGD, memory_saving=True), batches)
    _assert_same(std, ms)
    assert set(ms[1]) == {"head.weight", "head.bias"}
    assert all(not m.training for m in ms_model.modules() if isinstance(m, nn.BatchNorm2d))
    assert ms_model.training and ms_model.features[3].training  # dropout still in train mode


def test_no_trainable_parameters_is_an_error():
    model = SmallCNN().requires_grad_(False)
    with pytest.raises(ValueError, match="no parameter with requires_grad"):
        TRADESLoss(KL_PGD)(model, *_batch())


class _Recorder:
    """An attack that records the modes it saw and returns a fixed perturbation."""

    def __init__(self) -> None:
        self.modes: list[bool] = []

    def __call__(self, model, x, y):
        self.modes = [m.training for m in model.modules()]
        assert all(p.grad is None for p in model.parameters())
        return (x + 0.01).clamp(0, 1)


@pytest.mark.parametrize("make_loss", (ClassicATLoss, TRADESLoss, functools.partial(TRADESLoss, memory_saving=False)))
def test_attack_runs_in_eval_mode_and_modes_are_restored(make_loss):
    model = _linear_probe(SmallCNN())
    before = [m.training for m in model.modules()]
    rec = _Recorder()
    make_loss(rec)(model, *_batch())
    assert rec.modes and not any(rec.modes)
    assert [m.training for m in model.modules()] == before


def test_classic_at_is_cross_entropy_on_the_adversarial_batch():
    model = SmallCNN().eval()  # eval: deterministic forward, so the check below is exact
    x, y = _batch()
    loss = ClassicATLoss(CE_PGD)(model, x, y)
    x_adv = CE_PGD(model, x, y)
    expected = nn.functional.cross_entropy(model(x_adv), y)
    torch.testing.assert_close(loss, expected)
    clean = nn.functional.cross_entropy(model(x), y)
    assert loss > clean  # the attack increased the loss


def test_trades_value_is_ce_plus_beta_kl():
    model = SmallCNN().eval()
    x, y = _batch()
    for memory_saving in (False, True):
        loss = TRADESLoss(KL_PGD, beta=3.0, memory_saving=memory_saving)(model, x, y)
        x_adv = KL_PGD(model, x, y)
        lc, la = model(x), model(x_adv)
        expected = nn.functional.cross_entropy(lc, y) + 3.0 * reference.trades_kl(la, lc)
        torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)


def test_memory_saving_never_holds_both_graphs():
    """Saved activations at their peak: about one branch for memory-saving TRADES, both for the standard."""
    x, y = _batch(16)
    peaks = {}
    for memory_saving in (False, True):
        model = SmallCNN().train()
        criterion = TRADESLoss(lambda m, x, y: (x + 0.01).clamp(0, 1), memory_saving=memory_saving)
        peaks[memory_saving] = saved_activation_peak(lambda c=criterion, m=model: c(m, x, y).backward())
    assert peaks[True] <= 0.55 * peaks[False], peaks


def test_bad_inputs():
    model = SmallCNN()
    x, y = _batch()
    with pytest.raises(ValueError, match="y must be int64 labels"):
        TRADESLoss(KL_PGD)(model, x, y.int())
    with pytest.raises(ValueError, match="beta must be a finite float >= 0"):
        TRADESLoss(KL_PGD, beta=-1.0)
    with pytest.raises(ValueError, match="x must be a floating-point image batch"):
        ClassicATLoss(CE_PGD)(model, (x * 255).byte(), y)


def _official_trades_attack(
    model: nn.Module,
    x: torch.Tensor,
    noise: torch.Tensor,
    eps: float = 0.031,
    step_size: float = 0.007,
    steps: int = 10,
) -> torch.Tensor:
    """The attack of the official TRADES code (yaodongyu/TRADES, trades.py), line for line: eval mode, an
    unprojected x + 0.001 N(0, 1) start, sign steps on the summed KL, projection to the ball, clamp to [0, 1]."""
    model.eval()
    criterion_kl = nn.KLDivLoss(reduction="sum")
    x_adv = x.detach() + 0.001 * noise
    for _ in range(steps):
        x_adv.requires_grad_()
        with torch.enable_grad():
            loss_kl = criterion_kl(F.log_softmax(model(x_adv), dim=1), F.softmax(model(x), dim=1))
        grad = torch.autograd.grad(loss_kl, [x_adv])[0]
        x_adv = x_adv.detach() + step_size * torch.sign(grad.detach())
        x_adv = torch.min(torch.max(x_adv, x - eps), x + eps)
        x_adv = torch.clamp(x_adv, 0.0, 1.0)
    model.train()
    return x_adv


@pytest.mark.parametrize("steps, eps", [(10, 0.031), (3, 8 / 255)])
def test_trades_pgd_matches_the_official_attack(steps, eps):
    torch.manual_seed(0)
    model = SmallCNN().train()
    x, y = _batch(8)
    buffers = [b.clone() for b in model.buffers()]
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    attack = TradesPGD(eps=eps, step_size=0.007 * eps / 0.031, steps=steps, seed=0)
    x_adv = attack(model, x, y)
    assert model.training and all(m.training for m in model.modules())  # modes restored
    assert all(torch.equal(a, b) for a, b in zip(buffers, model.buffers()))  # eval mode: BatchNorm untouched
    expected = _official_trades_attack(copy.deepcopy(model), x, noise, eps, 0.007 * eps / 0.031, steps)
    torch.testing.assert_close(x_adv, expected, atol=1e-6, rtol=0)
    assert (x_adv - x).abs().max() <= eps + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    assert not torch.equal(x_adv, x)


def test_trades_pgd_eps_override_scales_the_step_and_bad_values_are_refused():
    torch.manual_seed(0)
    model, (x, y) = SmallCNN(), _batch(4)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    got = TradesPGD(eps=0.031, step_size=0.007, steps=2)(model, x, y, eps=0.0155)
    torch.testing.assert_close(got, _official_trades_attack(model, x, noise, 0.0155, 0.0035, 2), atol=1e-6, rtol=0)
    for kw, match in (
        (dict(eps=0.0), "eps"),
        (dict(steps=0), "steps"),
        (dict(step_size=True), "step_size"),
        (dict(seed=-1), "seed"),
    ):
        with pytest.raises(ValueError, match=match):
            TradesPGD(**kw)
    broken = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, NUM_CLASSES))
    nn.init.constant_(broken[1].weight, float("nan"))
    with pytest.raises(NonFiniteError, match="TradesPGD"):
        TradesPGD(steps=1)(broken, x, y)
