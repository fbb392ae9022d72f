"""Parse human durations: "1 hour", "15 minutes", "1h", "30m", "90s", 3600."""

from __future__ import annotations

import math
import re

_UNITS = {
    "s": 1, "sec": 1, "secs": 1, "second": 1, "seconds": 1,
    "m": 60, "min": 60, "mins": 60, "minute": 60, "minutes": 60,
    "h": 3600, "hr": 3600, "hrs": 3600, "hour": 3600, "hours": 3600,
    "d": 86400, "day": 86400, "days": 86400,
}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_duration(value: object) -> float:
    """Seconds in ``value``, finite and positive; raises ValueError with a readable reason."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration, got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        m = _PATTERN.match(value)
        if not m or m.group(2).lower() not in {*_UNITS, ""}:
            raise ValueError(f"expected a duration like '90s', '15m' or '1 hour', got {value!r}")
        seconds = float(m.group(1)) * _UNITS.get(m.group(2).lower(), 1)
    else:
        raise ValueError(f"expected a duration, got {value!r}")
    if not math.isfinite(seconds):  # inf or nan from TOML or JSON, or 400 digits of a string
        raise ValueError(f"expected a finite duration, got {value!r}")
    if seconds <= 0:
        raise ValueError(f"duration must be positive, got {value!r}")
    return seconds
