"""Privacy-preserving handles for phone numbers.

Message records never hold a recipient's number. To match messages against
the application's clients (opt-outs) they hold a keyed 64-bit hash of the
E.164 number instead; the key is random per process, so the hash is useless
outside it. The destination's country calling code (a bounded label) is kept
for cost breakdowns.
"""

from __future__ import annotations

import hashlib
import os

import phonenumbers

_KEY = os.urandom(16)
_CALLING_CODES = frozenset(str(c) for c in phonenumbers.COUNTRY_CODE_TO_REGION_CODE)


def peer_hash(e164: str | None) -> int | None:
    """A keyed hash of an E.164 number (None when there is no number)."""
    if not e164:
        return None
    digest = hashlib.blake2b(e164.encode(), key=_KEY, digest_size=8).digest()
    return int.from_bytes(digest, "big")


def calling_code(e164: str | None) -> str | None:
    """The country calling code of an E.164 number ("1", "44", ...), or None.

    Calling codes are prefix-free, so the first one to three digits decide.
    """
    if not e164 or not e164.startswith("+"):
        return None
    digits = e164[1:4]
    for n in (1, 2, 3):
        if digits[:n] in _CALLING_CODES:
            return digits[:n]
    return None


def normalise(raw: object, default_region: str = "US") -> str | None:
    """E.164 form of a number as an application stored it, or None if it is not a valid number."""
    if not isinstance(raw, str) or not raw.strip():
        return None
    try:
        number = phonenumbers.parse(raw, default_region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
