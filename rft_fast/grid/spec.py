"""The grid specification: which (backbone, loss, protocol, dataset) configurations to tune, the search space
and budget of each, and how the best trial is evaluated; read from YAML (or a dict) and validated up front.

    spec = load_spec("examples/study.yaml")
    problems = validate(spec)                   # [] when the grid can run: values, combinations and paths
    for config in expand(spec):
        fields = config.train_fields(spec)      # TrainConfig fields shared by the configuration's trials
        dims = search_space(spec, config)       # what each trial samples (LP drops the backbone's lr / wd)

Strict: a boolean is true or false (YAML's yes / no / on / off and quoted strings are not), an int is written
as one (not 1e3 or 5.0), a number is an int or a float, and every number has a range: the grid's own tables
(configs.GRID_RULES, sections.ASHA_RULES, sections.RESOURCE_RULES), EvalSettings' FIELD_RULES for the `eval:`
section (sections.EVAL_RULES) and TrainConfig's FIELD_RULES for fixed, searched and axis values. Every error
names the key at fault with its section (`asha.grace_period`, `search.lr_head.loguniform[0]`), the value given
and what was expected; an unknown key names the nearest known one. At load, each (loss, protocol, axis values)
combination's TrainConfig is built with the fixed fields and each search bound / value, so a combination that
cannot train (TORA with a GRACE loss, say) fails now rather than in every trial. Paths (data roots, weights
files) are checked by `check_paths`, part of `validate`, so a plan can be printed on a machine without the
data. Nothing here imports Ray.

The parts: loader.py (the strict YAML loader), search.py (fixed / search / axes), sections.py (asha, resources, eval),
configs.py (GridSpec, Config, expand), validation.py (combinations and paths); this module reads a spec (file, keys, axes, sections).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

import yaml

from rft_fast import models
from rft_fast.checks import Rule, check_fields, show, suggest
from rft_fast.grid.configs import GRID_RULES, Config, GridSpec, expand, search_space, weights_path
from rft_fast.grid.loader import MAX_DEPTH, StrictLoader
from rft_fast.grid.search import (
    BACKBONE_DIMS,
    GRID_OWNED,
    KINDS,
    SearchDim,
    field_problem,
    parse_axes,
    parse_fixed,
    parse_search,
)
from rft_fast.grid.sections import (
    ASHA,
    ASHA_RULES,
    EVAL_OWNED,
    EVAL_RULES,
    RESOURCE_RULES,
    EvalSpec,
    Resources,
    eval_values,
    no_repeats,
)
from rft_fast.grid.validation import check_paths, config_problems, validate
from rft_fast.train.protocols import get_protocol

__all__ = [
    "ASHA",
    "BACKBONE_DIMS",
    "Config",
    "EvalSpec",
    "GRID_OWNED",
    "GridSpec",
    "KINDS",
    "MAX_DEPTH",
    "MAX_SPEC_BYTES",
    "REQUIRED",
    "Resources",
    "SearchDim",
    "check_paths",
    "config_problems",
    "expand",
    "field_problem",
    "load_spec",
    "no_repeats",
    "read_yaml",
    "search_space",
    "spec_keys",
    "validate",
    "weights_path",
]


# ----------------------------------------------------------------------------------------------- the axes' names


def loss_names() -> tuple[str, ...]:
    """The losses a grid can list: the loss registry's (rft_fast.train.config.LOSSES reads it live)."""
    from rft_fast.train.config import LOSSES

    return tuple(LOSSES)


def protocol_names() -> tuple[str, ...]:
    """The named protocols (TORA-<epochs> names any count as well)."""
    from rft_fast.train.protocols import PROTOCOLS

    return tuple(PROTOCOLS)


def dataset_names() -> tuple[str, ...]:
    """The registered datasets (your own data is named folder:<dir> / csv:<file> besides)."""
    from rft_fast.data.registry import DATASETS

    return tuple(DATASETS)


def dataset_name(name: str) -> str:
    """The canonical name of a dataset (rft_fast.data.lookup: registered, or folder: / csv: paths resolved)."""
    from rft_fast.data import lookup

    return lookup(name).name


def _ranges(rules: Mapping[str, Rule]) -> str:
    return ", ".join(f"{name} ({rule.expected()})" for name, rule in rules.items())


