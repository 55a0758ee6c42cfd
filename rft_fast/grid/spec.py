"""The grid specification: which (backbone, loss, protocol, dataset) configurations to tune, the search space
and budget of each, and how the best trial is evaluated; read from YAML (or a dict) and validated up front.

    spec = load_spec("examples/study.yaml")
    problems = validate(spec)                   # [] when the grid can run: values, combinations and paths
    for config in expand(spec):
        fields = config.train_fields(spec)      # TrainConfig fields shared by the configuration's trials
        dims = search_space(spec, config)       # what each trial samples (LP drops the backbone's lr / wd)

Strict: a boolean is true or false (YAML's yes / no / on / off and quoted strings are not), an int is written
as one (not 1e3 or 5.0), a number is an int or a float, and every number has a range: the tables below
(_GRID_RULES, _ASHA_RULES, _RESOURCE_RULES, _EVAL_RULES) and TrainConfig's FIELD_RULES for fixed, searched and
axis values. Every error names the key at fault with its section (`asha.grace_period`,
`search.lr_head.loguniform[0]`), the value given and what was expected; an unknown key names the nearest
known one. At load, each (loss, protocol, axis values) combination's TrainConfig is built with the fixed fields
and each search bound / value, so a combination that cannot train (TORA with a GRACE loss, say) fails now
rather than in every trial. Paths (data roots, weights files) are checked by `check_paths`, part of `validate`,
so a plan can be printed on a machine without the data. Nothing here imports Ray.
"""
from __future__ import annotations

import itertools
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
from rft_fast.checks import Rule, check_fields, show, suggest
from rft_fast.train.config import FIELD_RULES, LOSSES, MAX_EPOCHS, REPORTED_METRICS, SEED_MAX, TrainConfig
from rft_fast.train.protocols import PROTOCOLS, get_protocol

KINDS = ("loguniform", "uniform", "choice", "fixed")
BACKBONE_DIMS = ("lr_backbone", "wd_backbone")  # not searched under linear probing (the backbone is frozen)
# TrainConfig fields a grid sets itself: the configuration's identity, its paths, and the trial's folder.
_GRID_OWNED = ("backbone", "dataset", "protocol", "loss", "data_root", "pretrained_path", "random_init", "out_dir")
_TRAIN_FIELDS = tuple(f.name for f in fields(TrainConfig))
_SETTABLE = tuple(name for name in _TRAIN_FIELDS if name not in _GRID_OWNED)
MAX_SPEC_BYTES = 10 * 2**20  # a spec file larger than this is not a grid spec
MAX_DEPTH = 32  # YAML nesting levels a spec may use (a spec needs 4)


def _field_problem(key: str, name: object, what: str) -> str | None:
    """None when `name` is a TrainConfig field a spec may set (fixed, searched or an axis), else the message."""
    if name in _GRID_OWNED:
        return (f"{key}: not a {what}; the grid sets it itself (from backbones, losses, protocols, datasets, "
                "data_roots, pretrained, weights_dir, random_init, out_dir)")
    if name not in _TRAIN_FIELDS:
        hint = suggest(name, _SETTABLE)
        return f"{key}: not a {what}" + (f" ({hint[2:]})" if hint else f"; known: {sorted(_SETTABLE)}")
    return None


def _no_repeats(key: str, values: tuple[Any, ...] | list[Any]) -> None:
    if len({(type(v), v) for v in values}) != len(values):
        raise ValueError(f"{key}: a value is listed more than once: {show(list(values))}")


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
        problem = _field_problem(key, self.name, "searchable TrainConfig field")
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
            _no_repeats(f"{key}.choice", self.values)
        else:
            if len(self.values) != 1:
                raise ValueError(f"{key}: a fixed dimension holds one value, got {show(self.values)}")
            rule.check(key, self.values[0])


