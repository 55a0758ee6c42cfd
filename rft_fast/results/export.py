"""Exports for `rft-fast results`: measurements (or summary rows) as CSV, JSON or an aligned text table; the wide
rows of the attack mode(s) a store holds (`wide_rows`) and its failed grid stages (`failure_rows`)."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any, TextIO

from rft_fast.results.measurement import MODEL_FIELDS, Measurement, Stage, canonical_json
from rft_fast.results.store import Store
from rft_fast.results.threats import ATTACKS, MODES, NO_MODE

Rows = Sequence[Measurement] | Sequence[dict[str, Any]]
_TABLE_SKIP = ("versions", "timestamp")  # in CSV / JSON, too wide for a terminal table


def _records(rows: Rows) -> list[dict[str, Any]]:
    return [asdict(r) if isinstance(r, Measurement) else dict(r) for r in rows]


def records(rows: Rows, *, hparams: bool = True) -> list[dict[str, Any]]:
    """The rows as dicts (measurements through asdict), without the hparams column unless `hparams`."""
    return [{k: v for k, v in r.items() if hparams or k != "hparams"} for r in _records(rows)]


def attack_modes(store: Store, **filters: Any) -> list[str]:
    """The attack modes ("standard", "fast", in that order) of which the models matching `filters` (model
    fields: run_id, dataset, backbone, loss, protocol, hparams) have at least one Linf / L2 / L1 row."""
    return [mode for mode in MODES if any(store.query(threat=t, mode=mode, **filters) for t in ATTACKS)]


def wide_rows(
    store: Store, mode: str | None = None, eps: dict[str, float] | None = None, **filters: Any
) -> list[dict[str, Any]]:
    """store.summary rows for the mode the store holds: `mode` if given; else the one mode the matching models
    have attack rows in (standard when none has any); else, when both modes are there, one row per model and
    mode that has attack rows, in key order, standard first, each labelled by its `mode` column. A model with
    no attack row in either mode then appears once, with mode '-' (clean and common only)."""
    modes = [mode] if mode is not None else attack_modes(store, **filters)
    if len(modes) <= 1:
        return store.summary(mode=modes[0] if modes else MODES[0], eps=eps, **filters)
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for m in modes:
        for row in store.summary(mode=m, eps=eps, **filters):
            key = (*(canonical_json(row[f], f) if f == "hparams" else row[f] for f in MODEL_FIELDS), row["n"])
            groups.setdefault(key, []).append(row)
    out: list[dict[str, Any]] = []
    for key in sorted(groups):
        attacked = [r for r in groups[key] if any(r[t] is not None for t in ATTACKS)]
        out += attacked or [{**groups[key][0], "mode": NO_MODE}]
    return out


FAILURE_FIELDS = ("config", "stage", "reason", "timestamp")
_CONFIG_PARTS = (
    "backbone",
    "loss",
    "protocol",
    "dataset",
)  # a grid configuration key: "backbone|loss|protocol|dataset"


def failure_rows(stages: Sequence[Stage], **filters: str | None) -> list[dict[str, Any]]:
    """One record (FAILURE_FIELDS) per failed stage, the reason on one line; `filters` (backbone, loss,
    protocol, dataset; None ignored) keep the stages whose configuration key has those parts."""
    unknown = sorted(set(filters) - set(_CONFIG_PARTS))
    if unknown:
        raise ValueError(f"unknown filter(s) {unknown}; filter on {_CONFIG_PARTS}")
    wanted = {k: v for k, v in filters.items() if v is not None}
    out = []
    for s in stages:
        if s.status != "failed":
            continue
        parts = dict(zip(_CONFIG_PARTS, s.config.split("|")))
        if all(parts.get(k) == v for k, v in wanted.items()):
            out.append(
                {"config": s.config, "stage": s.stage, "reason": " ".join(s.reason.split()), "timestamp": s.timestamp}
            )
    return out


@contextmanager
def _opened(file: str | Path | TextIO) -> Iterator[TextIO]:
    """`file` itself if it is a stream (e.g. sys.stdout), else the path opened for writing (parents created)."""
    if isinstance(file, (str, Path)):
        Path(file).parent.mkdir(parents=True, exist_ok=True)
        with open(file, "w", newline="", encoding="utf-8") as f:
            yield f
    else:
        yield file


def _cell(name: str, value: Any) -> Any:
    """A CSV / table cell: dicts as canonical JSON, None as empty; floats keep full precision (repr)."""
    if isinstance(value, dict):
        return canonical_json(value, name)
    return "" if value is None else value


def to_csv(rows: Rows, file: str | Path | TextIO, fieldnames: Sequence[str] | None = None) -> None:
    """One CSV line per row under a header of the row's fields; hparams / versions as JSON, None as empty.
    Writes nothing for no rows unless `fieldnames` gives the header to write."""
    records = _records(rows)
    if not records and fieldnames is None:
        return
    with _opened(file) as f:
        writer = csv.DictWriter(f, fieldnames=list(fieldnames or records[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: _cell(k, v) for k, v in r.items()} for r in records)


def to_json(rows: Rows, file: str | Path | TextIO) -> None:
    """A JSON list of objects (hparams / versions nested, None as null)."""
    with _opened(file) as f:
        json.dump(_records(rows), f, indent=2, allow_nan=False)
        f.write("\n")


def _format(name: str, value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(_cell(name, value))


def format_table(rows: Rows) -> str:
    """An aligned text table for the terminal (floats to 4 significant digits, None as '-'; measurements
    without versions and timestamp)."""
    records = [{k: v for k, v in r.items() if k not in _TABLE_SKIP} for r in _records(rows)]
    if not records:
        return "(no results)"
    header = list(records[0])
    cells = [header] + [[_format(k, r[k]) for k in header] for r in records]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
