"""Registries by name: one dict per family from the Keras name to a factory.

An unknown name raises an error naming the family, the bad name, the closest valid one and the full sorted
list, so a typo in a config is fixed in one look.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator, Mapping
from typing import Generic, TypeVar

from trainwell.errors import ConfigError

T = TypeVar("T")


def unknown_name_message(family: str, name: object, valid: list[str] | tuple[str, ...]) -> str:
    """The message for an unknown ``name`` in ``family``: closest match first, then every valid name."""
    valid = sorted(valid)
    close = difflib.get_close_matches(str(name), valid, n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown {family} {name!r}{hint}; valid {family} names: {', '.join(valid)}"


class Registry(Mapping[str, T], Generic[T]):
    """A read-only mapping from name to entry whose lookup errors help the reader."""

    def __init__(self, family: str, entries: Mapping[str, T]):
        self.family = family
        self._entries = dict(entries)

    def __getitem__(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise ConfigError(unknown_name_message(self.family, name, list(self._entries))) from None

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> list[str]:
        return sorted(self._entries)


def registry(family: str) -> Callable[[Mapping[str, T]], Registry[T]]:
    """Shorthand: ``ACTIVATIONS = registry("activation")({...})``."""
    return lambda entries: Registry(family, entries)
