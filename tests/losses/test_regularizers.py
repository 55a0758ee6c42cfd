"""Gram alignment, consistency, the shifted view and the GRACE / consistency criteria.

Formulas are checked against float64 references written here; the Gram loss's invariances are the ones its
docstring states (and one it does not have); each training option runs a few optimizer steps on the built-in
digits dataset with a tiny timm backbone and stays finite. Torch runs single-threaded here: the test machine's
two cores are shared, and oversubscribed OpenMP threads made a tiny model's step ~50x slower.
"""

from __future__ import annotations

import dataclasses

import pytest
import tiny
import torch
import torch.nn.functional as F

from rft_fast import data, models
from rft_fast.attacks import APGD
from rft_fast.losses import ClassicATLoss, TRADESLoss
from rft_fast.regularizers import (
    ConsistencyLoss,
    GraceLoss,
    Shift,
    consistency_loss,
    draw_seed,
    features_and_logits,
    gram_alignment_loss,
    gram_matrix,
)
from rft_fast.train.grace import CurvatureSAM, preserved_buffers
from rft_fast.train.schedule import EpsSchedule

SHAPES = ((8, 16), (5, 3), (1, 7))  # (N, D); N = 1 and D < N deliberately odd


@pytest.fixture(scope="module", autouse=True)
def _tiny_backbones_single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with tiny.registered():
        yield
    torch.set_num_threads(threads)


def make_model(name: str = "tiny_resnet", seed: int = 0) -> models.Normalized:
    torch.manual_seed(seed)
    return models.create(name, 10, random_init=True, image_size=32)


def batch(n: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 32, 32, generator=gen), torch.randint(0, 10, (n,), generator=gen)


def reference_gram_loss(clean: torch.Tensor, *views: torch.Tensor) -> float:
    """Float64, element by element: cosine similarity of every pair of samples, squared differences."""

    def gram(f):
        f = f.double()
        n = f.shape[0]
        return [[float(f[i] @ f[j] / (f[i].norm() * f[j].norm())) for j in range(n)] for i in range(n)]

    g, n = gram(clean), clean.shape[0]
    per_view = [sum((g[i][j] - gv[i][j]) ** 2 for i in range(n) for j in range(n)) / n**2 for gv in map(gram, views)]
    return sum(per_view) / len(per_view)


def features(shape, seed):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=gen, dtype=torch.float64) for _ in range(3)]


# ---------------------------------------------------------------------------------------------- Gram alignment
@pytest.mark.parametrize("shape", SHAPES)
def test_gram_loss_matches_reference(shape):
    clean, adv, shifted = features(shape, 1)
    expected = reference_gram_loss(clean, adv, shifted)
    assert gram_alignment_loss(clean, adv, shifted).item() == pytest.approx(expected, rel=1e-10, abs=1e-14)
    expected = reference_gram_loss(clean, adv)
    assert gram_alignment_loss(clean.float(), adv.float()).item() == pytest.approx(expected, rel=1e-5, abs=1e-7)
    assert gram_matrix(clean.float()).dtype == torch.float32 and gram_matrix(clean.half()).dtype == torch.float32


@pytest.mark.parametrize("shape", SHAPES)
def test_gram_loss_is_zero_for_identical_features(shape):
    clean, _, _ = features(shape, 2)
    assert gram_alignment_loss(clean, clean.clone(), clean.clone()).item() == 0.0
    assert gram_alignment_loss(clean, 3.0 * clean).item() == pytest.approx(0.0, abs=1e-15)  # rows rescaled


def test_gram_loss_invariances_as_documented():
    clean, adv, shifted = features((8, 16), 3)
    loss = gram_alignment_loss(clean, adv, shifted).item()
    assert loss > 1e-3
    batch_perm, dim_perm = torch.randperm(8), torch.randperm(16)
    q, _ = torch.linalg.qr(torch.randn(16, 16, dtype=torch.float64))
    same_batch = gram_alignment_loss(clean[batch_perm], adv[batch_perm], shifted[batch_perm]).item()
    same_dims = gram_alignment_loss(clean[:, dim_perm], adv[:, dim_perm], shifted[:, dim_perm]).item()
    rotated = gram_alignment_loss(clean @ q, adv @ q, shifted @ q).item()
    assert same_batch == pytest.approx(loss, rel=1e-12)
    assert same_dims == pytest.approx(loss, rel=1e-12)
    assert rotated == pytest.approx(loss, rel=1e-10)
    one_view_only = gram_alignment_loss(clean, adv[batch_perm.roll(1)], shifted).item()
    assert abs(one_view_only - loss) > 1e-3  # the views' samples must correspond


