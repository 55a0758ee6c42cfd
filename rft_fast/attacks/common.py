"""What every attack shares: argument checks, per-sample losses, the model forward/backward, random starts, and
the check that no bad number got in.

Attacks validate their arguments once at entry (here) and then call the ops with `check=False`. Every step's
loss and input gradient are checked for NaN / Inf on the device (a flag per sample, no host sync); the attack
reads the flags once at its end and raises NonFiniteError rather than return points computed from them.
The model forward/backward runs under optional autocast (`amp_dtype`); everything else (losses, steps,
projections, best-point bookkeeping) is float32. Randomness comes from a `torch.Generator` on the input's
device seeded with the attack's seed at each call, never from the global RNG.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rft_fast import ops, reference, study
from rft_fast.checks import is_int, is_real

NORMS = study.NORMS
LOSSES = ("ce", "dlr", "kl")
AMP_DTYPES = (None, torch.bfloat16, torch.float16)
Scalar = float | Tensor


# ---------------------------------------------------------------- bad numbers


class NonFiniteError(ValueError):
    """A model produced NaN / Inf where an attack or an evaluation needs numbers (its logits, the loss computed
    from them, the gradient with respect to the input): no adversarial points / no measurement come from it.
    `samples`: how many samples were affected, when known."""

    def __init__(self, message: str, *, samples: int | None = None) -> None:
        super().__init__(message)
        self.samples = samples


class FiniteCheck:
    """Per-sample device flags: was a loss / an input gradient ever NaN or Inf during the attack.

    `add` costs a few small device ops per step and never synchronizes; `raise_if_bad` reads the flags once.
    A gradient row is checked through its largest |entry| (one fused reduction, NaN-propagating).
    """

    def __init__(self, n: int, device: torch.device) -> None:
        self.loss = torch.zeros(n, dtype=torch.bool, device=device)
        self.grad = torch.zeros(n, dtype=torch.bool, device=device)

    def add(self, loss: Tensor, grad: Tensor | None, rows: Tensor | None = None) -> None:
        """loss (n,) and grad (n, ...) of the samples `rows` (None: all)."""
        self._flag(self.loss, ~torch.isfinite(loss), rows)
        if grad is not None:
            peak = torch.linalg.vector_norm(grad, ord=float("inf"), dim=tuple(range(1, grad.dim())))
            self._flag(self.grad, ~torch.isfinite(peak), rows)

    def add_logits(self, logits: Tensor, rows: Tensor | None = None) -> None:
        """Logits (n, C) of the samples `rows`: a row with a NaN / Inf logit has no usable loss."""
        self._flag(self.loss, ~torch.isfinite(logits).all(1), rows)

    @staticmethod
    def _flag(store: Tensor, bad: Tensor, rows: Tensor | None) -> None:
        if rows is None:
            store |= bad
        else:
            store[rows] = store[rows] | bad

    def raise_if_bad(self, attack: str, norm: str, loss: str) -> None:
        """NonFiniteError naming the attack, the norm and what was not finite, for how many samples."""
        counts = torch.stack([self.loss.sum(), self.grad.sum(), (self.loss | self.grad).sum()]).tolist()  # one sync
        n_loss, n_grad, n_any = counts
        if not n_any:
            return
        n = self.loss.shape[0]
        what = [f"the loss computed from the model's logits on {n_loss} of {n} samples"] if n_loss else []
        what += [f"the gradient with respect to the input on {n_grad} of {n} samples"] if n_grad else []
        raise NonFiniteError(
            f"{attack} ({norm}, loss {loss!r}): NaN or Inf in {' and in '.join(what)}; no adversarial points are "
            "returned",
            samples=n_any,
        )


# ---------------------------------------------------------------- argument checks (construction time)


def check_choice(name: str, value: object, allowed: tuple) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")


def check_int(name: str, value: object, minimum: int) -> None:
    if not is_int(value) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


def check_float(name: str, value: object, lo: float, hi: float, *, lo_open: bool = False) -> None:
    ok = is_real(value) and (value > lo if lo_open else value >= lo) and value <= hi
    if not ok:
        raise ValueError(f"{name} must be a float in {'(' if lo_open else '['}{lo}, {hi}], got {value!r}")


def check_radius(name: str, value: object) -> None:
    """eps / step_size at construction: a float > 0 or a tensor (its values are checked at the call)."""
    if isinstance(value, Tensor):
        return
    if not is_real(value) or value <= 0:
        raise ValueError(f"{name} must be a float > 0 or a tensor of shape (N,), got {value!r}")


def check_common(norm: str, loss: str, amp_dtype: torch.dtype | None, seed: int, backend: str) -> None:
    check_choice("norm", norm, NORMS)
    check_choice("loss", loss, LOSSES)
    check_choice("amp_dtype", amp_dtype, AMP_DTYPES)
    if not is_int(seed):
        raise ValueError(f"seed must be an int, got {seed!r}")
    check_choice("backend", backend, ("auto",) + ops.BACKENDS)


# ---------------------------------------------------------------- argument checks (call time)


def prepare(x: Tensor, y: Tensor, eps: Scalar) -> tuple[Tensor, Tensor, Tensor]:
    """Validates the batch once; returns (x as float32, detached; y as int64; eps as float32 (N,))."""
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise ValueError(f"x must be a floating-point image tensor (N, C, H, W), got {getattr(x, 'dtype', type(x))}")
    if x.dim() < 2 or x.shape[0] < 1 or x[0].numel() < 1:
        raise ValueError(f"x must have shape (N, ...) with N >= 1 and at least one feature, got {tuple(x.shape)}")
    if not isinstance(y, Tensor) or y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise ValueError(f"y must be an integer tensor of class labels, got {getattr(y, 'dtype', type(y))}")
    if y.shape != x.shape[:1]:
        raise ValueError(f"y must have shape ({x.shape[0]},) (one label per image), got {tuple(y.shape)}")
    if y.device != x.device:
        raise ValueError(f"y is on {y.device}, expected {x.device} like x")
    x32 = x.detach().float()
    lo, hi = torch.aminmax(x32)  # one read, one sync: NaN fails both comparisons below
    if not (float(lo) >= 0.0 and float(hi) <= 1.0):
        raise ValueError(
            f"x must lie in [0, 1] (images as pixels, normalization inside the model), got [{float(lo)}, {float(hi)}]"
        )
    y = y.detach().long()
    if bool((y < 0).any()):
        raise ValueError(f"y holds negative labels: {y[y < 0][:4].tolist()}")
    return x32, y, ops.per_sample(eps, "eps", x32)


def finish(x_adv: Tensor, x: Tensor, eps: Scalar, norm: str) -> Tensor:
    """The float32 result in x's dtype. For float64 inputs the point is projected once more, in float64, onto the
    ball around the float64 x (float32 rounding of x would otherwise leave it up to ~1e-8 outside); for
    bfloat16 / float16 the rounding to x's dtype is the only slack."""
    if x.dtype == torch.float32:
        return x_adv
    out = x_adv.to(x.dtype)
    if x.dtype == torch.float64:
        e = eps.detach().to(device=x.device, dtype=torch.float64) if isinstance(eps, Tensor) else float(eps)
        out = reference.project(out, x.detach(), e, norm)
    return out


