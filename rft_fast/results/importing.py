"""`rft-fast results import`: a published study's per-configuration accuracies (one CSV row per configuration)
into the results store, so the report can rank them, alone or beside our own runs.

Layouts: the header says which table the file is (csv_reading.detect over LAYOUTS): ours (rft-fast: backbone,
dataset, loss, protocol, clean, Linf, L2, L1, common and optional columns; docs/results.md) or the paper's
published results_dataset.csv (paper: clean_acc ... common_acc, loss_function, ft_strategy, its backbone
metadata; rft_fast.results.paper_table). A header naming no column of a known layout is an error listing the
columns each layout expects. A layout is data (csv_reading.Layout): adding one to LAYOUTS is all it takes.

Scale: one per file. `scale="fraction"` reads every accuracy as a fraction in [0, 1], `scale="percent"` as a
percentage in [0, 100]. `scale="auto"` (the default) reads the file as percent when some accuracy is in (1, 100]
and none is in (0, 1], and as fraction when every accuracy is in [0, 1]. 0 is the same under both scales and
never decides; 1 could be 100 % or 1 %, so it counts as a fraction. A file with values in (0, 1] beside values
in (1, 100] (0.8 beside 85) cannot be one scale: auto refuses it, naming the line and column of the first such
pair, and the user declares the scale. A percent file whose every value is at most 1 % is read as fractions by
auto: declare `scale="percent"` for it. Values below 0 or above 100 are errors under any scale.

Names: loss and protocol must be registered (rft_fast.train.config.LOSSES, rft_fast.train.protocols) and are
stored in the registry's spelling, matched ignoring case, spaces, '-' and '_' ("TRADES", "Classic AT" and
"FFT 50" give trades, classic_at and FFT-50; "classic" is classic_at, as in the report); a protocol variant
label "TORA-10[tora_lambda=0.9]" keeps its bracket. A layout's own spellings (Layout.names: the paper's "FFT (50
epochs)", "oxford-iiit-pet", ...) map to ours first, matched the same way. An unknown loss or protocol is an error listing the known
ones. Dataset and backbone are matched the same way against their registries (rft_fast.data, rft_fast.models:
backbone aliases resolve to the registered name, as the grid stores them) and kept as given (stripped) when
the registry does not know them: a published table may name datasets and backbones we do not ship.

Provenance: every imported row's run_id starts with "import:" (our own run ids are TrainConfig.run_id()'s 12
hex digits), so an imported row can never take the key of one of ours: the default run_id is
"<prefix>:<backbone>:<dataset>:<loss>:<protocol>" (normalised names), a run_id cell is kept when it starts with
"import:" and gets "<prefix>:" in front otherwise; a prefix is itself put under "import:" ("x" -> "import:x").
versions record "source" (the source column, else the layout's: "import", "arXiv:2508.14079" for the paper),
"file" (the file's name), "scale", "layout" and, for a layout with provenance columns, "provenance" (those
cells of the row: the paper's size class, type, pretraining labels of the backbone).

Cells: empty accuracy cells (or NA / NaN / n/a / - / none / null) are skipped, so partial tables import what
they have; n and the *_eps columns take their default only when empty (n: the layout's test_images for the
dataset, else the study's 1,000). Rows of empty cells are skipped.

Errors: every malformed file is a ValueError naming the line (and column): a row with fewer or more cells than
the header, a cell that is not a finite number (1e400, inf, nan where a number is needed), a negative or
out-of-range value, an n that is not a whole number >= 1, an empty or unknown name, a measurement given twice,
a row longer than MAX_ROW_CHARS, text that is not UTF-8, NUL bytes (binary data), an empty or header-only file.
Nothing is written then.

Memory: the file is read twice, a row at a time: pass 1 validates every row and decides the scale, keeping
only the first fraction-like and the first percent-like cell and a 16-byte digest per measurement key (for
duplicates); pass 2 parses again and streams the measurements into Store.put_many, one transaction (all or
nothing; a file changed between the passes is refused and rolled back). Memory grows with the number of
measurements by that digest only, not with the file's bytes.
"""

from __future__ import annotations

import difflib
import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from rft_fast.results.csv_reading import (  # noqa: F401 - MAX_ROW_CHARS, REQUIRED_COLUMNS: public here too
    MAX_ROW_CHARS,
    REQUIRED_COLUMNS,
    RFT_FAST,
    Layout,
    count,
    csv_rows,
    is_missing,
    number,
    shown,
)
from rft_fast.results.measurement import Measurement
from rft_fast.results.paper_table import PAPER
from rft_fast.results.store import Store
from rft_fast.results.threats import MODES, STUDY_CORRUPTION, STUDY_SEVERITY
from rft_fast.study import STUDY_EPS, STUDY_N

