"""CurvatureSAM: the ascent step against a float64 reference of the documented formulas, the exact restore of
the weights before the base optimizer's update, frozen / gradient-less parameters, gradient accumulation,
resumption from a state dict, schedulers, and errors."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from rft_fast.train.grace import CurvatureSAM, preserved_buffers

RHO, BETA2, EPS = 0.1, 0.9, 1e-8


def make_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)).double()


def data(seed: int = 1, n: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 5, generator=gen, dtype=torch.float64), torch.randint(0, 3, (n,), generator=gen)


def loss_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(model(x), y)


def reference_perturbation(grads: list[torch.Tensor], v: list[torch.Tensor], t: int) -> tuple[list, list]:
    """The module docstring's formulas, float64, written out: returns (e per tensor, updated v)."""
    v = [BETA2 * vi + (1 - BETA2) * g * g for vi, g in zip(v, grads)]
    c = [(vi / (1 - BETA2**t)).sqrt() + EPS for vi in v]
    mean_c = sum(ci.sum() for ci in c) / sum(ci.numel() for ci in c)
    ct = [ci / mean_c for ci in c]
    denom = sum((g * g / cti).sum() for g, cti in zip(grads, ct)).sqrt()
    return [RHO * (g / cti) / denom for g, cti in zip(grads, ct)], v


def test_perturbation_matches_reference_over_steps_and_lies_on_the_ellipsoid():
    model = make_model()
    opt = CurvatureSAM(torch.optim.SGD(model.parameters(), lr=0.05), rho=RHO, beta2=BETA2, eps=EPS)
    v = [torch.zeros_like(p) for p in model.parameters()]
    for t in range(1, 4):
        x, y = data(seed=t)
        opt.zero_grad()
        loss_fn(model, x, y).backward()
        w = [p.detach().clone() for p in model.parameters()]
        grads = [p.grad.clone() for p in model.parameters()]
        opt.first_step()
        e_ref, v = reference_perturbation(grads, v, t)
        for p, w0, e in zip(model.parameters(), w, e_ref):
            torch.testing.assert_close(p.detach() - w0, e, atol=1e-12, rtol=1e-9)
        c = [(vi / (1 - BETA2**t)).sqrt() + EPS for vi in v]
        mean_c = sum(ci.sum() for ci in c) / sum(ci.numel() for ci in c)
        assert sum((ci / mean_c * e * e).sum() for ci, e in zip(c, e_ref)).item() == pytest.approx(RHO**2, rel=1e-10)
        opt.zero_grad()
        loss_fn(model, x, y).backward()
        opt.second_step()


def test_uniform_curvature_gives_sam_and_loss_scale_does_not_matter():
    model = make_model()
    gen = torch.Generator().manual_seed(2)
    signs = [torch.randint(0, 2, p.shape, generator=gen).double() * 2 - 1 for p in model.parameters()]
    results = []
    for scale in (1.0, 1000.0):
        m = copy.deepcopy(model)
        opt = CurvatureSAM(torch.optim.SGD(m.parameters(), lr=0.0), rho=RHO, beta2=BETA2, eps=1e-30)
        for p, s in zip(m.parameters(), signs):  # equal magnitudes: a uniform metric
            p.grad = s * scale
        opt.first_step()
        results.append([p.detach() - q.detach() for p, q in zip(m.parameters(), model.parameters())])
    numel = sum(p.numel() for p in model.parameters())
    for e, s in zip(results[0], signs):  # SAM: rho g / ||g||
        torch.testing.assert_close(e, RHO * s / numel**0.5, atol=1e-14, rtol=1e-9)
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, atol=1e-14, rtol=1e-9)


def test_weights_restored_exactly_before_the_base_update():
    """The base optimizer starts from the weights the plain step would start from, bit for bit, and its update
    equals a plain base step taken with the gradient at w + e."""
    model = make_model().float()
    twin = copy.deepcopy(model)
    base = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    opt = CurvatureSAM(base, rho=0.5)
    seen: list[list[torch.Tensor]] = []
    base.register_step_pre_hook(lambda o, a, k: seen.append([p.detach().clone() for p in model.parameters()]))
    x, y = data()
    x = x.float()
    loss_fn(model, x, y).backward()
    start = [p.detach().clone() for p in model.parameters()]
    perturbed: list[torch.Tensor] = []

    def closure():
        perturbed.extend(p.detach().clone() for p in model.parameters())
        loss = loss_fn(model, x, y)
        loss.backward()
        return loss

    opt.step(closure)
    assert len(seen) == 1 and all(torch.equal(a, b) for a, b in zip(seen[0], start))
    assert not any(torch.equal(a, b) for a, b in zip(perturbed, start))
    # the plain base step from w with the gradient taken at the perturbed weights
    with torch.no_grad():
        for p, q in zip(twin.parameters(), perturbed):
            p.copy_(q)
    loss_fn(twin, x, y).backward()
    with torch.no_grad():
        for p, w in zip(twin.parameters(), start):
            p.copy_(w)
    plain = torch.optim.AdamW(twin.parameters(), lr=1e-2, weight_decay=0.1)
    plain.step()
    for a, b in zip(model.parameters(), twin.parameters()):
        assert torch.equal(a, b)


