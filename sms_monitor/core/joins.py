"""Twilio × application database: what the database checks need from the Twilio side.

Pure: from the accounts' parts and the webhook's keyword messages of this cycle, the opt-out
candidates to look up, the outbound messages to match against opted-out clients, the
latest opt-out per number, Twilio's 21610 refusals and the reconciliation count.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sms_monitor.core.dbchecks import DatabaseView, KeywordEvent, latest_optouts, optout_candidates
from sms_monitor.core.snapshot import AccountSnapshot

REFUSED_OPTED_OUT = "21610"  # Twilio refused: the recipient replied STOP to this sender


def keyword_events(accounts: Sequence[AccountSnapshot],
                   webhook: Iterable[tuple[str, KeywordEvent]], edge: float
                   ) -> list[KeywordEvent]:
    """Keyword messages created at or after ``edge``: every polled one, and each webhook one
    no poll has brought yet (the same message seen both ways counts once)."""
    events: list[KeywordEvent] = []
    polled: set[str] = set()
    for account in accounts:
        for sid, event in account.keywords:
            polled.add(sid)
            if event.created >= edge:
                events.append(event)
    events.extend(e for sid, e in webhook if sid not in polled and e.created >= edge)
    return events


def database_view(accounts: Sequence[AccountSnapshot],
                  webhook: Iterable[tuple[str, KeywordEvent]], *, now: float, window: float,
                  grace: float, reconcile_lag: float) -> DatabaseView:
    """The Twilio side of the database checks at ``now``, over the last ``window`` seconds.

    The reconciliation span ends ``reconcile_lag`` before ``now`` (the application logs a
    send before Twilio has it); Twilio's side is only known when every account's window
    was read whole.
    """
    edge = now - window
    events = keyword_events(accounts, webhook, edge)
    # what the application sent through the API; Twilio's own replies (STOP confirmations,
    # TwiML) are neither logged by the application nor sends to an opted-out client
    outbound = tuple(r for a in accounts for r in a.records
                     if r.outbound and not r.reply and r.created >= edge)
    span_end = now - reconcile_lag
    return DatabaseView(
        candidates=optout_candidates(events, now, grace),
        outbound=outbound,
        optout_times=latest_optouts(events),
        refused_21610=sum(a.stats.by_error.get(REFUSED_OPTED_OUT, 0)
                          for a in accounts if a.stats is not None),
        twilio_in_span=sum(1 for r in outbound if r.created < span_end),
        messages_ok=all(a.window_complete for a in accounts),
    )
