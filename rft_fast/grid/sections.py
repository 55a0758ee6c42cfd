"""The grid spec's sections that are records of their own: `asha:` (Ray Tune's ASHAScheduler), `resources:` (per
trial) and `eval:` (how each configuration's best trial is evaluated: an EvalSettings, field for field).

Each section checks itself when built, so a spec changed in code is held to the same rules as one read from
YAML; every message names the key with its section ("asha.grace_period", "eval.smoothing_sigmas[1]").
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from rft_fast.checks import Rule, check_fields, show, suggest
from rft_fast.eval.settings import FIELD_RULES as EVAL_FIELD_RULES
from rft_fast.eval.settings import LIST_FIELDS, EvalSettings, all_threats, as_arguments
from rft_fast.study import NORMS, STUDY_EPS
from rft_fast.train.config import MAX_EPOCHS, REPORTED_METRICS


def no_repeats(key: str, values: tuple[Any, ...] | list[Any]) -> None:
    if len({(type(v), v) for v in values}) != len(values):
        raise ValueError(f"{key}: a value is listed more than once: {show(list(values))}")


ASHA_RULES = {
    "metric": Rule(str, choices=tuple(REPORTED_METRICS)),
    "mode": Rule(str, choices=("min", "max")),
    "grace_period": Rule(int, 1, MAX_EPOCHS),
    "reduction_factor": Rule(float, 1.1, 100),
    "max_t": Rule(int, 1, MAX_EPOCHS, optional=True),
}


@dataclass(frozen=True)
class ASHA:
    """Ray Tune's ASHAScheduler settings; max_t None means the configuration's epochs. metric: one `fit` reports
    each epoch (rft_fast.train.config.REPORTED_METRICS); mode: the direction in which it is better."""

    metric: str = "val_loss"
    mode: str = "min"
    grace_period: int = 1
    reduction_factor: float = 2
    max_t: int | None = None

    def __post_init__(self) -> None:
        check_fields(self, ASHA_RULES, "asha.")
        better = REPORTED_METRICS[self.metric]
        if self.mode != better:
            raise ValueError(
                f"asha.mode must be {better!r} for asha.metric {self.metric!r} ({'lower' if better == 'min' else 'higher'}"
                f" is better: {self.mode!r} would keep the worst trials), got {self.mode!r}"
            )
        if self.max_t is not None and self.max_t < self.grace_period:
            raise ValueError(f"asha.max_t ({self.max_t}) must be >= asha.grace_period ({self.grace_period})")


RESOURCE_RULES = {"gpus_per_trial": Rule(float, 0, 64, open_low=True), "cpus_per_trial": Rule(int, 1, 1024)}


@dataclass(frozen=True)
class Resources:
    """Per trial: a GPU share (fractions pack several trials on one GPU) and CPU cores."""

    gpus_per_trial: float = 1.0
    cpus_per_trial: int = 1

    def __post_init__(self) -> None:
        check_fields(self, RESOURCE_RULES, "resources.")
        if self.gpus_per_trial > 1 and self.gpus_per_trial != int(self.gpus_per_trial):
            raise ValueError(
                f"resources.gpus_per_trial must be a fraction <= 1 or a whole number, got {self.gpus_per_trial!r}"
            )
        object.__setattr__(self, "gpus_per_trial", float(self.gpus_per_trial))


# ----------------------------------------------------------------------------------------------- eval

# EvalSettings fields the grid sets itself: the evaluation is seeded with the spec's top-level `seed`.
EVAL_OWNED = {"seed": "the spec's top-level seed seeds the evaluation"}
# Where a grid is stricter than the command line: a spec's eval.n is at most 1,000,000 (EvalSettings: 10**7).
_GRID_EVAL_RULES = {"n": Rule(int, 1, 1_000_000)}
# The rule of every field of the grid's eval section (of each item for threats, eps and the smoothing lists).
EVAL_RULES: dict[str, Rule] = {
    name: _GRID_EVAL_RULES.get(name, rule) for name, rule in EVAL_FIELD_RULES.items() if name not in EVAL_OWNED
}
_ITEMS = (*LIST_FIELDS, "eps")  # fields checked item by item


def _check_eval(section: Any) -> None:
    """The eval section's checks: each field against EVAL_RULES (each item of a list or of eps), then
    EvalSettings itself (its rules between fields). Lists become tuples, eps is completed with the study's radii
    for the norms it does not name."""
    threats = section.threats
    known = all_threats()
    bad = [t for t in threats if t not in known] if isinstance(threats, tuple) else [threats]
    if not threats or bad:
        raise ValueError(
            f"eval.threats must be a non-empty subset of {list(known)}, got {show(threats)}"
            + (suggest(bad[0], known) if bad else "")
        )
    no_repeats("eval.threats", threats)
    check_fields(section, {k: r for k, r in EVAL_RULES.items() if k not in _ITEMS}, "eval.")
    for name in ("smoothing_sigmas", "smoothing_radii"):
        values = getattr(section, name)
        values = (values,) if not isinstance(values, (tuple, list)) else tuple(values)
        if not values:
            raise ValueError(f"eval.{name} must be a non-empty list of numbers, got []")
        for i, value in enumerate(values):
            EVAL_RULES[name].check(f"eval.{name}[{i}]", value)
        no_repeats(f"eval.{name}", [float(v) for v in values])
        object.__setattr__(section, name, tuple(float(v) for v in values))
    eps = section.eps
    if not isinstance(eps, dict):
        raise ValueError(f"eval.eps must map norms {list(NORMS)} to radii, got {show(eps)} ({type(eps).__name__})")
    for norm, radius in eps.items():
        if norm not in NORMS:
            raise ValueError(f"eval.eps: unknown norm {show(norm)}{suggest(norm, NORMS)}; known: {list(NORMS)}")
        EVAL_RULES["eps"].check(f"eval.eps.{norm}", radius)
    object.__setattr__(section, "eps", {**STUDY_EPS, **eps})
    try:
        section.settings()
    except ValueError as err:
        raise ValueError(f"eval: {err}") from None


def _eval_section() -> type:
    """EvalSpec: a frozen record of EvalSettings' fields (but EVAL_OWNED), with their defaults."""
    specs = []
    for f in dataclasses.fields(EvalSettings):
        if f.name in EVAL_OWNED:
            continue
        default = (
            dataclasses.field(default=f.default)
            if f.default is not dataclasses.MISSING
            else dataclasses.field(default_factory=f.default_factory)
        )
        specs.append((f.name, f.type, default))

    def settings(self, **changes: Any) -> EvalSettings:
        """The EvalSettings of this section (seed 0 unless given: the grid passes its own), with `changes`."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return EvalSettings(**{**values, "eps": dict(values["eps"]), **changes})

    doc = (
        "How the best trial of each configuration is evaluated: every field of rft_fast.eval.EvalSettings but "
        f"{', '.join(EVAL_OWNED)} ({'; '.join(EVAL_OWNED.values())}), checked by its rule (EVAL_RULES) with "
        "the key written eval.<field>. cache_dir None: the corrupted sets are cached under the grid's out_dir."
    )
    return dataclasses.make_dataclass(
        "EvalSpec",
        specs,
        frozen=True,
        namespace={"__module__": __name__, "__doc__": doc, "__post_init__": _check_eval, "settings": settings},
    )


EvalSpec = _eval_section()


def eval_values(values: dict[str, Any]) -> dict[str, Any]:
    """The YAML form of the eval section as EvalSpec's arguments: a single threat name is a one-threat tuple, lists
    are tuples; a key the grid owns is refused, saying why."""
    owned = [k for k in values if k in EVAL_OWNED]
    if owned:
        raise ValueError(f"eval.{owned[0]}: set by the grid itself: {EVAL_OWNED[owned[0]]}")
    return as_arguments(values)
