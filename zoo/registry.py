"""Name → object registries (timm-style): ``register``, ``get`` with did-you-mean, ``names(pattern)``.

``TASKS`` holds every task's :class:`zoo.task.TaskSpec`. Tasks are found through the ``zoo.tasks`` entry-point
group, so the in-tree tasks (declared in this project's pyproject) and third-party packages register the same
way; nothing is imported until a task is asked for.
"""

from __future__ import annotations

import difflib
import fnmatch
import warnings
from collections.abc import Callable, Iterator
from importlib.metadata import entry_points
from typing import Generic, TypeVar

from zoo.errors import ZooValueError

T = TypeVar("T")

ENTRY_POINT_GROUP = "zoo.tasks"


class Registry(Generic[T]):
    """A named collection of ``T``; ``kind`` (e.g. "task") appears in error messages."""

    def __init__(self, kind: str, discover: Callable[[Registry[T]], None] | None = None) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._discover = discover
        self._discovered = discover is None

    def register(self, name: str, obj: T) -> T:
        """Add ``obj`` under ``name``; a second registration of a name warns and replaces the first."""
        if name in self._items and self._items[name] is not obj:
            warnings.warn(f"{self.kind} {name!r} registered twice; the later one wins", stacklevel=2)
        self._items[name] = obj
        return obj

    def _ensure_discovered(self) -> None:
        if not self._discovered:
            self._discovered = True
            assert self._discover is not None
            self._discover(self)

    def get(self, name: str) -> T:
        """The object registered as ``name``; an unknown name raises with the closest known names."""
        self._ensure_discovered()
        if name not in self._items:
            close = difflib.get_close_matches(name, self._items, n=3)
            hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            known = ", ".join(sorted(self._items)) or "none"
            raise ZooValueError(f"unknown {self.kind} {name!r}{hint} (known: {known})")
        return self._items[name]

    def names(self, pattern: str = "*") -> list[str]:
        """Sorted names matching the fnmatch ``pattern``."""
        self._ensure_discovered()
        return sorted(n for n in self._items if fnmatch.fnmatchcase(n, pattern))

    def __contains__(self, name: object) -> bool:
        self._ensure_discovered()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


def _discover_tasks(registry: Registry) -> None:
    """Load every ``zoo.tasks`` entry point; each names a ``TaskSpec`` object."""
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        spec = ep.load()
        registry.register(getattr(spec, "name", ep.name), spec)


TASKS: Registry = Registry("task", _discover_tasks)