ACCURACY_COLUMNS = ("clean", "Linf", "L2", "L1", "common")
NAME_COLUMNS = ("backbone", "dataset", "loss", "protocol")
SCALES = ("auto", "fraction", "percent")
NAMESPACE = "import"  # every imported run_id starts with "import:"
LAYOUTS: tuple[Layout, ...] = (RFT_FAST, PAPER)  # the layouts a header is recognized as (csv_reading.detect)
LOSS_ALIASES = {"classic": "classic_at"}  # the report's loss_kind reads "classic" as Classic AT too
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_VARIANT = re.compile(r"(.*?)\s*(\[[^\[\]]*\])")  # the grid's protocol label "TORA-10[tora_lambda=0.9]"


def _fold(name: str) -> str:
    """The spelling-insensitive form of a name: lower case, no spaces, '-' or '_'."""
    return re.sub(r"[\s_\-]+", "", name.lower())


def _folded_index(names) -> dict[str, str]:
    """folded -> registered name; folds that two names share are left out (never guessed)."""
    index: dict[str, str | None] = {}
    for name in names:
        key = _fold(name)
        index[key] = name if index.get(key, name) == name else None
    return {k: v for k, v in index.items() if v is not None}


def _hint(value: str, known) -> str:
    close = difflib.get_close_matches(value.lower(), [k.lower() for k in known], n=1, cutoff=0.6)
    return f"; did you mean {next(k for k in known if k.lower() == close[0])!r}?" if close else ""


class _Names:
    """Name normalisation through the registries, cached per distinct name (bounded: a file has few names).
    The registries are imported here, not at module import: `import rft_fast.results` stays light."""

    _CACHE_LIMIT = 4096

    def __init__(self) -> None:
        from rft_fast.data.registry import DATASETS
        from rft_fast.models.registry import REGISTRY
        from rft_fast.train.config import LOSSES
        from rft_fast.train.protocols import PROTOCOLS, get_protocol

        self._losses = tuple(LOSSES)
        self._loss_index = {**_folded_index(LOSSES), **LOSS_ALIASES}
        self._datasets = _folded_index(DATASETS)
        self._protocols = _folded_index(PROTOCOLS)
        self._protocol_names = tuple(PROTOCOLS)
        self._get_protocol = get_protocol
        # models.registry.get's rule (name or alias, exact then case-insensitive) without its difflib hint,
        # which would cost milliseconds for each of a table's unknown backbones
        every = {n: spec.name for spec in REGISTRY.values() for n in (spec.name, *spec.aliases)}
        self._backbones = {**{n.lower(): s for n, s in every.items()}, **every}
        self._cache: dict[tuple[str, str, str], str | ValueError] = {}
        self._spellings: dict[tuple[str, str], dict[str, str]] = {}

    def __call__(self, column: str, value: str, layout: Layout = RFT_FAST) -> str:
        """`value` of a name column in our spelling: the layout's own spellings (`Layout.names`, matched like the
        registries) first, then the registry; ValueError (without line) for an unknown loss / protocol."""
        key = (column, value, layout.name)
        if key not in self._cache:
            if len(self._cache) >= self._CACHE_LIMIT:
                self._cache.clear()
            table = layout.names.get(column, {})
            index = self._spellings.setdefault((layout.name, column), {_fold(k): v for k, v in table.items()})
            try:
                self._cache[key] = getattr(self, f"_{column}")(index.get(_fold(value), value))
            except ValueError as e:
                spellings = f"; the {layout.name} layout's spellings: {', '.join(table)}" if table else ""
                self._cache[key] = ValueError(f"{e}{spellings}")
        found = self._cache[key]
        if isinstance(found, ValueError):
            raise found
        return found

    def _loss(self, value: str) -> str:
        found = self._loss_index.get(_fold(value))
        if found is None:
            raise ValueError(
                f"unknown loss {shown(value)}; known: {', '.join(self._losses)} (case, spaces, '-' and '_' "
                f"ignored){_hint(value, self._losses)}"
            )
        return found

    def _protocol(self, value: str) -> str:
        match = _VARIANT.fullmatch(value)
        base, variant = (match.group(1), match.group(2)) if match else (value, "")
        name = self._protocols.get(_fold(base))
        if name is None:
            tora = re.fullmatch(r"tora(\d+)", _fold(base))
            try:
                name = self._get_protocol(f"TORA-{tora.group(1)}" if tora else base).name
            except ValueError:
                raise ValueError(
                    f"unknown protocol {shown(value)}; known: {', '.join(self._protocol_names)} or "
                    "TORA-<epochs> (epochs >= 2), optionally with a variant label [...]"
                    f"{_hint(base, self._protocol_names)}"
                ) from None
        return name + variant

    def _dataset(self, value: str) -> str:
        return self._datasets.get(_fold(value), value)

    def _backbone(self, value: str) -> str:
        return self._backbones.get(value) or self._backbones.get(value.lower(), value)


