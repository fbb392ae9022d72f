"""E.164 telephone numbers: the one pattern every part of sms-monitor checks against."""

from __future__ import annotations

import re

E164 = re.compile(r"^\+[1-9]\d{1,14}$")


def is_e164(value: object) -> bool:
    """Whether ``value`` is a string in E.164 form (``+`` then 2 to 15 digits, no leading 0)."""
    return isinstance(value, str) and E164.match(value) is not None
