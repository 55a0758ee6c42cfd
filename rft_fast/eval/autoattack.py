"""AutoAttack (Croce & Hein 2020) through pyautoattack: the study's robust accuracy under Linf, L2 and L1.

mode "standard": AutoAttack's standard version (APGD-CE, APGD-T, FAB-T, Square; for L1 APGD runs with the
large-eps schedule and 5 restarts), what the study reports. mode "fast": the same APGD-CE and APGD-T, without
FAB-T and Square, for validation during tuning; results carry the mode so the two are never mixed up.

Few classes (`attack_plan`): the targeted attacks take the C - 1 most likely wrong classes as targets at most
(AutoAttack's 9 assume C >= 10); APGD-T's targeted DLR loss needs C >= 4, so with C = 3 the untargeted APGD-DLR
of the original AutoAttack takes its place, and with C = 2 (no DLR loss is defined) APGD-CE runs alone with
FAB-T and Square. The plan is returned and recorded with every measurement.

The returned points are checked against the eps-ball and [0, 1] with a float-rounding slack: an excess within
the slack is projected away (and counted in `projected`), a larger one raises, naming the constraint, the worst
sample and the bound.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from rft_fast.attacks import NonFiniteError
from rft_fast.checks import is_int, is_real
from rft_fast.modes import eval_mode
from rft_fast.precision import full_precision
from rft_fast.study import NORMS, STUDY_EPS

MODES = ("standard", "fast")
FAST_ATTACKS = ("apgd-ce", "apgd-t")
BALL_RTOL, ATOL = 1e-4, 1e-5  # slack for float rounding in pyautoattack's projections: eps * BALL_RTOL + ATOL
_LOGGER = "auto-attack"


@dataclass(frozen=True)
class AttackPlan:
    """Which of AutoAttack's attacks run, with how many target classes (see the module docstring)."""

    attacks: tuple[str, ...]
    apgd_targets: int
    fab_targets: int
    n_classes: int

    def record(self) -> dict[str, object]:
        return {
            "attacks": list(self.attacks),
            "apgd_targets": self.apgd_targets,
            "fab_targets": self.fab_targets,
            "n_classes": self.n_classes,
        }


@dataclass(frozen=True)
class RobustAccuracy:
    """The outcome of one AutoAttack run on n points: clean and robust accuracy on the same points. projected:
    points whose rounding-level excess over the ball or box was projected away; warnings: AutoAttack's own."""

    norm: str
    eps: float
    mode: str
    clean: float
    robust: float
    n: int
    seconds: float
    batch_size: int
    plan: AttackPlan | None = None
    projected: int = 0
    warnings: tuple[str, ...] = field(default=())


def check_batch(x: Tensor, y: Tensor) -> None:
    """Images (N, C, H, W) floating in [0, 1] without NaN, labels int64 (N,): clear errors otherwise."""
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.dim() != 4:
        raise ValueError(f"x must be a float image batch (N, C, H, W), got {getattr(x, 'shape', type(x))}")
    if not isinstance(y, Tensor) or y.dtype != torch.int64 or y.shape != x.shape[:1]:
        raise ValueError(
            f"y must be int64 labels of shape ({x.shape[0]},), got {getattr(y, 'dtype', type(y))} {tuple(getattr(y, 'shape', ()))}"
        )
    if torch.isnan(x).any():
        raise ValueError("x contains NaN")
    if x.min() < 0 or x.max() > 1:
        raise ValueError(
            f"x must lie in [0, 1] (normalization belongs inside the model), got [{x.min():.4g}, {x.max():.4g}]"
        )


def attack_plan(norm: str, mode: str, n_classes: int) -> AttackPlan:
    """AutoAttack's attacks for `mode` adapted to `n_classes` (>= 2): targets capped at C - 1, APGD-DLR for
    APGD-T at C = 3, no DLR attack at C = 2."""
    if not is_int(n_classes) or n_classes < 2:
        raise ValueError(f"n_classes: the model must output at least 2 logits, got {n_classes!r}")
    attacks = list(FAST_ATTACKS) if mode == "fast" else ["apgd-ce", "apgd-t", "fab-t", "square"]
    if n_classes == 3:
        attacks[attacks.index("apgd-t")] = "apgd-dlr"
    elif n_classes == 2:
        attacks.remove("apgd-t")
    apgd_default = 5 if norm == "L1" else 9
    return AttackPlan(tuple(attacks), min(apgd_default, n_classes - 1), min(9, n_classes - 1), n_classes)


