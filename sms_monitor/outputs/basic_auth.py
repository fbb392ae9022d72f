"""HTTP basic auth the way Prometheus's exporter-toolkit does it, with its holes closed.

The server asks in two steps, so that bcrypt (slow on purpose) never runs on the event loop:

* :meth:`Authenticator.quick`, on the event loop, never hashes. It answers OK when no users
  are configured or the credentials were verified recently (a cache: a good scrape costs
  microseconds), UNAUTHORISED for a missing, non-Basic or undecodable header, THROTTLED when
  the source address has used up its failure budget, and None when bcrypt must decide.
* :meth:`Authenticator.verify`, in a worker thread, hashes: against the user's hash, or for an
  unknown user or an over-long password (bcrypt reads 72 bytes at most) against a dummy hash
  of the users' highest cost, so every answer costs the same and names no user. A success is
  cached, a failure spends one token of the source's budget.

* The cache holds an HMAC-SHA256 of the credentials under a key drawn when the
  Authenticator is made, never the password; an entry expires ``cache_ttl`` seconds after its
  check, and the oldest go first beyond ``cache_size``. Failures are not cached.
* The failure budget is a token bucket per source address (an IPv6 address counts as its
  /64): ``failures_per_minute`` tokens, refilled at that rate. verify() takes a token
  *before* hashing and gives it back on success, so a burst of wrong passwords from one
  source costs at most ``failures_per_minute`` hashes, then one per ``60 /
  failures_per_minute`` seconds. At most :data:`MAX_SOURCES` sources are tracked; the least
  recently seen is forgotten first.
* One hash runs at a time, first come first served (exporter-toolkit has one at a time too):
  wrong passwords from any number of sources take at most one core, cached scrapes none. At
  most :data:`MAX_PENDING` checks run or wait: beyond, verify() answers THROTTLED at once
  with ``retry_after`` :data:`SHED_RETRY_AFTER`, the budget untouched, so a login never waits
  behind a long line of attackers' hashes; the last :data:`RESERVED_PENDING` places go only to
  sources with no failure on record, so attacking addresses that have failed once no longer
  crowd out a scraper logging in. The server must run verify() on threads that do not queue
  behind the hashing ones (more than MAX_PENDING of them): the shedding happens inside.

A wrong password for a user costs that user's hash; an unknown user the highest cost: give
every user the same cost, or the difference in time tells which users exist.
"""

from __future__ import annotations

import base64
import binascii
import enum
import functools
import hashlib
import hmac
import ipaddress
import re
import secrets
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import bcrypt

MAX_SOURCES = 4096  # sources whose failures are remembered
MAX_PENDING = 8  # bcrypt checks running or waiting; beyond, THROTTLED at once (load shedding)
RESERVED_PENDING = 4  # of those, kept for sources without failures on record
SHED_RETRY_AFTER = 1.0  # seconds, the retry_after of a shed check
MAX_CREDENTIALS = 4096  # bytes of decoded credentials; anything longer is refused unhashed
BCRYPT_MAX_PASSWORD = 72  # bytes bcrypt reads; bcrypt >= 5 raises ValueError beyond
_BCRYPT = re.compile(rb"\$2[aby]\$(\d\d)\$[./A-Za-z0-9]{53}")


class AuthOutcome(enum.Enum):
    OK = "ok"
    UNAUTHORISED = "unauthorised"
    THROTTLED = "throttled"


@dataclass(frozen=True)
class AuthDecision:
    outcome: AuthOutcome
    retry_after: float = 0.0  # seconds, for 429


_OK = AuthDecision(AuthOutcome.OK)
_UNAUTHORISED = AuthDecision(AuthOutcome.UNAUTHORISED)


def bcrypt_cost(hashed: bytes) -> int:
    """The cost of a bcrypt hash (``$2y$10$...`` -> 10); ValueError if it is not one."""
    found = _BCRYPT.fullmatch(hashed)
    if found is None or not 4 <= int(found.group(1)) <= 31:
        raise ValueError("expected a bcrypt hash")
    return int(found.group(1))


