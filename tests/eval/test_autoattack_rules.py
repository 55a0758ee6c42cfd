"""AutoAttack's rules around the attack itself: the few-class plan (targets <= C - 1, no targeted DLR below 4
classes, no DLR at all with 2), the ball / box check with its rounding slack, and chunked progress."""

from __future__ import annotations

import digits
import pytest
import torch
from torch import nn

from rft_fast.eval import autoattack
from rft_fast.eval.autoattack import ATOL, BALL_RTOL, attack_plan, enforce_constraints


class FirstClasses(nn.Module):
    """A C-class classifier made of the digits CNN's first C logits."""

    def __init__(self, model: nn.Module, c: int) -> None:
        super().__init__()
        self.model, self.c = model, c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)[:, : self.c]


@pytest.fixture(scope="module")
def cnn():
    model, x, y, _ = digits.train(epochs=4)
    return model, x, y


@pytest.mark.parametrize(
    "norm, mode, c, attacks, apgd_t, fab_t",
    [
        ("Linf", "standard", 10, ("apgd-ce", "apgd-t", "fab-t", "square"), 9, 9),
        ("L1", "standard", 10, ("apgd-ce", "apgd-t", "fab-t", "square"), 5, 9),
        ("L2", "standard", 101, ("apgd-ce", "apgd-t", "fab-t", "square"), 9, 9),
        ("Linf", "standard", 5, ("apgd-ce", "apgd-t", "fab-t", "square"), 4, 4),
        ("L1", "fast", 4, ("apgd-ce", "apgd-t"), 3, 3),
        ("Linf", "standard", 3, ("apgd-ce", "apgd-dlr", "fab-t", "square"), 2, 2),
        ("L2", "fast", 3, ("apgd-ce", "apgd-dlr"), 2, 2),
        ("Linf", "standard", 2, ("apgd-ce", "fab-t", "square"), 1, 1),
        ("L1", "fast", 2, ("apgd-ce",), 1, 1),
    ],
)
def test_attack_plan_for_few_classes(norm, mode, c, attacks, apgd_t, fab_t):
    plan = attack_plan(norm, mode, c)
    assert (plan.attacks, plan.apgd_targets, plan.fab_targets, plan.n_classes) == (attacks, apgd_t, fab_t, c)
    assert plan.record() == {"attacks": list(attacks), "apgd_targets": apgd_t, "fab_targets": fab_t, "n_classes": c}


@pytest.mark.parametrize("c", [1, 0, 2.0, True])
def test_attack_plan_needs_two_classes(c):
    with pytest.raises(ValueError, match="n_classes"):
        attack_plan("Linf", "fast", c)


@pytest.mark.parametrize("c", [2, 3, 4])
def test_few_class_models_evaluate_and_record_their_plan(cnn, c):
    model, x, y = cnn
    keep = torch.nonzero(y < c)[:8, 0]
    few = FirstClasses(model, c).eval()
    r = autoattack(few, x[keep], y[keep], norm="Linf", eps=8 / 255, mode="fast")
    assert r.plan == attack_plan("Linf", "fast", c)
    assert 0 <= r.robust <= r.clean <= 1 and r.n == len(keep)
    # a strong budget breaks the few-class model too: the attacks really ran
    assert autoattack(few, x[keep], y[keep], norm="Linf", eps=0.5, mode="fast").robust < r.clean


def test_standard_mode_configures_the_targets_for_three_classes(cnn, monkeypatch):
    import pyautoattack

    model, x, y = cnn
    keep = torch.nonzero(y < 3)[:4, 0]
    seen = []

    def spy(self, x_orig, y_orig, **kw):
        seen.append((list(self.attacks_to_run), self.apgd_targeted.n_target_classes, self.fab.n_target_classes))
        return x_orig.clone(), y_orig.clone()

    monkeypatch.setattr(pyautoattack.AutoAttack, "run_standard_evaluation", spy)
    autoattack(FirstClasses(model, 3).eval(), x[keep], y[keep], norm="L2", mode="standard")
    assert seen == [(["apgd-ce", "apgd-dlr", "fab-t", "square"], 2, 2)]


