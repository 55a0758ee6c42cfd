"""The per-folder marker tables: each folder's conftest names its slow, Ray and GPU modules, and this hook marks
their tests (`make test-fast` runs `-m "not slow and not ray"`; pyproject.toml registers the markers)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

# The modules whose tests start Ray (marked `ray` by tests/grid/conftest.py). Under pytest-xdist they form one
# scope that one worker runs, one Ray cluster at a time (tests/conftest.py's scheduler).
RAY_MODULES = frozenset({"test_grid_run", "test_grid_failures", "test_asha_resume", "test_grid_real_inputs"})


def xdist_scope(nodeid: str) -> str:
    """The scheduling scope of a test: "ray" for every test of RAY_MODULES, else the test itself."""
    return "ray" if Path(nodeid.split("::")[0]).stem in RAY_MODULES else nodeid


def mark_modules(
    *, slow: set[str] = frozenset(), ray: set[str] = frozenset(), gpu: set[str] = frozenset()
) -> Callable[[pytest.Item], None]:
    """A pytest_itemcollected hook marking every test of the named modules (file stems)."""

    def hook(item: pytest.Item) -> None:
        for marker, modules in (("slow", slow), ("ray", ray), ("gpu", gpu)):
            if item.path.stem in modules:
                item.add_marker(marker)

    return hook
