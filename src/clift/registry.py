"""A small, validated name → object registry with helpful lookups.

Used for methods, model aliases and benchmarks: the CLI, the config loader and ``clift ls`` all read
the same registries, so there is no ``if/elif`` over names anywhere.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator
from typing import Generic, TypeVar

from clift.errors import RegistryError
from clift.safety import shorten

T = TypeVar("T")

_NAME_RE = re.compile(r"^[a-z][a-z0-9_\-\.]*$")


class Registry(Generic[T]):
    """Maps lower-case names to entries.

    Args:
        kind: what the entries are, used in messages ("method", "model").
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T) -> T:
        """Add ``entry`` under ``name``.

        Raises:
            ValueError: if the name is not lower case (``[a-z][a-z0-9_-.]*``) or already taken.
        """
        if not _NAME_RE.match(name):
            raise ValueError(
                f"{self.kind} name {name!r} is invalid: use lower case letters, digits, '_', '-' or '.', "
                "starting with a letter."
            )
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered; pick another name.")
        self._entries[name] = entry
        return entry

    def get(self, name: str) -> T:
        """Return the entry for ``name``.

        Raises:
            RegistryError: naming the unknown value, the closest matches and every available name.
        """
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise RegistryError(self.unknown_message(name)) from None

    def unknown_message(self, name: object) -> str:
        names = sorted(self._entries)
        close = difflib.get_close_matches(str(name), names, n=3, cutoff=0.5)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        return f"unknown {self.kind} {shorten(name)}.{hint} Available: {', '.join(names)}."

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))

    def items(self) -> list[tuple[str, T]]:
        return sorted(self._entries.items())

    def names(self) -> list[str]:
        return sorted(self._entries)
