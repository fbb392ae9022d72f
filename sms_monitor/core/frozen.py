"""Read-only values for the types every reader shares.

A frozen dataclass stops attribute assignment, not ``snapshot.facts.failures["x"] = ...``.
:class:`Immutable` closes that gap: at construction its dict, list and set fields become a
read-only mapping, a tuple and a frozenset (copies, so the builder's own containers stay
its own).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from types import MappingProxyType
from typing import Any


def frozen(value: Any) -> Any:
    """``value`` with its containers made read-only, recursively (tuples are kept as given)."""
    if isinstance(value, MappingProxyType):
        return value
    if isinstance(value, Mapping):
        return MappingProxyType({k: frozen(v) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(frozen(v) for v in value)
    if isinstance(value, set):
        return frozenset(value)
    return value


class Immutable:
    """Mixin for frozen dataclasses: container fields are frozen in ``__post_init__``."""

    def __post_init__(self) -> None:
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            fixed = frozen(value)
            if fixed is not value:
                object.__setattr__(self, f.name, fixed)
