"""The back-off policy: how long to wait before retry number ``attempt``.

One policy serves every retry in sms-monitor: the Twilio request retries (half a second
doubling to 10 s, "equal jitter", a ``Retry-After`` honoured up to the cap) and the alert
outbox (30 s doubling to an hour, no jitter). Pure: the random source is injected.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

_MAX_EXPONENT = 1023  # 2.0 ** 1024 overflows; any cap is reached long before


@dataclass(frozen=True)
class Backoff:
    """Exponential back-off: ``base`` seconds doubling per attempt, at most ``cap``.

    ``jitter`` is the share of each delay that is random: 0 waits exactly the exponential
    delay, 0.5 is "equal jitter" (between half of it and all of it), 1 is "full jitter".
    """

    base: float
    cap: float
    jitter: float = 0.0

    def __post_init__(self) -> None:
        if self.base < 0 or self.cap < 0:
            raise ValueError("back-off base and cap must not be negative")
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError("back-off jitter must be between 0 and 1")

    def delay(self, attempt: int, retry_after: float | None = None,
              rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait before retrying after failed attempt ``attempt`` (0 for the first).

        A server's ``retry_after`` (seconds) wins over the formula, but never past the cap.
        """
        if retry_after is not None:
            return min(max(0.0, retry_after), self.cap)
        exponential = min(self.cap, self.base * 2.0 ** min(max(0, attempt), _MAX_EXPONENT))
        if not self.jitter:
            return exponential
        fixed = exponential * (1.0 - self.jitter)
        return fixed + exponential * self.jitter * rand()
