"""Basic auth (sms_monitor.outputs.basic_auth): exact outcomes on an injected clock, no sleeps."""

from __future__ import annotations

import base64
import hashlib
import threading
import time
from collections.abc import Callable
from typing import Any

import bcrypt
import pytest

from sms_monitor.outputs import basic_auth
from sms_monitor.outputs.basic_auth import AuthDecision, Authenticator, AuthOutcome, bcrypt_cost
from tests.conftest import FakeClock

OK = AuthDecision(AuthOutcome.OK)
UNAUTHORISED = AuthDecision(AuthOutcome.UNAUTHORISED)
HASH = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4))
HASH5 = bcrypt.hashpw(b"other", bcrypt.gensalt(rounds=5))
SOURCE = "192.0.2.7"


def basic(user: bytes, password: bytes) -> str:
    return "Basic " + base64.b64encode(user + b":" + password).decode()


GOOD = basic(b"prometheus", b"s3cret")


def make(clock: FakeClock, **kwargs: Any) -> Authenticator:
    return Authenticator({"prometheus": HASH, "grafana": HASH5}, clock=clock, **kwargs)


def ask(auth: Authenticator, header: str, source: str = SOURCE) -> AuthDecision:
    """What the server does: quick() on the loop, verify() in a thread when it says None."""
    return auth.quick(header, source) or auth.verify(header, source)


