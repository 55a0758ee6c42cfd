"""EvalSettings: how a model is evaluated (which threats, the test subset, the attacks' and corruptions' and
smoothing's parameters) as a typed record, with the rule and help text of each field (FIELD_RULES,
FIELD_HELP), from which `rft-fast eval`'s options and the grid spec's `eval:` section are generated, as train's
come from TrainConfig.

Fields whose value is a collection have the rule of one item: threats (each one of ALL_THREATS), eps (each
norm's radius), smoothing_sigmas / smoothing_radii (each number). How the command line spells a field differs
for a few (FIELD_FLAGS: eps is one flag per norm, --eps-linf / --eps-l2 / --eps-l1; corruption_setting is
--corruptions; the smoothing lists are --sigma / --radii); LIST_FIELDS are written comma-separated there.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch

from rft_fast import precision
from rft_fast.checks import LiveChoices, Rule, is_real, suggest
from rft_fast.eval.autoattack import MODES
from rft_fast.eval.corruptions import BLOCKS, RESOLUTIONS, SETTINGS
from rft_fast.eval.images import image_source, image_sources
from rft_fast.results.threats import threat_specs
from rft_fast.study import NORMS, STUDY_EPS, STUDY_N

SEED_MAX = 2**32 - 1


def default_threats() -> tuple[str, ...]:
    """The threats run by default: every registered threat that is not opt-in (the study's five)."""
    return tuple(spec.name for spec in threat_specs() if spec.default)


def all_threats() -> tuple[str, ...]:
    """Every registered threat, in run order (rft_fast.results.threats)."""
    return tuple(spec.name for spec in threat_specs())


THREATS = default_threats()  # the study's five: the default (the built-ins, at import)
ALL_THREATS = all_threats()
OPTIONAL_THREATS = tuple(t for t in ALL_THREATS if t not in THREATS)  # selectable, never run unless asked for


@dataclass(frozen=True)
class RunInfo:
    """What identifies the evaluated model in the store."""

    run_id: str
    dataset: str
    backbone: str
    loss: str
    protocol: str
    hparams: dict[str, Any] = field(default_factory=dict)

    def columns(self) -> dict[str, Any]:
        """The store's model columns of this run (a Measurement's identity; Store.query's filter)."""
        return asdict(self)


def as_arguments(values: Mapping[str, Any]) -> dict[str, Any]:
    """The mapping form of EvalSettings' fields (YAML, JSON) as its arguments: a single threat name is a
    one-threat tuple, lists are tuples."""
    out = dict(values)
    if isinstance(out.get("threats"), str):
        out["threats"] = (out["threats"],)
    for name in LIST_FIELDS:
        if isinstance(out.get(name), list):
            out[name] = tuple(out[name])
    return out


@dataclass
class EvalSettings:
    """threats: any of ALL_THREATS (default THREATS, the study's five); n: test subset size (the study: 1,000);
    eps: per norm (default the study's); mode: AutoAttack "standard" | "fast"; corruption_setting: "study"
    (11 types, severity 3, one per image) | "full" (15 types x 5 severities); corruption_resolution: "native"
    (the study's: each image corrupted at its native resolution, then resized) | "evaluation" (the resized
    image corrupted); corruption_blocks: "study" (the paper's: step N // 11, the last images wrap to the first
    type) | "even" (numpy.array_split sizes); cache_dir: corrupted test sets (None: not cached); images: where
    the images come from (rft_fast.eval.images: "drawn" from the test split | "robustgenbench", the paper's
    frozen images); amp: the autocast of the evaluation's forward passes and of the attacks' forward/backward
    (rft_fast.precision: "auto" is bf16 where the device has native bf16, else float32 | "bf16" | "fp16" |
    "none"); AutoAttack's clean and final prediction of each point stay float32.

    smoothing-L2 only: smoothing_sigmas, the noise levels (> 0, pixel units); smoothing_radii, the L2 radii
    (>= 0) of the certified accuracies; smoothing_n0 / smoothing_n, selection / estimation draws per image;
    smoothing_alpha, CERTIFY's failure probability; smoothing_batch_size, noisy images per forward pass (the
    defaults are Cohen et al.'s: n0 100, n 100,000, alpha 0.001). The noise is seeded with `seed`."""

    threats: tuple[str, ...] = field(default_factory=default_threats)
    n: int = STUDY_N
    subset_seed: int = 0
    eps: dict[str, float] = field(default_factory=lambda: dict(STUDY_EPS))
    mode: str = "standard"
    corruption_setting: str = "study"
    severity: int = 3
    corruption_resolution: str = "native"
    corruption_blocks: str = "study"
    images: str = "drawn"
    cache_dir: str | None = None
    batch_size: int | None = None
    workers: int | None = None
    seed: int = 0
    smoothing_sigmas: tuple[float, ...] = (0.25,)
    smoothing_radii: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
    smoothing_n0: int = 100
    smoothing_n: int = 100_000
    smoothing_alpha: float = 0.001
    smoothing_batch_size: int = 1000
    amp: str = "auto"

    def identity(self, device: torch.device | str | None = None) -> dict[str, Any]:
        """What, besides a row's key (threat, eps, mode, corruption, severity), decides what a row measured:
        the version of the drawing rules (DRAW), the requested subset size and its seed, and the attacks' /
        corruptions' / noise seed; each of IDENTITY_OPTIONS whose value is not its default; and "precision", the
        autocast amp resolves to on `device` (default: cuda when visible, else cpu), when it is not float32 (rows
        measured in float32, those of earlier versions included, carry none). Stored in every row's
        versions["eval"]; a row whose identity differs was measured under other settings (the grid measures it
        again)."""
        out: dict[str, Any] = {"draw": DRAW, "n": self.n, "subset_seed": self.subset_seed, "seed": self.seed}
        defaults = EvalSettings.__dataclass_fields__
        out.update({k: getattr(self, k) for k in IDENTITY_OPTIONS if getattr(self, k) != defaults[k].default})
        resolved = self.precision_on(device).amp
        return out if resolved == "none" else {**out, "precision": resolved}

    def precision_on(self, device: torch.device | str | None = None) -> precision.Precision:
        """What `amp` resolves to on `device` (default: cuda when visible, else cpu)."""
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        return precision.resolve(self.amp, device)

    def __post_init__(self) -> None:
        known = all_threats()
        unknown = [t for t in self.threats if t not in known]
        if unknown or not self.threats:
            raise ValueError(f"threats must be a non-empty subset of {list(known)}, got {list(self.threats)}")
        self.smoothing_sigmas = _numbers("smoothing_sigmas", self.smoothing_sigmas, "> 0", lambda v: v > 0)
        self.smoothing_radii = _numbers("smoothing_radii", self.smoothing_radii, ">= 0", lambda v: v >= 0)
        bad = {k: v for k, v in self.eps.items() if k not in NORMS or not is_real(v, finite=False) or not v > 0}
        if bad:
            raise ValueError(f"eps must map norms {list(NORMS)} to numbers > 0, got {bad}")
        for name, rule in FIELD_RULES.items():
            if name not in _ITEM_FIELDS:
                rule.check(name, getattr(self, name))
        fixed = {k: v for k, v in image_source(self.images).fixes.items() if getattr(self, k) != v}
        if fixed:
            raise ValueError(
                f"images {self.images!r} supports only "
                + ", ".join(f"{k}={v!r}" for k, v in fixed.items())
                + ", got "
                + ", ".join(f"{k}={getattr(self, k)!r}" for k in fixed)
            )

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], prefix: str = "") -> EvalSettings:
        """Settings from a mapping of field names (a grid spec's `eval:` section, JSON): a missing field takes
        its default, a list becomes a tuple, a single threat name a one-threat tuple; an unknown field raises a
        ValueError naming it (written prefix + name) and the nearest known one."""
        if not isinstance(values, Mapping):
            raise ValueError(
                f"{prefix.rstrip('.') or 'eval settings'} must be a mapping of EvalSettings fields, "
                f"got {type(values).__name__}"
            )
        known = [f.name for f in fields(cls)]
        unknown = sorted(str(k) for k in values if k not in known)
        if unknown:
            hint = suggest(unknown[0], known) if len(unknown) == 1 else ""
            raise ValueError(f"unknown {prefix}field(s) {unknown}{hint}; known: {known}")
        return cls(**as_arguments(values))