def expand(v: Tensor, like: Tensor) -> Tensor:
    """(N,) -> (N, 1, ..., 1), broadcasting against `like`."""
    return v.view(-1, *([1] * (like.dim() - 1)))


# ---------------------------------------------------------------- losses per sample


def dlr_loss(logits: Tensor, y: Tensor) -> Tensor:
    """Untargeted DLR loss of Croce & Hein 2020 per sample, as AutoAttack computes it.

    -(z_y - max_{j != y} z_j) / (z_(1) - z_(3) + 1e-12) with z_(k) the k-th largest logit (needs C >= 3).
    """
    top, idx = logits.topk(3, dim=1)
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    z_other = torch.where(idx[:, 0] == y, top[:, 1], top[:, 0])
    return -(z_y - z_other) / (top[:, 0] - top[:, 2] + 1e-12)


def per_sample_loss(
    logits: Tensor, y: Tensor, loss: str, logits_clean: Tensor | None = None, backend: str = "auto"
) -> Tensor:
    """float32 (N,) loss to maximize. ce: cross-entropy; dlr: DLR; kl: KL(softmax(clean) || softmax(adv))."""
    logits = logits.float()
    if loss == "ce":
        return F.cross_entropy(logits, y, reduction="none")
    if loss == "dlr":
        return dlr_loss(logits, y)
    return ops.trades_kl(logits, logits_clean, reduction="none", backend=backend, check=False)


