"""Reading an accuracy table for `rft-fast results import` (rft_fast.results.importing): the file opened as UTF-8
text, its lines checked (row length, NUL, undecodable bytes), its layout recognized from the header (a Layout:
which of the file's columns are our columns, which are kept as provenance, which are ignored), its cells parsed
as numbers and counts; every problem names its line."""

from __future__ import annotations

import csv
import hashlib
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REQUIRED_COLUMNS = ("backbone", "dataset", "loss", "protocol", "clean", "Linf", "L2", "L1", "common")
OPTIONAL_COLUMNS = ("run_id", "Linf_eps", "L2_eps", "L1_eps", "n", "mode", "source")
MISSING = {"", "na", "nan", "n/a", "-", "none", "null"}
MAX_ROW_CHARS = 64 * 1024  # one CSV row (all its lines, if a quoted cell spans several): the field size limit
UNDECODED = re.compile("[\udc80-\udcff]")  # what surrogateescape makes of a byte that is not UTF-8
FRACTION = re.compile(r"([+-]?\d{1,30})\s*/\s*(\d{1,30})")  # 4/255
COUNT = re.compile(r"\+?\d{1,18}")


@dataclass(frozen=True)
class Layout:
    """One known table layout, as data: the file's columns that are ours (`columns`: the file's name -> ours),
    those that must be present (`required`), those kept per row as provenance in the measurements' versions,
    those read and dropped (`ignored`: name -> why). `names`: per name column of ours, the file's spellings ->
    ours, applied before the registries (rft_fast.results.importing). `test_images`: n per dataset (our name)
    where the file has no n column and the dataset's test set is not the study's 1,000 images. `source`: the
    versions' "source" where the file has no source column. Column names match case-insensitively."""

    name: str
    title: str
    columns: Mapping[str, str]
    required: tuple[str, ...]
    provenance: tuple[str, ...] = ()
    ignored: Mapping[str, str] = field(default_factory=dict)
    names: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    test_images: Mapping[str, int] = field(default_factory=dict)
    source: str = "import"

    def __post_init__(self) -> None:
        known = [*self.columns, *self.provenance, *self.ignored]
        folded = [c.lower() for c in known]
        if len(set(folded)) != len(folded):
            raise ValueError(f"layout {self.name}: a column listed twice (columns, provenance, ignored)")
        if not set(self.required) <= set(self.columns):
            raise ValueError(f"layout {self.name}: required columns must be among its columns")
        if not set(REQUIRED_COLUMNS) <= set(self.columns.values()):
            raise ValueError(f"layout {self.name}: must give each of {', '.join(REQUIRED_COLUMNS)}")
        if set(self.provenance) & set(REQUIRED_COLUMNS + OPTIONAL_COLUMNS):
            raise ValueError(f"layout {self.name}: a provenance column may not share a name with ours")

    @property
    def known(self) -> tuple[str, ...]:
        """Every column name the layout reads."""
        return (*self.columns, *self.provenance, *self.ignored)

    def label(self, column: str) -> str:
        """The file's name of our `column` (for messages: errors name the file's columns)."""
        return next((c for c, ours in self.columns.items() if ours == column), column)

    def describe(self) -> str:
        """The columns it expects, for an error listing the known layouts."""
        optional = [c for c in self.columns if c not in self.required]
        parts = [f"{self.name} ({self.title}): {', '.join(self.required)}"]
        if optional:
            parts.append(f"optional {', '.join(optional)}")
        if self.provenance:
            parts.append(f"kept as provenance {', '.join(self.provenance)}")
        if self.ignored:
            parts.append("ignored " + ", ".join(repr(c) if not c else c for c in self.ignored))
        return "; ".join(parts)


RFT_FAST = Layout(
    name="rft-fast",
    title="the documented columns, docs/results.md",
    columns={c: c for c in REQUIRED_COLUMNS + OPTIONAL_COLUMNS},
    required=REQUIRED_COLUMNS,
)


