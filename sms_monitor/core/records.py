"""The compact per-message record kept in memory: no body, no recipient number."""

from __future__ import annotations

from dataclasses import dataclass

# Twilio statuses after which a message's status no longer changes in practice.
FINAL_STATUSES = frozenset(
    {"delivered", "undelivered", "failed", "read", "received", "canceled", "partially_delivered"}
)
# Outbound statuses that count as a success for the delivery rate.
DELIVERED_STATUSES = frozenset({"delivered", "read"})
# Outbound statuses that count as a failure for the delivery rate.
FAILED_STATUSES = frozenset({"undelivered", "failed"})
# Error code Twilio uses for carrier filtering.
CARRIER_FILTERED_ERROR = 30007


@dataclass(frozen=True, slots=True)
class MessageRecord:
    """What sms-monitor remembers of one Twilio message.

    Times are POSIX seconds (UTC). The other party's number is kept only as a keyed
    hash (``peer``), which cannot be turned back into the number. ``updated`` is Twilio's ``date_updated``;
    for a delivered message it is taken as the delivery time.
    """

    sid: str
    outbound: bool
    status: str
    error_code: int | None
    created: float
    updated: float | None
    price: float | None = None
    segments: int = 1
    peer: int | None = None  # keyed hash of the other party's number (see core.peers)
    country: str | None = None  # calling code of an outbound message's destination
    keyword: str | None = None  # "optout", "optin" or "help" for an inbound keyword message
    # sent by Twilio itself (outbound-reply: TwiML and STOP/HELP confirmations; outbound-call),
    # not by the application through the API
    reply: bool = False

    @property
    def final(self) -> bool:
        return self.status in FINAL_STATUSES

    @property
    def delivered(self) -> bool:
        return self.status in DELIVERED_STATUSES
