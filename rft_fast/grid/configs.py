"""The grid itself: a validated `GridSpec` (axes of registry names, the search, the sections) and its
`Config`urations, each a Tune experiment of many trials, in the order `expand` runs them."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rft_fast import models
from rft_fast.checks import Rule, check_fields
from rft_fast.grid.search import BACKBONE_DIMS, SearchDim
from rft_fast.grid.sections import ASHA, EvalSpec, Resources
from rft_fast.train.config import SEED_MAX
from rft_fast.train.protocols import get_protocol

HUB = "hub"  # a `pretrained` entry naming the backbone's hub weights rather than a file

GRID_RULES = {
    "name": Rule(str),
    "budget_minutes": Rule(float, 0, 525_600, open_low=True),  # at most a year per configuration
    "store": Rule(str),
    "out_dir": Rule(str),
    "weights_dir": Rule(str, optional=True),
    "random_init": Rule(bool),
    "download": Rule(bool),
    "num_samples": Rule(int, 1, 100_000, optional=True),
    "seed": Rule(int, 0, SEED_MAX),
}


@dataclass(frozen=True)
class GridSpec:
    """A validated grid; build it with `load_spec`. Axes are tuples of registry names (aliases resolved).

    Weights of each backbone (`weights_path`): none under random_init; else its `pretrained` entry (a file, or
    "hub"); else <weights_dir>/<backbone>.safetensors when weights_dir is given; else its hub weights (cached by
    `rft-fast models fetch --spec`). A backbone that no hub carries (the robust checkpoints) must get a file
    from `pretrained` or weights_dir: refused here otherwise. `download`: datasets missing under their data_roots
    entry are downloaded before the grid runs (`rft-fast datasets fetch`); otherwise nothing is downloaded.
    """

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
    download: bool = False
    fixed: dict[str, Any] = field(default_factory=dict)
    axes: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    num_samples: int | None = None
    asha: ASHA = ASHA()
    resources: Resources = Resources()
    eval: EvalSpec = EvalSpec()
    seed: int = 0

    def __post_init__(self) -> None:
        check_fields(self, GRID_RULES)
        stray = sorted(set(self.data_roots) - set(self.datasets))
        if stray:
            raise ValueError(f"data_roots: dataset(s) {stray} are not in datasets {list(self.datasets)}")
        stray = sorted(set(self.pretrained) - set(self.backbones))
        if stray:
            raise ValueError(f"pretrained: backbone(s) {stray} are not in backbones")
        no_hub = [b for b in self.backbones if _uses_hub(self, b) and models.get(b).hub_id is None]
        if no_hub:
            raise ValueError(
                f"pretrained: no hub carries the weights of {no_hub} (expected: {models.get(no_hub[0]).weights}); "
                "give each a pretrained entry with its file (`rft-fast models convert`), or weights_dir"
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
            "backbone": self.backbone,
            "dataset": self.dataset,
            "protocol": self.protocol,
            "loss": self.loss,
            "data_root": spec.data_roots.get(self.dataset),
            **({"random_init": True} if spec.random_init else {"pretrained_path": weights}),
            **spec.fixed,
            **dict(self.variant),
        }

    def epochs(self, spec: GridSpec) -> int:
        """Epochs each trial runs at most: `epochs` of the variant or fixed, else the protocol's."""
        return {**spec.fixed, **dict(self.variant)}.get("epochs") or get_protocol(self.protocol).epochs


def weights_path(spec: GridSpec, backbone: str) -> str | None:
    """The backbone's weights file: pretrained[backbone], else <weights_dir>/<backbone>.safetensors; None when
    it needs no file: random_init, or hub weights (a pretrained entry "hub", or no entry and no weights_dir)."""
    if spec.random_init:
        return None
    if backbone in spec.pretrained:
        return None if spec.pretrained[backbone] == HUB else spec.pretrained[backbone]
    if spec.weights_dir is None:
        return None
    return str(Path(spec.weights_dir) / f"{backbone}.safetensors")


def _uses_hub(spec: GridSpec, backbone: str) -> bool:
    return not spec.random_init and weights_path(spec, backbone) is None


def hub_backbones(spec: GridSpec) -> list[str]:
    """The backbones whose weights come from the hub (what `rft-fast models fetch --spec` caches)."""
    return [b for b in spec.backbones if _uses_hub(spec, b)]


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
