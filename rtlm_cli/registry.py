"""One generic name -> implementation registry: refuses duplicates, answers unknown names with a hint."""

from __future__ import annotations

import difflib
from typing import Generic, TypeVar

from rtlm_cli.errors import RtlmError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str):
        def decorator(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[name] = obj
            return obj

        return decorator

    def unregister(self, name: str) -> None:
        """Remove a name (a test's own registration, say); unknown names are an error."""
        self.get(name)
        del self._items[name]

    def get(self, name: str) -> T:
        if name in self._items:
            return self._items[name]
        close = difflib.get_close_matches(name, self._items, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise RtlmError(f"unknown {self.kind} {name!r}: {hint}available: {', '.join(sorted(self._items))}")

    def names(self) -> list[str]:
        """In the order they were registered (e.g. a baseline first)."""
        return list(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items
