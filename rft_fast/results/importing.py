"""`rft-fast results import`: a published study's per-configuration accuracies (one CSV row per configuration)
into the results store, so the report can rank them, alone or beside our own runs.

Accuracies may be fractions in [0, 1] or percentages: if any accuracy cell of the file exceeds 1, all of that
file's accuracies are read as percent (a percent file whose every value is at most 1% would be misread). Empty
cells (or NA / NaN / -) are skipped: partial tables import what they have.
"""
from __future__ import annotations

import csv
from fractions import Fraction
from pathlib import Path

from rft_fast.results.store import STUDY_CORRUPTION, STUDY_SEVERITY, Measurement, Store

REQUIRED_COLUMNS = ("backbone", "dataset", "loss", "protocol", "clean", "Linf", "L2", "L1", "common")
OPTIONAL_COLUMNS = ("run_id", "Linf_eps", "L2_eps", "L1_eps", "n", "mode", "source")
ACCURACY_COLUMNS = ("clean", "Linf", "L2", "L1", "common")
STUDY_EPS = {"Linf": 4 / 255, "L2": 2.0, "L1": 75.0}  # REFERENCE.md: the study's evaluation threat models
STUDY_N = 1000  # the study's stratified test subset
MISSING = {"", "na", "nan", "n/a", "-", "none", "null"}


def _missing(cell: str | None) -> bool:
    return cell is None or cell.strip().lower() in MISSING


def _number(cell: str, column: str, line: int) -> float:
    """A float from a decimal or a fraction such as 4/255."""
    try:
        return float(Fraction(cell.strip()))
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"line {line}, column {column}: not a number: {cell!r}") from None


def _count(cell: str, line: int) -> int:
    """The n column: a whole number of images."""
    try:
        return int(cell.strip())
    except ValueError:
        raise ValueError(f"line {line}, column n: not a whole number: {cell!r}") from None


def _header(fieldnames: list[str] | None) -> dict[str, str]:
    """The file's column names mapped to the documented ones (matched case-insensitively); ValueError names any
    unknown or missing column."""
    known = {c.lower(): c for c in REQUIRED_COLUMNS + OPTIONAL_COLUMNS}
    names = {}
    for name in fieldnames or []:
        column = known.get(name.strip().lower())
        if column is None:
            raise ValueError(f"unknown column {name!r}; columns: {', '.join(REQUIRED_COLUMNS + OPTIONAL_COLUMNS)}")
        if column in names.values():
            raise ValueError(f"column {column!r} given twice")
        names[name] = column
    absent = [c for c in REQUIRED_COLUMNS if c not in names.values()]
    if absent:
        raise ValueError(f"missing required column(s): {', '.join(absent)}")
    return names


def read_csv(path: str | Path, *, run_prefix: str = "import") -> list[Measurement]:
    """The measurements of `path` (validated, nothing written). run_id defaults to
    f"{run_prefix}:{backbone}:{dataset}:{loss}:{protocol}"; versions record the source ("import" unless the
    source column says otherwise) and the file name."""
    path = Path(path)
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        names = _header(reader.fieldnames)
        records = []
        for raw in reader:
            if None in raw:  # DictReader's key for cells beyond the header
                raise ValueError(f"line {reader.line_num}: more cells than columns")
            records.append((reader.line_num, {names[k]: v for k, v in raw.items()}))
    values = {(line, c): _number(r[c], c, line)
              for line, r in records for c in ACCURACY_COLUMNS if not _missing(r.get(c))}
    scale = 100.0 if any(v > 1 for v in values.values()) else 1.0
    out: list[Measurement] = []
    keys: dict[tuple[str, ...], int] = {}  # measurement key -> first line: a file must not give one twice
    for line, r in records:
        model = {}
        for column in ("backbone", "dataset", "loss", "protocol"):
            if _missing(r.get(column)):
                raise ValueError(f"line {line}: empty {column}")
            model[column] = r[column].strip()
        run_id = r["run_id"].strip() if not _missing(r.get("run_id")) else ":".join((run_prefix, *model.values()))
        common = {**model, "run_id": run_id, "hparams": {}, "seconds": 0.0,
                  "n": STUDY_N if _missing(r.get("n")) else _count(r["n"], line),
                  "versions": {"source": "import" if _missing(r.get("source")) else r["source"].strip(),
                               "file": path.name}}
        mode = "standard" if _missing(r.get("mode")) else r["mode"].strip()
        for column in ACCURACY_COLUMNS:
            if (line, column) not in values:
                continue
            accuracy = values[(line, column)] / scale
            if not 0.0 <= accuracy <= 1.0:
                raise ValueError(f"line {line}, column {column}: accuracy {values[(line, column)]} outside "
                                 f"{'0-100 (percent file)' if scale > 1 else '[0, 1]'}")
            if column == "clean":
                threat = {"threat": "clean", "eps": None, "corruption": None, "severity": None, "mode": "-"}
            elif column == "common":
                threat = {"threat": "corruption", "eps": None, "corruption": STUDY_CORRUPTION,
                          "severity": STUDY_SEVERITY, "mode": "-"}
            else:
                eps_cell = r.get(f"{column}_eps")
                eps = STUDY_EPS[column] if _missing(eps_cell) else _number(eps_cell, f"{column}_eps", line)
                threat = {"threat": column, "eps": eps, "corruption": None, "severity": None, "mode": mode}
            try:
                m = Measurement(**common, **threat, accuracy=accuracy)
            except ValueError as e:
                raise ValueError(f"line {line}: {e}") from None
            first = keys.setdefault(tuple(str(v) for v in m.key().values()), line)
            if first != line:
                raise ValueError(f"line {line}: the same configuration and threat as line {first}")
            out.append(m)
    return out


def import_csv(path: str | Path, store: Store, *, run_prefix: str = "import") -> int:
    """Reads `path` (see read_csv) and writes its measurements in one transaction (all or nothing); returns how many.
    Importing the same file again replaces the same rows (the store upserts on the measurement key)."""
    return store.put_many(read_csv(path, run_prefix=run_prefix))
