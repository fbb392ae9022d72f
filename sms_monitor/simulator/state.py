"""The simulator's state: accounts, numbers and messages whose status follows the clock.

A message's life is decided when it is created (final status, error code and
delivery delay, from the scenario in force); its status at any moment is then
computed from the clock, so no background thread is needed and an injected
clock can fast-forward the story.

Old messages are trimmed (by age, ``retention_seconds`` of simulated time, and by count,
``max_messages`` per account) so a long-running demo stays bounded; trimming is amortised: it
happens only once the list is a tenth past either limit.
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime

import structlog

from sms_monitor.simulator.scenarios import SCENARIOS, Scenario

log = structlog.get_logger("sms_monitor.simulator")

DEMO_ACCOUNT_SID = "AC" + "de" * 16
DEMO_AUTH_TOKEN = "5f4dcc3b5aa765d61d8327deb882cf99"
DEMO_PHONE_NUMBER = "+15005550006"
# An API key of the demo (parent) account: the key SID is the user name, the secret the password.
DEMO_API_KEY_SID = "SK" + "de" * 16
DEMO_API_KEY_SECRET = "aPIkeYsecret0f7heDem0AcC0unt0001"
ACCOUNT_STATUSES = ("active", "suspended", "closed")
PRICE_PER_SEGMENT = 0.0079  # USD, a US long-code SMS
DEFAULT_RETENTION_SECONDS = 40 * 86400.0  # simulated time a message is kept
DEFAULT_MAX_MESSAGES = 500_000  # per account

_TEMPLATES = (
    "Riverside Family Practice: reminder of your appointment on {d}. Reply STOP to opt out.",
    "Riverside Family Practice: your test results are ready in the portal. Reply STOP to opt out.",
    "Riverside Family Practice: please confirm your visit on {d} by replying YES.",
)


def rfc2822(ts: float) -> str:
    return format_datetime(datetime.fromtimestamp(int(ts), UTC))


@dataclass(slots=True)
class SimMessage:
    sid: str
    account_sid: str
    outbound: bool
    created: float
    final_status: str
    error_code: int | None
    settle_after: float  # seconds from creation to the final status
    to: str
    from_: str
    body: str
    segments: int = 1
    status_callback: str | None = None  # the StatusCallback URL given at creation, if any

    def transitions(self) -> list[tuple[str, float]]:
        """The statuses the message goes through, each with the moment it starts: the one
        story both the API (:meth:`status_at`) and the webhooks tell."""
        if not self.outbound:
            return [("received", self.created)]
        if self.final_status == "failed":
            return [("failed", self.created)]
        steps = [("queued", self.created)]
        if self.settle_after > 1.0:
            steps.append(("sent", self.created + 1.0))
        steps.append((self.final_status, self.created + max(1.0, self.settle_after)))
        return steps

    def status_at(self, now: float) -> tuple[str, float, float | None]:
        """(status, date_updated, date_sent) at ``now``: the latest of :meth:`transitions`."""
        steps = self.transitions()
        status, updated = steps[0]
        for step, at in steps[1:]:
            if at <= now:
                status, updated = step, at
        if not self.outbound:
            return status, updated, self.created
        return status, updated, None if status in ("queued", "failed") else self.created + 1.0

    def as_json(self, now: float, skew: float = 0.0) -> dict[str, object]:
        """The message as Twilio's API shows it at ``now``; ``skew`` seconds are added to its
        dates (a clock that runs ahead: future-dated messages)."""
        status, updated, sent = self.status_at(now)
        price = None if status in ("queued", "failed") else f"{-PRICE_PER_SEGMENT * self.segments:.5f}"
        uri = f"/2010-04-01/Accounts/{self.account_sid}/Messages/{self.sid}"
        return {
            "account_sid": self.account_sid,
            "api_version": "2010-04-01",
            "body": self.body,
            "date_created": rfc2822(self.created + skew),
            "date_sent": rfc2822(sent + skew) if sent is not None else None,
            "date_updated": rfc2822(updated + skew),
            "direction": "outbound-api" if self.outbound else "inbound",
            "error_code": self.error_code if status in ("undelivered", "failed") else None,
            "error_message": _ERROR_TEXT.get(self.error_code) if self.error_code is not None
            and status in ("undelivered", "failed") else None,
            "from": self.from_,
            "messaging_service_sid": None,
            "num_media": "0",
            "num_segments": str(self.segments),
            "price": price,
            "price_unit": "USD",
            "sid": self.sid,
            "status": status,
            "subresource_uris": {"media": f"{uri}/Media.json", "feedback": f"{uri}/Feedback.json"},
            "to": self.to,
            "uri": f"{uri}.json",
        }


_ERROR_TEXT = {
    30002: "Account suspended",
    30003: "Unreachable destination handset",
    30005: "Unknown destination handset",
    30007: "Message filtered",
    21211: "Invalid 'To' Phone Number",
}


@dataclass
class SimAccount:
    sid: str
    auth_token: str
    phone_number: str
    friendly_name: str = "Riverside Family Practice"
    currency: str = "USD"
    messages: list[SimMessage] = field(default_factory=list)  # ascending by creation
    index: dict[str, int] = field(default_factory=dict)
    owner_sid: str | None = None  # the parent of a subaccount (None: a parent account)
    status: str | None = None  # active, suspended or closed (None: the scenario's)
    balance: float | None = None  # None: the scenario's
    created: float = 1_700_000_000.0
    # a subaccount's own message rate, per minute (None: the state's, on the shared clock)
    rate_per_minute: float | None = None
    generated_until: float = 0.0  # with an own rate: messages exist up to here

    @property
    def owner(self) -> str:
        """The parent's SID (a parent account's is its own, as Twilio reports it)."""
        return self.owner_sid or self.sid


@dataclass
class Faults:
    """Misbehaviour a test can switch on, beyond the scenarios."""

    malformed_messages: bool = False  # Messages list answers with a body that is not JSON
    truncated_json: bool = False  # Messages list answers 200 with its JSON body cut mid-way
    endless_paging: bool = False  # next_page_uri always points at another page
    server_error_every: int = 0  # answer every Nth request with 503
    number_not_found: bool = False  # IncomingPhoneNumbers answers 404 / error 20404
    rate_limit_every: int = 0  # answer every Nth API request 429 / 20429 (1: a storm)
    retry_after: int = 1  # seconds, the Retry-After header of those 429 answers
    clock_skew: float = 0.0  # seconds added to every message's dates in answers (future-dated)
    # extra seconds before every API answer (on top of the scenario's); past the client's
    # timeout it is a hang. A waiting answer goes out as soon as the delay is cleared or
    # lowered (see SimState.wait_delay), and at once when the simulator stops. Each request
    # waits on its own thread: concurrent requests wait concurrently (injected latency).
    delay: float = 0.0
    # Twilio's concurrency limit: an API request arriving while this many are in flight (global,
    # across every account) is answered at once with 429 / 20429 and ``retry_after``; 0: none.
    concurrency_limit: int = 0


class SimState:
    """All accounts of the simulator; thread-safe."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        rate_per_minute: float = 60.0,
        history_seconds: float = 3600.0,
        scenario: str = "healthy",
        seed: int = 7,
        inbound_share: float = 0.03,
        retention_seconds: float = DEFAULT_RETENTION_SECONDS,
        max_messages: int = DEFAULT_MAX_MESSAGES,
        even_outcomes: bool = False,
    ) -> None:
        """``even_outcomes``: spread the scenario's failures evenly over its messages (one in
        a hundred in ``healthy``, every fifth in ``degraded_delivery``) instead of drawing
        each message's fate, so any run of messages shows the scenario's delivery rate to
        within a message: the demo's short windows then show the scenario's colour, not
        chance's. Error codes, latencies and everything else are still drawn."""
        self._base_clock = clock
        self.offset = 0.0  # seconds the simulated clock runs ahead of ``clock``
        self.rate_per_minute = rate_per_minute
        self.inbound_share = inbound_share
        # never trim what the generated history itself covers
        self.retention_seconds = max(retention_seconds, history_seconds)
        self.max_messages = max(1, max_messages)
        self.max_settle = 0.0  # the longest settle_after of any message so far
        self.lock = threading.RLock()
        self.rng = random.Random(seed)
        self.accounts: dict[str, SimAccount] = {}
        self.scenario: Scenario = SCENARIOS[scenario]
        self.even_outcomes = even_outcomes
        self._failures_due = 0.5  # even outcomes: failures owed, a message fails at 1
        self.faults = Faults()
        self._faults_changed = threading.Condition()  # wakes answers waiting out a delay
        # Twilio's status page as the simulator serves it: the messaging components' state
        # (or "down" / "malformed" for the page itself) and an open incident's name, if any.
        self.statuspage: dict[str, str] = {"component_status": "operational", "incident": ""}
        self.requests = 0
        # API keys: key SID -> (secret, the account it belongs to)
        self.api_keys: dict[str, tuple[str, str]] = {}
        self.history_seconds = history_seconds
        # the concurrency limit's books (see Faults.concurrency_limit and :meth:`enter`)
        self.in_flight = 0
        self.peak_in_flight = 0
        self.concurrency_rejected = 0  # requests answered 429 for the concurrency limit
        self.concurrency_rejected_by_account: dict[str, int] = {}
        self._flight_lock = threading.Lock()
        # Called with the creation times of outbound messages as the clock creates them
        # (the demo uses it to play the application that logs each SMS it sends).
        self.on_outbound: Callable[[list[float]], None] | None = None
        self._counter = 0
        self._generated_until = self.clock() - history_seconds

    def clock(self) -> float:
        return self._base_clock() + self.offset

    def fast_forward(self, seconds: float) -> float:
        """Move the simulated clock ahead (messages due meanwhile are created); returns now."""
        with self.lock:
            self.offset += max(0.0, seconds)
            self.advance()
            return self.clock()

    def set_faults(self, values: Mapping[str, object]) -> Faults:
        """Apply fault settings (already parsed) and wake answers waiting out a delay."""
        with self._faults_changed:
            for key, value in values.items():
                setattr(self.faults, key, value)
            self._faults_changed.notify_all()
        return self.faults

    def wait_delay(self, extra: float = 0.0,
                   released: Callable[[], bool] = lambda: False) -> None:
        """Wait ``extra`` seconds plus the ``delay`` fault's, counted from now; the delay is
        read again whenever the faults change, so clearing it ends a hang at once, and
        ``released`` (checked on every change and on :meth:`wake`) ends it too."""
        start = time.monotonic()
        with self._faults_changed:
            while not released():
                remaining = start + extra + self.faults.delay - time.monotonic()
                if remaining <= 0:
                    return
                self._faults_changed.wait(remaining)

    def wake(self) -> None:
        """Wake every answer waiting out a delay (to check whether it was released)."""
        with self._faults_changed:
            self._faults_changed.notify_all()

    def add_account(self, sid: str, auth_token: str, phone_number: str) -> SimAccount:
        with self.lock:
            acc = SimAccount(sid=sid, auth_token=auth_token, phone_number=phone_number)
            self.accounts[sid] = acc
            return acc

    def add_api_key(self, account_sid: str, key_sid: str | None = None,
                    secret: str | None = None) -> tuple[str, str]:
        """An API key (``SK…`` SID and secret) of ``account_sid``: it authenticates like the
        account's auth token (for a parent, on its subaccounts too). Returns (SID, secret)."""
        with self.lock:
            if account_sid not in self.accounts:
                raise KeyError(account_sid)
            n = len(self.api_keys)
            key_sid = key_sid or "SK" + _digest(f"key:{account_sid}:{n}")
            secret = secret or _digest(f"secret:{key_sid}")
            self.api_keys[key_sid] = (secret, account_sid)
            return key_sid, secret

    def add_subaccounts(self, parent_sid: str, count: int, *,
                        statuses: tuple[str, ...] = ("active",),
                        rate_per_minute: float = 0.0,
                        name: str = "Clinic {n:04d}") -> list[SimAccount]:
        """``count`` subaccounts of the parent ``parent_sid`` (an existing account), each with
        its own SID, auth token, friendly name (``name`` with ``n`` from 1), number, balance
        and messages (``rate_per_minute`` each, with the state's history behind them);
        subaccount ``i`` (from 0) gets ``statuses[i % len(statuses)]``. SIDs and tokens are
        derived from the parent's SID and the subaccount's number: the same every run."""
        for status in statuses:
            if status not in ACCOUNT_STATUSES:
                raise ValueError(f"account status must be one of {ACCOUNT_STATUSES}: {status!r}")
        with self.lock:
            parent = self.accounts[parent_sid]
            if parent.owner_sid is not None:
                raise ValueError("a subaccount cannot have subaccounts")
            first = sum(1 for a in self.accounts.values() if a.owner_sid == parent_sid)
            since = self.clock() - self.history_seconds
            made = []
            for i in range(first, first + count):
                sid = "AC" + _digest(f"sub:{parent_sid}:{i}")
                acc = SimAccount(sid=sid, auth_token=_digest(f"token:{sid}"),
                                 phone_number=f"+1555{i + 1:07d}",
                                 friendly_name=name.format(n=i + 1), owner_sid=parent_sid,
                                 status=statuses[i % len(statuses)],
                                 balance=round(20.0 + (i * 37) % 500, 2),
                                 created=parent.created + 60.0 * (i + 1),
                                 rate_per_minute=rate_per_minute, generated_until=since)
                self.accounts[sid] = acc
                made.append(acc)
            return made

    def subaccounts(self, parent_sid: str) -> list[SimAccount]:
        with self.lock:
            return [a for a in self.accounts.values() if a.owner_sid == parent_sid]

    def set_account(self, sid: str, *, status: str | None = None,
                    friendly_name: str | None = None) -> SimAccount:
        """Change an account's status or friendly name (as the Accounts API's POST would)."""
        if status is not None and status not in ACCOUNT_STATUSES:
            raise ValueError(f"account status must be one of {ACCOUNT_STATUSES}: {status!r}")
        with self.lock:
            acc = self.accounts[sid]
            if status is not None:
                acc.status = status
            if friendly_name is not None:
                acc.friendly_name = friendly_name[:64]
            return acc

    # -- the concurrency limit ----------------------------------------------------------
    def enter(self, account: str | None) -> bool:
        """Admit an API request, or refuse it (False, counted) when the concurrency limit's
        requests are in flight already; an admitted request must :meth:`leave`."""
        limit = self.faults.concurrency_limit
        with self._flight_lock:
            if limit > 0 and self.in_flight >= limit:
                self.concurrency_rejected += 1
                key = account or "-"
                self.concurrency_rejected_by_account[key] = (
                    self.concurrency_rejected_by_account.get(key, 0) + 1)
                return False
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
            return True

    def leave(self) -> None:
        with self._flight_lock:
            self.in_flight -= 1

    def concurrency(self) -> dict[str, object]:
        with self._flight_lock:
            return {"limit": self.faults.concurrency_limit, "in_flight": self.in_flight,
                    "peak": self.peak_in_flight, "rejected": self.concurrency_rejected,
                    "rejected_by_account": dict(self.concurrency_rejected_by_account)}

    def set_scenario(self, name: str) -> Scenario:
        with self.lock:
            self.advance()  # messages created so far keep the old story
            self.scenario = SCENARIOS[name]
            self._failures_due = 0.5
            return self.scenario

    def _new_sid(self, prefix: str = "SM") -> str:
        self._counter += 1
        return f"{prefix}{self.rng.getrandbits(64):016x}{self._counter:016x}"

    def _outcome(self) -> tuple[str, int | None, float]:
        sc = self.scenario
        r = self.rng.random()
        latency = max(1.5, self.rng.gauss(sc.latency, sc.latency / 4))
        if self.even_outcomes:
            self._failures_due += 1.0 - sc.delivered
            delivered = self._failures_due < 1.0
            if not delivered:
                self._failures_due -= 1.0
        else:
            delivered = r < sc.delivered
        if delivered:
            return "delivered", None, latency
        codes = [c for c, _ in sc.failure_codes]
        weights = [w for _, w in sc.failure_codes]
        code = self.rng.choices(codes, weights)[0]
        return "undelivered", code, latency

    def create_message(self, acc: SimAccount, created: float, *, outbound: bool = True,
                       to: str | None = None, body: str | None = None,
                       status_callback: str | None = None) -> SimMessage:
        """Add a message created at ``created``, in creation order (normally at the end)."""
        with self.lock:
            peer = to or f"+1555{self.rng.randrange(10**7):07d}"
            if outbound:
                status, code, settle = self._outcome()
                text = body or self.rng.choice(_TEMPLATES).format(d="Tuesday 10:30")
                msg = SimMessage(self._new_sid(), acc.sid, True, created, status, code, settle,
                                 to=peer, from_=acc.phone_number, body=text,
                                 status_callback=status_callback or None)
                self.max_settle = max(self.max_settle, settle)
            else:
                msg = SimMessage(self._new_sid(), acc.sid, False, created, "received", None, 0.0,
                                 to=acc.phone_number, from_=peer, body=body or "YES")
            msgs = acc.messages
            if msgs and msgs[-1].created > created:  # after one dated ahead (a demo's story)
                pos = bisect_right(msgs, created, key=_created)
                msgs.insert(pos, msg)
                for i in range(pos, len(msgs)):
                    acc.index[msgs[i].sid] = i
            else:
                acc.index[msg.sid] = len(msgs)
                msgs.append(msg)
            return msg

    def receive(self, sid: str, from_: str, body: str) -> SimMessage:
        """An inbound message from ``from_`` to account ``sid``'s number, created now."""
        with self.lock:
            now = self.advance()  # messages due before now come first: the list stays in order
            msg = self.create_message(self.accounts[sid], now, outbound=False, to=from_)
            msg.body = body
            return msg

    def advance(self) -> float:
        """Create the messages due between the last call and now, at the configured rate;
        returns the moment it advanced to (everything due until then exists)."""
        with self.lock:
            now = self.clock()
            sent: list[float] = []
            shared = [a for a in self.accounts.values() if a.rate_per_minute is None]
            if self.rate_per_minute <= 0 or not shared:
                self._generated_until = now
            else:
                step = 60.0 / self.rate_per_minute
                t = self._generated_until + step
                while t <= now:
                    for acc in shared:
                        inbound = self.rng.random() < self.inbound_share
                        self.create_message(acc, t, outbound=not inbound)
                        if not inbound:
                            sent.append(t)
                    t += step
                self._generated_until = t - step
            if len(shared) < len(self.accounts):
                self._advance_own_rates(now)
            self._trim_if_due(now)
        if sent and self.on_outbound is not None:
            try:
                self.on_outbound(sent)
            except Exception as exc:  # the hook is the demo's; the API must answer regardless
                log.warning("simulator_hook_failed", error=type(exc).__name__)
        return now

    def _advance_own_rates(self, now: float) -> None:
        """Messages of the accounts with their own rate (subaccounts), each on its own clock;
        they are not the demo's (no ``on_outbound``)."""
        for acc in self.accounts.values():
            rate = acc.rate_per_minute
            if rate is None:
                continue
            if rate <= 0:
                acc.generated_until = now
                continue
            step = 60.0 / rate
            t = acc.generated_until + step
            while t <= now:
                self.create_message(acc, t, outbound=self.rng.random() >= self.inbound_share)
                t += step
            acc.generated_until = t - step

    # -- trimming ---------------------------------------------------------
    def _trim_if_due(self, now: float) -> None:
        """Trim once a list is 10 % past a limit (by count, or by the age of its oldest
        message), so the O(n) trim and index rebuild are paid rarely."""
        slack_count = self.max_messages + max(1, self.max_messages // 10)
        slack_age = now - self.retention_seconds * 1.1
        for acc in self.accounts.values():
            msgs = acc.messages
            if msgs and (len(msgs) > slack_count or msgs[0].created < slack_age):
                self._trim_account(acc, now - self.retention_seconds)

    def _trim_account(self, acc: SimAccount, cutoff: float) -> int:
        msgs = acc.messages
        drop = max(bisect_left(msgs, cutoff, key=_created), len(msgs) - self.max_messages)
        if drop <= 0:
            return 0
        del msgs[:drop]
        acc.index = {m.sid: i for i, m in enumerate(msgs)}
        log.debug("simulator_trimmed", account=acc.sid, dropped=drop, kept=len(msgs))
        return drop

    def trim(self, keep_seconds: float | None = None) -> int:
        """Drop, now, messages created more than ``keep_seconds`` (default: the retention)
        ago and the oldest beyond ``max_messages`` per account; returns how many went."""
        with self.lock:
            keep = self.retention_seconds if keep_seconds is None else keep_seconds
            cutoff = self.clock() - keep
            return sum(self._trim_account(acc, cutoff) for acc in self.accounts.values())

    def insert_message(self, sid: str, created: float, *, outbound: bool, peer: str,
                       body: str) -> SimMessage:
        """A message at any time (a scripted part of a story), kept in creation order; one
        dated ahead of the clock is listed from now and arrives (its webhook) at its time."""
        with self.lock:
            self.advance()  # messages already due come first
            return self.create_message(self.accounts[sid], created, outbound=outbound,
                                       to=peer, body=body)

    def spend(self, acc: SimAccount, start: float, end: float) -> tuple[int, float]:
        """(outbound messages, price) billed between ``start`` and ``end``; time before the
        simulator's history is assumed to have cost what its rate implies."""
        with self.lock:
            count = 0
            price = 0.0
            msgs = acc.messages
            for i in range(bisect_left(msgs, start, key=_created),
                           bisect_left(msgs, end, key=_created)):
                m = msgs[i]
                if m.outbound and m.status_at(end)[0] not in ("queued", "failed"):
                    count += 1
                    price += PRICE_PER_SEGMENT * m.segments
            first = acc.messages[0].created if acc.messages else end
            if start < first:
                earlier = (first - start) / 60 * self.rate_per_minute * (1 - self.inbound_share)
                count += int(earlier)
                price += earlier * PRICE_PER_SEGMENT
            return count, price

    def load(self, sid: str, count: int, span_seconds: float, *, before: float = 0.0) -> None:
        """Bulk-create ``count`` outbound messages spread over ``span_seconds`` ending ``before``
        seconds ago (their statuses follow the clock like any other message)."""
        with self.lock:
            acc = self.accounts[sid]
            now = self.clock()
            start = now - before - span_seconds
            step = span_seconds / max(1, count)
            for i in range(count):
                self.create_message(acc, start + i * step)
            acc.messages.sort(key=_created)
            acc.index = {m.sid: i for i, m in enumerate(acc.messages)}
            self._generated_until = max(self._generated_until, now)
            self._trim_if_due(now)


def _created(msg: SimMessage) -> float:
    return msg.created


def _digest(text: str) -> str:
    """32 hex digits derived from ``text`` (stable SIDs and secrets, not security)."""
    return hashlib.sha256(text.encode()).hexdigest()[:32]