def test_rho_zero_is_the_plain_step_bitwise():
    model, twin = make_model(), make_model()
    opt = CurvatureSAM(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), rho=0.0)
    plain = torch.optim.SGD(twin.parameters(), lr=0.1, momentum=0.9)
    for t in range(3):
        x, y = data(seed=t)
        opt.zero_grad()
        loss_fn(model, x, y).backward()
        opt.step(lambda: loss_fn(model, x, y).backward())
        plain.zero_grad()
        loss_fn(twin, x, y).backward()
        plain.step()
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), twin.parameters()))


def test_frozen_and_gradless_parameters_are_left_alone():
    model = make_model()
    unused = nn.Parameter(torch.ones(4, dtype=torch.float64))  # in the optimizer, never in the graph
    model[0].weight.requires_grad_(False)
    opt = CurvatureSAM(torch.optim.SGD(list(model.parameters()) + [unused], lr=0.1), rho=RHO)
    frozen = model[0].weight.detach().clone()
    x, y = data()
    loss_fn(model, x, y).backward()
    opt.first_step()
    assert torch.equal(model[0].weight, frozen) and torch.equal(unused, torch.ones(4, dtype=torch.float64))
    assert model[0].weight not in opt.state and unused not in opt.state
    loss_fn(model, x, y).backward()
    opt.second_step()
    assert torch.equal(model[0].weight, frozen) and torch.equal(unused, torch.ones(4, dtype=torch.float64))


def test_gradient_accumulation_equals_the_full_batch():
    model, twin = make_model(), make_model()
    opt = CurvatureSAM(torch.optim.SGD(model.parameters(), lr=0.1), rho=RHO)
    full = CurvatureSAM(torch.optim.SGD(twin.parameters(), lr=0.1), rho=RHO)
    for t in range(2):
        x, y = data(seed=t, n=12)
        parts = [(x[:8], y[:8], 8 / 12), (x[8:], y[8:], 4 / 12)]
        opt.zero_grad()
        for xb, yb, share in parts:
            (loss_fn(model, xb, yb) * share).backward()
        opt.step(lambda: [(loss_fn(model, xb, yb) * share).backward() for xb, yb, share in parts])
        full.zero_grad()
        loss_fn(twin, x, y).backward()
        full.step(lambda: loss_fn(twin, x, y).backward())
    for a, b in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(a, b, atol=1e-13, rtol=1e-12)


def test_state_dict_resumes_exactly_and_schedulers_act_on_the_base():
    def run(model, opt, steps):
        for t in steps:
            x, y = data(seed=t)
            opt.zero_grad()
            loss_fn(model, x, y).backward()
            opt.step(lambda: loss_fn(model, x, y).backward())

    model = make_model()
    opt = CurvatureSAM(torch.optim.Adam(model.parameters(), lr=0.01), rho=RHO, beta2=BETA2)
    run(model, opt, range(2))
    saved_model, saved_opt = copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict())
    run(model, opt, range(2, 4))
    resumed = make_model(seed=5)
    resumed.load_state_dict(saved_model)
    opt2 = CurvatureSAM(torch.optim.Adam(resumed.parameters(), lr=0.01), rho=RHO, beta2=BETA2)
    opt2.load_state_dict(saved_opt)
    assert opt2.param_groups is opt2.base.param_groups
    run(resumed, opt2, range(2, 4))
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), resumed.parameters()))
    scheduler = torch.optim.lr_scheduler.StepLR(opt2, step_size=1, gamma=0.5)
    run(resumed, opt2, range(1))
    scheduler.step()
    assert opt2.base.param_groups[0]["lr"] == pytest.approx(0.005)


def test_preserved_buffers_restores_batchnorm_statistics():
    model = nn.Sequential(nn.Linear(5, 4), nn.BatchNorm1d(4)).train()
    before = [b.clone() for b in model.buffers()]
    with preserved_buffers(model):
        model(torch.randn(8, 5))
        assert not torch.equal(model[1].running_mean, before[0])
    assert all(torch.equal(a, b) for a, b in zip(model.buffers(), before))


def test_errors():
    model = make_model()
    with pytest.raises(TypeError, match="base must be a torch.optim.Optimizer"):
        CurvatureSAM(model.parameters())
    bad = ((dict(rho=-1.0), "rho must be"), (dict(beta2=1.0), "beta2 must be"), (dict(eps=0.0), "eps must be"))
    for kwargs, message in bad:
        with pytest.raises(ValueError, match=message):
            CurvatureSAM(torch.optim.SGD(model.parameters(), lr=0.1), **kwargs)
    opt = CurvatureSAM(torch.optim.SGD(model.parameters(), lr=0.1))
    with pytest.raises(RuntimeError, match="call loss.backward\\(\\) before first_step"):
        opt.first_step()
    with pytest.raises(RuntimeError, match="second_step\\(\\) without first_step"):
        opt.second_step()
    with pytest.raises(ValueError, match="needs closure"):
        opt.step()
    x, y = data()
    loss_fn(model, x, y).backward()
    opt.first_step()
    with pytest.raises(RuntimeError, match="called twice"):
        opt.first_step()
