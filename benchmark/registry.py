"""Name → object registries, in the style of timm's ``register_model`` / ``create_model``.

A registry maps a short id (``"simclr"``, ``"label_flip"``, ``"mnist5k"``) to a factory. Registering an id
twice is an error, and looking up an unknown id raises :class:`UnknownNameError` whose message lists the
valid choices, so a typo in a suite file is reported with the fix next to it.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError):
    """An id that is not in a registry; the message names the valid choices."""

    def __init__(self, kind: str, name: str, choices: list[str]) -> None:
        close = difflib.get_close_matches(name, choices, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        self.kind, self.name, self.choices = kind, name, choices
        super().__init__(f"unknown {kind} {name!r}.{hint} Valid choices: {', '.join(choices) or '(none)'}")

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]


class DuplicateNameError(ValueError):
    """Two objects registered under the same id."""


class Registry(Generic[T]):
    """A named collection of ``T`` keyed by id; ids are unique and listed sorted."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str, obj: T) -> T:
        if name in self._entries and self._entries[name] is not obj:
            raise DuplicateNameError(f"{self.kind} id {name!r} is registered twice")
        self._entries[name] = obj
        return obj

    def decorator(self, name: str) -> Callable[[T], T]:
        def wrap(obj: T) -> T:
            return self.register(name, obj)

        return wrap

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(self.kind, name, self.names()) from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)
