"""Write-then-rename and orphan cleaning: a failed write leaves nothing; a killed write's temporary file is
removed on the next start, unless it is young enough to belong to a write still in progress."""

from __future__ import annotations

import os
import time

import pytest

from rft_fast.files import atomic_write, clean_orphans


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "f.bin"
    atomic_write(path, lambda f: f.write(b"old"))

    def broken(f):
        f.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(path, broken, hidden=True)
    assert path.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["f.bin"]


def test_orphans_are_removed_by_name_and_age(tmp_path):
    old, young = tmp_path / ".set.pt.abc.tmp", tmp_path / ".set.pt.def.tmp"
    mine, other = tmp_path / "checkpoint.pt.x1.tmp", tmp_path / "notes.tmp"
    for p in (old, young, mine, other):
        p.write_bytes(b"x")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    assert clean_orphans(tmp_path, name="checkpoint.pt") == 1 and not mine.exists()
    assert clean_orphans(tmp_path, min_age_s=3600) == 1 and not old.exists()
    assert young.exists() and other.exists()  # a write in progress; a file that is not ours
