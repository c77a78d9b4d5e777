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


#: Entry-point groups: the papers (suites, presets, defenses) and the attack backends (Foolbox, AutoAttack),
#: each loaded at the first lookup of a registry that reads it.
PAPERS = "maskdefense.plugins"
ATTACK_BACKENDS = "maskdefense.attacks"
_loaded: set[str] = set()


def load_plugins(group: str = PAPERS) -> None:
    """Import every module of the entry-point group ``group`` once. Lower floors of the library never
    import the papers or the attack libraries: they plug into the registries, as third-party packages can."""
    if group in _loaded:
        return
    from importlib.metadata import entry_points

    _loaded.add(group)  # first: a plugin module looks registries up while it registers itself
    try:
        for ep in sorted(entry_points(group=group), key=lambda e: e.name):
            try:
                ep.load()
            except Exception as e:
                raise ImportError(f"maskdefense plugin {ep.name!r} ({ep.value}) failed to load: {e}") from e
    except BaseException:
        _loaded.discard(group)  # the next lookup tries again (and fails loudly again) instead of missing entries
        raise


class Registry(Generic[T]):
    def __init__(self, kind: str, *, plugins: str | None = None) -> None:
        self.kind = kind
        self.plugins = plugins  # an entry-point group whose modules register entries (load_plugins) first
        self._entries: dict[str, Entry[T]] = {}

    def _load(self) -> None:
        if self.plugins:
            load_plugins(self.plugins)

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
        self._load()
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

    def parse_spec(self, text: str) -> tuple[str, dict[str, Any]]:
        """A spec ``"name:key=value,..."`` of this registry -> ``(name, params)`` (the name checked, with
        suggestions; the values parsed by :func:`maskdefense.spec.parse_params`)."""
        from .spec import SpecError, parse_params

        if not isinstance(text, str) or not text.strip():
            raise SpecError(f"empty {self.kind} spec")
        name, _, rest = text.strip().partition(":")
        name = name.strip().lower()
        self.entry(name)  # UnknownNameError with suggestions
        return name, parse_params(rest, what=f"{self.kind} {name}")

    def list(self, pattern: str = "*") -> list[str]:
        self._load()
        return sorted(n for n in self._entries if fnmatch.fnmatch(n, pattern.lower()))

    def __contains__(self, name: object) -> bool:
        self._load()
        return isinstance(name, str) and name.lower() in self._entries

    def __len__(self) -> int:
        self._load()
        return len(self._entries)
