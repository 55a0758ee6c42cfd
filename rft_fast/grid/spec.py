"""The grid specification: which (backbone, loss, protocol, dataset) configurations to tune, the search space
and budget of each, and how the best trial is evaluated; read from YAML (or a dict) and validated up front.

    spec = load_spec("examples/study.yaml")
    for config in expand(spec):
        fields = config.train_fields(spec)      # TrainConfig fields shared by the configuration's trials
        dims = search_space(spec, config)       # what each trial samples (LP drops the backbone's lr / wd)

Every error names the key at fault. Paths (data roots, weights files) are checked separately by
`check_paths`, so a plan can be printed on a machine without the data. Nothing here imports Ray.
"""
from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

import yaml

from rft_fast import models
from rft_fast.data.registry import DATASETS
from rft_fast.eval.autoattack import MODES
from rft_fast.eval.corruptions import SETTINGS
from rft_fast.eval.evaluate import ALL_THREATS, THREATS
from rft_fast.train.config import LOSSES, TrainConfig
from rft_fast.train.protocols import PROTOCOLS, get_protocol

KINDS = ("loguniform", "uniform", "choice", "fixed")
BACKBONE_DIMS = ("lr_backbone", "wd_backbone")  # not searched under linear probing (the backbone is frozen)
# TrainConfig fields a grid sets itself: the configuration's identity, its paths, and the trial's folder.
_GRID_OWNED = ("backbone", "dataset", "protocol", "loss", "data_root", "pretrained_path", "random_init", "out_dir")
_TRAIN_FIELDS = tuple(f.name for f in fields(TrainConfig))


@dataclass(frozen=True)
class SearchDim:
    """One searched TrainConfig field: loguniform / uniform in [low, high], a choice among `values`, or
    fixed at values[0]."""

    name: str
    kind: str
    low: float | None = None
    high: float | None = None
    values: tuple[Any, ...] = ()


@dataclass(frozen=True)
class ASHA:
    """Ray Tune's ASHAScheduler settings; max_t None means the configuration's epochs."""

    metric: str = "val_loss"
    mode: str = "min"
    grace_period: int = 1
    reduction_factor: float = 2
    max_t: int | None = None


@dataclass(frozen=True)
class Resources:
    """Per trial: a GPU share (fractions pack several trials on one GPU) and CPU cores."""

    gpus_per_trial: float = 1.0
    cpus_per_trial: int = 1


@dataclass(frozen=True)
class EvalSpec:
    """How the best trial of each configuration is evaluated (rft_fast.eval.EvalSettings)."""

    threats: tuple[str, ...] = THREATS
    n: int = 1000
    mode: str = "standard"
    corruption_setting: str = "study"


@dataclass(frozen=True)
class GridSpec:
    """A validated grid; build it with `load_spec`. Axes are tuples of registry names (aliases resolved)."""

    name: str
    backbones: tuple[str, ...]
    losses: tuple[str, ...]
    protocols: tuple[str, ...]
    datasets: tuple[str, ...]
    search: tuple[SearchDim, ...]
    budget_minutes: float
    store: str
    out_dir: str
    data_roots: dict[str, str] = field(default_factory=dict)
    pretrained: dict[str, str] = field(default_factory=dict)
    weights_dir: str | None = None
    random_init: bool = False
    fixed: dict[str, Any] = field(default_factory=dict)
    axes: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    num_samples: int | None = None
    asha: ASHA = ASHA()
    resources: Resources = Resources()
    eval: EvalSpec = EvalSpec()
    seed: int = 0


