"""The report's unit of data: one configuration (backbone, dataset, loss, protocol) with its five accuracies, the
test images behind each (n), the attacks' eps, whether the model started from random weights, and the backbone's
registry metadata (a size class the registry lacks from an imported table), read from the results store's wide
summary."""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field

from rft_fast.checks import is_int, is_real
from rft_fast.models.registry import SIZES, get
from rft_fast.results import ATTACKS, MODEL_FIELDS, STUDY_CORRUPTION, STUDY_SEVERITY, Store, canonical_json

ACCURACIES = ("clean", "Linf", "L2", "L1", "common")
UNKNOWN = "unknown"  # arch / size / pretraining of a backbone the registry does not know (e.g. an imported study's)
PROVENANCE_SIZE = "model_size"  # an imported table's size class, in the measurements' versions["provenance"]


@dataclass(frozen=True)
class Row:
    """One configuration's accuracies in [0, 1] (None where not measured yet). arch / size / pretraining default to
    the registry's entry for `backbone` (name or alias), or "unknown" when it has none.

    Optional, for the report's header and intervals: n, the test images behind each accuracy ({"clean": 1000,
    ...}; an accuracy without one gets no interval); eps, each attack's radius ({"Linf": 4/255, ...});
    random_init, whether the model was trained from random weights (None: not recorded)."""

    backbone: str
    dataset: str
    loss: str
    protocol: str
    clean: float | None = None
    Linf: float | None = None
    L2: float | None = None
    L1: float | None = None
    common: float | None = None
    arch: str | None = None
    size: str | None = None
    pretraining: str | None = None
    run_id: str = ""
    n: dict[str, int] = field(default_factory=dict, hash=False)
    eps: dict[str, float] = field(default_factory=dict, hash=False)
    random_init: bool | None = None

    def __post_init__(self) -> None:
        for name in ACCURACIES:
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and 0.0 <= value <= 1.0):
                raise ValueError(f"{name}: accuracy must be in [0, 1] or None, got {value!r}")
        n = dict(self.n or {})
        for name, count in n.items():
            if name not in ACCURACIES:
                raise ValueError(f"n: keys must be among {ACCURACIES}, got {name!r}")
            if not is_int(count) or count < 1:
                raise ValueError(f"n: {name} must be an image count >= 1, got {count!r}")
        eps = dict(self.eps or {})
        for name, value in eps.items():
            if name not in ATTACKS:
                raise ValueError(f"eps: keys must be among {ATTACKS}, got {name!r}")
            if not is_real(value) or not (value > 0):
                raise ValueError(f"eps: {name} must be a number > 0, got {value!r}")
        if not (self.random_init is None or isinstance(self.random_init, bool)):
            raise ValueError(f"random_init: must be True, False or None, got {self.random_init!r}")
        object.__setattr__(self, "n", n)
        object.__setattr__(self, "eps", {k: float(v) for k, v in eps.items()})
        try:
            spec = get(self.backbone)
            meta = {"arch": spec.arch, "size": spec.size, "pretraining": spec.pretraining}
        except ValueError:
            meta = dict.fromkeys(("arch", "size", "pretraining"), UNKNOWN)
        for name, value in meta.items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)

    @property
    def key(self) -> tuple[str, str, str, str]:
        """What identifies a configuration in every analysis."""
        return self.backbone, self.dataset, self.loss, self.protocol

    def present(self) -> dict[str, float]:
        """The accuracies measured so far, by name."""
        return {a: getattr(self, a) for a in ACCURACIES if getattr(self, a) is not None}

    @property
    def complete(self) -> bool:
        return len(self.present()) == len(ACCURACIES)

    @property
    def score_sum(self) -> float:
        """Sum of the measured accuracies (a missing one adds nothing)."""
        return sum(self.present().values())

    @property
    def geom(self) -> float | None:
        """Product of the five accuracies; None unless all five are measured."""
        return math.prod(self.present().values()) if self.complete else None