class Lines:
    """The file's lines for csv.reader, checked here so that every problem names its line: at most MAX_ROW_CHARS
    per row (`row_done` starts the next row's budget; a longer line is never read whole), UTF-8 (the file is
    decoded with surrogateescape, so a bad byte is found in its line rather than somewhere in a read-ahead
    chunk), no NUL. Lines end in \n, \r\n or \r. Keeps a digest of the text, so the second pass can tell
    whether the file changed."""

    def __init__(self, f) -> None:
        self._f = f
        self.line = 0
        self._used = 0
        self.digest = hashlib.blake2b(digest_size=16)

    def row_done(self) -> None:
        self._used = 0

    def __iter__(self) -> Lines:
        return self

    def __next__(self) -> str:
        text = self._f.readline(MAX_ROW_CHARS + 1)
        if not text:
            raise StopIteration
        self.line += 1
        self.digest.update(text.encode("utf-8", "surrogateescape"))
        self._used += len(text)
        if self._used > MAX_ROW_CHARS:
            raise ValueError(
                f"line {self.line}: a row of more than {MAX_ROW_CHARS} characters (the limit of "
                "one row): not a table of accuracies"
            )
        if "\x00" in text:
            raise ValueError(f"line {self.line}: a NUL byte: binary data, not a CSV text file")
        bad = UNDECODED.search(text)
        if bad:
            raise ValueError(
                f"line {self.line}: not UTF-8 text (byte {ord(bad.group()) - 0xDC00:#04x} at character "
                f"{bad.start() + 1} of the line); save the file as UTF-8 CSV"
            )
        return text


def shown(text: str) -> str:
    """A cell for an error message: quoted, at most 40 characters of it."""
    return repr(text if len(text) <= 40 else text[:40] + "...")


def _separators(fieldnames: list[str], line: int) -> None:
    """ValueError when a one-column header is really a header separated by ';', tab or '|'."""
    sep = next((s for s in (";", "\t", "|") if s in fieldnames[0]), None) if len(fieldnames) == 1 else None
    if sep is not None:
        raise ValueError(
            f"line {line}: the header has one column {shown(fieldnames[0])}: columns must be separated "
            f"by commas, this file looks separated by {sep!r}"
        )


def detect(fieldnames: list[str], line: int, layouts: Sequence[Layout]) -> Layout:
    """The layout of a header: the one naming most of the columns that only it has (backbone and dataset are in
    both known layouts and decide nothing). ValueError listing every layout's columns when the header names none
    of them, or when it names as many of two layouts' own columns."""
    given = {name.strip().lower() for name in fieldnames}

    def own(layout: Layout) -> int:
        others = {c.lower() for other in layouts if other is not layout for c in other.columns}
        return sum(c.lower() in given and c.lower() not in others for c in layout.columns)

    scores = [own(layout) for layout in layouts]
    best = max(scores)
    top = [layout for layout, score in zip(layouts, scores) if score == best]
    if best == 0:
        _separators(fieldnames, line)
        raise ValueError(
            f"line {line}: unknown layout: the header names no column of a known layout. Known layouts:\n"
            + "\n".join(f"  {layout.describe()}" for layout in layouts)
        )
    if len(top) > 1:
        raise ValueError(
            f"line {line}: the header mixes the columns of the {' and '.join(t.name for t in top)} layouts; "
            "use one:\n" + "\n".join(f"  {layout.describe()}" for layout in top)
        )
    return top[0]


