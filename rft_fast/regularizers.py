"""Regularizers that compose with the robust losses: GRACE's Gram alignment and a two-view consistency loss.

Gram alignment (GRACE, part (b)). For pooled backbone features F in R^{N x D} (timm's
`forward_head(..., pre_logits=True)`), rows normalized to unit L2 norm, F^_i = F_i / max(||F_i||, 1e-8):

    G(F) = F^ F^^T                                     (N x N cosine similarities between the batch's samples)
    L_gram(F_clean; F_1, ..., F_k) = (1 / k) sum_j ||G(F_clean) - G(F_j)||_F^2 / N^2

Gradients flow through every view (the clean Gram is not a fixed target). L_gram is 0 when the views' features
are equal, and it is invariant (i) to a permutation of the batch applied to all views alike (G -> P G P^T keeps
the Frobenius norm of the difference) and (ii) to any orthogonal map of the feature space, permutations of the
D feature dimensions included, applied to all views alike (F^ Q Q^T F^^T = F^ F^^T); it is invariant to a
positive rescaling of any sample's features. It is NOT invariant to permuting one view's batch alone.

Consistency: the symmetric KL between the predictions on two views a and b,

    L_cons(a, b) = (KL(softmax(a) || softmax(b)) + KL(softmax(b) || softmax(a))) / 2,

summed over classes and averaged over the batch (ops.trades_kl, both directions, gradients into both); symmetric
because the two views are exchangeable. It is 0 for identical views.

Criteria (called as criterion(model, x, y) -> scalar, like rft_fast.losses):
  GraceLoss(base, gram_weight, shift): base in {ClassicATLoss, TRADESLoss}; runs base's attack once and returns
    base objective on (x, x_adv) + gram_weight * L_gram(F(x); F(x_adv), F(shift(x))).
  ConsistencyLoss(base, weight, augment): any criterion + weight * L_cons(model(augment(x)), model(augment(x)))
    with two independent draws of `augment`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rft_fast import ops
from rft_fast.checks import is_int, is_real
from rft_fast.losses import ClassicATLoss, TRADESLoss, adversarial_examples, check_batch
from rft_fast.models.wrapper import Normalized

Criterion = Callable[[nn.Module, Tensor, Tensor], Tensor]
_NORM_FLOOR = 1e-8


def _check_features(name: str, t: Tensor) -> None:
    if not isinstance(t, Tensor) or not t.is_floating_point() or t.dim() != 2 or t.shape[0] < 1:
        got = getattr(t, "shape", type(t))
        raise ValueError(f"{name} must be a float tensor of features (N, D) with N >= 1, got {got}")


def gram_matrix(features: Tensor) -> Tensor:
    """G = F^ F^^T (N, N) in float32 (float64 stays float64): cosine similarities between the rows of F (N, D)."""
    _check_features("features", features)
    f = features if features.dtype == torch.float64 else features.float()
    f = F.normalize(f, dim=1, eps=_NORM_FLOOR)
    return f @ f.T


def gram_alignment_loss(clean: Tensor, *views: Tensor) -> Tensor:
    """mean over views of ||G(clean) - G(view)||_F^2 / N^2 (module docstring): features (N, D), same shape each.

    Example: `gram_alignment_loss(f_clean, f_adv, f_shifted)` is GRACE's feature-alignment term.
    """
    _check_features("clean", clean)
    if not views:
        raise ValueError("gram_alignment_loss needs at least one view besides the clean features")
    for i, v in enumerate(views):
        _check_features(f"views[{i}]", v)
        if v.shape != clean.shape:
            raise ValueError(
                f"views[{i}] must have the clean features' shape {tuple(clean.shape)}, got {tuple(v.shape)}"
            )
    g = gram_matrix(clean)
    n = clean.shape[0]
    return torch.stack([(g - gram_matrix(v)).square().sum() for v in views]).mean() / n**2


def consistency_loss(logits_a: Tensor, logits_b: Tensor) -> Tensor:
    """(KL(p_a || p_b) + KL(p_b || p_a)) / 2 for logits (N, C): class sum, batch mean, float32; 0 if a == b."""
    return (ops.trades_kl(logits_b, logits_a) + ops.trades_kl(logits_a, logits_b)) / 2


def features_and_logits(model: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    """(pooled features (N, D), logits (N, C)) from one forward pass of a timm model or a `Normalized` one.

    Features are timm's pre-logits (`forward_head(forward_features(x), pre_logits=True)`), the logits the
    classifier (`get_classifier()`) applied to them, which is what model(x) computes.
    """
    net = model.backbone if isinstance(model, Normalized) else model
    if isinstance(model, Normalized):
        x = (x - model.mean.to(x.dtype)) / model.std.to(x.dtype)
    if not all(hasattr(net, a) for a in ("forward_features", "forward_head", "get_classifier")):
        raise TypeError(
            f"features_and_logits() needs a timm model (forward_features / forward_head / "
            f"get_classifier), or a Normalized one, got {type(net).__name__}"
        )
    features = net.forward_head(net.forward_features(x), pre_logits=True)
    return features, net.get_classifier()(features)


def _fraction(name: str, value: float) -> None:
    if not is_real(value, finite=False) or not 0 <= value < 1:
        raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")


def _weight(name: str, value: float) -> None:
    if not is_real(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


def draw_seed(seed: int, draw: int) -> int:
    """A 63-bit seed for draw `draw` of stream `seed`: blake2b of the pair, so that every bit depends on both
    (the CPU generator keeps only a seed's low 32 bits: seed * 2^32 + draw would repeat streams)."""
    digest = hashlib.blake2b(f"shift/{seed}/{draw}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


@dataclass
class Shift:
    """A cheap distribution shift on the device, reproducible from a seed: per image,

        x' = clip(c * (b * x - m) + m + noise * z, 0, 1),   b ~ U[1 - brightness, 1 + brightness],
        c ~ U[1 - contrast, 1 + contrast],  m = mean of b * x over the image,  z ~ N(0, I).

    Draw k (the k-th call) uses a torch.Generator on x's device seeded with `draw_seed(seed, k)`, so the draws
    are a function of (seed, k) only; `state_dict()` / `load_state_dict()` carry k across a resumption.

    Args:
        brightness: half-width of the brightness factor's range, in [0, 1) (default 0.2).
        contrast: half-width of the contrast factor's range, in [0, 1) (default 0.2).
        noise: standard deviation of the additive Gaussian noise, >= 0 (default 0.03, about 8/255).
        seed: the stream (default 0).
    """

    brightness: float = 0.2
    contrast: float = 0.2
    noise: float = 0.03
    seed: int = 0
    draws: int = field(default=0, repr=False)

    def __post_init__(self) -> None:
        _fraction("brightness", self.brightness)
        _fraction("contrast", self.contrast)
        _weight("noise", self.noise)
        for name in ("seed", "draws"):
            value = getattr(self, name)
            if not is_int(value) or value < 0:
                raise ValueError(f"{name} must be an int >= 0, got {value!r}")

    def __call__(self, x: Tensor) -> Tensor:
        """The shifted batch, like x (N, C, H, W) in [0, 1]; detached (an input, not part of the graph)."""
        gen = torch.Generator(device=x.device).manual_seed(draw_seed(self.seed, self.draws))
        self.draws += 1
        n = x.shape[0]
        shape = (n,) + (1,) * (x.dim() - 1)
        x32 = x.detach().float()
        b = 1 + self.brightness * (2 * torch.rand(shape, generator=gen, device=x.device) - 1)
        c = 1 + self.contrast * (2 * torch.rand(shape, generator=gen, device=x.device) - 1)
        z = torch.randn(x32.shape, generator=gen, device=x.device)
        bright = b * x32
        m = bright.mean(dim=tuple(range(1, x.dim())), keepdim=True)
        out = (c * (bright - m) + m + self.noise * z).clamp_(0, 1)
        return torch.empty_like(x, requires_grad=False).copy_(out)  # x's dtype and memory format

    def state_dict(self) -> dict[str, int]:
        return {"draws": self.draws}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.draws = int(state["draws"])


class GraceBatch(NamedTuple):
    """GRACE's inputs for one micro-batch: the clean, adversarial and shifted images (N, C, H, W) and labels."""

    x: Tensor
    x_adv: Tensor
    x_shift: Tensor
    y: Tensor


@dataclass
class GraceLoss:
    """GRACE's loss: the base robust objective + gram_weight * L_gram(F(x); F(x_adv), F(shift(x))).

    base: ClassicATLoss (objective CE(model(x_adv), y)) or TRADESLoss (CE(model(x), y) + beta KL(clean || adv));
    its attack runs once per call (in eval mode, as the base loss runs it). The model forwards x, x_adv and
    shift(x) in its own mode, each once, and the three graphs are alive together (the Gram term couples them),
    so TRADESLoss.memory_saving does not apply here. Costs over the base: Classic AT two extra forward/backward
    passes (clean, shifted), TRADES one (shifted).

    Split in two for CurvatureSAM: `batch(model, x, y)` draws the attack and the shift once, `objective(model,
    batch)` evaluates the loss; its second gradient (at perturbed weights) reuses the same batch.

    Args:
        base: a ClassicATLoss or TRADESLoss.
        gram_weight: lambda >= 0 (default 1.0).
        shift: the shifted view (default Shift(): brightness/contrast 0.2, noise 0.03, seed 0).
    """

    base: ClassicATLoss | TRADESLoss
    gram_weight: float = 1.0
    shift: Callable[[Tensor], Tensor] = field(default_factory=Shift)

    def __post_init__(self) -> None:
        if not isinstance(self.base, (ClassicATLoss, TRADESLoss)):
            raise TypeError(f"base must be a ClassicATLoss or TRADESLoss, got {type(self.base).__name__}")
        _weight("gram_weight", self.gram_weight)

    def batch(self, model: nn.Module, x: Tensor, y: Tensor) -> GraceBatch:
        check_batch(x, y)
        return GraceBatch(x, adversarial_examples(self.base.attack, model, x, y), self.shift(x).detach(), y)

    def objective(self, model: nn.Module, b: GraceBatch) -> Tensor:
        f_clean, logits_clean = features_and_logits(model, b.x)
        f_adv, logits_adv = features_and_logits(model, b.x_adv)
        f_shift, _ = features_and_logits(model, b.x_shift)
        if isinstance(self.base, TRADESLoss):
            robust = ops.trades_objective(logits_clean, logits_adv, b.y, self.base.beta)
        else:
            robust = F.cross_entropy(logits_adv.float(), b.y)
        return robust + self.gram_weight * gram_alignment_loss(f_clean, f_adv, f_shift)

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        return self.objective(model, self.batch(model, x, y))

    def state_dict(self) -> dict[str, int]:
        """The shifted view's draw counter (Shift.state_dict), for exact resumption."""
        return self.shift.state_dict()

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.shift.load_state_dict(state)


@dataclass
class ConsistencyLoss:
    """base(model, x, y) + weight * L_cons(model(augment(x)), model(augment(x))), two independent draws.

    Works with any criterion (CE, Classic AT, TRADES, GRACE). The two views are forwarded in the model's own
    mode: two extra forward/backward passes over the base.

    Args:
        base: any criterion(model, x, y) -> scalar.
        weight: >= 0 (default 1.0).
        augment: the view maker, Tensor -> Tensor (default Shift(seed=1): brightness/contrast 0.2, noise 0.03).
    """

    base: Criterion
    weight: float = 1.0
    augment: Callable[[Tensor], Tensor] = field(default_factory=lambda: Shift(seed=1))

    def __post_init__(self) -> None:
        if not callable(self.base):
            raise TypeError(f"base must be a criterion(model, x, y), got {type(self.base).__name__}")
        _weight("weight", self.weight)

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        loss = self.base(model, x, y)
        view_a, view_b = self.augment(x), self.augment(x)
        return loss + self.weight * consistency_loss(model(view_a), model(view_b))
