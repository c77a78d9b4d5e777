"""One registry type for models, defenses and attacks (timm style).

``create_x(name, **kw)`` builds an object; ``list_x(pattern)`` lists names matching a glob pattern.
Names encode their configuration (``vgg16_narrow`` is VGG16 at width 1/4); keyword arguments override
the registered defaults.
"""

from __future__ import annotations

import difflib
import fnmatch
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError, ValueError):
    """Raised for a name that is not registered; the message lists close matches."""

    def __str__(self) -> str:  # KeyError quotes its argument; we want a readable sentence
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    factory: Callable[..., T]
    defaults: dict[str, Any] = field(default_factory=dict)
    description: str = ""


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def add(
        self, name: str, factory: Callable[..., T], description: str = "", **defaults: Any
    ) -> None:
        key = name.lower()
        if key in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[key] = Entry(key, factory, dict(defaults), description)

    def register(
        self, name: str | None = None, description: str = "", **defaults: Any
    ) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator form of :meth:`add`."""

        def deco(factory: Callable[..., T]) -> Callable[..., T]:
            doc = description or next(iter((factory.__doc__ or "").strip().splitlines()), "")
            self.add(name or factory.__name__, factory, doc, **defaults)
            return factory

        return deco

    def entry(self, name: str) -> Entry[T]:
        key = name.lower()
        if key not in self._entries:
            close = difflib.get_close_matches(key, self._entries, n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}.{hint} Known: {', '.join(sorted(self._entries))}"
            )
        return self._entries[key]

    def create(self, name: str, **kwargs: Any) -> T:
        e = self.entry(name)
        return e.factory(**{**e.defaults, **kwargs})

    def list(self, pattern: str = "*") -> list[str]:
        return sorted(n for n in self._entries if fnmatch.fnmatch(n, pattern.lower()))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._entries

    def __len__(self) -> int:
        return len(self._entries)
