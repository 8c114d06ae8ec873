"""Whether a child would repeat a trial: :class:`KnownParams`.

A define-by-run objective asks for its parameters along a path that its
earlier answers choose (``if trial.suggest_categorical("c", ...) == "a":
...``), so a finished trial's parameters are those of its path only. A child
record holds more: crossover joins both parents' parameters and the pool
fills in those of other branches. The child repeats a trial when it agrees
with it on every parameter the trial used: the objective then takes the same
path and asks for nothing else. Comparing whole parameter sets misses every
such repeat.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

__all__ = ["KnownParams"]


class KnownParams:
    """Parameter sets already evaluated (or being evaluated), indexed by their names.

    Thread-safe: a sampler adds finished trials while other threads ask.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # Sorted parameter names -> the values (reprs, in that order) of the sets with
        # exactly those names. Objectives have few paths, so few entries.
        self._by_names: dict[tuple[str, ...], set[tuple[str, ...]]] = {}
        self._numbers: set[int] = set()

    def __len__(self) -> int:
        return len(self._numbers)

    def add(self, number: int, params: Mapping[str, Any]) -> None:
        """Record the parameters trial ``number`` used (once per trial; empty sets are
        not recorded: they tell nothing about a child)."""
        if not params:
            return
        names = tuple(sorted(params))
        values = tuple(repr(params[name]) for name in names)
        with self._lock:
            if number in self._numbers:
                return
            self._numbers.add(number)
            self._by_names.setdefault(names, set()).add(values)

    def knows(self, number: int) -> bool:
        """Whether trial ``number`` has been recorded."""
        with self._lock:
            return number in self._numbers

    def repeats(self, child: Mapping[str, Any]) -> bool:
        """Whether some recorded set agrees with ``child`` on each of its parameters."""
        with self._lock:
            entries = list(self._by_names.items())
        for names, known in entries:
            if all(name in child for name in names) and (
                tuple(repr(child[name]) for name in names) in known
            ):
                return True
        return False
