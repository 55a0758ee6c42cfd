"""Reading an accuracy table for `rft-fast results import` (rft_fast.results.importing): the file opened as UTF-8
text, its lines checked (row length, NUL, undecodable bytes), its header matched to the documented columns, its
cells parsed as numbers and counts; every problem names its line."""

from __future__ import annotations

import csv
import hashlib
import math
import re
from collections.abc import Iterator
from pathlib import Path

REQUIRED_COLUMNS = ("backbone", "dataset", "loss", "protocol", "clean", "Linf", "L2", "L1", "common")
OPTIONAL_COLUMNS = ("run_id", "Linf_eps", "L2_eps", "L1_eps", "n", "mode", "source")
MISSING = {"", "na", "nan", "n/a", "-", "none", "null"}
MAX_ROW_CHARS = 64 * 1024  # one CSV row (all its lines, if a quoted cell spans several): the field size limit
UNDECODED = re.compile("[\udc80-\udcff]")  # what surrogateescape makes of a byte that is not UTF-8
FRACTION = re.compile(r"([+-]?\d{1,30})\s*/\s*(\d{1,30})")  # 4/255
COUNT = re.compile(r"\+?\d{1,18}")


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


def header(fieldnames: list[str], line: int) -> list[str]:
    """The documented column of each of the file's columns (matched case-insensitively); ValueError names any
    unknown, repeated or missing column."""
    known = {c.lower(): c for c in REQUIRED_COLUMNS + OPTIONAL_COLUMNS}
    columns: list[str] = []
    for name in fieldnames:
        column = known.get(name.strip().lower())
        if column is None:
            sep = next((s for s in (";", "\t", "|") if s in name), None)
            if sep is not None and len(fieldnames) == 1:
                raise ValueError(
                    f"line {line}: the header has one column {shown(name)}: columns must be separated "
                    f"by commas, this file looks separated by {sep!r}"
                )
            empty = " (an empty header cell: a trailing comma?)" if not name.strip() else ""
            raise ValueError(
                f"line {line}: unknown column {shown(name)}{empty}; columns: "
                f"{', '.join(REQUIRED_COLUMNS + OPTIONAL_COLUMNS)}"
            )
        if column in columns:
            raise ValueError(f"line {line}: column {column!r} given twice")
        columns.append(column)
    absent = [c for c in REQUIRED_COLUMNS if c not in columns]
    if absent:
        raise ValueError(f"line {line}: missing required column(s): {', '.join(absent)}")
    return columns


def open_csv(path: Path):
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if not path.is_file():
        raise ValueError(f"{path}: not a regular file (the import reads the file twice, so a pipe will not do)")
    try:
        return open(path, encoding="utf-8-sig", errors="surrogateescape", newline="")  # newline="": as csv wants
    except OSError as e:
        raise ValueError(f"{path}: cannot read it ({e.strerror or e})") from None


def csv_rows(path: Path, digest: list[bytes]) -> Iterator[tuple[int, dict[str, str]]]:
    """(line where the row starts, {column: cell}) for each non-blank row; appends the file's digest to `digest`
    at the end. ValueError for an empty or header-only file and for a row with too few or too many cells."""
    with open_csv(path) as f:
        lines = Lines(f)
        reader = csv.reader(lines, strict=True)  # strict: a stray quote is an error, not a silently merged cell
        columns: list[str] | None = None
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
            if columns is None:
                columns = header(cells, start)
                continue
            if len(cells) != len(columns):
                what = "fewer" if len(cells) < len(columns) else "more"
                raise ValueError(
                    f"line {start}: {len(cells)} cells, {what} than the header's {len(columns)} columns "
                    "(every row needs one cell per column; leave a cell empty rather than out)"
                )
            count += 1
            yield start, dict(zip(columns, cells))
        digest.append(lines.digest.digest())
    if columns is None:
        raise ValueError(f"{path.name}: empty file: expected a header row ({', '.join(REQUIRED_COLUMNS)}) and rows")
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
