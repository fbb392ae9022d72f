"""The message log's paging, unit by unit: where a run stops whatever order the log keeps,
loops caught by SID, the time budget never mistaken for a failure. Pages are hand-built
stand-ins for the twilio library's; no network."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from sms_monitor.config import load_settings
from sms_monitor.core.window import Gap
from sms_monitor.inputs.telemetry import RequestLog
from sms_monitor.inputs.twilio import PagingLoop, PollResult, TwilioPoller, _Segment
from sms_monitor.inputs.twilio_errors import BudgetSpent

NOW = 1_780_000_000.0
LOWER = NOW - 600  # the run heads back to here


@dataclass
class Msg:
    """Just the fields the poller reads of a MessageInstance."""

    sid: str
    created: float
    sent: float | None
    status: str = "delivered"
    direction: str = "outbound-api"
    to: str = "+15550100001"
    from_: str = "+15005550006"
    price: str | None = "-0.0079"
    num_segments: str = "1"
    error_code: int | None = None
    body: str = ""

    @property
    def date_created(self) -> datetime:
        return datetime.fromtimestamp(self.created, UTC)

    @property
    def date_sent(self) -> datetime | None:
        return None if self.sent is None else datetime.fromtimestamp(self.sent, UTC)

    @property
    def date_updated(self) -> datetime:
        return datetime.fromtimestamp(self.sent or self.created, UTC)


@pytest.fixture
def poller() -> TwilioPoller:
    env = {"TWILIO_ACCOUNT_SID": "AC" + "0" * 32, "TWILIO_AUTH_TOKEN": "t",
           "SMS_MONITOR_TWILIO_API_URL": "http://127.0.0.1:9"}
    settings = load_settings(env)
    return TwilioPoller(settings.accounts[0], settings, RequestLog())


def take(poller: TwilioPoller, page: list[Msg], seg: _Segment) -> tuple[bool, PollResult]:
    result = PollResult(facts=None)  # type: ignore[arg-type]
    done = poller._take(page, seg, result)
    return done, result


def test_a_run_stops_on_the_send_date_so_a_scheduled_message_does_not_end_it(
        poller: TwilioPoller) -> None:
    page = [
        Msg("SMsched", created=NOW - 2 * 86_400, sent=NOW - 5),  # created two days ago, sent now
        Msg("SMnew", created=NOW - 10, sent=NOW - 9),
        Msg("SMqueued", created=NOW - 900, sent=None, status="queued"),  # not sent: current
        Msg("SMold", created=LOWER - 100, sent=LOWER - 50),  # the run ends here
        Msg("SMolder", created=LOWER - 200, sent=LOWER - 190),
    ]
    done, result = take(poller, page, _Segment(lower=LOWER, upper=float("inf"), url=None))
    assert done
    assert [r.sid for r in result.records] == ["SMsched", "SMnew", "SMqueued"]


def test_a_creation_ordered_log_stops_at_the_first_message_sent_before_the_bound(
        poller: TwilioPoller) -> None:
    page = [Msg("SM3", NOW - 30, NOW - 29), Msg("SM2", LOWER + 5, LOWER + 6),
            Msg("SM1", LOWER - 1, LOWER - 0.5), Msg("SM0", LOWER - 2, LOWER - 1.5)]
    done, result = take(poller, page, _Segment(lower=LOWER, upper=float("inf"), url=None))
    assert done and [r.sid for r in result.records] == ["SM3", "SM2"]


def test_a_page_repeating_a_message_of_the_run_is_a_loop(poller: TwilioPoller) -> None:
    seg = _Segment(lower=LOWER, upper=float("inf"), url=None)
    take(poller, [Msg("SMa", NOW - 5, NOW - 4)], seg)
    with pytest.raises(PagingLoop):
        take(poller, [Msg("SMa", NOW - 5, NOW - 4)], seg)


def test_a_resumed_page_of_nothing_new_is_a_loop_but_a_first_page_is_not(
        poller: TwilioPoller) -> None:
    held = {"SMa", "SMb"}
    page = [Msg("SMa", NOW - 5, NOW - 4), Msg("SMb", NOW - 6, NOW - 5)]
    resumed = _Segment(lower=LOWER, upper=NOW - 300, url="/resume", held=held)
    with pytest.raises(PagingLoop):
        take(poller, page, resumed)
    # the log's first page may well hold nothing new: a quiet minute
    done, result = take(poller, page, _Segment(lower=LOWER, upper=float("inf"), url=None,
                                               held=held))
    assert not done and len(result.records) == 2


def test_running_out_of_time_carries_every_gap_over_as_it_was(
        poller: TwilioPoller, monkeypatch: pytest.MonkeyPatch) -> None:
    gaps = [Gap(upper=NOW - 700, lower=NOW - 1800, resume="/p2"),
            Gap(upper=NOW - 2000, lower=NOW - 3600, resume="/p9")]
    calls: list[str | None] = []

    def segment(seg: _Segment, pages: int, result: PollResult) -> tuple[int, Gap | None]:
        calls.append(seg.url)
        if seg.url is None:
            poller.http.deadline = 0.0  # the fresh read used the cycle's time up
            return 3, None
        raise BudgetSpent("the cycle's time for Twilio ran out")

    monkeypatch.setattr(poller, "_read_segment", segment)
    result = PollResult(facts=None)  # type: ignore[arg-type]
    poller._read_messages(NOW - 60, gaps, result)
    assert calls == [None]  # no gap was even started past the deadline
    assert result.gaps == gaps and result.read_problem is None


def test_a_gap_cut_by_the_budget_is_resumed_not_reported(
        poller: TwilioPoller, monkeypatch: pytest.MonkeyPatch) -> None:
    gaps = [Gap(upper=NOW - 700, lower=NOW - 1800, resume="/p2")]

    def segment(seg: _Segment, pages: int, result: PollResult) -> tuple[int, Gap | None]:
        if seg.url is None:
            return 1, None
        raise BudgetSpent("out of time on the gap's first page")

    monkeypatch.setattr(poller, "_read_segment", segment)
    result = PollResult(facts=None)  # type: ignore[arg-type]
    poller._read_messages(NOW - 60, gaps, result)
    assert result.gaps == gaps and result.read_problem is None


def test_twilios_own_replies_are_marked(poller: TwilioPoller) -> None:
    page = [Msg("SMreply", NOW - 5, NOW - 4, direction="outbound-reply"),
            Msg("SMapi", NOW - 6, NOW - 5)]
    _, result = take(poller, page, _Segment(lower=LOWER, upper=float("inf"), url=None))
    assert [(r.sid, r.outbound, r.reply) for r in result.records] == [
        ("SMreply", True, True), ("SMapi", True, False)]