@pytest.mark.parametrize("shape", SHAPES[:2])
def test_gram_loss_gradients(shape):
    clean, adv, shifted = (f.requires_grad_() for f in features(shape, 4))
    assert torch.autograd.gradcheck(gram_alignment_loss, (clean, adv, shifted))
    # float32 gradients against the float64 ones, with an upstream gradient that is not 1
    grads64 = torch.autograd.grad(2 * gram_alignment_loss(clean, adv, shifted), (clean, adv, shifted))
    f32 = [f.detach().float().requires_grad_() for f in (clean, adv, shifted)]
    grads32 = torch.autograd.grad(2 * gram_alignment_loss(*f32), f32)
    for g32, g64 in zip(grads32, grads64):
        torch.testing.assert_close(g32.double(), g64, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(
    "args, message",
    [
        ((torch.zeros(4, 3),), "at least one view"),
        ((torch.zeros(4, 3), torch.zeros(4, 2)), r"views\[0\] must have the clean features' shape"),
        ((torch.zeros(4, 3, 1), torch.zeros(4, 3, 1)), "clean must be a float tensor of features"),
        ((torch.zeros(4, 3), torch.zeros(4, 3, dtype=torch.int64)), r"views\[0\] must be a float tensor"),
    ],
)
def test_gram_loss_rejects_bad_features(args, message):
    with pytest.raises(ValueError, match=message):
        gram_alignment_loss(*args)


# ---------------------------------------------------------------------------------------------- consistency
def test_consistency_loss_is_symmetric_kl_and_zero_for_identical_views():
    gen = torch.Generator().manual_seed(5)
    a, b = torch.randn(6, 10, generator=gen), torch.randn(6, 10, generator=gen)
    pa, pb = F.softmax(a.double(), 1), F.softmax(b.double(), 1)
    kl = lambda p, q: (p * (p.log() - q.log())).sum(1).mean()  # noqa: E731
    expected = ((kl(pa, pb) + kl(pb, pa)) / 2).item()
    assert consistency_loss(a, b).item() == pytest.approx(expected, rel=1e-5)
    assert consistency_loss(b, a).item() == pytest.approx(expected, rel=1e-5)
    assert consistency_loss(a, a.clone()).item() == pytest.approx(0.0, abs=1e-7)
    a.requires_grad_()
    (grad,) = torch.autograd.grad(consistency_loss(a, b), a)
    a64 = a.detach().double().requires_grad_()
    pa64 = F.softmax(a64, 1)
    (ref,) = torch.autograd.grad((kl(pa64, pb) + kl(pb, pa64)) / 2, a64)
    torch.testing.assert_close(grad.double(), ref, atol=1e-6, rtol=1e-4)


# ---------------------------------------------------------------------------------------------- features, shift
@pytest.mark.parametrize("name", ["tiny_resnet", "tiny_vit"])
def test_features_and_logits_is_one_forward_of_the_model(name):
    model = make_model(name).eval()
    x, _ = batch(4)
    feats, logits = features_and_logits(model, x)
    assert feats.dim() == 2 and feats.shape[0] == 4
    torch.testing.assert_close(logits, model(x), atol=1e-5, rtol=1e-5)
    with pytest.raises(TypeError, match="needs a timm model"):
        features_and_logits(torch.nn.Linear(3, 2), x)


def test_shift_is_reproducible_from_seed_and_draw_count():
    x, _ = batch(6)
    a, b = Shift(seed=3), Shift(seed=3)
    first, second = a(x), a(x)
    assert torch.equal(first, b(x)) and not torch.equal(first, second)
    resumed = Shift(seed=3)
    resumed.load_state_dict(b.state_dict())
    assert torch.equal(resumed(x), second)
    assert not torch.equal(Shift(seed=4)(x), first)
    assert first.min() >= 0 and first.max() <= 1 and first.dtype == x.dtype
    cl = Shift()(x.contiguous(memory_format=torch.channels_last))
    assert cl.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(Shift(brightness=0.0, contrast=0.0, noise=0.0)(x), x)  # (x - m) + m: rounding


def test_shift_formula():
    x, _ = batch(2)
    shift = Shift(brightness=0.5, contrast=0.3, noise=0.1, seed=7)
    gen = torch.Generator().manual_seed(draw_seed(7, 0))
    b = 1 + 0.5 * (2 * torch.rand(2, 1, 1, 1, generator=gen) - 1)
    c = 1 + 0.3 * (2 * torch.rand(2, 1, 1, 1, generator=gen) - 1)
    z = torch.randn(x.shape, generator=gen)
    m = (b * x).mean((1, 2, 3), keepdim=True)
    torch.testing.assert_close(shift(x), (c * (b * x - m) + m + 0.1 * z).clamp(0, 1))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(brightness=1.0), "brightness must be a number in"),
        (dict(contrast=-0.1), "contrast must be"),
        (dict(noise=-1.0), "noise must be a finite number >= 0"),
        (dict(seed=-1), "seed must be an int >= 0"),
    ],
)
def test_shift_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Shift(**kwargs)


