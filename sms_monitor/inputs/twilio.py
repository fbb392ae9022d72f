"""Poll one Twilio account with the official client: probes and the message log.

Failures are classified, never raised: each part of the poll (balance,
account, phone number, messages) either yields its facts or names why it
could not, and the checks it feeds become ``unknown`` (or red, where the
contract says so).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Container, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog
from twilio.rest import Client

from sms_monitor.config import AccountConfig, Settings
from sms_monitor.core import facts as kinds
from sms_monitor.core.facts import AccountFacts
from sms_monitor.core.keywords import KeywordMatcher
from sms_monitor.core.peers import calling_code, peer_hash
from sms_monitor.core.records import MessageRecord
from sms_monitor.core.window import Gap
from sms_monitor.inputs.telemetry import RequestLog
from sms_monitor.inputs.twilio_errors import TWILIO_FAILURES, BudgetSpent, failure_kind
from sms_monitor.inputs.twilio_http import MonitoredHttpClient

log = structlog.get_logger("sms_monitor.twilio")
_KEYWORDS = KeywordMatcher()



def _ts(value: Any) -> float | None:
    if isinstance(value, datetime):
        return value.timestamp()
    return None


def to_record(inst: Any, keywords: KeywordMatcher = _KEYWORDS) -> MessageRecord | None:
    """A compact record from a MessageInstance, or None when its fields are unusable.

    The body is read only to recognise a bare keyword (STOP, START, HELP) on an inbound
    message; the other party's number only to hash it. Neither is kept.
    """
    created = _ts(inst.date_created)
    sid = inst.sid
    status = inst.status
    if created is None or not isinstance(sid, str) or not isinstance(status, str):
        return None
    direction = inst.direction if isinstance(inst.direction, str) else ""
    outbound = direction.startswith("outbound")
    other = inst.to if outbound else inst.from_
    other = other if isinstance(other, str) else None
    try:
        price = abs(float(inst.price)) if inst.price not in (None, "") else None
    except (TypeError, ValueError):
        price = None
    try:
        segments = int(inst.num_segments) if inst.num_segments not in (None, "") else 1
    except (TypeError, ValueError):
        segments = 1
    return MessageRecord(
        sid=sid,
        outbound=outbound,
        status=sys.intern(status),  # a handful of distinct values across the window
        error_code=inst.error_code if isinstance(inst.error_code, int) else None,
        created=created,
        updated=_ts(inst.date_updated),
        price=price,
        segments=segments,
        peer=peer_hash(other),
        country=calling_code(other) if outbound else None,
        keyword=None if outbound else keywords.kind(inst.body),
        reply=outbound and direction != "outbound-api",
    )


@dataclass
class PollResult:
    facts: AccountFacts
    records: list[MessageRecord] = field(default_factory=list)
    keyword_numbers: dict[str, str] = field(default_factory=dict)  # sid -> sender (E.164)
    pages: int = 0
    malformed: int = 0
    gaps: list[Gap] = field(default_factory=list)  # what is left unread, newest first
    # why a resumed read made no progress (the gap is kept), e.g. paging that loops
    read_problem: str | None = None


class PagingLoop(ValueError):
    """The message log's paging went back to messages this read had already passed."""


@dataclass
class _Segment:
    """One newest-first run of pages: where it reads from and where it is heading."""

    lower: float  # stop at a message sent (or created) before this
    upper: float  # the newest it may meet (a resumed read: its gap's top)
    url: str | None  # the page to start at (None: the first page of the log)
    oldest: float | None = None  # the oldest order key read so far
    sids: set[str] = field(default_factory=set)
    held: Container[str] = frozenset()  # SIDs the window holds already


def merge_gaps(gaps: Sequence[Gap]) -> list[Gap]:
    """One gap per resume URL (a loop may leave the same place twice), widest span kept."""
    merged: dict[str, Gap] = {}
    for g in gaps:
        old = merged.get(g.resume)
        merged[g.resume] = g if old is None else Gap(max(old.upper, g.upper),
                                                     min(old.lower, g.lower), g.resume)
    return list(merged.values())


def order_key(rec: MessageRecord, inst: Any) -> float:
    """Where a message stands in the log, newest first, whether the log is ordered by
    creation or by ``date_sent``: the later of the two; a message not sent yet is current."""
    sent = _ts(inst.date_sent)
    if sent is None:
        return math.inf if not rec.final else rec.created
    return max(sent, rec.created)