def header(
    fieldnames: list[str], line: int, layouts: Sequence[Layout] = (RFT_FAST,)
) -> tuple[Layout, list[str | None]]:
    """The header's layout (`detect`) and, for each of the file's columns, the key its cells get in a row: our
    column name, the layout's spelling of a provenance column, None for an ignored one. Columns match
    case-insensitively; ValueError names any unknown, repeated or missing column."""
    layout = detect(fieldnames, line, layouts)
    known = {c.lower(): c for c in layout.known}
    seen: list[str] = []
    keys: list[str | None] = []
    for name in fieldnames:
        column = known.get(name.strip().lower())
        if column is None:
            _separators(fieldnames, line)
            empty = " (an empty header cell: a trailing comma?)" if not name.strip() else ""
            raise ValueError(
                f"line {line}: unknown column {shown(name)}{empty}; columns of the {layout.name} layout: "
                f"{', '.join(repr(c) if not c else c for c in layout.known)}"
            )
        if column in seen:
            raise ValueError(f"line {line}: column {column!r} given twice")
        seen.append(column)
        keys.append(None if column in layout.ignored else layout.columns.get(column, column))
    absent = [c for c in layout.required if c not in seen]
    if absent:
        raise ValueError(f"line {line}: missing required column(s) of the {layout.name} layout: {', '.join(absent)}")
    return layout, keys


def open_csv(path: Path):
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if not path.is_file():
        raise ValueError(f"{path}: not a regular file (the import reads the file twice, so a pipe will not do)")
    try:
        return open(path, encoding="utf-8-sig", errors="surrogateescape", newline="")  # newline="": as csv wants
    except OSError as e:
        raise ValueError(f"{path}: cannot read it ({e.strerror or e})") from None


def csv_rows(
    path: Path, digest: list[bytes], layouts: Sequence[Layout] = (RFT_FAST,)
) -> Iterator[tuple[int, Layout, dict[str, str]]]:
    """(line where the row starts, the header's layout, {key: cell} without the ignored columns; keys as
    `header` gives them) for each non-blank row; appends the file's digest to `digest` at the end. ValueError
    for an empty or header-only file and for a row with too few or too many cells."""
    with open_csv(path) as f:
        lines = Lines(f)
        reader = csv.reader(lines, strict=True)  # strict: a stray quote is an error, not a silently merged cell
        keys: list[str | None] | None = None
        layout = layouts[0]
        count = 0
        while True:
            start = lines.line + 1
            try:
                cells = next(reader)
            except StopIteration:
                break
            except csv.Error as e:
                raise ValueError(f"line {lines.line}: not valid CSV ({e})") from None
            finally:
                lines.row_done()
            if not any(c.strip() for c in cells):
                continue  # a blank row (or one of empty cells)
            if keys is None:
                layout, keys = header(cells, start, layouts)
                continue
            if len(cells) != len(keys):
                what = "fewer" if len(cells) < len(keys) else "more"
                raise ValueError(
                    f"line {start}: {len(cells)} cells, {what} than the header's {len(keys)} columns "
                    "(every row needs one cell per column; leave a cell empty rather than out)"
                )
            count += 1
            yield start, layout, {k: c for k, c in zip(keys, cells) if k is not None}
        digest.append(lines.digest.digest())
    if keys is None:
        raise ValueError(
            f"{path.name}: empty file: expected a header row (e.g. {', '.join(REQUIRED_COLUMNS)}) and rows"
        )
    if count == 0:
        raise ValueError(f"{path.name}: no rows after the header: nothing to import")


# ---------------------------------------------------------------------------------------------------- cells
def is_missing(cell: str | None) -> bool:
    return cell is None or cell.strip().lower() in MISSING


def number(cell: str, column: str, line: int) -> float:
    """A finite float from a decimal or a fraction of whole numbers such as 4/255."""
    text = cell.strip()
    match = FRACTION.fullmatch(text)
    try:
        if match:
            value = int(match.group(1)) / int(match.group(2))
        else:
            value = float(text)
    except (ValueError, ZeroDivisionError, OverflowError):
        value = None
    if value is None or not math.isfinite(value):
        raise ValueError(f"line {line}, column {column}: not a finite number: {shown(text)}")
    return value


def count(cell: str, line: int) -> int:
    """The n column: a whole number of images, >= 1."""
    text = cell.strip()
    if not COUNT.fullmatch(text) or int(text) < 1:
        raise ValueError(f"line {line}, column n: must be a whole number of images >= 1, got {shown(text)}")
    return int(text)
