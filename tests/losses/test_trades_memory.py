"""Memory-saving TRADES under autocast: no saved weight casts, so <= 0.55x the standard peak in every precision,
with the gradients of plain autograd on the two branches."""

from __future__ import annotations

import contextlib
import copy
import functools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rft_fast import ops, reference
from rft_fast.bench.memory import saved_activation_peak
from rft_fast.losses import TRADESLoss

NUM_CLASSES = 5
AMP = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def _shift(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (x + 0.01).clamp(0, 1)


def _weighty(channels_last: bool = False) -> nn.Module:
    """BatchNorm + dropout and a wide head: at batch 4 the weights outweigh the activations, as in fine-tuning
    a large backbone at a small batch, so saving the weight casts shows in the peak."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Dropout(0.2),
        nn.Flatten(),
        nn.Linear(8 * 8 * 8, 256),
        nn.ReLU(),
        nn.Linear(256, NUM_CLASSES),
    )
    return model.to(memory_format=torch.channels_last) if channels_last else model


def _batch(n: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 16, 16, generator=gen), torch.randint(0, NUM_CLASSES, (n,), generator=gen)


def _autocast(amp: str):
    return torch.autocast("cpu", dtype=AMP[amp]) if AMP[amp] is not None else contextlib.nullcontext()


KL_PGD = functools.partial(reference.pgd_attack, eps=8 / 255, step_size=2 / 255, steps=1, loss="kl")


def _peak(model: nn.Module, memory_saving: bool, amp: str, attack=_shift) -> int:
    x, y = _batch()
    criterion = TRADESLoss(attack, memory_saving=memory_saving)

    def step() -> None:
        with _autocast(amp):
            loss = criterion(model, x, y)
        loss.backward()

    return saved_activation_peak(step)


@pytest.mark.parametrize("attack", (_shift, KL_PGD), ids=("no-graph-attack", "pgd-kl"))
@pytest.mark.parametrize("amp", tuple(AMP))
def test_peak_is_at_most_055_of_standard_in_every_precision(amp, attack):
    """The attack's own graph (eval mode) keeps no weight casts either, or it would set the peak."""
    model = _weighty().train()
    std, ms = _peak(model, False, amp, attack), _peak(model, True, amp, attack)
    assert ms <= 0.55 * std, (amp, ms, std)
    # The recomputed branch's activations are still counted (the hooks pass them to the measure's hooks):
    # about one branch, the standard holding two (and, under autocast, its weight casts as well).
    one_branch = _peak(model, True, "none") * (0.4 if AMP[amp] is not None else 1.0)
    assert ms >= 0.9 * one_branch, (amp, ms, one_branch)


@pytest.mark.parametrize("channels_last", (False, True))
@pytest.mark.parametrize("amp", tuple(AMP))
def test_gradients_equal_autograd_of_both_branches_bitwise(amp, channels_last):
    """Against one autograd graph of the same objective over the two branches, each forwarded in an autocast
    region of its own (so neither reuses the other's weight casts), in train mode with BatchNorm and dropout
    (same seed, clean then adversarial: the same draws). The recompute redoes the same ops on the same
    inputs and each recast weight is bitwise the original cast, so every gradient and buffer is equal."""
    ms_model = _weighty(channels_last).train()
    ref_model = copy.deepcopy(ms_model)
    x, y = _batch(seed=1)
    x_adv = _shift(ms_model, x, y)

    torch.manual_seed(7)
    with _autocast(amp):
        loss = TRADESLoss(_shift, beta=2.0)(ms_model, x, y)
    loss.backward()

    torch.manual_seed(7)
    with _autocast(amp):
        lc = ref_model(x)
    with _autocast(amp):
        la = ref_model(x_adv)
    expected = ops.trades_objective(lc, la, y, 2.0)
    expected.backward()

    assert torch.equal(loss, expected)
    for (name, p), q in zip(ms_model.named_parameters(), ref_model.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=0, atol=0, msg=lambda m, n=name: f"grad {n}: {m}")
    for (name, b), c in zip(ms_model.named_buffers(), ref_model.buffers()):
        torch.testing.assert_close(b, c, rtol=0, atol=0, msg=lambda m, n=name: f"buffer {n}: {m}")


@pytest.mark.parametrize("batch", (1, 3))
def test_float64_gradients_equal_plain_reference(batch):
    """CE + beta KL written out with rft_fast.reference, by autograd, in float64 and train mode."""
    ms_model = _weighty().double().train()
    ref_model = copy.deepcopy(ms_model)
    x, y = _batch(n=batch, seed=2)
    x = x.double()
    torch.manual_seed(3)
    loss = TRADESLoss(_shift, beta=6.0)(ms_model, x, y)
    loss.backward()
    torch.manual_seed(3)
    lc, la = ref_model(x), ref_model(_shift(ref_model, x, y))
    expected = F.cross_entropy(lc, y) + 6.0 * reference.trades_kl(la, lc)
    expected.backward()
    torch.testing.assert_close(loss, expected, rtol=1e-10, atol=1e-12)
    for p, q in zip(ms_model.parameters(), ref_model.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-9, atol=1e-12)


def test_outer_saved_tensor_hooks_see_the_recomputed_activations():
    """A user's hooks (here save_on_cpu-style packing) keep applying to everything but the weight casts."""
    model = _weighty().train()
    x, y = _batch()
    packed: list[tuple[torch.dtype, tuple[int, ...]]] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        packed.append((t.dtype, tuple(t.shape)))
        return t.detach().clone()

    with _autocast("bf16"):
        loss = TRADESLoss(_shift)(model, x, y)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss.backward()
    weight_shapes = {s for p in model.parameters() if p.dim() > 1 for s in (tuple(p.shape), tuple(p.shape)[::-1])}
    assert any(dtype == torch.bfloat16 and shape[0] == x.shape[0] for dtype, shape in packed)
    assert not any(dtype == torch.bfloat16 and shape in weight_shapes for dtype, shape in packed), packed
