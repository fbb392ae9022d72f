"""Values posted to the simulator's control endpoints, as forms or JSON, parsed strictly.

A form posts every value as text, so ``bool(value)`` would turn ``false`` into True; these
helpers read the words people and scripts write, and refuse anything else (the handler
answers 400).
"""

from __future__ import annotations

import math

TRUE_WORDS = frozenset({"true", "1", "yes", "on"})
FALSE_WORDS = frozenset({"false", "0", "no", "off"})


def form_bool(value: object) -> bool:
    """true/false, 1/0, yes/no or on/off (any case; JSON booleans and 0/1 too).

    Raises ValueError for anything else.
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
    raise ValueError("expected true or false (or 1/0, yes/no, on/off)")


def form_number(value: object, kind: type[int] | type[float]) -> int | float:
    """A finite, non-negative int or float from form text or a JSON number.

    Raises ValueError for anything else (booleans included).
    """
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError("expected a number")
    if kind is int and isinstance(value, float) and not value.is_integer():
        raise ValueError("expected a whole number")
    number = kind(value)  # ValueError on text that is not one
    if not math.isfinite(number) or number < 0:
        raise ValueError("expected a finite number, 0 or more")
    return number


def like(current: object, value: object) -> object:
    """``value`` parsed as the type of ``current`` (a bool, int or float setting)."""
    if isinstance(current, bool):
        return form_bool(value)
    if isinstance(current, int):
        return form_number(value, int)
    if isinstance(current, float):
        return form_number(value, float)
    raise ValueError(f"cannot set a {type(current).__name__} from a form")