_ASHA_RULES = {
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
        check_fields(self, _ASHA_RULES, "asha.")
        better = REPORTED_METRICS[self.metric]
        if self.mode != better:
            raise ValueError(
                f"asha.mode must be {better!r} for asha.metric {self.metric!r} ({'lower' if better == 'min' else 'higher'}"
                f" is better: {self.mode!r} would keep the worst trials), got {self.mode!r}"
            )
        if self.max_t is not None and self.max_t < self.grace_period:
            raise ValueError(f"asha.max_t ({self.max_t}) must be >= asha.grace_period ({self.grace_period})")


_RESOURCE_RULES = {
    "gpus_per_trial": Rule(float, 0, 64, open_low=True),
    "cpus_per_trial": Rule(int, 1, 1024),
}


@dataclass(frozen=True)
class Resources:
    """Per trial: a GPU share (fractions pack several trials on one GPU) and CPU cores."""

    gpus_per_trial: float = 1.0
    cpus_per_trial: int = 1

    def __post_init__(self) -> None:
        check_fields(self, _RESOURCE_RULES, "resources.")
        if self.gpus_per_trial > 1 and self.gpus_per_trial != int(self.gpus_per_trial):
            raise ValueError(
                f"resources.gpus_per_trial must be a fraction <= 1 or a whole number, got {self.gpus_per_trial!r}"
            )
        object.__setattr__(self, "gpus_per_trial", float(self.gpus_per_trial))


_EVAL_RULES = {
    "n": Rule(int, 1, 1_000_000),
    "mode": Rule(str, choices=tuple(MODES)),
    "corruption_setting": Rule(str, choices=tuple(SETTINGS)),
}


@dataclass(frozen=True)
class EvalSpec:
    """How the best trial of each configuration is evaluated (rft_fast.eval.EvalSettings)."""

    threats: tuple[str, ...] = THREATS
    n: int = 1000
    mode: str = "standard"
    corruption_setting: str = "study"

    def __post_init__(self) -> None:
        threats = self.threats
        bad = [t for t in threats if t not in ALL_THREATS] if isinstance(threats, tuple) else [threats]
        if not threats or bad:
            raise ValueError(
                f"eval.threats must be a non-empty subset of {list(ALL_THREATS)}, got {show(threats)}"
                + (suggest(bad[0], ALL_THREATS) if bad else "")
            )
        _no_repeats("eval.threats", threats)
        check_fields(self, _EVAL_RULES, "eval.")


_GRID_RULES = {
    "name": Rule(str),
    "budget_minutes": Rule(float, 0, 525_600, open_low=True),  # at most a year per configuration
    "store": Rule(str),
    "out_dir": Rule(str),
    "weights_dir": Rule(str, optional=True),
    "random_init": Rule(bool),
    "num_samples": Rule(int, 1, 100_000, optional=True),
    "seed": Rule(int, 0, SEED_MAX),
}


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

    def __post_init__(self) -> None:
        check_fields(self, _GRID_RULES)
        stray = sorted(set(self.data_roots) - set(self.datasets))
        if stray:
            raise ValueError(f"data_roots: dataset(s) {stray} are not in datasets {list(self.datasets)}")
        stray = sorted(set(self.pretrained) - set(self.backbones))
        if stray:
            raise ValueError(f"pretrained: backbone(s) {stray} are not in backbones")
        without = [b for b in self.backbones if b not in self.pretrained]
        if not self.random_init and self.weights_dir is None and without:
            raise ValueError(
                f"pretrained: no weights for {without}; give weights_dir, a pretrained entry per backbone, "
                "or random_init: true"
            )
        object.__setattr__(self, "budget_minutes", float(self.budget_minutes))


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
        """Epochs each trial runs at most: `epochs` of the variant or fixed, else the protocol's."""
        return {**spec.fixed, **dict(self.variant)}.get("epochs") or get_protocol(self.protocol).epochs


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
    """Problems with the files the grid needs (empty when all is there): a data root folder per non-built-in
    dataset; unless random_init, weights_dir as a folder and each backbone's weights file; the store not a folder
    and out_dir not a file. Part of `validate`; a dry run need not."""
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
        from_dir = [b for b in spec.backbones if b not in spec.pretrained]
        no_dir = bool(from_dir) and not Path(spec.weights_dir).is_dir()
        if no_dir:
            problems.append(
                f"weights_dir: {spec.weights_dir} is not a folder (it should hold <backbone>.safetensors of "
                f"{len(from_dir)} backbone(s): {', '.join(from_dir[:3])}{', ...' if len(from_dir) > 3 else ''})"
            )
        for backbone in spec.backbones:
            if no_dir and backbone in from_dir:
                continue  # said once above
            path = Path(weights_path(spec, backbone))
            key = "weights_dir" if backbone in from_dir else f"pretrained.{backbone}"
            if path.is_dir():
                problems.append(f"{key}: weights of {backbone!r} at {path} is a folder, not a file")
            elif not path.is_file():
                problems.append(f"{key}: weights of {backbone!r} not found at {path}")
    if Path(spec.store).is_dir():
        problems.append(f"store: {spec.store} is a folder; give the SQLite file's path")
    if Path(spec.out_dir).exists() and not Path(spec.out_dir).is_dir():
        problems.append(f"out_dir: {spec.out_dir} is a file, not a folder")
    return problems


def validate(spec: GridSpec, *, paths: bool = True) -> list[str]:
    """Everything that would stop the grid or fail its trials, found before Ray starts: [] when it can run.

    A spec's values were checked when it was built (types and ranges, asha.metric among the metrics `fit`
    reports and mode its direction, seeds, known names, each combination's TrainConfig); this builds each
    (loss, protocol, axis values) combination's TrainConfig again, with the fixed fields and each search bound
    and value, listing every combination that fails (a spec assembled or changed in code is held to the same
    rules), then, with `paths`, adds `check_paths`: data roots, weights_dir, weights files, store, out_dir."""
    return _config_problems(spec, first_only=False) + (check_paths(spec) if paths else [])


# ----------------------------------------------------------------------------------------------- loading

_KEYS = {
    "name": "a name for the grid (default: the YAML file's stem, else 'grid')",
    "backbones": "registry names or aliases (`rft-fast models`)",
    "losses": f"subset of {list(LOSSES)}",
    "protocols": f"subset of {list(PROTOCOLS)} or TORA-<epochs>",
    "datasets": f"subset of {list(DATASETS)}",
    "data_roots": "dataset -> its local root (not needed for built-in datasets)",
    "pretrained": "backbone -> weights file (overrides weights_dir for that backbone)",
    "weights_dir": "folder holding <backbone>.safetensors for each backbone",
    "random_init": "train from random initialization instead of weights (offline / smoke grids)",
    "search": "TrainConfig field -> {loguniform: [low, high]} | {uniform: [low, high]} | {choice: [...]} | value",
    "fixed": "TrainConfig field -> value, for every trial",
    "axes": "TrainConfig field -> list of values: extra grid axes (e.g. tora_lambda, eps_schedule)",
    "budget_minutes": "wall-clock tuning budget per configuration, in (0, 525600] (a year)",
    "num_samples": "trials per configuration, 1..100000 (null: unlimited within the budget)",
    "asha": f"metric ({' | '.join(REPORTED_METRICS)}), mode (min | max: the metric's direction), grace_period "
            f"(1..{MAX_EPOCHS}), reduction_factor ([1.1, 100]), max_t (1..{MAX_EPOCHS}; null: the configuration's epochs)",
    "resources": "gpus_per_trial ((0, 64]: a fraction <= 1 or a whole number), cpus_per_trial (1..1024)",
    "eval": "threats, n (1..1000000), mode, corruption_setting of the best trial's evaluation",
    "store": "the SQLite results store",
    "out_dir": "where Tune experiments and runs go",
    "seed": "seeds the search (the trials' sampled values), each trial's training unless fixed.seed is given, "
            "and the evaluation's attacks (default 0; an int in [0, 2**32)): the same spec gives the same trials",
}
REQUIRED = ("backbones", "losses", "protocols", "datasets", "search", "budget_minutes", "store", "out_dir")
_DEFAULTS = {"weights_dir": None, "random_init": False, "num_samples": None, "seed": 0}


class _Loader(yaml.SafeLoader):
    """SafeLoader for specs: 1e-6 is a float (YAML 1.1 wants 1.0e-6; users write both); only true / false are
    booleans (YAML 1.1's yes / no / on / off stay strings, which a boolean field then refuses); a key given twice
    in one mapping and nesting deeper than MAX_DEPTH are errors (PyYAML keeps the last value, and recurses)."""

    _depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise yaml.composer.ComposerError(
                    None, None, f"nested deeper than {MAX_DEPTH} levels", self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: set[str] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                if key_node.value in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key {key_node.value!r} given twice in one mapping", key_node.start_mark)
                seen.add(key_node.value)
        return super().construct_mapping(node, deep)


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d[\d_]*\.?\d*|\.\d+)(?:[eE][-+]?\d+)$"),
    list("-+0123456789."),
)


