"""Poll one Twilio account with the official client: probes and the message log.

Failures are classified, never raised: each part of the poll (balance,
account, phone number, messages) either yields its facts or names why it
could not, and the checks it feeds become ``unknown`` (or red, where the
contract says so).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
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
from sms_monitor.inputs.telemetry import RequestLog
from sms_monitor.inputs.twilio_errors import TWILIO_FAILURES, failure_kind
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
    )


@dataclass
class PollResult:
    facts: AccountFacts
    records: list[MessageRecord] = field(default_factory=list)
    keyword_numbers: dict[str, str] = field(default_factory=dict)  # sid -> sender (E.164)
    pages: int = 0
    malformed: int = 0


class TwilioPoller:
    """Everything sms-monitor reads from one Twilio account."""

    def __init__(
        self,
        account: AccountConfig,
        settings: Settings,
        requests_log: RequestLog,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.account = account
        self.settings = settings
        self.http = MonitoredHttpClient(
            account.name, requests_log, timeout=settings.request_timeout,
            max_retries=settings.max_retries, sleep=sleep,
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

    def poll(self, horizon: float, read_usage: bool = False) -> PollResult:
        """One cycle: probes, then messages created at or after ``horizon`` (POSIX seconds);
        with ``read_usage``, also this month's and today's SMS spend."""
        self.http.saw_401 = False
        self.http.successes = 0
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
            self._read_messages(horizon, result)
            messages_ok = True
        except TWILIO_FAILURES as exc:
            self._fail("messages", exc, failures)

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

    def _pages(self) -> Iterator[Any]:
        page = self._api.messages.page(page_size=self.settings.page_size)
        yield page
        for _ in range(self.settings.max_pages - 1):
            nxt = page.next_page()
            if nxt is None:
                return
            page = nxt
            yield page

    def _read_messages(self, horizon: float, result: PollResult) -> None:
        """Newest first until a message older than ``horizon``, an empty page or the page cap."""
        for page in self._pages():
            result.pages += 1
            seen = 0
            for inst in page:
                seen += 1
                rec = to_record(inst, self.keywords)
                if rec is None:
                    result.malformed += 1
                    continue
                if rec.created < horizon:
                    return
                result.records.append(rec)
                if rec.keyword and isinstance(inst.from_, str):
                    result.keyword_numbers[rec.sid] = inst.from_
            if seen == 0:
                return
        if result.pages >= self.settings.max_pages:
            log.warning("twilio_page_cap_reached", account=self.account.name,
                        pages=result.pages)
