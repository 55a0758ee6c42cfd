"""The disk use of the grid's folders (the Tune experiment folder `rft-fast grid` reports)."""

from __future__ import annotations

import os
from pathlib import Path


def disk_use(folder: str | Path) -> int:
    """Bytes of the files under `folder` (0 when it does not exist), links not followed."""
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:  # removed while walking (a trial's checkpoint rotation)
                pass
    return total
