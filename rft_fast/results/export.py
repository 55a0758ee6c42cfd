"""Exports for `rft-fast results`: measurements (or summary rows) as CSV, JSON or an aligned text table."""
from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any, TextIO

from rft_fast.results.store import Measurement, canonical_json

Rows = Sequence[Measurement] | Sequence[dict[str, Any]]
_TABLE_SKIP = ("versions", "timestamp")  # in CSV / JSON, too wide for a terminal table


def _records(rows: Rows) -> list[dict[str, Any]]:
    return [asdict(r) if isinstance(r, Measurement) else dict(r) for r in rows]


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


def to_csv(rows: Rows, file: str | Path | TextIO) -> None:
    """One CSV line per row under a header of the row's fields; hparams / versions as JSON, None as empty.
    Writes nothing for no rows (there is no field list to write)."""
    records = _records(rows)
    if not records:
        return
    with _opened(file) as f:
        writer = csv.DictWriter(f, fieldnames=list(records[0]), lineterminator="\n")
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
