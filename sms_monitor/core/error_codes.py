"""What Twilio's error codes mean, in one line each, for the people who read them at 3 a.m.

The codes an SMS sender meets in a message log (``error_code``) or an API answer. Every
code, known here or not, has a page at :func:`docs_url`.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

ERROR_MEANINGS: Mapping[str, str] = MappingProxyType({
    "20003": "authentication failed: wrong account SID or auth token",
    "20429": "too many requests: Twilio is rate limiting the API calls",
    "21211": "invalid 'To' phone number (not E.164, or not a number)",
    "21408": "SMS to this region is not enabled (the account's geo permissions)",
    "21610": "the recipient replied STOP: Twilio refuses to message them",
    "21612": "the 'To' number cannot be reached by SMS from this sender",
    "21614": "the 'To' number is not a mobile number",
    "21617": "the message body is over 1600 characters",
    "30001": "queue overflow: too many messages queued for the sender",
    "30002": "the account is suspended",
    "30003": "unreachable handset: switched off or out of coverage",
    "30004": "message blocked by the recipient or their carrier",
    "30005": "unknown handset: the number does not exist",
    "30006": "landline or unreachable carrier",
    "30007": "carrier filtering: the message was flagged as spam",
    "30008": "unknown error at the carrier",
    "30010": "the message price exceeds the maximum price set",
    "30017": "carrier network congestion",
    "30018": "the destination carrier requires a registered sender ID",
    "30022": "US A2P 10DLC: the campaign's rate limit was exceeded",
    "30023": "US A2P 10DLC: the daily message cap was reached",
    "30032": "the toll-free number is not verified",
    "30034": "sent from a US number not registered for A2P 10DLC",
})


def meaning(code: str) -> str:
    """The code's meaning in one line; for a code not listed, where to look it up."""
    return ERROR_MEANINGS.get(code, "see Twilio's error reference")


def docs_url(code: str) -> str:
    """Twilio's page for the code."""
    return f"https://www.twilio.com/docs/api/errors/{code}"