@dataclass(frozen=True)
class Config:
    """One configuration of the grid: a Tune experiment of many trials. `variant` holds the values of the
    spec's extra `axes` (TrainConfig field, value), e.g. (("tora_lambda", 0.9),)."""

    backbone: str
    loss: str
    protocol: str
    dataset: str
    variant: tuple[tuple[str, Any], ...] = ()

    @property
    def protocol_label(self) -> str:
        """The protocol as stored and reported: "FFT-5", or with the variant, "TORA-10[tora_lambda=0.9]", so
        the store keeps variants apart and the report groups them like protocols."""
        if not self.variant:
            return self.protocol
        return f"{self.protocol}[{','.join(f'{k}={v}' for k, v in self.variant)}]"

    @property
    def key(self) -> str:
        """A stable id, "backbone|loss|protocol_label|dataset"."""
        return f"{self.backbone}|{self.loss}|{self.protocol_label}|{self.dataset}"

    def train_fields(self, spec: GridSpec) -> dict[str, Any]:
        """The TrainConfig fields every trial of this configuration shares (not the searched ones, not out_dir)."""
        weights = weights_path(spec, self.backbone)
        return {
            "backbone": self.backbone, "dataset": self.dataset, "protocol": self.protocol, "loss": self.loss,
            "data_root": spec.data_roots.get(self.dataset),
            **({"random_init": True} if weights is None else {"pretrained_path": weights}),
            **spec.fixed,
            **dict(self.variant),
        }

    def epochs(self, spec: GridSpec) -> int:
        """Epochs each trial runs at most: fixed `epochs` or the protocol's."""
        return spec.fixed.get("epochs") or get_protocol(self.protocol).epochs


def weights_path(spec: GridSpec, backbone: str) -> str | None:
    """The backbone's weights file: pretrained[backbone], else <weights_dir>/<backbone>.safetensors; None under
    random_init."""
    if spec.random_init:
        return None
    if backbone in spec.pretrained:
        return spec.pretrained[backbone]
    return str(Path(spec.weights_dir) / f"{backbone}.safetensors")


def expand(spec: GridSpec) -> list[Config]:
    """Every configuration, datasets outermost, then protocols, the extra axes, backbones, losses (each in the
    spec's order): an interrupted grid leaves whole (dataset, protocol) tables, which the analyses compare."""
    return [
        Config(backbone, loss, protocol, dataset, variant)
        for dataset, protocol in itertools.product(spec.datasets, spec.protocols)
        for variant in _variants(spec, protocol)
        for backbone, loss in itertools.product(spec.backbones, spec.losses)
    ]


def _variants(spec: GridSpec, protocol: str) -> list[tuple[tuple[str, Any], ...]]:
    """The extra axes' value combinations that matter under `protocol`: the tora_* fields only change TORA
    protocols, so other protocols get one configuration instead of identical copies."""
    tora = get_protocol(protocol).tora
    axes = {name: values for name, values in spec.axes.items() if tora or not name.startswith("tora_")}
    return [tuple(zip(axes, values)) for values in itertools.product(*axes.values())]


def search_space(spec: GridSpec, config: Config) -> list[SearchDim]:
    """The dimensions a trial of `config` samples: the spec's search, less BACKBONE_DIMS under linear probing."""
    probe = get_protocol(config.protocol).linear_probe
    return [d for d in spec.search if not (probe and d.name in BACKBONE_DIMS)]


def check_paths(spec: GridSpec) -> list[str]:
    """Problems with the files the grid needs (empty when all is there): a data root per non-built-in dataset,
    and each backbone's weights file unless random_init. The runner calls it; a dry run need not."""
    problems = []
    for dataset in spec.datasets:
        if DATASETS[dataset].builtin:
            continue
        root = spec.data_roots.get(dataset)
        if root is None:
            problems.append(f"data_roots: no entry for dataset {dataset!r}")
        elif not Path(root).is_dir():
            problems.append(f"data_roots.{dataset}: {root} is not a folder")
    if not spec.random_init:
        for backbone in spec.backbones:
            path = weights_path(spec, backbone)
            if not Path(path).is_file():
                problems.append(f"pretrained: weights of {backbone!r} not found at {path}")
    return problems


# ----------------------------------------------------------------------------------------------- loading

