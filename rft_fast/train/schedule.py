"""Curriculum perturbations: the training attack's radius as a function of the optimizer step.

kind "constant" (the study's default): eps at every step. "linear" / "cosine": a ramp from eps_start at step 0
to eps at step W = warmup * total_steps, then eps:

    p(s)   = min(s / W, 1)                     (p = 1 when W = 0)
    linear: eps(s) = eps_start + (eps - eps_start) * p(s)
    cosine: eps(s) = eps_start + (eps - eps_start) * (1 - cos(pi * p(s))) / 2

s is the 0-based optimizer step and total_steps the run's number of optimizer steps (epochs x steps per epoch).
The attack's step size follows the radius: step_size(s) = step_size * alpha_scale(s) with alpha_scale = eps(s) /
eps (APGD derives its step from the radius, so passing eps(s) is enough there; PGD's fixed step needs the scale).
A radius of 0 (eps_start = 0 at step 0) means no perturbation: the caller trains on the clean batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from rft_fast.checks import is_int, is_real

KINDS = ("constant", "linear", "cosine")


def _real(name: str, value: object) -> float:
    if not is_real(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class EpsSchedule:
    """eps(step, total_steps) for the training attack (module docstring: formulas).

    Args:
        kind: "constant" | "linear" | "cosine" (default "constant"; eps_start and warmup are then unused).
        eps: the final (and constant) radius, > 0.
        eps_start: the radius at step 0 of a ramp, in [0, eps] (default 0.0).
        warmup: the ramp's length as a fraction of total_steps, in [0, 1] (default 0.0: no ramp).
    """

    kind: str = "constant"
    eps: float = 4 / 255
    eps_start: float = 0.0
    warmup: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        eps, start, warmup = _real("eps", self.eps), _real("eps_start", self.eps_start), _real("warmup", self.warmup)
        if eps <= 0:
            raise ValueError(f"eps must be > 0, got {eps}")
        if not 0 <= start <= eps:
            raise ValueError(f"eps_start must lie in [0, eps={eps}], got {start}")
        if not 0 <= warmup <= 1:
            raise ValueError(f"warmup must be a fraction in [0, 1], got {warmup}")

    def progress(self, step: int, total_steps: int) -> float:
        """p(step) in [0, 1]: how far the ramp is (1 for "constant" and after the warm-up)."""
        for name, value, low in (("total_steps", total_steps, 1), ("step", step, 0)):
            if not is_int(value) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        if step >= total_steps:
            raise ValueError(f"step must be < total_steps={total_steps}, got {step}")
        ramp = self.warmup * total_steps
        if self.kind == "constant" or ramp == 0:
            return 1.0
        return min(step / ramp, 1.0)

    def __call__(self, step: int, total_steps: int) -> float:
        """The radius of the training attack at optimizer step `step` (0-based) of `total_steps`."""
        p = self.progress(step, total_steps)
        if self.kind == "cosine":
            p = (1 - math.cos(math.pi * p)) / 2
        return self.eps_start + (self.eps - self.eps_start) * p if p < 1 else self.eps

    def alpha_scale(self, step: int, total_steps: int) -> float:
        """eps(step) / eps: the factor for a fixed attack step size, so the step follows the radius."""
        return self(step, total_steps) / self.eps
