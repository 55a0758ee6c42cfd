"""Files that survive a kill: write-then-rename, and the temporary files a killed write leaves behind.

A writer puts NAME.<random>.tmp (or .NAME.<random>.tmp) beside NAME, fsyncs it and renames it over NAME, so
readers see the old file or the complete new one. A kill -9 between the two leaves the temporary file, which
nothing would ever remove: `clean_orphans` does, on the next start.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

TMP_SUFFIX = ".tmp"


def atomic_write(path: Path, write: Callable[[IO[bytes]], Any], *, hidden: bool = False) -> None:
    """Calls write(f) on a temporary file beside `path` (".NAME.*.tmp" when hidden), fsyncs, renames it over
    `path`; on any error the temporary file is removed and the error propagates."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=("." if hidden else "") + path.name + ".", suffix=TMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def clean_orphans(folder: Path, *, name: str = "*", min_age_s: float = 0.0) -> int:
    """Removes the temporary files atomic_write(folder / name) left behind (any name by default) that are at
    least `min_age_s` old (a folder other processes write into passes an age no write takes, so a write in
    progress is never touched); returns how many."""
    removed = 0
    now = time.time()
    for pattern in (f"{name}.*{TMP_SUFFIX}", f".{name}.*{TMP_SUFFIX}"):
        for tmp in Path(folder).glob(pattern):
            try:
                if now - tmp.stat().st_mtime >= min_age_s:
                    tmp.unlink()
                    removed += 1
            except FileNotFoundError:  # renamed or removed by its writer meanwhile
                pass
    return removed