class TwilioPoller:
    """Everything sms-monitor reads from one Twilio account."""

    def __init__(
        self,
        account: AccountConfig,
        settings: Settings,
        requests_log: RequestLog,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.account = account
        self.settings = settings
        self.http = MonitoredHttpClient(
            account.name, requests_log, timeout=settings.request_timeout,
            max_retries=settings.max_retries, sleep=sleep, monotonic=monotonic,
        )
        self.client = Client(account.account_sid, account.auth_token.get_secret_value(),
                             http_client=self.http)
        self.client.api.base_url = account.api_url
        self._api = self.client.api.v2010.accounts(account.account_sid)
        db = settings.database
        self.keywords = KeywordMatcher(optout=db.optout_keywords) if db else _KEYWORDS

    def _fail(self, part: str, exc: BaseException, failures: dict[str, str]) -> None:
        kind = failure_kind(exc)
        failures[part] = kind
        # Only the exception type and our own label: never the response body or URL.
        log.warning("twilio_request_failed", account=self.account.name, part=part, cause=kind,
                    error=type(exc).__name__)

    def read_usage(self, failures: dict[str, str]) -> tuple[float, float, str | None] | None:
        """(today, this month, currency) of SMS spend from Usage Records, or None."""
        try:
            records = self._api.usage.records
            today = records.today.list(category="sms", limit=1)
            month = records.this_month.list(category="sms", limit=1)
            if not today or not month:
                failures["usage"] = kinds.MALFORMED
                return None
            return (abs(float(today[0].price or 0.0)), abs(float(month[0].price or 0.0)),
                    month[0].price_unit if isinstance(month[0].price_unit, str) else None)
        except TWILIO_FAILURES as exc:
            self._fail("usage", exc, failures)
            return None

    def poll(self, horizon: float, read_usage: bool = False, gaps: Sequence[Gap] = (),
             budget: float | None = None, held: Container[str] = frozenset()) -> PollResult:
        """One cycle: probes, then messages created at or after ``horizon`` (POSIX seconds),
        then on into the ``gaps`` earlier reads left, with what is left of ``max_pages``;
        with ``read_usage``, also this month's and today's SMS spend. Nothing is sent after
        ``budget`` seconds; when the Balance probe finds Twilio unreachable, nothing more is
        asked this cycle (it would only wait for the same timeout again). ``held``: the SIDs
        the window already holds (a resumed page of nothing but those is paging that loops)."""
        self.http.saw_401 = False
        self.http.successes = 0
        self.http.deadline = self.http.monotonic() + budget if budget is not None else None
        failures: dict[str, str] = {}

        balance = currency = seconds = None
        self.http.last_seconds = 0.0
        try:
            b = self._api.balance.fetch()
            seconds = self.http.last_seconds  # without back-off sleeps between retries
            balance = float(b.balance) if b.balance is not None else None
            currency = b.currency
            if balance is None:
                failures["balance"] = kinds.MALFORMED
        except TWILIO_FAILURES as exc:
            seconds = self.http.last_seconds
            self._fail("balance", exc, failures)
        if failures.get("balance") in kinds.UNREACHABLE:
            return self._unreachable(failures, seconds, list(gaps))

        status = None
        try:
            acc = self._api.fetch()
            status = acc.status if isinstance(acc.status, str) else None
            if status is None:
                failures["account"] = kinds.MALFORMED
        except TWILIO_FAILURES as exc:
            self._fail("account", exc, failures)

        found = capable = None
        number = self.account.phone_number
        if number:
            try:
                numbers = self._api.incoming_phone_numbers.list(phone_number=number, limit=20)
                match = [n for n in numbers if n.phone_number == number]
                found = bool(match)
                caps = match[0].capabilities if match else None
                capable = bool(isinstance(caps, dict) and caps.get("sms"))
            except TWILIO_FAILURES as exc:
                self._fail("phone_number", exc, failures)

        usage = self.read_usage(failures) if read_usage else None

        result = PollResult(facts=AccountFacts())
        messages_ok = False
        try:
            self._read_messages(horizon, gaps, result, held)
            messages_ok = True
        except TWILIO_FAILURES as exc:
            self._fail("messages", exc, failures)
            result.gaps = list(gaps)  # nothing of this read is kept: the gaps stay as they were

        if self.http.saw_401:
            for part in list(failures):
                failures[part] = kinds.AUTH
        result.facts = AccountFacts(
            balance=balance,
            currency=currency,
            balance_seconds=seconds,
            account_status=status,
            phone_number=number,
            phone_found=found,
            phone_sms_capable=capable,
            messages_ok=messages_ok,
            auth_failed=self.http.saw_401,
            credentials_accepted=self.http.successes > 0,
            failures=failures,
            spend_today=usage[0] if usage else None,
            spend_month=usage[1] if usage else None,
            spend_currency=usage[2] if usage else None,
        )
        return result

    def _unreachable(self, failures: dict[str, str], seconds: float | None,
                     gaps: list[Gap]) -> PollResult:
        """Twilio did not answer the probe: every other part is unread this cycle."""
        for part in ("account", "phone_number", "messages"):
            failures[part] = kinds.SKIPPED
        log.warning("twilio_unreachable_parts_skipped", account=self.account.name,
                    cause=failures["balance"])
        return PollResult(facts=AccountFacts(balance_seconds=seconds,
                                             phone_number=self.account.phone_number,
                                             failures=failures), gaps=gaps)

    def _read_messages(self, horizon: float, gaps: Sequence[Gap], result: PollResult,
                       held: Container[str] = frozenset()) -> None:
        """Newest first down to ``horizon``, then on into each gap from where it stopped, all
        within ``max_pages`` pages and the cycle's time budget. Raises when the first page
        cannot be read (the cycle's read failed); a failure later leaves a gap to resume
        from. Running out of pages or time is not a failure: the gaps wait for the next
        cycle as they are."""
        budget = self.settings.max_pages
        fresh = _Segment(lower=horizon, upper=math.inf, url=None)
        used, left = self._read_segment(fresh, budget, result)
        budget -= used
        result.gaps = [left] if left is not None else []
        covered = fresh.lower if left is None else left.upper  # read whole from here up
        for gap in gaps:
            if gap.lower >= covered:
                continue  # the fresh read went through it
            if budget <= 0 or self.http.past_deadline():
                result.gaps.append(gap)
                continue
            segment = _Segment(lower=gap.lower, upper=gap.upper, url=gap.resume, held=held)
            try:
                used, left = self._read_segment(segment, budget, result)
            except BudgetSpent:
                result.gaps.append(gap)
                continue
            except TWILIO_FAILURES as exc:  # the gap's first page: try again next cycle
                result.read_problem = str(exc) if isinstance(exc, PagingLoop) else \
                    f"resuming the read failed ({failure_kind(exc)})"
                log.warning("twilio_resume_failed", account=self.account.name,
                            cause=failure_kind(exc), error=type(exc).__name__)
                result.gaps.append(gap)
                continue
            budget -= used
            if left is not None:
                result.gaps.append(left)
        result.gaps = merge_gaps(result.gaps)
        if budget <= 0 and result.gaps:
            log.warning("twilio_page_cap_reached", account=self.account.name,
                        pages=result.pages, unread_gaps=len(result.gaps))

    def _read_segment(self, seg: _Segment, pages: int, result: PollResult
                      ) -> tuple[int, Gap | None]:
        """Read one run of pages; returns (pages read, the gap it leaves or None)."""
        used = 0
        url = seg.url
        while used < pages:
            try:
                page = (self._api.messages.page(page_size=self.settings.page_size)
                        if url is None else self._api.messages.get_page(url))
                used += 1
                result.pages += 1
                done = self._take(page, seg, result)
            except TWILIO_FAILURES as exc:
                if seg.oldest is None:
                    raise  # nothing of this run was read
                if isinstance(exc, PagingLoop):
                    result.read_problem = str(exc)
                elif isinstance(exc, BudgetSpent):
                    return used, self._gap(seg, url)  # out of time: resumed next cycle
                log.warning("twilio_read_interrupted", account=self.account.name,
                            cause=failure_kind(exc), error=type(exc).__name__, pages=used)
                return used, self._gap(seg, url)
            if done:
                return used, None
            url = page.next_page_url
            if not url:
                return used, None
        return used, self._gap(seg, url)

    @staticmethod
    def _gap(seg: _Segment, url: str | None) -> Gap | None:
        if url is None:
            return None
        top = seg.oldest if seg.oldest is not None else seg.upper
        return Gap(upper=top, lower=seg.lower, resume=url) if top > seg.lower else None

    def _take(self, page: Any, seg: _Segment, result: PollResult) -> bool:
        """The page's messages into ``result``; True when the run is done (a message sent
        before its lower bound, or an empty page). Raises :class:`PagingLoop` when the page
        goes back to messages already read.

        The log's order is not trusted to be by creation: a run stops on a message's
        ``date_sent`` (or creation, when later), so a message queued long ago and sent now
        does not end it early, and one not sent yet never ends it."""
        seen = fresh = 0
        for inst in page:
            seen += 1
            rec = to_record(inst, self.keywords)
            if rec is None:
                result.malformed += 1
                continue
            if rec.sid in seg.sids:
                raise PagingLoop("the message log's paging went back to messages already read")
            seg.sids.add(rec.sid)
            fresh += rec.sid not in seg.held
            key = order_key(rec, inst)
            if key < seg.lower:
                return True
            result.records.append(rec)
            if key != math.inf:
                seg.oldest = key if seg.oldest is None else min(seg.oldest, key)
            if rec.keyword and isinstance(inst.from_, str):
                result.keyword_numbers[rec.sid] = inst.from_
        if seen and not fresh and seg.url is not None:
            # a resumed page of nothing but messages the window holds: the paging loops
            raise PagingLoop("the message log's paging went back to messages already read")
        return seen == 0
