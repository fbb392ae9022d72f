"""Events Twilio's webhooks hand to the cycle: plain values."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CallbackEvent:
    """An accepted status callback for one message."""

    account_sid: str
    sid: str
    status: str
    error_code: int | None
    at: float  # when it arrived (POSIX seconds)


@dataclass(frozen=True)
class InboundEvent:
    """An incoming keyword message. ``number`` is the sender's, held in memory only."""

    account_sid: str
    sid: str
    number: str
    kind: str  # optout, optin or help
    keyword: str  # the word itself, upper case
    at: float  # when it arrived (POSIX seconds)