@pytest.fixture
def hashes(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The hash every bcrypt.checkpw call compared against, in order."""
    seen: list[bytes] = []
    real: Callable[[bytes, bytes], bool] = bcrypt.checkpw

    def spy(password: bytes, hashed: bytes) -> bool:
        seen.append(hashed)
        return real(password, hashed)
    monkeypatch.setattr(basic_auth.bcrypt, "checkpw", spy)
    return seen


def test_without_users_everything_is_ok_and_nothing_hashed(clock: FakeClock,
                                                           hashes: list[bytes]) -> None:
    auth = Authenticator({}, clock=clock)
    assert not auth.enabled
    assert auth.quick(None, SOURCE) == OK and auth.quick("Bearer x", SOURCE) == OK
    assert auth.verify("", SOURCE) == OK and hashes == []


@pytest.mark.parametrize("header", [
    None, "", "Bearer abc", "Basic", "Basic !!!notbase64", "Basic " + base64.b64encode(b"nocolon").decode(),
    "Basic é", "Basic " + "A" * 10_000,
])
def test_malformed_headers_are_refused_without_hashing(clock: FakeClock, hashes: list[bytes],
                                                       header: str | None) -> None:
    auth = make(clock)
    assert auth.enabled
    assert auth.quick(header, SOURCE) == UNAUTHORISED
    assert auth.verify(header or "", SOURCE) == UNAUTHORISED
    assert hashes == []


def test_the_scheme_is_case_insensitive(clock: FakeClock) -> None:
    assert ask(make(clock), "basic " + GOOD.split()[1]) == OK


def test_a_good_credential_is_verified_once_then_cached_until_the_ttl(clock: FakeClock,
                                                                     hashes: list[bytes]) -> None:
    auth = make(clock, cache_ttl=600.0)
    assert auth.quick(GOOD, SOURCE) is None  # needs bcrypt
    assert auth.verify(GOOD, SOURCE) == OK
    assert hashes == [HASH]
    clock.advance(599.9)
    assert auth.quick(GOOD, "198.51.100.1") == OK  # any source: it is the credential that is known
    assert hashes == [HASH]
    clock.advance(0.1)
    assert auth.quick(GOOD, SOURCE) is None  # expired: bcrypt again
    assert auth.verify(GOOD, SOURCE) == OK and len(hashes) == 2


def test_unknown_user_and_wrong_password_cost_one_hash_of_the_same_cost(
        clock: FakeClock, hashes: list[bytes]) -> None:
    auth = make(clock)
    wrong, unknown = basic(b"prometheus", b"wrong"), basic(b"nobody", b"s3cret")
    assert auth.quick(wrong, SOURCE) is None and auth.quick(unknown, SOURCE) is None
    assert auth.verify(wrong, SOURCE) == UNAUTHORISED
    assert auth.verify(unknown, SOURCE) == UNAUTHORISED
    assert auth.verify(basic(b"\xff\xfe", b"x"), SOURCE) == UNAUTHORISED  # not UTF-8: unknown
    assert hashes[0] == HASH
    assert [bcrypt_cost(h) for h in hashes[1:]] == [5, 5]  # the dummy, at the users' highest cost
    assert hashes[1] not in (HASH, HASH5)
    assert auth.quick(wrong, SOURCE) is None  # failures are not cached


def test_the_dummy_cost_is_the_users_highest(clock: FakeClock) -> None:
    assert bcrypt_cost(Authenticator({"a": HASH}, clock=clock)._dummy) == 4
    assert bcrypt_cost(make(clock)._dummy) == 5


@pytest.mark.parametrize("length", [73, 200])
def test_an_over_long_password_is_a_plain_401_at_the_dummys_cost(
        clock: FakeClock, hashes: list[bytes], length: int) -> None:
    auth = make(clock)
    header = basic(b"prometheus", b"s3cret" + b"x" * (length - 6))
    with pytest.raises(ValueError):
        bcrypt.checkpw(b"x" * length, HASH)  # what bcrypt itself does with it
    hashes.clear()
    assert auth.verify(header, SOURCE) == UNAUTHORISED
    assert len(hashes) == 1 and bcrypt_cost(hashes[0]) == 5 and hashes[0] != HASH


def test_a_72_byte_password_is_checked(clock: FakeClock) -> None:
    password = b"p" * 72
    auth = Authenticator({"u": bcrypt.hashpw(password, bcrypt.gensalt(rounds=4))}, clock=clock)
    assert ask(auth, basic(b"u", password)) == OK


def test_htpasswd_2y_hashes_work(clock: FakeClock) -> None:
    auth = Authenticator({"prometheus": HASH.replace(b"$2b$", b"$2y$")}, clock=clock)
    assert ask(auth, GOOD) == OK


def test_failures_are_throttled_per_source_then_recover(clock: FakeClock,
                                                       hashes: list[bytes]) -> None:
    auth = make(clock, failures_per_minute=3)
    wrong = basic(b"prometheus", b"wrong")
    assert [ask(auth, wrong) for _ in range(3)] == [UNAUTHORISED] * 3
    throttled = AuthDecision(AuthOutcome.THROTTLED, retry_after=20.0)  # one failure per 20 s
    assert auth.quick(wrong, SOURCE) == throttled
    assert auth.quick(GOOD, SOURCE) == throttled  # even the right password, until it is cached
    assert auth.verify(wrong, SOURCE) == throttled  # verify() checks too
    assert len(hashes) == 3  # the throttled ones cost no hash
    assert ask(auth, wrong, "198.51.100.1") == UNAUTHORISED  # other sources keep their budget
    clock.advance(15.0)
    assert auth.quick(wrong, SOURCE) == AuthDecision(AuthOutcome.THROTTLED, retry_after=5.0)
    clock.advance(5.0)
    assert auth.quick(GOOD, SOURCE) is None
    assert auth.verify(GOOD, SOURCE) == OK  # a success gives its token back
    assert ask(auth, wrong) == UNAUTHORISED
    assert auth.quick(wrong, SOURCE).outcome is AuthOutcome.THROTTLED  # type: ignore[union-attr]
    clock.advance(60.0)
    assert [ask(auth, wrong) for _ in range(4)] == [UNAUTHORISED] * 3 + [
        AuthDecision(AuthOutcome.THROTTLED, retry_after=20.0)]  # full budget again, no more


def test_a_cached_credential_passes_even_from_a_throttled_source(clock: FakeClock) -> None:
    auth = make(clock, failures_per_minute=1)
    assert ask(auth, GOOD) == OK
    assert ask(auth, basic(b"prometheus", b"wrong")) == UNAUTHORISED
    assert auth.quick(basic(b"x", b"y"), SOURCE).outcome is AuthOutcome.THROTTLED  # type: ignore[union-attr]
    assert auth.quick(GOOD, SOURCE) == OK


def test_an_ipv6_source_spends_from_its_64(clock: FakeClock) -> None:
    auth = make(clock, failures_per_minute=2)
    wrong = basic(b"prometheus", b"wrong")
    assert ask(auth, wrong, "2001:db8::1") == UNAUTHORISED
    assert ask(auth, wrong, "2001:db8::ffff:2") == UNAUTHORISED
    assert ask(auth, wrong, "2001:db8::3").outcome is AuthOutcome.THROTTLED
    assert ask(auth, wrong, "2001:db8:0:1::1") == UNAUTHORISED  # the next /64
    assert ask(auth, wrong, "::ffff:192.0.2.9") == UNAUTHORISED  # IPv4-mapped: the IPv4 address
    assert ask(auth, wrong, "192.0.2.9") == UNAUTHORISED
    assert ask(auth, wrong, "192.0.2.9").outcome is AuthOutcome.THROTTLED


def test_concurrent_wrong_passwords_hash_at_most_the_budget(clock: FakeClock,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The token is spent before hashing, so a burst cannot outrun the throttle."""
    monkeypatch.setattr(basic_auth, "MAX_PENDING", 100)  # no shedding: the budget alone
    auth = make(clock, failures_per_minute=5)
    release, done = threading.Event(), threading.Semaphore(0)
    calls: list[bytes] = []

    def slow_checkpw(password: bytes, hashed: bytes) -> bool:
        calls.append(hashed)
        assert release.wait(10)
        return False
    monkeypatch.setattr(basic_auth.bcrypt, "checkpw", slow_checkpw)
    results: list[AuthOutcome] = []

    def attempt(n: int) -> None:
        header = basic(b"prometheus", b"wrong%d" % n)
        decision = auth.quick(header, SOURCE) or auth.verify(header, SOURCE)
        results.append(decision.outcome)
        done.release()
    threads = [threading.Thread(target=attempt, args=(n,)) for n in range(20)]
    for t in threads:
        t.start()
    for _ in range(15):  # the 15 beyond the budget answer while the 5 wait on bcrypt
        assert done.acquire(timeout=10)
    assert sorted(o.value for o in results) == ["throttled"] * 15
    release.set()
    for t in threads:
        t.join(10)
    assert results.count(AuthOutcome.UNAUTHORISED) == 5 and len(calls) == 5


def test_checks_beyond_max_pending_are_shed_and_the_last_places_kept_for_clean_sources(
        clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(basic_auth, "MAX_PENDING", 3)
    monkeypatch.setattr(basic_auth, "RESERVED_PENDING", 1)
    auth = make(clock, failures_per_minute=4)
    release = threading.Event()

    class ArrivalsLock:
        """The hashing lock, telling each arrival (a check is pending from then on)."""

        def __init__(self) -> None:
            self.lock, self.arrived = threading.Lock(), threading.Semaphore(0)

        def __enter__(self) -> None:
            self.arrived.release()
            self.lock.acquire()

        def __exit__(self, *exc: object) -> None:
            self.lock.release()
    hashing = ArrivalsLock()
    monkeypatch.setattr(auth, "_hashing", hashing)
    monkeypatch.setattr(basic_auth.bcrypt, "checkpw", lambda password, hashed: release.wait(10) and False)
    shed = AuthDecision(AuthOutcome.THROTTLED, retry_after=basic_auth.SHED_RETRY_AFTER)
    wrong = basic(b"prometheus", b"w")
    results: list[AuthDecision] = []

    def attempt(source: str) -> threading.Thread:
        thread = threading.Thread(target=lambda: results.append(auth.verify(wrong, source)))
        thread.start()
        return thread
    threads = [attempt("192.0.2.1"), attempt("192.0.2.1")]  # one hashing, one waiting
    assert hashing.arrived.acquire(timeout=10) and hashing.arrived.acquire(timeout=10)
    assert auth._pending == 2
    assert auth.verify(wrong, "192.0.2.1") == shed  # failures on record: not the reserved place
    threads.append(attempt("198.51.100.1"))  # a clean source takes it
    assert hashing.arrived.acquire(timeout=10)
    assert auth._pending == 3
    assert auth.verify(wrong, "203.0.113.1") == shed  # full, even for a clean source
    release.set()
    for t in threads:
        t.join(10)
    assert results == [UNAUTHORISED] * 3
    monkeypatch.setattr(basic_auth.bcrypt, "checkpw", lambda password, hashed: False)
    # the shed sources spent nothing: 192.0.2.1 has 4 - 2 left, 203.0.113.1 all 4
    assert [ask(auth, wrong, "192.0.2.1").outcome for _ in range(3)] == \
        [AuthOutcome.UNAUTHORISED] * 2 + [AuthOutcome.THROTTLED]
    assert [ask(auth, wrong, "203.0.113.1").outcome for _ in range(5)] == \
        [AuthOutcome.UNAUTHORISED] * 4 + [AuthOutcome.THROTTLED]


def test_the_hashing_lock_serves_in_order_of_arrival() -> None:
    lock = basic_auth._FifoLock()
    order: list[int] = []

    def take(n: int) -> None:
        with lock:
            order.append(n)
    lock.__enter__()
    threads = []
    for n in range(5):
        threads.append(threading.Thread(target=take, args=(n,)))
        threads[-1].start()
        deadline = time.monotonic() + 10
        while len(lock._waiters) <= n and time.monotonic() < deadline:
            time.sleep(0)  # a yield, until thread n waits in line
        assert len(lock._waiters) == n + 1
    lock.__exit__(None, None, None)
    for t in threads:
        t.join(10)
    assert order == [0, 1, 2, 3, 4] and not lock._held


def test_the_cache_holds_a_keyed_digest_never_the_password(clock: FakeClock) -> None:
    auth, other = make(clock), make(clock)
    assert ask(auth, GOOD) == OK and ask(other, GOOD) == OK
    state = repr(vars(auth)) + repr(auth)
    token = GOOD.split()[1]
    for secret in ("s3cret", token, token.encode().hex(), b"s3cret".hex()):
        assert secret not in state
    (digest,) = auth._verified
    assert len(digest) == 32
    assert digest not in (hashlib.sha256(b"prometheus:s3cret").digest(),
                          hashlib.sha256(GOOD.encode()).digest())
    assert digest not in other._verified  # a key of its own


def test_the_cache_and_the_tracked_sources_are_bounded(clock: FakeClock,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4))
    auth = Authenticator({f"u{n}": hashed for n in range(3)}, clock=clock, cache_size=2)
    for n in range(3):
        assert ask(auth, basic(b"u%d" % n, b"pw")) == OK
    assert auth.quick(basic(b"u0", b"pw"), SOURCE) is None  # the oldest went
    assert auth.quick(basic(b"u2", b"pw"), SOURCE) == OK
    monkeypatch.setattr(basic_auth, "MAX_SOURCES", 3)
    for n in range(10):
        ask(auth, basic(b"u0", b"wrong"), f"192.0.2.{n}")
    assert list(auth._buckets) == ["192.0.2.7", "192.0.2.8", "192.0.2.9"]


@pytest.mark.parametrize("users, kwargs", [
    ({"a": b"plaintext"}, {}),
    ({"a": b"$2b$03$" + b"a" * 53}, {}),
    ({}, {"failures_per_minute": 0}),
    ({}, {"cache_size": 0}),
])
def test_bad_arguments_are_refused(users: dict[str, bytes], kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        Authenticator(users, **kwargs)