def read_yaml(path: str | Path) -> dict[str, Any]:
    """The top-level mapping of a spec file; every way the file can be wrong is a ValueError naming it: missing,
    a folder, too large, not UTF-8, malformed YAML (with line and column), nested too deeply, a key twice, empty
    or not a mapping at the top."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path}: no such file")
    if path.is_dir():
        raise ValueError(f"{path}: is a folder; give the grid spec's YAML file (e.g. examples/quick.yaml)")
    if not path.is_file():
        raise ValueError(f"{path}: not a regular file")
    try:
        size = path.stat().st_size
        if size > MAX_SPEC_BYTES:
            raise ValueError(f"{path}: {size:,} bytes; a grid spec is at most {MAX_SPEC_BYTES:,}")
        data = path.read_bytes()
    except OSError as err:
        raise ValueError(f"{path}: cannot be read ({err.strerror or err})") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text (byte {err.start} is {data[err.start]:#04x})") from None
    try:
        raw = yaml.load(text, Loader=_Loader)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        what = "; ".join(str(part) for part in (err.context, err.problem) if part)
        raise ValueError(f"{path}: malformed YAML{where}: {what}") from None
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: malformed YAML: {' '.join(str(err).split())}") from None
    except RecursionError:
        raise ValueError(f"{path}: nested too deeply") from None
    if raw is None:
        raise ValueError(f"{path}: empty; expected a mapping of grid keys ({', '.join(REQUIRED)}, ...)")
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping of grid keys at the top level, got {type(raw).__name__}")
    return raw


def load_spec(source: str | Path | Mapping[str, Any]) -> GridSpec:
    """A GridSpec from a YAML file or a dict; raises ValueError naming the key at fault (and the file)."""
    if isinstance(source, Mapping):
        return _build(dict(source), "grid")
    raw = read_yaml(source)
    try:
        return _build(raw, Path(source).stem)
    except ValueError as err:
        raise ValueError(f"{source}: {err}") from None


def _build(raw: dict[Any, Any], default_name: str) -> GridSpec:
    _keys("", raw, list(_KEYS))
    missing = [k for k in REQUIRED if k not in raw]
    if missing:
        raise ValueError(f"missing key(s) {missing}")
    scalars = {**_DEFAULTS, "name": default_name, **{k: raw[k] for k in _GRID_RULES if k in raw}}
    check_fields(scalars, _GRID_RULES)  # early: the sections below rely on them

    backbones = _axis(raw, "backbones", lambda n: models.get(n).name)
    losses = _axis(raw, "losses", lambda n: _member("loss", n, LOSSES))
    protocols = _axis(raw, "protocols", lambda n: get_protocol(n).name)
    datasets = _axis(raw, "datasets", lambda n: _member("dataset", n, tuple(DATASETS)))
    data_roots = _str_map(raw, "data_roots")
    pretrained = {}
    for name, path in _str_map(raw, "pretrained").items():
        try:
            pretrained[models.get(name).name] = path
        except ValueError as err:
            raise ValueError(f"pretrained: {err}") from None
    fixed = _fixed(_mapping("fixed", raw.get("fixed")))
    search = _search(raw["search"], fixed)
    axes = _axes(_mapping("axes", raw.get("axes")), fixed, search)
    spec = GridSpec(
        backbones=backbones, losses=losses, protocols=protocols, datasets=datasets,
        search=search, data_roots=data_roots, pretrained=pretrained, fixed=fixed, axes=axes,
        asha=_section("asha", raw.get("asha"), ASHA),
        resources=_section("resources", raw.get("resources"), Resources),
        eval=_section("eval", raw.get("eval"), EvalSpec),
        **scalars,
    )
    problems = _config_problems(spec, first_only=True)
    if problems:
        raise ValueError(problems[0])
    return spec


def _keys(where: str, values: Mapping[Any, Any], known: list[str]) -> None:
    """Keys must be strings and known; an unknown one is named with the nearest known key."""
    for key in values:
        if not isinstance(key, str):
            raise ValueError(f"{where}keys must be strings, got {show(key)} ({type(key).__name__})")
    unknown = [k for k in values if k not in known]
    if unknown:
        named = ", ".join(repr(k) + (f" ({hint[2:]})" if (hint := suggest(k, known)) else "") for k in unknown)
        raise ValueError(f"{where}unknown key(s) {named}; allowed: {known}")


def _mapping(key: str, value: object) -> dict[Any, Any]:
    """A section's mapping: null (or absent) is empty; anything but a mapping is an error."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"{key} must be a mapping, got {show(value)} ({type(value).__name__})")
    return value


