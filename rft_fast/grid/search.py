"""What a grid spec varies: the TrainConfig fields it fixes (`fixed:`), searches (`search:`, one SearchDim each)
and turns into extra grid axes (`axes:`), each value checked by the field's rule (TrainConfig FIELD_RULES), and
each field one of the three at most. The grid sets a configuration's identity and paths itself (GRID_OWNED)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from rft_fast.checks import show, suggest
from rft_fast.grid.sections import no_repeats
from rft_fast.train.config import FIELD_RULES, TrainConfig

KINDS = ("loguniform", "uniform", "choice", "fixed")
BACKBONE_DIMS = ("lr_backbone", "wd_backbone")  # not searched under linear probing (the backbone is frozen)
# TrainConfig fields a grid sets itself: the configuration's identity, its paths, and the trial's folder.
GRID_OWNED = ("backbone", "dataset", "protocol", "loss", "data_root", "pretrained_path", "random_init", "out_dir")
TRAIN_FIELDS = tuple(f.name for f in fields(TrainConfig))
SETTABLE = tuple(name for name in TRAIN_FIELDS if name not in GRID_OWNED)


def field_problem(key: str, name: object, what: str) -> str | None:
    """None when `name` is a TrainConfig field a spec may set (fixed, searched or an axis), else the message."""
    if name in GRID_OWNED:
        return (
            f"{key}: not a {what}; the grid sets it itself (from backbones, losses, protocols, datasets, "
            "data_roots, pretrained, weights_dir, random_init, out_dir)"
        )
    if name not in TRAIN_FIELDS:
        hint = suggest(name, SETTABLE)
        return f"{key}: not a {what}" + (f" ({hint[2:]})" if hint else f"; known: {sorted(SETTABLE)}")
    return None


@dataclass(frozen=True)
class SearchDim:
    """One searched TrainConfig field: loguniform / uniform in [low, high] (fields that take a number only: an
    int field is searched with choice), a choice among `values`, or fixed at values[0]. Each bound and value
    obeys the field's rule (TrainConfig FIELD_RULES)."""

    name: str
    kind: str
    low: float | None = None
    high: float | None = None
    values: tuple[Any, ...] = ()

    def __post_init__(self) -> None:
        key = f"search.{self.name}"
        problem = field_problem(key, self.name, "searchable TrainConfig field")
        if problem:
            raise ValueError(problem)
        if self.kind not in KINDS:
            raise ValueError(f"{key}: kind must be one of {list(KINDS)}, got {show(self.kind)}")
        rule = FIELD_RULES[self.name]
        if self.kind in ("loguniform", "uniform"):
            if rule.kind is not float:
                raise ValueError(
                    f"{key}: {self.kind} samples real numbers, but {self.name} must be {rule.expected()}: "
                    "list its values with {choice: [...]}"
                )
            rule.check(f"{key}.{self.kind}[0]", self.low)
            rule.check(f"{key}.{self.kind}[1]", self.high)
            if self.kind == "loguniform" and self.low <= 0:
                raise ValueError(f"{key}.loguniform[0] must be > 0 (a log scale), got {show(self.low)}")
            if self.low >= self.high:
                raise ValueError(f"{key}: low ({self.low:g}) must be < high ({self.high:g})")
            object.__setattr__(self, "low", float(self.low))
            object.__setattr__(self, "high", float(self.high))
        elif self.kind == "choice":
            if not self.values:
                raise ValueError(f"{key}: choice takes a non-empty list, got []")
            for i, value in enumerate(self.values):
                rule.check(f"{key}.choice[{i}]", value)
            no_repeats(f"{key}.choice", self.values)
        else:
            if len(self.values) != 1:
                raise ValueError(f"{key}: a fixed dimension holds one value, got {show(self.values)}")
            rule.check(key, self.values[0])


def parse_fixed(values: dict[Any, Any]) -> dict[str, Any]:
    for name, value in values.items():
        problem = field_problem(f"fixed.{name}", name, "TrainConfig field")
        if problem:
            raise ValueError(problem)
        FIELD_RULES[name].check(f"fixed.{name}", value)
    return dict(values)


def parse_axes(
    values: dict[Any, Any], fixed: dict[str, Any], search: tuple[SearchDim, ...]
) -> dict[str, tuple[Any, ...]]:
    searched = {d.name for d in search}
    out = {}
    for name, options in values.items():
        key = f"axes.{name}"
        problem = field_problem(key, name, "TrainConfig field an axis can vary")
        if problem:
            raise ValueError(problem)
        if name in fixed or name in searched:
            raise ValueError(
                f"{key}: also in {'fixed' if name in fixed else 'search'}; a field is one of axis, fixed, searched"
            )
        if not isinstance(options, list) or not options:
            raise ValueError(f"{key} must be a non-empty list, got {show(options)}")
        for i, option in enumerate(options):
            FIELD_RULES[name].check(f"{key}[{i}]", option)
        no_repeats(key, options)
        out[name] = tuple(options)
    return out


def parse_search(values: object, fixed: dict[str, Any]) -> tuple[SearchDim, ...]:
    if not isinstance(values, dict) or not values:
        raise ValueError(f"search must map TrainConfig fields to distributions, got {show(values)}")
    dims = []
    for name, value in values.items():
        key = f"search.{name}"
        problem = field_problem(key, name, "searchable TrainConfig field")
        if problem:
            raise ValueError(problem)
        if name in fixed:
            raise ValueError(f"{key}: also in fixed; a field is either searched or fixed")
        dims.append(_dim(key, name, value))
    return tuple(dims)


def _dim(key: str, name: str, value: object) -> SearchDim:
    """The YAML form of one dimension; SearchDim checks its values."""
    if not isinstance(value, dict):
        return SearchDim(name, "fixed", values=(value,))
    if len(value) != 1 or next(iter(value)) not in KINDS:
        raise ValueError(f"{key}: expected one of {[{k: '...'} for k in KINDS]} or a plain value, got {show(value)}")
    kind, arg = next(iter(value.items()))
    if kind in ("loguniform", "uniform"):
        if not isinstance(arg, list) or len(arg) != 2:
            raise ValueError(f"{key}: {kind} takes [low, high], got {show(arg)}")
        return SearchDim(name, kind, low=arg[0], high=arg[1])
    if kind == "choice":
        if not isinstance(arg, list) or not arg:
            raise ValueError(f"{key}: choice takes a non-empty list, got {show(arg)}")
        return SearchDim(name, kind, values=tuple(arg))
    return SearchDim(name, kind, values=(arg,))
