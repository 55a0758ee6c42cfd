"""Registry: named entries of one kind (losses, training attacks, protocols, threats, datasets), the way timm
registers models. A feature is one `register` call; everything that offers a choice (the CLI, the grid spec,
the store's key rules, the training loop) reads the registry instead of a hard-coded list.

    LOSSES = Registry[LossSpec]("loss")
    LOSSES.register(LossSpec("trades", ...))      # or @LOSSES.register_as("trades") on a factory
    LOSSES.get("trades"); LOSSES.names(); LOSSES.names("*grace")

An unknown name raises a ValueError that names the kind, lists the known names and suggests the closest.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from rft_fast.checks import suggest

T = TypeVar("T")


class Registry(Generic[T]):
    """An ordered name -> entry table. Names are matched case-insensitively; registration order is the listing
    order (and the order things run in, where that matters: threats)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T, *, replace: bool = False) -> T:
        """Adds `entry` under `name`; registering a taken name is an error unless replace=True."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"a {self.kind} name must be a non-empty string, got {name!r}")
        taken = self._key(name)
        if taken is not None and not replace:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        if taken is not None:
            del self._entries[taken]
        self._entries[name] = entry
        return entry

    def register_as(self, name: str) -> Callable[[T], T]:
        """Decorator form of `register`."""
        return lambda entry: self.register(name, entry)

    def unregister(self, name: str) -> T:
        """Removes and returns the entry (tests that register a toy entry take it out again)."""
        key = self._key(name)
        if key is None:
            raise self._unknown(name)
        return self._entries.pop(key)

    def get(self, name: str) -> T:
        key = self._key(name)
        if key is None:
            raise self._unknown(name)
        return self._entries[key]

    def names(self, pattern: str | None = None) -> tuple[str, ...]:
        """Registered names in order, optionally filtered by an fnmatch pattern (case-insensitive)."""
        return tuple(n for n in self._entries if pattern is None or fnmatch.fnmatch(n.lower(), pattern.lower()))

    def items(self) -> Iterator[tuple[str, T]]:
        return iter(list(self._entries.items()))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._key(name) is not None

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def _key(self, name: str) -> str | None:
        if not isinstance(name, str):
            return None
        if name in self._entries:
            return name
        return next((k for k in self._entries if k.lower() == name.lower()), None)

    def _unknown(self, name: object) -> ValueError:
        return ValueError(f"unknown {self.kind} {name!r}; known: {list(self._entries)}{suggest(name, self._entries)}")