def _axis(raw: dict, key: str, resolve) -> tuple[str, ...]:
    values = raw[key]
    if isinstance(values, str):
        values = [values]
    if not isinstance(values, list) or not values:
        raise ValueError(f"{key} must be a non-empty list, got {show(values)}")
    out = []
    for i, value in enumerate(values):
        Rule(str).check(f"{key}[{i}]", value)
        try:
            out.append(resolve(value))
        except ValueError as err:
            raise ValueError(f"{key}: {err}") from None
    dupes = sorted({v for v in out if out.count(v) > 1})
    if dupes:
        raise ValueError(f"{key}: listed more than once: {dupes}")
    return tuple(out)


def _member(noun: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"unknown {noun} {value!r}{suggest(value, allowed)}; known: {list(allowed)}")
    return value


def _str_map(raw: dict, key: str) -> dict[str, str]:
    """A mapping of names to path strings (data_roots, pretrained)."""
    value = _mapping(key, raw.get(key))
    for name, path in value.items():
        Rule(str).check(f"{key} key", name)
        Rule(str).check(f"{key}.{name}", path)
    return dict(value)


def _fixed(values: dict[Any, Any]) -> dict[str, Any]:
    for name, value in values.items():
        problem = _field_problem(f"fixed.{name}", name, "TrainConfig field")
        if problem:
            raise ValueError(problem)
        FIELD_RULES[name].check(f"fixed.{name}", value)
    return dict(values)