_KEYS = {
    "name": "a name for the grid (default: the YAML file's stem, else 'grid')",
    "backbones": "registry names or aliases (`rft-fast models`)",
    "losses": f"subset of {list(LOSSES)}",
    "protocols": f"subset of {list(PROTOCOLS)}",
    "datasets": f"subset of {list(DATASETS)}",
    "data_roots": "dataset -> its local root (not needed for built-in datasets)",
    "pretrained": "backbone -> weights file (overrides weights_dir for that backbone)",
    "weights_dir": "folder holding <backbone>.safetensors for each backbone",
    "random_init": "train from random initialization instead of weights (offline / smoke grids)",
    "search": "TrainConfig field -> {loguniform: [low, high]} | {uniform: [low, high]} | {choice: [...]} | value",
    "fixed": "TrainConfig field -> value, for every trial",
    "axes": "TrainConfig field -> list of values: extra grid axes (e.g. tora_lambda, eps_schedule)",
    "budget_minutes": "wall-clock tuning budget per configuration",
    "num_samples": "trials per configuration (null: unlimited within the budget)",
    "asha": "metric, mode, grace_period, reduction_factor, max_t (null: the configuration's epochs)",
    "resources": "gpus_per_trial (fractions allowed), cpus_per_trial",
    "eval": "threats, n, mode, corruption_setting of the best trial's evaluation",
    "store": "the SQLite results store",
    "out_dir": "where Tune experiments and runs go",
    "seed": "seeds the search (the trials' sampled values), each trial's training unless fixed.seed is given, "
            "and the evaluation's attacks (default 0): the same spec gives the same trials",
}
REQUIRED = ("backbones", "losses", "protocols", "datasets", "search", "budget_minutes", "store", "out_dir")


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads 1e-6 as a float (YAML 1.1 wants 1.0e-6; users write both)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d[\d_]*\.?\d*|\.\d+)(?:[eE][-+]?\d+)$"),
    list("-+0123456789."),
)


def load_spec(source: str | Path | Mapping[str, Any]) -> GridSpec:
    """A GridSpec from a YAML file or a dict; raises ValueError naming the key at fault."""
    default_name = "grid"
    if isinstance(source, Mapping):
        raw = dict(source)
    else:
        path = Path(source)
        with path.open() as fh:
            raw = yaml.load(fh, Loader=_Loader)
        default_name = path.stem
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: expected a mapping of grid keys at the top level, got {type(raw).__name__}")
    unknown = sorted(set(raw) - set(_KEYS))
    if unknown:
        raise ValueError(f"unknown key(s) {unknown}; allowed: {list(_KEYS)}")
    missing = [k for k in REQUIRED if k not in raw]
    if missing:
        raise ValueError(f"missing key(s) {missing}")

    backbones = _axis(raw, "backbones", lambda n: models.get(n).name)
    losses = _axis(raw, "losses", lambda n: _member("loss", n, LOSSES))
    protocols = _axis(raw, "protocols", lambda n: get_protocol(n).name)
    datasets = _axis(raw, "datasets", lambda n: _member("dataset", n, tuple(DATASETS)))
    data_roots = _str_map(raw, "data_roots")
    stray = sorted(set(data_roots) - set(datasets))
    if stray:
        raise ValueError(f"data_roots: dataset(s) {stray} are not in datasets {list(datasets)}")
    pretrained = {models.get(k).name: v for k, v in _str_map(raw, "pretrained").items()}
    stray = sorted(set(pretrained) - set(backbones))
    if stray:
        raise ValueError(f"pretrained: backbone(s) {stray} are not in backbones")
    random_init = raw.get("random_init", False)
    if not isinstance(random_init, bool):
        raise ValueError(f"random_init must be true or false, got {random_init!r}")
    weights_dir = raw.get("weights_dir")
    if weights_dir is not None and not isinstance(weights_dir, str):
        raise ValueError(f"weights_dir must be a folder path, got {weights_dir!r}")
    without = [b for b in backbones if b not in pretrained]
    if not random_init and weights_dir is None and without:
        raise ValueError(
            f"pretrained: no weights for {without}; give weights_dir, a pretrained entry per backbone, "
            "or random_init: true"
        )

    fixed = _fixed(raw.get("fixed") or {})
    search = _search(raw["search"], fixed)
    axes = _axes(raw.get("axes") or {}, fixed, search)
    spec = GridSpec(
        name=_name(raw.get("name", default_name)),
        backbones=backbones, losses=losses, protocols=protocols, datasets=datasets,
        search=search,
        budget_minutes=_number("budget_minutes", raw["budget_minutes"]),
        store=_path("store", raw["store"]),
        out_dir=_path("out_dir", raw["out_dir"]),
        data_roots=data_roots, pretrained=pretrained, weights_dir=weights_dir, random_init=random_init,
        fixed=fixed, axes=axes,
        num_samples=None if raw.get("num_samples") is None else _int("num_samples", raw["num_samples"]),
        asha=_asha(raw.get("asha") or {}),
        resources=_resources(raw.get("resources") or {}),
        eval=_eval(raw.get("eval") or {}),
        seed=_int("seed", raw.get("seed", 0), minimum=0),
    )
    _probe(spec)
    return spec