@dataclass
class _Row:
    line: int
    model: dict[str, str]  # run_id, dataset, backbone, loss, protocol
    n: int
    mode: str
    source: str
    eps: dict[str, float]  # per attack column
    values: dict[str, float]  # accuracy column -> the cell's number, as written (scale not applied)
    layout: Layout
    provenance: dict[str, str]  # the layout's provenance columns -> their cells (stripped)

    def threats(self) -> Iterator[tuple[str, dict]]:
        """(accuracy column, the Measurement's threat fields) for each accuracy the row has."""
        for column in self.values:
            if column == "clean":
                yield column, {"threat": "clean", "eps": None, "corruption": None, "severity": None, "mode": "-"}
            elif column == "common":
                yield (
                    column,
                    {
                        "threat": "corruption",
                        "eps": None,
                        "corruption": STUDY_CORRUPTION,
                        "severity": STUDY_SEVERITY,
                        "mode": "-",
                    },
                )
            else:
                yield (
                    column,
                    {
                        "threat": column,
                        "eps": self.eps[column],
                        "corruption": None,
                        "severity": None,
                        "mode": self.mode,
                    },
                )


def _parse(line: int, r: dict[str, str], names: _Names, prefix: str, layout: Layout = RFT_FAST) -> _Row:
    """One row (keys: our columns and the layout's provenance columns) checked and normalised (everything but the
    scale). Errors name the file's columns."""
    label = layout.label
    model = {}
    for column in NAME_COLUMNS:
        cell = r[column].strip()
        if not cell:
            raise ValueError(f"line {line}, column {label(column)}: empty")
        if _CONTROL.search(cell):
            raise ValueError(f"line {line}, column {label(column)}: a control character (line break, tab) in the name")
        try:
            model[column] = names(column, cell, layout)
        except ValueError as e:
            raise ValueError(f"line {line}, column {label(column)}: {e}") from None
    given = r.get("run_id", "").strip()
    if _CONTROL.search(given):
        raise ValueError(f"line {line}, column run_id: a control character (line break, tab) in the run id")
    if not given:
        run_id = ":".join((prefix, model["backbone"], model["dataset"], model["loss"], model["protocol"]))
    else:
        run_id = given if given.startswith(NAMESPACE + ":") else f"{prefix}:{given}"
    mode = r.get("mode", "").strip().lower() or "standard"
    if mode not in MODES:
        raise ValueError(f"line {line}, column mode: must be one of {', '.join(MODES)}, got {shown(r['mode'].strip())}")
    default_n = layout.test_images.get(model["dataset"], STUDY_N)
    n = default_n if not r.get("n", "").strip() else count(r["n"], line)
    eps = {}
    for column, default in STUDY_EPS.items():
        cell = r.get(f"{column}_eps", "")
        eps[column] = default if not cell.strip() else number(cell, f"{column}_eps", line)
        if eps[column] <= 0:
            raise ValueError(f"line {line}, column {column}_eps: must be > 0, got {shown(cell.strip())}")
    values = {}
    for column in ACCURACY_COLUMNS:
        if not is_missing(r[column]):
            value = number(r[column], label(column), line)
            if not 0.0 <= value <= 100.0:
                raise ValueError(
                    f"line {line}, column {label(column)}: accuracy {r[column].strip()[:40]} outside [0, 1] "
                    "(fraction) and [0, 100] (percent)"
                )
            values[column] = value + 0.0  # -0.0 -> 0.0
    source = r.get("source", "").strip() or layout.source
    provenance = {c: r[c].strip() for c in layout.provenance if c in r}
    return _Row(line, {"run_id": run_id, **model}, n, mode, source, eps, values, layout, provenance)


def _prefix(run_prefix: str) -> str:
    """The run-id prefix under the "import:" namespace: "import" stays, "x" becomes "import:x"."""
    if not isinstance(run_prefix, str) or not run_prefix.strip() or _CONTROL.search(run_prefix):
        raise ValueError(f"run_prefix: must be a non-empty name without control characters, got {run_prefix!r}")
    p = run_prefix.strip().rstrip(":")
    return p if p == NAMESPACE or p.startswith(NAMESPACE + ":") else f"{NAMESPACE}:{p}"