def _numbers(name: str, values: Any, rule: str, ok: Callable[[float], bool]) -> tuple[float, ...]:
    """`values` as a non-empty tuple of distinct finite floats each satisfying `ok`, else ValueError naming `name`."""
    items = (values,) if is_real(values, finite=False) else values
    try:
        items = tuple(items)
    except TypeError:
        raise ValueError(f"{name} must be a non-empty sequence of numbers {rule}, got {values!r}") from None
    bad = [v for v in items if not is_real(v) or not ok(v)]
    if bad or not items:
        raise ValueError(f"{name} must be a non-empty sequence of finite numbers {rule}, got {values!r}")
    floats = tuple(float(v) for v in items)
    if len(set(floats)) != len(floats):
        raise ValueError(f"{name} must not repeat a value, got {values!r}")
    return floats


_SEED = Rule(int, 0, SEED_MAX)
# The type and range of every field (of each item, for LIST_FIELDS and eps), checked by EvalSettings and used by
# the CLI to type `rft-fast eval`'s options. The bounds are the command line's.
FIELD_RULES: dict[str, Rule] = {
    "threats": Rule(str),  # each a registered threat (ALL_THREATS; checked against the registry at construction)
    "n": Rule(int, 1, 10**7),
    "subset_seed": _SEED,
    "eps": Rule(float, 0, open_low=True),  # each norm's radius
    "mode": Rule(str, choices=MODES),
    "corruption_setting": Rule(str, choices=SETTINGS),
    "severity": Rule(int, 1, 5),
    "corruption_resolution": Rule(str, choices=RESOLUTIONS),
    "corruption_blocks": Rule(str, choices=BLOCKS),
    "images": Rule(str, choices=LiveChoices(image_sources)),
    "cache_dir": Rule(str, optional=True),
    "batch_size": Rule(int, 1, 65_536, optional=True),
    "workers": Rule(int, 0, 256, optional=True),
    "seed": _SEED,
    "smoothing_sigmas": Rule(float, 0, open_low=True),
    "smoothing_radii": Rule(float, 0),
    "smoothing_n0": Rule(int, 1, 10**8),
    "smoothing_n": Rule(int, 1, 10**9),
    "smoothing_alpha": Rule(float, 0, 1, open_low=True, open_high=True),
    "smoothing_batch_size": Rule(int, 1, 10**6),
    "amp": Rule(str, choices=precision.AMP),
}
LIST_FIELDS = ("threats", "smoothing_sigmas", "smoothing_radii")  # comma-separated on the command line
_ITEM_FIELDS = LIST_FIELDS + ("eps",)  # checked item by item in __post_init__
# The version of the rules that draw the evaluation images, in every row's identity. 2: the study's (the test
# subset by scikit-learn's train_test_split, corruptions at native resolution in the paper's blocks); rows stored
# before it (no "draw" entry) were measured on another subset and corrupted after the resize.
DRAW = 2
# Options that change what rows measure beyond identity()'s base fields: part of the identity when not default.
IDENTITY_OPTIONS = ("corruption_resolution", "corruption_blocks", "images")
# The command-line flag of each field whose flag is not "--" + name with "-" for "_" (eps: one flag per norm,
# "--eps-" + norm.lower(); cache_dir also has --no-cache, which sets it to None).
FIELD_FLAGS: dict[str, str | tuple[str, ...]] = {
    "eps": tuple(f"--eps-{norm.lower()}" for norm in NORMS),
    "corruption_setting": "--corruptions",
    "smoothing_sigmas": "--sigma",
    "smoothing_radii": "--radii",
}

