"""The shapes of the parameters Twilio posts to its webhooks, checked before any is used.

Twilio signs a webhook over the URL and the parameters sorted by name, each name followed
by its value, all concatenated. The boundaries between parameters are not signed: a
captured request re-sent with ``MessageSid=<sid>NumMedia0`` and without ``NumMedia``
carries the same signature, and would pass as a new message. Values that must have one
shape (a SID, a status, a number) make such a shift visible: each is checked here against
what Twilio sends (its API description, ``message_enum_status`` for the statuses).
Parameters not named here (``Body``, ``FromCity``, ...) may hold anything.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

# Twilio's message statuses (twilio_api_v2010: components.schemas.message_enum_status)
MESSAGE_STATUSES = frozenset({
    "queued", "sending", "sent", "failed", "delivered", "undelivered", "receiving",
    "received", "accepted", "scheduled", "read", "partially_delivered", "canceled"})

MESSAGE_SID = re.compile(r"(?:SM|MM)[0-9a-fA-F]{32}")
ACCOUNT_SID = re.compile(r"AC[0-9a-fA-F]{32}")
SERVICE_SID = re.compile(r"MG[0-9a-fA-F]{32}")
# An address: E.164, a short code, an alphanumeric sender ID (at most 11 letters, digits
# and spaces, at least one letter), or a channel's address (whatsapp:+1..., messenger:...).
ADDRESS = re.compile(r"\+[1-9]\d{1,14}|\d{3,15}|(?=[A-Za-z0-9 ]*[A-Za-z])[A-Za-z0-9 ]{1,11}"
                     r"|[a-z]{2,16}:(?:\+[1-9]\d{1,14}|[A-Za-z0-9_.@+-]{1,64})")

SHAPES: dict[str, re.Pattern[str] | frozenset[str]] = {
    "AccountSid": ACCOUNT_SID,
    "MessageSid": MESSAGE_SID, "SmsSid": MESSAGE_SID, "SmsMessageSid": MESSAGE_SID,
    "MessagingServiceSid": SERVICE_SID,
    "MessageStatus": MESSAGE_STATUSES, "SmsStatus": MESSAGE_STATUSES,
    "ErrorCode": re.compile(r"\d{0,6}"),  # absent or empty when there is none
    "From": ADDRESS, "To": ADDRESS,
    "NumMedia": re.compile(r"\d{1,3}"), "NumSegments": re.compile(r"\d{1,4}"),
    "ApiVersion": re.compile(r"\d{4}-\d{2}-\d{2}"),
}

SID_NAMES = ("MessageSid", "SmsSid", "SmsMessageSid")


def shape_problem(params: Mapping[str, str]) -> str | None:
    """None when every parameter Twilio gives a shape has it, else the first that has not
    (its name only: values are not for logs)."""
    for name, shape in SHAPES.items():
        value = params.get(name)
        if value is None:
            continue
        ok = value in shape if isinstance(shape, frozenset) else shape.fullmatch(value)
        if not ok:
            return name
    sids = {params[n] for n in SID_NAMES if n in params}
    if len(sids) > 1:  # the same message under each name
        return "MessageSid"
    return None
