"""Why a Twilio call failed: the exceptions a call can end in, and their one-word cause.

Every Twilio read or send (the poller's probes and message log, the canary's sends and
follow-ups) catches :data:`TWILIO_FAILURES` and names the cause with :func:`failure_kind`;
the kinds themselves are the core's (:mod:`sms_monitor.core.facts`).
"""

from __future__ import annotations

import requests
from twilio.base.exceptions import TwilioException, TwilioRestException

from sms_monitor.core import facts as kinds

# What a call through the twilio client raises when Twilio is unreachable, refuses the
# request or answers with something the client cannot read (a JSONDecodeError is a
# ValueError; a missing field surfaces as KeyError, TypeError or AttributeError).
TWILIO_FAILURES: tuple[type[Exception], ...] = (
    TwilioException, requests.RequestException, ValueError, TypeError, KeyError, AttributeError,
)


class BudgetSpent(requests.RequestException):
    """The cycle's time for this account ran out: the request was not sent."""


def failure_kind(exc: BaseException) -> str:
    """Name the cause of a failed Twilio call in one word."""
    if isinstance(exc, BudgetSpent):
        return kinds.BUDGET
    if isinstance(exc, requests.Timeout):
        return kinds.TIMEOUT
    if isinstance(exc, requests.ConnectionError):
        return kinds.CONNECTION
    status: int | None = None
    if isinstance(exc, TwilioRestException):
        status = exc.status
    elif isinstance(exc, TwilioException) and len(exc.args) > 1:
        status = getattr(exc.args[1], "status_code", None)
    if status is not None:
        if status == 401:
            return kinds.AUTH
        if status >= 500 or status == 429:
            return kinds.SERVER_ERROR
        return kinds.CLIENT_ERROR
    return kinds.MALFORMED
