"""Robust training losses, called as criterion(model, x, y) -> scalar; loss.backward() gives the gradient.

ClassicATLoss: cross-entropy on the adversarial batch (Madry et al. 2018).
TRADESLoss: CE(model(x), y) + beta * KL(softmax(model(x)) || softmax(model(x_adv))) (Zhang et al. 2019),
by default memory-saving: the clean and the adversarial activation graphs are never alive together.
Attacks run with every module in eval mode and each module's mode is restored afterwards.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from rft_fast import ops
from rft_fast.modes import eval_mode

Attack = Callable[[nn.Module, Tensor, Tensor], Tensor]


def check_batch(x: Tensor, y: Tensor) -> None:
    """Refuses anything but a float image batch x (N, ...) with int64 labels y (N,) (the losses' and GRACE's inputs)."""
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.dim() < 2:
        raise ValueError(f"x must be a floating-point image batch (N, ...), got {getattr(x, 'shape', type(x))}")
    if not isinstance(y, Tensor) or y.dtype != torch.int64 or y.shape != x.shape[:1]:
        raise ValueError(f"y must be int64 labels of shape ({x.shape[0]},), got {getattr(y, 'dtype', type(y))}")


def adversarial_examples(attack: Attack, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """The attack's examples for a training loss: the attack runs in eval mode (modes restored after), detached.

    Its graphs keep no weight casts under autocast (_lean_casts): the attack's graph then holds about one
    branch's activations, no more than memory-saving TRADES' recompute, instead of that plus every weight."""
    trainable = tuple(p for p in model.parameters() if p.requires_grad)
    with eval_mode(model), _lean_casts(trainable, _autocast_state(x.device)):
        x_adv = attack(model, x, y)
    return x_adv.detach()


@dataclass
class ClassicATLoss:
    """Cross-entropy on attack(model, x, y), the attack run in eval mode (Classic AT)."""

    attack: Attack

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        check_batch(x, y)
        x_adv = adversarial_examples(self.attack, model, x, y)
        return nn.functional.cross_entropy(model(x_adv).float(), y)


@dataclass
class TRADESLoss:
    """TRADES: CE(clean) + beta * KL(clean || adv), the model forwarding both batches in its own mode.

    The attack is a parameter (the study uses APGD-CE; the original TRADES maximizes the KL from the clean
    prediction). memory_saving=True keeps only logits between the call and backward() and recomputes each
    branch in backward, one after the other (peak activations: the larger branch instead of both), with
    the same RNG draws and without touching BatchNorm statistics a second time; gradients equal the
    standard computation's. Under autocast the recompute also keeps no low-precision weight copies: see
    _RecastParameterCopies. Cost: two extra forward passes without grad, and one weight cast per use in backward.
    """

    attack: Attack
    beta: float = 1.0
    memory_saving: bool = True

    def __post_init__(self) -> None:
        ops.check_beta(self.beta)

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        check_batch(x, y)
        x_adv = adversarial_examples(self.attack, model, x, y)
        if not self.memory_saving:
            logits_clean = model(x)
            return ops.trades_objective(logits_clean, model(x_adv), y, self.beta)
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise ValueError("model has no parameter with requires_grad=True: nothing to train")
        return _RecomputedTRADES.apply(_Closure(model, x, x_adv, y, self.beta), *params)


@dataclass
class _Closure:
    model: nn.Module
    x: Tensor
    x_adv: Tensor
    y: Tensor
    beta: float


def _rng_states(device: torch.device) -> tuple[Tensor, Tensor | None]:
    return torch.get_rng_state(), torch.cuda.get_rng_state(device) if device.type == "cuda" else None


def _set_rng_states(states: tuple[Tensor, Tensor | None], device: torch.device) -> None:
    torch.set_rng_state(states[0])
    if states[1] is not None:
        torch.cuda.set_rng_state(states[1], device)


def _autocast_state(device: torch.device) -> dict[str, object]:
    return {
        "device_type": device.type,
        "enabled": torch.is_autocast_enabled(device.type),
        "dtype": torch.get_autocast_dtype(device.type),
    }


@dataclass(frozen=True)
class _CastRecipe:
    """A saved tensor that is (a view of) param.to(dtype, device), kept as the parameter plus its geometry."""

    param: Tensor
    dtype: torch.dtype
    device: torch.device
    size: torch.Size
    stride: tuple[int, ...]
    offset: int

    def recast(self) -> Tensor:
        cast = self.param.detach().to(device=self.device, dtype=self.dtype)
        return cast.as_strided(self.size, self.stride, self.offset)


def _copied_parameter(t: Tensor, params: dict[int, Tensor]) -> Tensor | None:
    """The parameter in params that t (or t's base) is a dtype/device copy of, made in grad mode; else None."""
    base = t if t._base is None else t._base
    fn = base.grad_fn
    if fn is None or type(fn).__name__ != "ToCopyBackward0" or len(fn.next_functions) != 1:
        return None
    p = getattr(fn.next_functions[0][0], "variable", None)  # an AccumulateGrad node's leaf
    if p is None or params.get(id(p)) is not p or base.shape != p.shape or base.stride() != p.stride():
        return None
    return p


class _RecastParameterCopies(torch.autograd.graph.saved_tensors_hooks):
    """Saved-tensor hooks for the recompute: a saved copy of a trainable parameter (autocast's bf16/fp16 weight
    cast, or an explicit .to() in the model) is stored as a _CastRecipe and recast when backward unpacks it.

    Why: a recomputed branch that saves its weight casts holds activations A plus all casts W at its peak,
    against 2A + W for the standard computation (whose two branches share autocast's cached casts), so the
    saving shrinks to (A + W) / (2A + W), 0.7-0.9 at small batches in bf16. Casting once per step and sharing
    the copies between both recomputed branches keeps that same A + W. Not saving the copies at all leaves A
    plus one layer's transient cast: at most about half the standard peak, as in float32. The recast is
    bitwise the original cast, so gradients do not change. Every other saved tensor goes through the hooks
    that were active outside (a memory measure, save_on_cpu), as torch.utils.checkpoint does.
    """

    def __init__(self, params: tuple[Tensor, ...]) -> None:
        by_id = {id(p): p for p in params}
        outer = torch._C._autograd._top_saved_tensors_default_hooks(False)

        def pack(t: Tensor) -> object:
            p = _copied_parameter(t, by_id)
            if p is not None:
                return _CastRecipe(p, t.dtype, t.device, t.size(), t.stride(), t.storage_offset())
            return outer[0](t) if outer is not None else t.detach()

        def unpack(packed: object) -> Tensor:
            if isinstance(packed, _CastRecipe):
                return packed.recast()
            return outer[1](packed) if outer is not None else packed

        super().__init__(pack, unpack)


@contextlib.contextmanager
def _lean_casts(params: tuple[Tensor, ...], autocast: dict[str, object]) -> Iterator[None]:
    """Autocast as given, its cache off (it would hold every weight cast until the region ends), and the saved
    casts of params recast in backward (_RecastParameterCopies): weight copies live one op at a time."""
    with torch.autocast(**autocast, cache_enabled=False), _RecastParameterCopies(params):
        yield


class _RecomputedTRADES(torch.autograd.Function):
    """Forward: both branches without grad (BatchNorm statistics updated once each, clean then adversarial,
    as the standard computation does). Backward: the adversarial branch is recomputed with grad and
    backpropagated, freed, then the clean branch; each replays its recorded RNG state and leaves buffers as
    they were."""

    @staticmethod
    def forward(ctx, c: _Closure, *params: Tensor) -> Tensor:  # type: ignore[override]
        dev = c.x.device
        rng_clean = _rng_states(dev)
        logits_clean = c.model(c.x)
        rng_adv = _rng_states(dev)
        logits_adv = c.model(c.x_adv)
        ctx.rng = (rng_clean, rng_adv, _rng_states(dev))
        ctx.autocast = _autocast_state(dev)
        ctx.closure = c
        # The parameters are saved too so that autograd refuses them changed in place before backward; the
        # originals are kept for identity, which saved-tensor hooks (a memory measure) would not preserve.
        ctx.params = params
        ctx.save_for_backward(logits_clean, logits_adv, *params)
        return ops.trades_objective(logits_clean, logits_adv, c.y, c.beta)

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        c: _Closure = ctx.closure
        logits_clean, logits_adv, *_ = ctx.saved_tensors
        params: tuple[Tensor, ...] = ctx.params
        rng_clean, rng_adv, rng_after = ctx.rng
        with torch.enable_grad():
            lc, la = logits_clean.detach().requires_grad_(), logits_adv.detach().requires_grad_()
            g_clean, g_adv = torch.autograd.grad(
                ops.trades_objective(lc, la, c.y, c.beta, check=False), (lc, la), grad_out
            )
        buffers = [b.detach().clone() for b in c.model.buffers()]
        total: list[Tensor | None] = [None] * len(params)
        for rng, inputs, g in ((rng_adv, c.x_adv, g_adv), (rng_clean, c.x, g_clean)):
            _set_rng_states(rng, inputs.device)
            with torch.enable_grad(), _lean_casts(params, ctx.autocast):
                out = c.model(inputs)
            grads = torch.autograd.grad(out, params, g.to(out.dtype), allow_unused=True)
            del out
            for b, saved in zip(c.model.buffers(), buffers):  # after backward: BatchNorm saved them
                b.copy_(saved)
            total = [t if gr is None else gr if t is None else t + gr for t, gr in zip(total, grads)]
        _set_rng_states(rng_after, c.x.device)
        return (None, *total)
