"""The per-folder marker tables: each folder's conftest names its slow, Ray and GPU modules, and this hook marks
their tests (`make test-fast` runs `-m "not slow and not ray"`; pyproject.toml registers the markers)."""

from __future__ import annotations

from collections.abc import Callable

import pytest


def mark_modules(
    *, slow: set[str] = frozenset(), ray: set[str] = frozenset(), gpu: set[str] = frozenset()
) -> Callable[[pytest.Item], None]:
    """A pytest_itemcollected hook marking every test of the named modules (file stems)."""

    def hook(item: pytest.Item) -> None:
        for marker, modules in (("slow", slow), ("ray", ray), ("gpu", gpu)):
            if item.path.stem in modules:
                item.add_marker(marker)
        if item.path.stem in ray:
            item.add_marker(pytest.mark.xdist_group("ray"))  # one worker runs every Ray test, one cluster at a time

    return hook