def _key_digest(row: _Row, threat: dict) -> bytes:
    """16 bytes standing for a measurement key (hparams are {} for every imported row)."""
    parts = (*row.model.values(), threat["threat"], repr(threat["eps"]), threat["mode"])
    return hashlib.blake2b("\x1f".join(parts).encode(), digest_size=16).digest()


@dataclass
class _Scan:
    """What pass 1 keeps: the scale decided, the file's digest."""

    divisor: float
    scale: str
    digest: bytes


def _scan(path: Path, scale: str, names: _Names, prefix: str) -> _Scan:
    """Pass 1: every row validated, duplicates found, the scale decided (see the module docstring)."""
    first_fraction = first_percent = None  # (line, column, cell value): the evidence for each scale
    keys: dict[bytes, int] = {}  # measurement key digest -> line that gave it
    digest: list[bytes] = []
    for line, layout, r in csv_rows(path, digest, LAYOUTS):
        row = _parse(line, r, names, prefix, layout)
        for column, value in row.values.items():
            column = layout.label(column)
            if value > 1.0:
                if scale == "fraction":
                    raise ValueError(
                        f"line {line}, column {column}: accuracy {value:.10g} > 1 in a file declared "
                        "fraction (scale='fraction'); percent files take scale='percent'"
                    )
                first_percent = first_percent or (line, column, value)
            elif value > 0.0:
                first_fraction = first_fraction or (line, column, value)
            if scale == "auto" and first_percent and first_fraction:
                (fl, fc, fv), (pl, pc, pv) = first_fraction, first_percent
                raise ValueError(
                    f"line {fl}, column {fc} ({fv:.10g}) and line {pl}, column {pc} ({pv:.10g}) cannot be one scale: "
                    f"{fv:.10g} reads as a fraction, {pv:.10g} as percent. Declare the file's scale: scale='percent' "
                    f"(CLI --scale percent) if {fv:.10g} means {fv:.10g} %, or fix the cell"
                )
        for _, threat in row.threats():
            first = keys.setdefault(_key_digest(row, threat), line)
            if first != line:
                raise ValueError(f"line {line}: the same configuration and threat ({threat['threat']}) as line {first}")
    percent = scale == "percent" or (scale == "auto" and first_percent is not None)
    return _Scan(100.0 if percent else 1.0, "percent" if percent else "fraction", digest[0])


def _measurements(path: Path, scan: _Scan, names: _Names, prefix: str) -> Iterator[Measurement]:
    """Pass 2: the rows again, as measurements; ValueError if the file is not the one pass 1 read."""
    timestamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    digest: list[bytes] = []
    for line, layout, r in csv_rows(path, digest, LAYOUTS):
        row = _parse(line, r, names, prefix, layout)
        versions = {"source": row.source, "file": path.name, "scale": scan.scale, "layout": layout.name}
        if row.provenance:
            versions["provenance"] = row.provenance
        for column, threat in row.threats():
            try:
                yield Measurement(
                    **row.model,
                    hparams={},
                    **threat,
                    accuracy=row.values[column] / scan.divisor,
                    n=row.n,
                    seconds=0.0,
                    versions=versions,
                    timestamp=timestamp,
                )
            except ValueError as e:
                raise ValueError(f"line {line}, column {layout.label(column)}: {e}") from None
    if digest[0] != scan.digest:
        raise ValueError(f"{path.name} changed while it was imported; nothing written, import it again")


def _prepare(path: str | Path, scale: str, run_prefix: str) -> tuple[Path, _Scan, _Names, str]:
    if scale not in SCALES:
        raise ValueError(f"scale: must be one of {', '.join(SCALES)}, got {scale!r}")
    path, prefix, names = Path(path), _prefix(run_prefix), _Names()
    return path, _scan(path, scale, names, prefix), names, prefix


def read_csv(path: str | Path, *, run_prefix: str = NAMESPACE, scale: str = "auto") -> list[Measurement]:
    """The measurements of `path`, validated, nothing written (a list: for inspection; import_csv streams)."""
    path, scan, names, prefix = _prepare(path, scale, run_prefix)
    return list(_measurements(path, scan, names, prefix))


def import_csv(path: str | Path, store: Store, *, run_prefix: str = NAMESPACE, scale: str = "auto") -> int:
    """Validates `path` (pass 1), then streams its measurements into `store` in one transaction (all or nothing);
    returns how many. `scale`: "auto" | "fraction" | "percent" (module docstring). Importing the same file again
    replaces the same rows (the store upserts on the measurement key)."""
    path, scan, names, prefix = _prepare(path, scale, run_prefix)
    return store.put_many(_measurements(path, scan, names, prefix))