def _axes(values: dict[Any, Any], fixed: dict[str, Any], search: tuple[SearchDim, ...]) -> dict[str, tuple[Any, ...]]:
    searched = {d.name for d in search}
    out = {}
    for name, options in values.items():
        key = f"axes.{name}"
        problem = _field_problem(key, name, "TrainConfig field an axis can vary")
        if problem:
            raise ValueError(problem)
        if name in fixed or name in searched:
            raise ValueError(f"{key}: also in {'fixed' if name in fixed else 'search'}; a field is one of axis, fixed, searched")
        if not isinstance(options, list) or not options:
            raise ValueError(f"{key} must be a non-empty list, got {show(options)}")
        for i, option in enumerate(options):
            FIELD_RULES[name].check(f"{key}[{i}]", option)
        _no_repeats(key, options)
        out[name] = tuple(options)
    return out


def _search(values: object, fixed: dict[str, Any]) -> tuple[SearchDim, ...]:
    if not isinstance(values, dict) or not values:
        raise ValueError(f"search must map TrainConfig fields to distributions, got {show(values)}")
    dims = []
    for name, value in values.items():
        key = f"search.{name}"
        problem = _field_problem(key, name, "searchable TrainConfig field")
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


def _section(key: str, values: object, cls: type) -> Any:
    """asha / resources / eval: the dataclass built from the section's keys (it checks its values)."""
    values = _mapping(key, values)
    _keys(f"{key}: ", values, [f.name for f in fields(cls)])
    values = dict(values)
    if cls is EvalSpec and "threats" in values:
        threats = values["threats"]
        values["threats"] = (threats,) if isinstance(threats, str) else tuple(threats) if isinstance(threats, list) else threats
    return cls(**values)


def _config_problems(spec: GridSpec, *, first_only: bool) -> list[str]:
    """Builds a TrainConfig per (loss, protocol, axis values) combination (backbone and dataset change no rule):
    with the fixed fields, then the axis values, then each search bound / value in turn, so a value or a
    combination that cannot train fails now, named, rather than in every trial. Each problem starts with the key
    it comes from ("fixed", "axes.<field>", "search.<field>") and, when the grid has several combinations, ends
    with the one that fails; with first_only, at most one problem."""
    combinations = {(c.loss, c.protocol, c.variant): c for c in expand(spec)}
    problems: list[str] = []
    for config in combinations.values():
        base = {**config.train_fields(spec), "random_init": True, "pretrained_path": None}
        for name, _ in config.variant:
            base.pop(name)
        where = f" (loss {config.loss!r}, protocol {config.protocol_label})" if len(combinations) > 1 else ""
        steps = [("fixed", {})]
        if config.variant:
            steps.append(("axes." + ",".join(name for name, _ in config.variant), dict(config.variant)))
        steps += [(f"search.{dim.name}", {**dict(config.variant), dim.name: value})
                  for dim in search_space(spec, config)
                  for value in ((dim.low, dim.high) if dim.kind in ("loguniform", "uniform") else dim.values)]
        for key, extra in steps:
            try:
                TrainConfig(**{**base, **extra})
            except (TypeError, ValueError) as err:
                problems.append(f"{key}: {err}{where}")
                break
        if first_only and problems:
            break
    return problems