def spec_keys() -> dict[str, str]:
    """Every top-level key of a spec, in order, with what it holds (ranges from the rules that check them)."""
    return {
        "name": "a name for the grid (default: the YAML file's stem, else 'grid')",
        "backbones": "registry names or aliases (`rft-fast models`), or any timm model name (`rft-fast models list "
        "--timm PATTERN`)",
        "losses": f"subset of {list(loss_names())}",
        "protocols": f"subset of {list(protocol_names())} or TORA-<epochs>",
        "datasets": f"subset of {list(dataset_names())}, or your own data as folder:<dir> | csv:<file> "
        "(relative paths from the working folder)",
        "data_roots": "dataset -> its local root (not needed for built-in datasets and your own folder: / csv:)",
        "pretrained": "backbone -> weights file, or 'hub' (overrides weights_dir for that backbone)",
        "weights_dir": "folder holding <backbone>.safetensors for each backbone without a pretrained entry (none: "
        "hub weights, which `rft-fast models fetch --spec` caches for offline nodes)",
        "random_init": "train from random initialization instead of weights (offline / smoke grids)",
        "download": "download datasets missing under their data_roots entry before the grid runs (default false: "
        "nothing is downloaded; `rft-fast datasets fetch`)",
        "search": "TrainConfig field -> {loguniform: [low, high]} | {uniform: [low, high]} | {choice: [...]} | value",
        "fixed": "TrainConfig field -> value, for every trial",
        "axes": "TrainConfig field -> list of values: extra grid axes (e.g. tora_lambda, eps_schedule)",
        "budget_minutes": f"wall-clock tuning budget per configuration, {GRID_RULES['budget_minutes'].expected()}",
        "num_samples": f"trials per configuration, {GRID_RULES['num_samples'].expected()} (null: unlimited within "
        "the budget)",
        "asha": _ranges(ASHA_RULES) + "; mode is the metric's direction, max_t null: the configuration's epochs",
        "resources": _ranges(RESOURCE_RULES) + "; gpus_per_trial a fraction <= 1 or a whole number",
        "eval": "the best trial's evaluation, any EvalSettings field but "
        + ", ".join(EVAL_OWNED)
        + ": "
        + _ranges(EVAL_RULES)
        + " (threats, eps per norm and the smoothing lists: of each item)",
        "store": "the SQLite results store",
        "out_dir": "where Tune experiments and runs go",
        "seed": "seeds the search (the trials' sampled values), each trial's training unless fixed.seed is given, "
        f"and the evaluation's attacks (default 0; {GRID_RULES['seed'].expected()}): the same spec gives "
        "the same trials",
    }


MAX_SPEC_BYTES = 10 * 2**20  # a spec file larger than this is not a grid spec
REQUIRED = ("backbones", "losses", "protocols", "datasets", "search", "budget_minutes", "store", "out_dir")
_DEFAULTS = {"weights_dir": None, "random_init": False, "download": False, "num_samples": None, "seed": 0}


# ----------------------------------------------------------------------------------------------- loading


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
        raw = yaml.load(text, Loader=StrictLoader)
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
    _keys("", raw, list(spec_keys()))
    missing = [k for k in REQUIRED if k not in raw]
    if missing:
        raise ValueError(f"missing key(s) {missing}")
    scalars = {**_DEFAULTS, "name": default_name, **{k: raw[k] for k in GRID_RULES if k in raw}}
    check_fields(scalars, GRID_RULES)  # early: the sections below rely on them

    backbones = _axis(raw, "backbones", lambda n: models.get(n).name)
    losses = _axis(raw, "losses", lambda n: _member("loss", n, loss_names()))
    protocols = _axis(raw, "protocols", lambda n: get_protocol(n).name)
    datasets = _axis(raw, "datasets", dataset_name)
    data_roots = _str_map(raw, "data_roots")
    pretrained = {}
    for name, path in _str_map(raw, "pretrained").items():
        try:
            pretrained[models.get(name).name] = path
        except ValueError as err:
            raise ValueError(f"pretrained: {err}") from None
    fixed = parse_fixed(_mapping("fixed", raw.get("fixed")))
    search = parse_search(raw["search"], fixed)
    axes = parse_axes(_mapping("axes", raw.get("axes")), fixed, search)
    spec = GridSpec(
        backbones=backbones,
        losses=losses,
        protocols=protocols,
        datasets=datasets,
        search=search,
        data_roots=data_roots,
        pretrained=pretrained,
        fixed=fixed,
        axes=axes,
        asha=_section("asha", raw.get("asha"), ASHA),
        resources=_section("resources", raw.get("resources"), Resources),
        eval=_section("eval", raw.get("eval"), EvalSpec, eval_values),
        **scalars,
    )
    problems = config_problems(spec, first_only=True)
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


def _axis(raw: dict, key: str, resolve: Callable[[str], str]) -> tuple[str, ...]:
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


def _section(key: str, values: object, cls: type, prepare: Callable[[dict], dict] = dict) -> Any:
    """asha / resources / eval: the dataclass built from the section's keys (it checks its values); `prepare`
    turns the YAML form into the dataclass's arguments."""
    values = _mapping(key, values)
    owned = EVAL_OWNED if cls is EvalSpec else {}
    _keys(f"{key}: ", {k: v for k, v in values.items() if k not in owned}, [f.name for f in fields(cls)])
    return cls(**prepare(values))