def auto_batch_size(model: nn.Module, x: Tensor, start: int = 1024) -> int:
    """The largest power-of-two batch (<= start, <= N) whose forward + input-gradient fits in GPU memory,
    halved once more for the attacks' extra state; 128 (or N) on CPU, where memory is not the limit (a CPU
    step of a small batch costs about what a larger one does, so fewer chunks are faster)."""
    n = x.shape[0]
    if x.device.type != "cuda":
        return min(n, 128)
    batch = min(start, 1 << (n - 1).bit_length())
    while batch > 1:
        try:
            xb = x[:batch].detach().clone().requires_grad_(True)
            with eval_mode(model):
                torch.autograd.grad(model(xb).float().logsumexp(1).sum(), xb)
            return max(1, min(n, batch // 2))
        except torch.cuda.OutOfMemoryError:
            batch //= 2
        finally:
            torch.cuda.empty_cache()
    return 1


def predict(model: nn.Module, x: Tensor, batch_size: int, what: str = "images") -> Tensor:
    """Predicted classes (N,), batched, without grad, the model in eval mode (modes restored after).
    NonFiniteError when any logit is NaN or Inf (the argmax of such logits is no prediction): `what` names
    the inputs in the message. One host sync for the check, after the last batch."""
    bad = torch.zeros((), dtype=torch.int64, device=x.device)
    classes = []
    with torch.no_grad(), eval_mode(model):
        for xb in x.split(batch_size):
            logits = model(xb)
            bad += (~torch.isfinite(logits).all(1)).sum()
            classes.append(logits.argmax(1))
    if int(bad):
        raise NonFiniteError(
            f"the model's logits are not finite (NaN or Inf) on {int(bad)} of {x.shape[0]} {what}: "
            "no accuracy is stored"
        )
    return torch.cat(classes)


def _distance(x_adv: Tensor, x: Tensor, norm: str) -> Tensor:
    d = (x_adv - x).flatten(1).float()
    return {"Linf": lambda: d.abs().amax(1), "L2": lambda: d.norm(dim=1), "L1": lambda: d.abs().sum(1)}[norm]()


def enforce_constraints(x_adv: Tensor, x: Tensor, norm: str, eps: float) -> tuple[Tensor, int]:
    """x_adv inside the eps-ball around x and [0, 1]: an excess up to the rounding slack is projected away
    (clamp to the box, then shrink delta into the ball: the box is convex and holds x, so shrinking stays in
    it); returns (points, how many were moved). A larger excess raises RuntimeError naming the constraint."""
    lo, hi = x_adv.amin(dim=(1, 2, 3)), x_adv.amax(dim=(1, 2, 3))
    box_excess = torch.maximum(-lo, hi - 1).clamp_min(0)
    if box_excess.max() > ATOL:
        i = int(box_excess.argmax())
        raise RuntimeError(
            f"AutoAttack returned a point outside the [0, 1] box: sample {i} has values in "
            f"[{lo[i].item():.6g}, {hi[i].item():.6g}] (slack {ATOL:g})"
        )
    dist = _distance(x_adv, x, norm)
    slack = eps * BALL_RTOL + ATOL
    if dist.max() > eps + slack:
        i = int(dist.argmax())
        raise RuntimeError(
            f"AutoAttack returned a point outside the {norm} ball: sample {i} is at distance "
            f"{dist[i].item():.6g} > eps {eps:g} (slack {slack:.3g})"
        )
    moved = (box_excess > 0) | (dist > eps)
    if not moved.any():
        return x_adv, 0
    out = x_adv.clamp(0, 1)
    delta = out - x
    if norm == "Linf":
        delta = delta.clamp(-eps, eps)
    else:
        d = _distance(out, x, norm)
        delta = delta * (eps / d.clamp_min(eps)).view(-1, 1, 1, 1).to(delta.dtype)
    out = (x + delta).clamp(0, 1)
    return out, int(moved.sum())


class _Progress(logging.Handler):
    """Follows pyautoattack's log: the attack running goes into the bar's postfix, warnings are kept."""

    def __init__(self, bar) -> None:
        super().__init__(logging.DEBUG)
        self.bar, self.warnings = bar, []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if record.levelno >= logging.WARNING:
            if message not in self.warnings:
                self.warnings.append(message)
        elif message.startswith("running "):
            self.bar.set_postfix_str(message.removeprefix("running "), refresh=True)


@contextmanager
def _captured(bar) -> Iterator[_Progress]:
    logger = logging.getLogger(_LOGGER)
    handler = _Progress(bar)
    saved = logger.level, logger.propagate
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


def autoattack(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    norm: str,
    eps: float | None = None,
    mode: str = "standard",
    batch_size: int | None = None,
    seed: int = 0,
    progress: bool = False,
    on_batch: Callable[[int, int], None] | None = None,
) -> RobustAccuracy:
    """Runs pyautoattack's AutoAttack on (x, y) and returns clean and robust accuracy on those points.

    x: (N, C, H, W) in [0, 1] on the model's device; y: (N,) int64. eps: None = the study's (Linf 4/255,
    L2 2.0, L1 75). The points go through AutoAttack in chunks of `batch_size` (each point's attacks are
    independent of the others'), so `progress` shows a bar (samples done, attack running, ETA) and
    on_batch(done, n) is called after each chunk. The model runs in eval mode (each module's flag restored
    after). A model under autocast (rft_fast.precision.AutocastModel) runs the attacks so; the clean and final
    prediction of each point, which decide the accuracies, run its float32 module. Checked after the run: every point within the eps-ball and [0, 1] (see enforce_constraints), and
    no point robust without being clean-correct; a violation raises RuntimeError rather than storing a number.
    """
    import pyautoattack
    from tqdm.auto import tqdm

    if norm not in NORMS:
        raise ValueError(f"norm must be one of {list(NORMS)}, got {norm!r}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {list(MODES)}, got {mode!r}")
    eps = STUDY_EPS[norm] if eps is None else eps
    if not is_real(eps) or eps <= 0:
        raise ValueError(f"eps must be a finite number > 0, got {eps!r}")
    check_batch(x, y)
    batch_size = batch_size or auto_batch_size(model, x)
    n = x.shape[0]
    t0 = time.perf_counter()
    with eval_mode(model), torch.no_grad():
        n_classes = int(model(x[:1]).shape[1])
    if int(y.max()) >= n_classes:
        raise ValueError(f"y holds label {int(y.max())} but the model outputs {n_classes} logits")
    plan = attack_plan(norm, mode, n_classes)
    adversary = pyautoattack.AutoAttack(
        model, norm=norm, eps=float(eps), version="standard", seed=seed, device=x.device
    )
    adversary.attacks_to_run = list(plan.attacks)
    adversary.apgd_targeted.n_target_classes = plan.apgd_targets
    adversary.fab.n_target_classes = plan.fab_targets
    exact = full_precision(model)
    clean_ok = predict(exact, x, batch_size, "clean images") == y  # before the attack: a NaN model costs nothing
    chunks = []
    with (
        tqdm(total=n, desc=f"AutoAttack {norm} ({mode})", unit="img", disable=not progress, leave=False) as bar,
        _captured(bar) as log,
        eval_mode(model),
    ):
        for start in range(0, n, batch_size):
            xc, yc = x[start : start + batch_size], y[start : start + batch_size]
            chunks.append(adversary.run_standard_evaluation(xc, yc, batch_size=batch_size)[0])
            bar.update(xc.shape[0])
            if on_batch is not None:
                on_batch(min(start + batch_size, n), n)
    x_adv, projected = enforce_constraints(torch.cat(chunks), x, norm, float(eps))
    robust_ok = predict(exact, x_adv, batch_size, "adversarial points") == y
    if x.device.type == "cuda":
        torch.cuda.synchronize(x.device)
    seconds = time.perf_counter() - t0
    if bool((robust_ok & ~clean_ok).any()):
        raise RuntimeError(
            f"{int((robust_ok & ~clean_ok).sum())} points are robust but misclassified clean: robust accuracy "
            "must not exceed clean accuracy (a randomized or non-deterministic model?)"
        )
    return RobustAccuracy(
        norm,
        float(eps),
        mode,
        clean_ok.sum().item() / n,
        robust_ok.sum().item() / n,
        n,
        seconds,
        batch_size,
        plan,
        projected,
        tuple(log.warnings),
    )
