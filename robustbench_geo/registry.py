"""One registry type for models, attacks and datasets (after timm's ``_registry.py``).

A :class:`Registry` maps names to entries (each domain keeps its own frozen entry dataclass:
:class:`~robustbench_geo.models.registry.ModelEntry`, :class:`~robustbench_geo.attacks.base.AttackEntry`,
:class:`~robustbench_geo.data.DatasetEntry`). It knows nothing about what an entry builds; it only
stores, lists with a glob and looks up, and an unknown name raises
:class:`~robustbench_geo.check.UnknownNameError` listing close matches and every valid name.

>>> reg = Registry("colour")
>>> _ = reg.add("red", 1), reg.add("green", 2)
>>> reg.names("gr*")
['green']
>>> reg.get("rde")
Traceback (most recent call last):
...
robustbench_geo.check.UnknownNameError: unknown colour 'rde'. Did you mean 'red'? Valid colours: green, red
"""

from __future__ import annotations

import fnmatch
from typing import Callable, Generic, Iterator, TypeVar

from robustbench_geo.check import unknown_name_error

T = TypeVar("T")


class Registry(Generic[T]):
    """Named entries of one kind, with glob listing, prefix resolvers and helpful errors.

    Args:
        kind: what an entry is (``"model"``, ``"attack"``, ``"dataset"``), used in messages.
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._resolvers: dict[str, Callable[[str], T]] = {}

    def add(self, name: str, entry: T) -> T:
        """Register ``entry`` under ``name``; a name can be registered once."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self.kind} name: expected a non-empty string, got {name!r}")
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = entry
        return entry

    def add_resolver(self, prefix: str, resolver: Callable[[str], T]) -> None:
        """Resolve names ``prefix:...`` on demand (e.g. ``art:ProjectedGradientDescent``)."""
        if prefix in self._resolvers:
            raise ValueError(f"{self.kind} prefix {prefix!r} already has a resolver")
        self._resolvers[prefix] = resolver

    def get(self, name: str) -> T:
        """The entry of ``name`` (or of a resolver's ``prefix:...`` name).

        Raises:
            UnknownNameError: (a ``KeyError``) listing close matches and the valid names.
        """
        if name in self._entries:
            return self._entries[name]
        prefix, sep, _ = str(name).partition(":")
        if sep and prefix in self._resolvers:
            return self._resolvers[prefix](name)
        raise self.unknown(name)

    def unknown(self, name: str) -> KeyError:
        """The error for an unknown ``name`` (for callers that look further before giving up)."""
        return unknown_name_error(self.kind, str(name), self.valid_names())

    def valid_names(self) -> list[str]:
        """Registered names plus ``prefix:<name>`` for every resolver."""
        return sorted(self._entries) + [f"{p}:<name>" for p in sorted(self._resolvers)]

    def names(self, pattern: str = "*", where: Callable[[T], bool] | None = None) -> list[str]:
        """Sorted registered names matching the glob ``pattern`` (and ``where(entry)`` if given)."""
        return sorted(n for n, e in self._entries.items()
                      if fnmatch.fnmatchcase(n, pattern) and (where is None or where(e)))

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self)} entries)"