def _axis(raw: dict, key: str, resolve) -> tuple[str, ...]:
    values = raw[key]
    if isinstance(values, str):
        values = [values]
    if not isinstance(values, list) or not values:
        raise ValueError(f"{key} must be a non-empty list, got {values!r}")
    out = []
    for value in values:
        try:
            out.append(resolve(value))
        except ValueError as err:
            raise ValueError(f"{key}: {err}") from None
    dupes = sorted({v for v in out if out.count(v) > 1})
    if dupes:
        raise ValueError(f"{key}: listed more than once: {dupes}")
    return tuple(out)


def _member(noun: str, value: object, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"unknown {noun} {value!r}; known: {list(allowed)}")
    return value


def _str_map(raw: dict, key: str) -> dict[str, str]:
    value = raw.get(key) or {}
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise ValueError(f"{key} must map names to path strings, got {value!r}")
    return dict(value)


def _name(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"name must be a non-empty string, got {value!r}")
    return value


def _path(key: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{key} must be a path string, got {value!r}")
    return value


def _number(key: str, value: object, *, positive: bool = True) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or (positive and value <= 0):
        raise ValueError(f"{key} must be a finite number{' > 0' if positive else ''}, got {value!r}")
    return float(value)


def _int(key: str, value: object, minimum: int = 1) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{key} must be an int >= {minimum}, got {value!r}")
    return value


def _fixed(values: object) -> dict[str, Any]:
    if not isinstance(values, dict):
        raise ValueError(f"fixed must map TrainConfig fields to values, got {values!r}")
    for name in values:
        if name in _GRID_OWNED:
            raise ValueError(f"fixed.{name}: set by the grid itself (axes, data_roots, pretrained, out_dir)")
        if name not in _TRAIN_FIELDS:
            raise ValueError(f"fixed.{name}: not a TrainConfig field; known: {sorted(set(_TRAIN_FIELDS) - set(_GRID_OWNED))}")
    return dict(values)


def _axes(values: object, fixed: dict[str, Any], search: tuple[SearchDim, ...]) -> dict[str, tuple[Any, ...]]:
    if not isinstance(values, dict):
        raise ValueError(f"axes must map TrainConfig fields to lists of values, got {values!r}")
    searched = {d.name for d in search}
    out = {}
    for name, options in values.items():
        key = f"axes.{name}"
        if name in _GRID_OWNED or name not in _TRAIN_FIELDS:
            raise ValueError(f"{key}: not a TrainConfig field an axis can vary; known: {sorted(set(_TRAIN_FIELDS) - set(_GRID_OWNED))}")
        if name in fixed or name in searched:
            raise ValueError(f"{key}: also in {'fixed' if name in fixed else 'search'}; a field is one of axis, fixed, searched")
        if not isinstance(options, list) or not options:
            raise ValueError(f"{key} must be a non-empty list, got {options!r}")
        if len(set(map(repr, options))) != len(options):
            raise ValueError(f"{key}: a value is listed more than once: {options!r}")
        out[name] = tuple(options)
    return out


def _search(values: object, fixed: dict[str, Any]) -> tuple[SearchDim, ...]:
    if not isinstance(values, dict) or not values:
        raise ValueError(f"search must map TrainConfig fields to distributions, got {values!r}")
    dims = []
    for name, value in values.items():
        key = f"search.{name}"
        if name in _GRID_OWNED or name not in _TRAIN_FIELDS:
            raise ValueError(f"{key}: not a searchable TrainConfig field; known: {sorted(set(_TRAIN_FIELDS) - set(_GRID_OWNED))}")
        if name in fixed:
            raise ValueError(f"{key}: also in fixed; a field is either searched or fixed")
        dims.append(_dim(key, name, value))
    return tuple(dims)


def _dim(key: str, name: str, value: object) -> SearchDim:
    if not isinstance(value, dict):
        return SearchDim(name, "fixed", values=(value,))
    if len(value) != 1 or next(iter(value)) not in KINDS:
        raise ValueError(f"{key}: expected one of {[{k: '...'} for k in KINDS]} or a plain value, got {value!r}")
    kind, arg = next(iter(value.items()))
    if kind in ("loguniform", "uniform"):
        if not isinstance(arg, list) or len(arg) != 2:
            raise ValueError(f"{key}: {kind} takes [low, high], got {arg!r}")
        low, high = (_number(key, v, positive=kind == "loguniform") for v in arg)
        if low >= high:
            raise ValueError(f"{key}: low ({low:g}) must be < high ({high:g})")
        return SearchDim(name, kind, low=low, high=high)
    if kind == "choice":
        if not isinstance(arg, list) or not arg:
            raise ValueError(f"{key}: choice takes a non-empty list, got {arg!r}")
        return SearchDim(name, kind, values=tuple(arg))
    return SearchDim(name, kind, values=(arg,))


def _section(key: str, values: object, cls: type) -> dict[str, Any]:
    if not isinstance(values, dict):
        raise ValueError(f"{key} must be a mapping, got {values!r}")
    allowed = [f.name for f in fields(cls)]
    unknown = sorted(set(values) - set(allowed))
    if unknown:
        raise ValueError(f"{key}: unknown key(s) {unknown}; allowed: {allowed}")
    return {**{f.name: f.default for f in fields(cls)}, **values}


def _asha(values: object) -> ASHA:
    v = _section("asha", values, ASHA)
    if v["mode"] not in ("min", "max"):
        raise ValueError(f"asha.mode must be 'min' or 'max', got {v['mode']!r}")
    if not isinstance(v["metric"], str) or not v["metric"]:
        raise ValueError(f"asha.metric must be a metric name, got {v['metric']!r}")
    if _number("asha.reduction_factor", v["reduction_factor"]) <= 1:
        raise ValueError(f"asha.reduction_factor must be > 1, got {v['reduction_factor']!r}")
    _int("asha.grace_period", v["grace_period"])
    if v["max_t"] is not None and _int("asha.max_t", v["max_t"]) < v["grace_period"]:
        raise ValueError(f"asha.max_t ({v['max_t']}) must be >= asha.grace_period ({v['grace_period']})")
    return ASHA(**v)


def _resources(values: object) -> Resources:
    v = _section("resources", values, Resources)
    gpus = _number("resources.gpus_per_trial", v["gpus_per_trial"])
    if gpus > 1 and gpus != int(gpus):
        raise ValueError(f"resources.gpus_per_trial must be a fraction <= 1 or a whole number, got {gpus!r}")
    return Resources(gpus, _int("resources.cpus_per_trial", v["cpus_per_trial"]))


def _eval(values: object) -> EvalSpec:
    v = _section("eval", values, EvalSpec)
    threats = v["threats"]
    if isinstance(threats, str):
        threats = [threats]
    if not threats or any(t not in ALL_THREATS for t in threats):
        raise ValueError(f"eval.threats must be a non-empty subset of {list(ALL_THREATS)}, got {threats!r}")
    if v["mode"] not in MODES:
        raise ValueError(f"eval.mode must be one of {list(MODES)}, got {v['mode']!r}")
    if v["corruption_setting"] not in SETTINGS:
        raise ValueError(f"eval.corruption_setting must be one of {list(SETTINGS)}, got {v['corruption_setting']!r}")
    return EvalSpec(tuple(threats), _int("eval.n", v["n"]), v["mode"], v["corruption_setting"])


def _probe(spec: GridSpec) -> None:
    """Builds a TrainConfig with the fixed fields and each search bound / value, so a bad value fails now,
    named, rather than in every trial."""
    base = {"backbone": spec.backbones[0], "dataset": spec.datasets[0], "random_init": True}
    try:
        TrainConfig(**base, **spec.fixed)
    except (TypeError, ValueError) as err:
        raise ValueError(f"fixed: {err}") from None
    for dim in spec.search:
        samples = (dim.low, dim.high) if dim.kind in ("loguniform", "uniform") else dim.values
        for value in samples:
            try:
                TrainConfig(**base, **spec.fixed, **{dim.name: value})
            except (TypeError, ValueError) as err:
                raise ValueError(f"search.{dim.name}: {err}") from None
    for name, options in spec.axes.items():
        for value in options:
            try:
                TrainConfig(**base, **spec.fixed, **{name: value})
            except (TypeError, ValueError) as err:
                raise ValueError(f"axes.{name}: {err}") from None