# ---------------------------------------------------------------- the model's forward/backward


def autocast(device: torch.device, amp_dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """Autocast for the model's forward when amp_dtype is set; otherwise the caller's autocast state stays."""
    if amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=amp_dtype)


class Objective:
    """The loss to maximize at a batch of points: model forward (optionally autocast), float32 loss per sample,
    whether each point is misclassified, and the gradient with respect to the input only.

    The model runs as it is (the attack puts it in eval mode); parameters are never touched: the gradient is
    `torch.autograd.grad(loss, x_adv)`, so no `.grad` is accumulated and no `requires_grad` is changed.
    Every loss, input gradient and clean logit row goes through `finite` (FiniteCheck, indexed by `rows`, the
    samples this objective covers: None for all, set by subset).
    """

    def __init__(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        loss: str,
        amp_dtype: torch.dtype | None,
        input_dtype: torch.dtype,
        *,
        backend: str = "auto",
    ) -> None:
        self.model, self.y, self.loss, self.amp_dtype, self.input_dtype = model, y, loss, amp_dtype, input_dtype
        self.backend = backend
        self.device = x.device
        self.checked = False
        self.finite, self.rows = FiniteCheck(x.shape[0], x.device), None
        self.logits_clean = None
        if loss == "kl":
            self.logits_clean = self.clean_logits(x)

    def logits(self, x_adv: Tensor) -> Tensor:
        inp = x_adv if x_adv.dtype == self.input_dtype else x_adv.to(self.input_dtype)
        with autocast(self.device, self.amp_dtype):
            return self.model(inp)

    def check(self, logits: Tensor) -> Tensor:
        """Validates the model's output and the labels against it, once (the first forward)."""
        if self.checked:
            return logits
        n = self.y.shape[0]
        if not isinstance(logits, Tensor) or logits.dim() != 2 or logits.shape[0] != n:
            raise ValueError(
                f"model must return logits of shape ({n}, C), got {getattr(logits, 'shape', type(logits))}"
            )
        c = logits.shape[1]
        if self.loss == "dlr" and c < 3:
            raise ValueError(f"loss 'dlr' needs at least 3 classes, the model has {c}")
        if bool((self.y >= c).any()):
            raise ValueError(f"y holds labels outside [0, {c}): {self.y[self.y >= c][:4].tolist()}")
        self.checked = True
        return logits

    def __call__(self, x_adv: Tensor, need_grad: bool = True) -> tuple[Tensor, Tensor, Tensor | None]:
        """(loss (N,) float32, misclassified (N,) bool, grad w.r.t. x_adv in float32 or None)."""
        if not need_grad:
            with torch.no_grad():
                logits = self.check(self.logits(x_adv)).float()
                loss = per_sample_loss(logits, self.y, self.loss, self.logits_clean, self.backend)
            self.finite.add(loss, None, self.rows)
            return loss, logits.argmax(1) != self.y, None
        xg = x_adv.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = self.check(self.logits(xg)).float()
            loss = per_sample_loss(logits, self.y, self.loss, self.logits_clean, self.backend)
            (grad,) = torch.autograd.grad(loss.sum(), xg)
        self.finite.add(loss.detach(), grad, self.rows)
        return loss.detach(), logits.detach().argmax(1) != self.y, grad

    def clean_logits(self, x: Tensor) -> Tensor:
        """The model's logits at x (float32, no grad); a non-finite row counts as a non-finite loss."""
        with torch.no_grad():
            logits = self.check(self.logits(x)).float()
        self.finite.add_logits(logits, self.rows)
        return logits

    def subset(self, idx: Tensor) -> Objective:
        """The same objective restricted to the samples idx (labels already validated), sharing the flags."""
        sub = Objective.__new__(Objective)
        sub.__dict__.update(self.__dict__)
        sub.y = self.y[idx]
        sub.logits_clean = None if self.logits_clean is None else self.logits_clean[idx]
        sub.rows = idx if self.rows is None else self.rows[idx]
        return sub