# ---------------------------------------------------------------------------------------------- criteria
class CountingAttack:
    def __init__(self, attack):
        self.attack, self.calls = attack, 0

    def __call__(self, model, x, y):
        self.calls += 1
        return self.attack(model, x, y)


@pytest.mark.parametrize("base_kind", ["classic_at", "trades"])
def test_grace_loss_is_base_plus_weighted_gram_with_one_attack(base_kind):
    model = make_model().eval()  # eval: each call's BatchNorm update would change the next call's attack
    x, y = batch(8)
    attack = CountingAttack(APGD(eps=8 / 255, steps=2, random_start=False))
    base = ClassicATLoss(attack) if base_kind == "classic_at" else TRADESLoss(attack, beta=3.0)
    plain = base(model, x, y).item()
    assert GraceLoss(base, gram_weight=0.0)(model, x, y).item() == pytest.approx(plain, rel=1e-5)
    attack.calls = 0
    loss = GraceLoss(base, gram_weight=2.5, shift=Shift(seed=9))(model, x, y)
    assert attack.calls == 1
    x_adv = APGD(eps=8 / 255, steps=2, random_start=False)(model, x, y)
    views = [features_and_logits(model, v)[0] for v in (x, x_adv, Shift(seed=9)(x))]
    assert loss.item() == pytest.approx(plain + 2.5 * gram_alignment_loss(*views).item(), rel=1e-5)
    assert gram_alignment_loss(*views).item() > 0


def test_consistency_loss_criterion():
    model = make_model().eval()
    x, y = batch(8)
    base = ClassicATLoss(APGD(eps=8 / 255, steps=2, random_start=False))
    plain = base(model, x, y).item()
    assert ConsistencyLoss(base, weight=5.0, augment=lambda t: t)(model, x, y).item() == pytest.approx(plain, rel=1e-5)
    loss = ConsistencyLoss(base, weight=0.5, augment=Shift(seed=2))(model, x, y)
    views = Shift(seed=2)
    expected = plain + 0.5 * consistency_loss(model(views(x)), model(views(x))).item()
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_criteria_reject_bad_arguments():
    base = ClassicATLoss(APGD(steps=1))
    with pytest.raises(TypeError, match="base must be a ClassicATLoss or TRADESLoss"):
        GraceLoss(lambda m, x, y: x.sum())
    with pytest.raises(ValueError, match="gram_weight must be a finite number >= 0"):
        GraceLoss(base, gram_weight=-1.0)
    with pytest.raises(ValueError, match="weight must be a finite number >= 0"):
        ConsistencyLoss(base, weight=float("inf"))
    with pytest.raises(TypeError, match="base must be a criterion"):
        ConsistencyLoss(3)


# ---------------------------------------------------------------------------------------------- training
@pytest.fixture(scope="module")
def digits_batches():
    splits = data.build("digits", None, image_size=32)
    loader = data.loader(splits.train, 32, shuffle=True, seed=0, workers=0)
    out = []
    for xb, yb in loader:
        out.append(data.to_device(xb, yb, "cpu"))
        if len(out) == 4:
            return out


OPTIONS = ("grace-classic_at", "grace-trades", "consistency-trades", "curriculum-classic_at")


@pytest.mark.parametrize("option", OPTIONS)
def test_each_option_trains_on_digits_without_nan(option, digits_batches):
    model = make_model().train()
    before = [p.detach().clone() for p in model.parameters()]
    attack = APGD(eps=8 / 255, steps=2, random_start=False)
    base = ClassicATLoss(attack) if option.endswith("classic_at") else TRADESLoss(attack, beta=6.0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    schedule = EpsSchedule("linear", eps=8 / 255, eps_start=1 / 255, warmup=0.5)
    if option.startswith("grace"):
        criterion, optimizer = GraceLoss(base, gram_weight=1.0), CurvatureSAM(optimizer, rho=0.05)
    elif option.startswith("consistency"):
        criterion = ConsistencyLoss(base, weight=1.0)
    losses = []
    for step, (x, y) in enumerate(digits_batches):
        optimizer.zero_grad(set_to_none=True)
        if option.startswith("grace"):
            b = criterion.batch(model, x, y)
            loss = criterion.objective(model, b)
            loss.backward()

            def closure(b=b):
                with preserved_buffers(model):
                    criterion.objective(model, b).backward()

            optimizer.step(closure)
        else:
            if option.startswith("curriculum"):
                eps = schedule(step, len(digits_batches))
                criterion = ClassicATLoss(dataclasses.replace(attack, eps=eps))
            loss = criterion(model, x, y)
            loss.backward()
            optimizer.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses))), losses
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert any(not torch.equal(p, b) for p, b in zip(model.parameters(), before))