_HELP: dict[str, str] = {
    "threats": "comma-separated subset of {threats} (default: all but {optional}, which run only when named)",
    "n": "stratified test subset size (default 1000, the study's)",
    "subset_seed": "seed of the stratified test subset",
    "eps": "AutoAttack radius per norm (default: the study's, Linf 4/255, L2 2.0, L1 75)",
    "mode": "AutoAttack standard, or fast = APGD-CE + APGD-T (labelled 'fast' in the store)",
    "corruption_setting": "study: 11 types at severity 3, one per image; full: 15 types x 5 severities",
    "severity": "corruption severity of the study setting",
    "corruption_resolution": "native: corrupt each image at its native resolution, then resize (the study's); "
    "evaluation: corrupt the resized image",
    "corruption_blocks": "study: the paper's blocks (step N // 11, the last images wrap to the first type); "
    "even: numpy.array_split sizes",
    "images": "drawn: the subset drawn from the test split; robustgenbench: the paper's frozen test and "
    "corrupted-test images (HF hub MaxHeuillet/RobustGenBench, needs zstandard)",
    "cache_dir": "corrupted test sets (default: ~/.cache/rft-fast/corruptions)",
    "batch_size": "attack batch (default: the largest that fits)",
    "workers": "corruption worker processes (default: all cores)",
    "seed": "AutoAttack, corruption and smoothing-noise seed",
    "smoothing_sigmas": "comma-separated noise levels sigma > 0 in pixel units, each certified separately (default 0.25)",
    "smoothing_radii": "comma-separated L2 radii >= 0 of the stored certified accuracies (default 0,0.25,0.5,0.75,1)",
    "smoothing_n0": "selection draws per image (default 100)",
    "smoothing_n": "estimation draws per image (default 100000)",
    "smoothing_alpha": "failure probability of the certificate (default 0.001)",
    "smoothing_batch_size": "noisy images per forward pass (default 1000)",
    "amp": "autocast of the forward passes and the attacks: auto (bf16 where the device has native bf16, else "
    "none) | bf16 | fp16 | none (float32); AutoAttack's clean and final check of each point stay float32",
}


def _help(name: str, text: str) -> str:
    if name == "threats":
        optional = [t for t in all_threats() if t not in default_threats()]
        return text.format(threats=",".join(all_threats()), optional=",".join(optional) or "none")
    return FIELD_RULES[name].help(text) if name not in _ITEM_FIELDS else text


# Each field's help (`rft-fast eval --help`), with its range for a number.
FIELD_HELP: dict[str, str] = {name: _help(name, text) for name, text in _HELP.items()}