def _credentials(header: str | None) -> bytes | None:
    """``user:password`` from an ``Authorization: Basic ...`` value, None if it is not one."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic" or len(token) > MAX_CREDENTIALS * 4 // 3 + 4:
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):  # ValueError: not ASCII
        return None
    return decoded if b":" in decoded else None


@functools.lru_cache(maxsize=1024)
def _source_key(source: str) -> str:
    """The bucket a source address spends from: itself, or its /64 for IPv6."""
    try:
        address = ipaddress.ip_address(source)
    except ValueError:
        return source
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return f"{ipaddress.IPv6Address(int(address) >> 64 << 64)}/64"
    return str(address)


class _FifoLock:
    """A lock handed to its waiters in the order they came (threading.Lock lets newcomers
    barge ahead, so a login could wait behind any number of attackers' checks)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held = False
        self._waiters: deque[threading.Event] = deque()

    def __enter__(self) -> None:
        with self._lock:
            if not self._held:
                self._held = True
                return
            turn = threading.Event()
            self._waiters.append(turn)
        turn.wait()  # __exit__ hands the lock over: it stays held

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            if self._waiters:
                self._waiters.popleft().set()
            else:
                self._held = False


class Authenticator:
    """Basic-auth decisions for ``users`` (user -> bcrypt hash); thread-safe."""

    def __init__(self, users: Mapping[str, bytes], *, clock: Callable[[], float] = time.monotonic,
                 failures_per_minute: int = 10, cache_size: int = 256,
                 cache_ttl: float = 600.0) -> None:
        if failures_per_minute < 1 or cache_size < 1 or cache_ttl <= 0:
            raise ValueError("failures_per_minute and cache_size must be at least 1, "
                             "cache_ttl more than 0")
        self._users = dict(users)
        costs = [bcrypt_cost(h) for h in self._users.values()]
        # unknown users and over-long passwords are checked against this: the same work
        self._dummy = (bcrypt.hashpw(secrets.token_bytes(16), bcrypt.gensalt(rounds=max(costs)))
                       if costs else b"")
        self._clock = clock
        self._capacity = float(failures_per_minute)
        self._refill = failures_per_minute / 60.0  # tokens per second
        self._cache_size = cache_size
        self._cache_ttl = cache_ttl
        self._key = secrets.token_bytes(32)
        self._lock = threading.Lock()  # the cache and the buckets; never held while hashing
        self._hashing = _FifoLock()  # one bcrypt at a time, first come first served
        self._pending = 0  # checks running or waiting for the hashing lock
        self._verified: OrderedDict[bytes, float] = OrderedDict()  # HMAC -> expiry
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # -> (tokens, at)

    def __repr__(self) -> str:
        return f"Authenticator(users={len(self._users)})"

    @property
    def enabled(self) -> bool:
        """Whether users are configured (otherwise every request is OK)."""
        return bool(self._users)

    def quick(self, header: str | None, source: str) -> AuthDecision | None:
        """The answer when it needs no hashing (event loop), None when :meth:`verify` must
        decide."""
        if not self._users:
            return _OK
        credentials = _credentials(header)
        if credentials is None:
            return _UNAUTHORISED
        digest = self._digest(credentials)
        with self._lock:
            now = self._clock()
            if self._cached(digest, now):
                return _OK
        key = _source_key(source)
        with self._lock:
            tokens = self._tokens(key, now)
        if tokens < 1:
            return AuthDecision(AuthOutcome.THROTTLED, (1 - tokens) / self._refill)
        return None

    def verify(self, header: str, source: str) -> AuthDecision:
        """The answer, hashing if need be (worker thread)."""
        if not self._users:
            return _OK
        credentials = _credentials(header)
        if credentials is None:
            return _UNAUTHORISED
        digest = self._digest(credentials)
        key = _source_key(source)
        with self._lock:
            now = self._clock()
            if self._cached(digest, now):  # verified by another thread meanwhile
                return _OK
            tokens = self._tokens(key, now)
            if tokens < 1:
                return AuthDecision(AuthOutcome.THROTTLED, (1 - tokens) / self._refill)
            if self._pending >= MAX_PENDING or (  # shed: the source's budget is not spent
                    key in self._buckets and self._pending >= MAX_PENDING - RESERVED_PENDING):
                return AuthDecision(AuthOutcome.THROTTLED, SHED_RETRY_AFTER)
            self._pending += 1
            self._set_tokens(key, tokens - 1, now)  # spent before hashing, refunded on success
        ok = False
        try:
            ok = self._check(credentials)
        finally:
            with self._lock:
                self._pending -= 1
                if ok:
                    now = self._clock()
                    self._set_tokens(key, self._tokens(key, now) + 1, now)
                    self._verified[digest] = now + self._cache_ttl
                    self._verified.move_to_end(digest)
                    while len(self._verified) > self._cache_size:
                        self._verified.popitem(last=False)
        return _OK if ok else _UNAUTHORISED

    # -- internals ------------------------------------------------------------------------

    def _digest(self, credentials: bytes) -> bytes:
        return hmac.new(self._key, credentials, hashlib.sha256).digest()

    def _check(self, credentials: bytes) -> bool:
        name, _, password = credentials.partition(b":")
        try:
            hashed = self._users.get(name.decode())
        except UnicodeDecodeError:
            hashed = None
        with self._hashing:
            if hashed is None or len(password) > BCRYPT_MAX_PASSWORD:
                bcrypt.checkpw(password[:BCRYPT_MAX_PASSWORD], self._dummy)
                return False
            try:
                return bcrypt.checkpw(password, hashed)
            except ValueError:  # whatever bcrypt refuses is a wrong password, at the same cost
                bcrypt.checkpw(b"", self._dummy)
                return False

    def _cached(self, digest: bytes, now: float) -> bool:
        expiry = self._verified.get(digest)
        if expiry is None:
            return False
        if now >= expiry:
            del self._verified[digest]
            return False
        self._verified.move_to_end(digest)
        return True

    def _tokens(self, key: str, now: float) -> float:
        """The source's tokens now (a source never seen, or forgotten, has them all)."""
        entry = self._buckets.get(key)
        if entry is None:
            return self._capacity
        tokens, at = entry
        return min(self._capacity, tokens + max(0.0, now - at) * self._refill)

    def _set_tokens(self, key: str, tokens: float, now: float) -> None:
        if tokens >= self._capacity:
            self._buckets.pop(key, None)  # a full bucket is the same as none
            return
        self._buckets[key] = (tokens, now)
        self._buckets.move_to_end(key)
        while len(self._buckets) > MAX_SOURCES:
            self._buckets.popitem(last=False)