def test_labels_beyond_the_logits_are_refused(cnn):
    model, x, y = cnn
    with pytest.raises(ValueError, match="label 9 but the model outputs 3 logits"):
        autoattack(FirstClasses(model, 3), x[:20], y[:20].clone().fill_(9), norm="Linf", mode="fast")


@pytest.mark.parametrize("norm, eps", [("Linf", 4 / 255), ("L2", 0.5), ("L1", 75.0)])
def test_rounding_excess_is_projected_and_counted(norm, eps):
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(5, 3, 7, 9, generator=gen)
    x[0, 0, 0, 0], x[1, 0, 0, 0] = 1.0, 0.0
    delta = torch.randn(x.shape, generator=gen)
    scale = {
        "Linf": delta.flatten(1).abs().amax(1),
        "L2": delta.flatten(1).norm(dim=1),
        "L1": delta.flatten(1).abs().sum(1),
    }[norm]
    x_adv = x + delta * (eps / scale).view(-1, 1, 1, 1) * (1 + BALL_RTOL / 2)  # just over the ball
    x_adv = x_adv.clamp(0, 1)
    x_adv[0, 0, 0, 0], x_adv[1, 0, 0, 0] = 1.0 + ATOL / 2, -ATOL / 2  # just outside the box
    out, moved = enforce_constraints(x_adv, x, norm, eps)
    assert moved >= 2
    assert out.min() >= 0 and out.max() <= 1
    d = (out - x).flatten(1)
    dist = {"Linf": d.abs().amax(1), "L2": d.norm(dim=1), "L1": d.abs().sum(1)}[norm]
    assert bool((dist <= eps * (1 + 1e-6)).all())
    assert (out - x_adv).abs().max() <= eps * BALL_RTOL + ATOL  # moved by rounding-level amounts only
    same, none = enforce_constraints(out, x, norm, eps)
    assert none == 0 and torch.equal(same, out)


def test_a_real_violation_names_the_constraint_the_sample_and_the_bound():
    x = torch.full((3, 1, 2, 2), 0.5)
    outside_box = x.clone()
    outside_box[2, 0, 1, 1] = 1.01
    with pytest.raises(RuntimeError, match=r"outside the \[0, 1\] box: sample 2 has values in \[0.5, 1.01\]"):
        enforce_constraints(outside_box, x, "Linf", 1.0)
    outside_ball = x.clone()
    outside_ball[1] += 0.1
    with pytest.raises(RuntimeError, match=r"outside the L2 ball: sample 1 is at distance 0.2 > eps 0.1"):
        enforce_constraints(outside_ball, x, "L2", 0.1)


def test_autoattack_projects_rounding_from_pyautoattack(cnn, monkeypatch):
    import pyautoattack

    model, x, y = cnn
    x = x[:6].clone()
    x[:, :, 0, 0] = 1.0

    def rounding(self, x_orig, y_orig, **kw):
        out = x_orig.clone()
        out[:, :, 0, 0] += 3e-7  # float32 rounding in a projection
        return out, y_orig.clone()

    monkeypatch.setattr(pyautoattack.AutoAttack, "run_standard_evaluation", rounding)
    r = autoattack(model, x, y[:6], norm="L1", mode="fast")
    assert r.projected == 6 and r.robust == r.clean


def test_chunks_report_progress_in_order(cnn):
    model, x, y = cnn
    seen = []
    r = autoattack(
        model,
        x[:10],
        y[:10],
        norm="L2",
        eps=0.5,
        mode="fast",
        batch_size=4,
        on_batch=lambda done, n: seen.append((done, n)),
    )
    assert seen == [(4, 10), (8, 10), (10, 10)] and r.n == 10 and r.batch_size == 4
