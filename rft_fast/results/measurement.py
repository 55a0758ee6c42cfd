"""The records of the results store: a Measurement (one accuracy of one fine-tuned model under one threat) and a
Stage (one step of one grid configuration).

A measurement's key is the model (run_id, dataset, backbone, loss, protocol, hparams) plus the threat (threat,
eps, corruption, severity, mode); writing a key again replaces the row, so re-running a grid after a crash never
duplicates work. Which key columns a threat uses and what they hold is its KeyRule (rft_fast.results.threats):

  attacks (Linf, L2, L1)  eps > 0, mode "standard" | "fast"
  clean, corruption       eps None and mode "-"; corruption rows name the corruption ("study", "full" or a type)
                          and its severity 1..5
  smoothing-L2            one row per (sigma, radius): eps the certified L2 radius r >= 0 (accuracy = certified
                          accuracy at r: correct and certified at >= r), None for the smoothed classifier's
                          Monte-Carlo accuracy (no abstention, no certificate); mode "sigma=<sigma>"
                          (smoothing_mode(sigma), e.g. "sigma=0.25"), so sigmas never mix; versions must hold
                          "smoothing": {"sigma", "n0", "n", "alpha", ...}: the CERTIFY parameters (recorded, not
                          keyed: re-certifying with other n0 / n / alpha replaces the row). `n` counts images.

Stages: what the grid did per configuration, so a rerun resumes at the finest grain and the report shows
failures. Key (config, stage): config is the grid's "backbone|loss|protocol|dataset" key, stage is "tune" or a
threat; status "done" | "failed" with its reason; detail is JSON (for "tune": the chosen trial, its
checkpoint, run id, hparams and trial counts). Writing a stage again replaces it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from rft_fast.results.threats import NO_MODE, check_integer, check_real, check_text, stored_spec

MODEL_FIELDS = ("run_id", "dataset", "backbone", "loss", "protocol", "hparams")
KEY_FIELDS = MODEL_FIELDS + ("threat", "eps", "corruption", "severity", "mode")


def canonical_json(value: Any, name: str) -> str:
    """Sorted keys, no spaces, no NaN: equal dicts give equal strings, so hparams can be part of the key."""
    if not isinstance(value, Mapping):
        raise ValueError(f"{name}: must be a dict, got {type(value).__name__}")
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name}: not JSON-serialisable ({e})") from None


def now() -> str:
    """The current UTC time, ISO-8601 to the second (the timestamp of rows and stages)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def validated_key(
    run_id: Any,
    dataset: Any,
    backbone: Any,
    loss: Any,
    protocol: Any,
    hparams: Any,
    threat: Any,
    eps: Any = None,
    corruption: Any = None,
    severity: Any = None,
    mode: Any = NO_MODE,
) -> dict[str, Any]:
    """The key fields checked and normalised (eps to float, hparams to its JSON round trip) by the threat's key
    rule; ValueError names the offending field. Shared by Measurement and Store.has so both accept exactly the
    same keys."""
    key: dict[str, Any] = {
        f: check_text(f, v) for f, v in zip(MODEL_FIELDS[:5], (run_id, dataset, backbone, loss, protocol))
    }
    key["hparams"] = json.loads(canonical_json(hparams, "hparams"))
    spec = stored_spec(threat)
    key["threat"] = threat
    key.update(spec.key.normalise(threat, eps, corruption, severity, mode))
    return key


@dataclass(frozen=True)
class Measurement:
    """One accuracy of one fine-tuned model under one threat. Validated on construction; hparams and versions
    are normalised to their JSON round trip, so a measurement equals the copy the store gives back."""

    run_id: str
    dataset: str
    backbone: str
    loss: str
    protocol: str
    hparams: dict
    threat: str
    eps: float | None
    corruption: str | None
    severity: int | None
    mode: str
    accuracy: float
    n: int
    seconds: float
    versions: dict = field(default_factory=dict)
    timestamp: str = field(default_factory=now)

    def __post_init__(self) -> None:
        values = validated_key(**{f: getattr(self, f) for f in KEY_FIELDS})
        values["accuracy"] = check_real("accuracy", self.accuracy)
        if not 0.0 <= values["accuracy"] <= 1.0:
            raise ValueError(f"accuracy: must be in [0, 1], got {self.accuracy!r}")
        values["n"] = check_integer("n", self.n)
        if values["n"] < 1:
            raise ValueError(f"n: must be >= 1 images, got {self.n!r}")
        values["seconds"] = check_real("seconds", self.seconds)
        if values["seconds"] < 0:
            raise ValueError(f"seconds: must be >= 0, got {self.seconds!r}")
        values["versions"] = json.loads(canonical_json(self.versions, "versions"))
        check_row = stored_spec(values["threat"]).check_row
        if check_row is not None:
            check_row(values["versions"], values["mode"])
        try:
            datetime.fromisoformat(self.timestamp)
        except (TypeError, ValueError):
            raise ValueError(f"timestamp: must be ISO-8601, got {self.timestamp!r}") from None
        for name, value in values.items():
            object.__setattr__(self, name, value)

    def key(self) -> dict[str, Any]:
        """The key fields, e.g. for `store.has(**m.key())`."""
        return {f: getattr(self, f) for f in KEY_FIELDS}


@dataclass(frozen=True)
class Stage:
    """One stage of one grid configuration: "tune" or a threat, done or failed (with its reason)."""

    config: str
    stage: str
    status: str
    reason: str = ""
    detail: dict = field(default_factory=dict)
    timestamp: str = ""