def check_unique(rows: Iterable[Row]) -> None:
    """ValueError when two rows share a configuration: every analysis counts a configuration once."""
    seen: set[tuple[str, str, str, str]] = set()
    for r in rows:
        if r.key in seen:
            raise ValueError(f"duplicate configuration {dict(zip(('backbone', 'dataset', 'loss', 'protocol'), r.key))}")
        seen.add(r.key)


def _model(source: object, value) -> tuple[str, ...]:
    """A model's identity (MODEL_FIELDS, hparams as canonical JSON) from a Measurement or a summary row."""
    return tuple(canonical_json(value(source, f), f) if f == "hparams" else value(source, f) for f in MODEL_FIELDS)


def _provenance_size(versions: dict) -> str | None:
    """The size class an imported measurement's provenance names (None when it names none)."""
    provenance = versions.get("provenance")
    size = provenance.get(PROVENANCE_SIZE) if isinstance(provenance, dict) else None
    return size if isinstance(size, str) and size else None


def rows_from_store(store: Store, mode: str = "standard") -> list[Row]:
    """One Row per configuration from `store.summary(mode)`, with the n of each accuracy's measurement, the
    attacks' eps and random_init from the hparams (True / False as recorded, None when the hparams lack it:
    imported rows, `rft-fast eval --weights`).

    The size class is the registry's; for a backbone it does not size ("unknown"), the one an imported table
    gave (versions["provenance"]["model_size"], e.g. the paper's) when it is one of the registry's classes; any
    other value keeps "unknown", with a warning naming it.

    A configuration stored under several run ids or hparams (e.g. an imported study next to our own runs) keeps
    the most complete row, the first by run id among equals, with a warning naming how many were dropped.
    """
    measurements = store.query()
    counts = {(_model(m, getattr), m.threat, m.eps, m.mode, m.corruption, m.severity): m.n for m in measurements}
    imported_size = {_model(m, getattr): size for m in measurements if (size := _provenance_size(m.versions))}
    not_sizes: dict[str, str] = {}  # backbone -> an imported size that is not a size class
    best: dict[tuple[str, str, str, str], Row] = {}
    dropped = 0
    for s in store.summary(mode, by_n=False):
        model = _model(s, dict.__getitem__)
        keys = {
            "clean": ("clean", None, "-", None, None),
            "common": ("corruption", None, "-", STUDY_CORRUPTION, STUDY_SEVERITY),
            **{t: (t, s[f"{t}_eps"], mode, None, None) for t in ATTACKS},
        }
        n = {a: counts[(model, *keys[a])] for a in ACCURACIES if s[a] is not None and (model, *keys[a]) in counts}
        random_init = s["hparams"].get("random_init")
        row = Row(
            s["backbone"],
            s["dataset"],
            s["loss"],
            s["protocol"],
            **{a: s[a] for a in ACCURACIES},
            run_id=s["run_id"],
            n=n,
            eps={t: s[f"{t}_eps"] for t in ATTACKS if s[f"{t}_eps"] is not None},
            random_init=random_init if isinstance(random_init, bool) else None,
        )
        if row.size == UNKNOWN and model in imported_size:
            if imported_size[model] in SIZES:
                row = dataclasses.replace(row, size=imported_size[model])
            else:
                not_sizes[row.backbone] = imported_size[model]
        kept = best.get(row.key)
        if kept is not None:
            dropped += 1
            if len(row.present()) <= len(kept.present()):
                continue
        best[row.key] = row
    if not_sizes:
        warnings.warn(
            f"imported {PROVENANCE_SIZE} not a size class ({', '.join(SIZES)}), so size shown as unknown: "
            + ", ".join(f"{b} {v!r}" for b, v in sorted(not_sizes.items())),
            stacklevel=2,
        )
    if dropped:
        warnings.warn(
            f"{dropped} duplicate configuration row(s) (same backbone, dataset, loss, protocol under "
            "another run id or hparams) left out of the report: kept the most complete",
            stacklevel=2,
        )
    return list(best.values())
