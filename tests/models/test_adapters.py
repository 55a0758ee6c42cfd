"""TORA adapters (rft_fast.models.adapters) on tiny random-init ViTs.

Behaviour: with zero adapters and the "acc" path forced the model is the backbone, to float64 rounding; the
backbone's weights stay frozen and unchanged by training; phase 1's two losses reach only their own modules;
the fusion gate is a softmax over the two adapters; unsupported backbones and bad arguments are clear errors.
"""

from __future__ import annotations

import pytest
import tiny
import torch

from rft_fast import models
from rft_fast.attacks import PGD
from rft_fast.losses import ClassicATLoss
from rft_fast.models.adapters import GatedFusion
from rft_fast.train import tora as tora_train


@pytest.fixture(scope="module", autouse=True)
def _tiny_backbones():
    with tiny.registered_single_thread():
        yield


def tiny_tora(
    name: str = "tiny_vit", dtype: torch.dtype = torch.float32, **kw
) -> tuple[models.Normalized, models.ToraViT]:
    torch.manual_seed(0)
    base = models.create(name, 10, random_init=True, image_size=32).to(dtype).eval()
    return base, models.tora(base, **kw)


def images(n: int = 6, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, 3, 32, 32, generator=g, dtype=dtype), torch.randint(0, 10, (n,), generator=g)


@pytest.mark.parametrize("name", ["tiny_vit", "deit_tiny_patch16_224.fb_in1k"])
def test_zero_adapters_on_the_acc_path_reproduce_the_backbone(name):
    base, model = tiny_tora(name, torch.float64)
    x, _ = images(dtype=torch.float64)
    with torch.no_grad():
        expected = base(x)
        torch.testing.assert_close(model(x, path="acc"), expected, rtol=0, atol=1e-12)
        # zero adapters: psi_A = psi_R = identity, so any gate and both heads give the backbone too
        torch.testing.assert_close(model(x), expected, rtol=0, atol=1e-12)
        torch.nn.init.normal_(model.adapters_acc[0].up.weight, std=0.1)
        assert (model(x, path="acc") - expected).abs().max() > 1e-3
        torch.testing.assert_close(model(x, path="rob"), expected, rtol=0, atol=1e-12)  # psi_R untouched


def test_backbone_is_frozen_and_training_leaves_it_unchanged():
    base, model = tiny_tora()
    before = {k: v.clone() for k, v in base.state_dict().items()}
    assert model.base is base and not any(p.requires_grad for p in base.parameters())
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert {id(p) for p in trainable} == {
        id(p) for p in model.acc_parameters() + model.rob_parameters() + model.fusion_parameters()
    }
    opt = torch.optim.AdamW(trainable, lr=1e-2, weight_decay=0.1)
    x, y = images()
    model.train()
    assert not any(m.training for m in base.modules())
    for path in ("acc", "rob", "fused"):
        torch.nn.functional.cross_entropy(model(x, path=path), y).backward()
        opt.step()
        opt.zero_grad()
    after = base.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not torch.equal(model.adapters_acc[0].up.weight, torch.zeros_like(model.adapters_acc[0].up.weight))


def test_phase1_gradients_reach_only_the_intended_modules():
    _, model = tiny_tora()
    tora_train.set_phase(model, 1)
    x, y = images()
    robust = ClassicATLoss(PGD(eps=8 / 255, steps=2, random_start=True, seed=0))
    acc_ids = {id(p) for p in model.acc_parameters()}
    rob_ids = {id(p) for p in model.rob_parameters()}

    def touched() -> set[int]:
        ids = {id(p) for p in model.parameters() if p.grad is not None}
        assert all(
            p.grad.abs().sum() > 0
            for p in (model.adapters_acc[0].up.weight, model.adapters_rob[0].up.weight)
            if p.grad is not None
        )
        model.zero_grad(set_to_none=True)
        return ids

    robust(model.view("rob"), x, y).backward()
    assert touched() == rob_ids
    torch.nn.functional.cross_entropy(model.view("acc")(x), y).backward()
    assert touched() == acc_ids
    tora_train.PhaseCriterion(robust, 1, 0.5)(model, x, y).backward()
    assert touched() == acc_ids | rob_ids
    assert all(p.grad is None for p in model.fusion_parameters() + list(model.base.parameters()))


def test_phase2_trains_only_the_fusion():
    _, model = tiny_tora()
    tora_train.set_phase(model, 2)
    x, y = images()
    robust = ClassicATLoss(PGD(eps=8 / 255, steps=2, random_start=True, seed=0))
    tora_train.PhaseCriterion(robust, 2, 0.9)(model, x, y).backward()
    with_grad = {id(p) for p in model.parameters() if p.grad is not None}
    assert with_grad == {id(p) for p in model.fusion_parameters()}


def test_fusion_gate_is_a_softmax_over_the_two_adapters():
    torch.manual_seed(0)
    phi = GatedFusion(8, 4)
    h, a, r = torch.randn(3, 5, 8), torch.randn(3, 5, 8), torch.randn(3, 5, 8)
    torch.testing.assert_close(phi.gate(h, a, r), torch.full((3, 5, 2), 0.5))  # zero query: an even gate
    torch.nn.init.normal_(phi.query.weight)
    g = phi.gate(h, a, r)
    q, k_a, k_r = phi.query(h), phi.key(a), phi.key(r)
    scores = torch.stack(((q * k_a).sum(-1), (q * k_r).sum(-1)), -1) / 2.0
    torch.testing.assert_close(g, scores.softmax(-1))
    torch.testing.assert_close(phi(h, a, r), g[..., :1] * a + g[..., 1:] * r)


def test_parameter_counts():
    base, model = tiny_tora(bottleneck=8, fusion_dim=4)
    counts = model.param_counts()
    dim, depth, classes = 64, 6, 10
    adapter = 2 * dim + (dim * 8 + 8) + (8 * dim + dim)  # LayerNorm, down, up
    head = dim * classes + classes
    assert counts.backbone == sum(p.numel() for p in base.parameters())
    assert counts.acc == counts.rob == depth * adapter + dim + head
    assert counts.fusion == depth * 2 * (dim * 4 + 4)
    assert counts.total == counts.backbone + counts.phase1 + counts.phase2


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: models.tora(models.create("tiny_resnet", 10, random_init=True)), "not supported"),
        (
            lambda: models.tora(models.create("eva02_tiny_patch14_224.mim_in22k", 10, random_init=True, image_size=28)),
            "not supported.*EVA-02",
        ),
        (lambda: models.tora(torch.nn.Linear(2, 2)), "Normalized"),
        (lambda: tiny_tora(bottleneck=0), "bottleneck must be an int >= 1"),
        (lambda: tiny_tora(fusion_dim=2.5), "fusion_dim must be an int >= 1"),
        (lambda: tiny_tora()[1](images()[0], path="robust"), "path must be one of"),
        (lambda: tiny_tora()[1].view("both"), "path must be one of"),
        (lambda: tora_train.set_phase(tiny_tora()[1], 3), "phase must be one of"),
    ],
)
def test_bad_arguments_are_clear_errors(build, match):
    with pytest.raises(ValueError, match=match):
        build()