# ---------------------------------------------------------------- randomness and starting points


def generator(device: torch.device, seed: int) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def _noise(kind: str, x: Tensor, gen: torch.Generator) -> Tensor:
    """Uniform [0, 1) or standard normal noise of x's shape in x's memory format, drawn from gen."""
    draw = torch.rand if kind == "uniform" else torch.randn
    t = draw(x.shape, generator=gen, device=x.device, dtype=torch.float32)
    return t.contiguous(memory_format=torch.channels_last) if ops.memory_format(x) == torch.channels_last else t


def _row_norm(t: Tensor, norm: str) -> Tensor:
    rows = t.reshape(t.shape[0], -1)
    n = {"Linf": lambda: rows.abs().amax(1), "L2": lambda: (rows**2).sum(1).sqrt(), "L1": lambda: rows.abs().sum(1)}[
        norm
    ]()
    return expand(n, t)


def autoattack_start(x: Tensor, eps: Tensor, norm: str, gen: torch.Generator, backend: str = "auto") -> Tensor:
    """APGD's random start as AutoAttack draws it: Linf 2U-1, L2 N(0, I), each rescaled onto the sphere of
    radius eps; L1 N(0, I) projected onto the L1 ball ∩ box; then clipped to [0, 1]."""
    if norm == "L1":
        return ops.project(x + _noise("normal", x, gen), x, eps, "L1", backend=backend, check=False).clamp_(0.0, 1.0)
    t = 2 * _noise("uniform", x, gen) - 1 if norm == "Linf" else _noise("normal", x, gen)
    return (x + expand(eps, x) * (t / (_row_norm(t, norm) + 1e-12))).clamp_(0.0, 1.0)


def uniform_start(x: Tensor, eps: Tensor, norm: str, gen: torch.Generator, backend: str = "auto") -> Tensor:
    """PGD's / FGSM-RS's random start: Linf U(-eps, eps) per coordinate (Madry et al.; Wong et al.);
    L2 / L1 a random direction (Gaussian / Laplace-like sign * exponential) at radius U(0, eps); then
    projected onto the ball ∩ box."""
    if norm == "Linf":
        delta = expand(eps, x) * (2 * _noise("uniform", x, gen) - 1)
    else:
        t = _noise("normal", x, gen)
        if norm == "L1":
            t = torch.sign(t) * (-torch.log1p(-_noise("uniform", x, gen)))  # Laplace direction
        r = torch.rand(x.shape[0], generator=gen, device=x.device, dtype=torch.float32)
        delta = expand(eps * r, x) * t / (_row_norm(t, norm) + 1e-12)
    return ops.project(x + delta, x, eps, norm, backend=backend, check=False)


def trades_start(x: Tensor, eps: Tensor, norm: str, gen: torch.Generator, backend: str = "auto") -> Tensor:
    """The TRADES start x + 0.001 N(0, I) (the KL gradient vanishes at x itself), projected onto the ball ∩ [0, 1]
    (the official code and TradesPGD leave it unprojected)."""
    return ops.project(x + 0.001 * _noise("normal", x, gen), x, eps, norm, backend=backend, check=False)


def where(mask: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """Per-sample select: mask (N,) bool, a and b (N, ...)."""
    return torch.where(expand(mask, a), a, b)
