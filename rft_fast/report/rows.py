"""The report's unit of data: one configuration (backbone, dataset, loss, protocol) with its five accuracies and
the backbone's registry metadata, read from the results store's wide summary."""
from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from dataclasses import dataclass

from rft_fast.models.registry import get
from rft_fast.results import Store

ACCURACIES = ("clean", "Linf", "L2", "L1", "common")
UNKNOWN = "unknown"  # arch / size / pretraining of a backbone the registry does not know (e.g. an imported study's)


@dataclass(frozen=True)
class Row:
    """One configuration's accuracies in [0, 1] (None where not measured yet). arch / size / pretraining default to
    the registry's entry for `backbone` (name or alias), or "unknown" when it has none."""

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

    def __post_init__(self) -> None:
        for name in ACCURACIES:
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and 0.0 <= value <= 1.0):
                raise ValueError(f"{name}: accuracy must be in [0, 1] or None, got {value!r}")
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


def rows_from_store(store: Store, mode: str = "standard") -> list[Row]:
    """One Row per configuration from `store.summary(mode)`.

    A configuration stored under several run ids or hparams (e.g. an imported study next to our own runs) keeps
    the most complete row, the first by run id among equals, with a warning naming how many were dropped.
    """
    best: dict[tuple[str, str, str, str], Row] = {}
    dropped = 0
    for s in store.summary(mode):
        row = Row(s["backbone"], s["dataset"], s["loss"], s["protocol"],
                  **{a: s[a] for a in ACCURACIES}, run_id=s["run_id"])
        kept = best.get(row.key)
        if kept is not None:
            dropped += 1
            if len(row.present()) <= len(kept.present()):
                continue
        best[row.key] = row
    if dropped:
        warnings.warn(f"{dropped} duplicate configuration row(s) (same backbone, dataset, loss, protocol under "
                      "another run id or hparams) left out of the report: kept the most complete", stacklevel=2)
    return list(best.values())
