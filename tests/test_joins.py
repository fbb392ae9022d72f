"""The Twilio × database join (core/joins.py): exact values from hand-built parts."""

from __future__ import annotations

from dataclasses import replace

from sms_monitor.core.dbchecks import KeywordEvent
from sms_monitor.core.joins import database_view, keyword_events
from sms_monitor.core.keywords import OPTIN, OPTOUT
from sms_monitor.core.peers import peer_hash
from tests.snapshots import HEALTHY_FACTS, T0, account, message

ALICE, BOB, CAROL = "+15550100001", "+15550100002", "+15550100003"
MINUTE = 60.0


def stop(number: str, ago: float, kind: str = OPTOUT) -> KeywordEvent:
    return KeywordEvent(number, T0 - ago, kind)


def test_a_keyword_seen_by_poll_and_webhook_counts_once_and_old_ones_are_left_out() -> None:
    polled = account(keywords=[("SMpolled", stop(ALICE, 5 * MINUTE)),
                               ("SMold", stop(BOB, 61 * MINUTE))])
    webhook = [("SMpolled", stop(ALICE, 5 * MINUTE)),  # the same message, seen both ways
               ("SMhook", stop(CAROL, 1 * MINUTE)),  # no poll has brought it yet
               ("SMhookold", stop(CAROL, 70 * MINUTE))]
    events = keyword_events([polled], webhook, edge=T0 - 60 * MINUTE)
    assert events == [stop(ALICE, 5 * MINUTE), stop(CAROL, 1 * MINUTE)]


def test_a_keyword_exactly_at_the_window_edge_is_in() -> None:
    polled = account(keywords=[("SMedge", stop(ALICE, 60 * MINUTE))])
    assert keyword_events([polled], [], edge=T0 - 60 * MINUTE) == [stop(ALICE, 60 * MINUTE)]


def test_candidates_are_opt_outs_past_the_grace_period_not_withdrawn() -> None:
    a = account(keywords=[("SM1", stop(ALICE, 10 * MINUTE)),  # past the 5-minute grace
                          ("SM2", stop(BOB, 5 * MINUTE)),  # exactly at the grace: due
                          ("SM3", stop(CAROL, 4 * MINUTE))])  # not yet
    webhook = [("SM4", stop(BOB, 1 * MINUTE, OPTIN))]  # Bob took it back
    view = database_view([a], webhook, now=T0, window=3600, grace=300, reconcile_lag=120)
    assert dict(view.candidates) == {ALICE: T0 - 10 * MINUTE}
    assert dict(view.optout_times) == {peer_hash(ALICE): T0 - 10 * MINUTE,
                                       peer_hash(BOB): T0 - 5 * MINUTE,
                                       peer_hash(CAROL): T0 - 4 * MINUTE}


def test_outbound_reconciliation_and_21610_across_accounts() -> None:
    first = account("first", [
        message("SMa", T0 - 30 * MINUTE),
        message("SMb", T0 - 90 * MINUTE),  # held for a longer alert window: not in the join
        message("SMc", T0 - 1 * MINUTE, "failed", error=21610),  # inside the lag: not in span
        message("SMd", T0 - 10 * MINUTE, outbound=False, status="received"),
    ])
    second = account("second", [
        message("SMe", T0 - 2 * MINUTE, "failed", error=21610),  # exactly at the span's end: not in it
        message("SMf", T0 - 59 * MINUTE, "undelivered", error=30007),
    ])
    view = database_view([first, second], [], now=T0, window=3600, grace=300,
                         reconcile_lag=120)
    assert [r.sid for r in view.outbound] == ["SMa", "SMc", "SMe", "SMf"]
    assert view.refused_21610 == 2
    assert view.twilio_in_span == 2  # SMa and SMf; SMe at T0-120 is not before the span end
    assert view.messages_ok


def test_one_unreadable_message_log_makes_the_join_unreadable() -> None:
    good = account("good", [message("SMa", T0 - MINUTE)])
    blind = account("blind", facts=replace(HEALTHY_FACTS, messages_ok=False))
    view = database_view([good, blind], [], now=T0, window=3600, grace=300, reconcile_lag=120)
    assert not view.messages_ok
    assert view.refused_21610 == 0 and view.twilio_in_span == 0  # SMa is inside the lag


def test_no_accounts_no_webhooks_is_an_empty_view() -> None:
    view = database_view([], [], now=T0, window=3600, grace=300, reconcile_lag=120)
    assert (dict(view.candidates), view.outbound, view.refused_21610, view.twilio_in_span,
            view.messages_ok) == ({}, (), 0, 0, True)


def test_twilios_own_replies_are_neither_reconciled_nor_sends_to_opted_out() -> None:
    a = account("primary", [
        message("SMapi", T0 - 30 * MINUTE),
        replace(message("SMstop", T0 - 29 * MINUTE), reply=True),  # the STOP confirmation
    ])
    view = database_view([a], [], now=T0, window=3600, grace=300, reconcile_lag=120)
    assert [r.sid for r in view.outbound] == ["SMapi"]
    assert view.twilio_in_span == 1
