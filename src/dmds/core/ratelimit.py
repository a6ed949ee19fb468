"""Rate limits: failures per key in a sliding window (wrong passwords), and token buckets (sends).

Both take `now` from the caller and keep their state in memory: a restart forgets them, which costs
an attacker nothing they could not get by waiting out the window.
"""

from __future__ import annotations

from collections import deque

from dmds.errors import LimitExceeded, RateLimited


class FailureLimiter:
    """At most `max_failures` failures per key within `window_s`; beyond, RateLimited."""

    def __init__(self, max_failures: int, window_s: float, max_keys: int = 100_000) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self._max_keys = max_keys
        self._failures: dict[str, deque[float]] = {}

    def check(self, key: str, now: float) -> None:
        times = self._failures.get(key)
        if not times:
            return
        while times and times[0] <= now - self.window_s:
            times.popleft()
        if len(times) >= self.max_failures:
            raise RateLimited(f"too many failed attempts for {key}", times[0] + self.window_s - now)

    def failed(self, key: str, now: float) -> None:
        if len(self._failures) >= self._max_keys and key not in self._failures:
            # Bounded memory under a spray of keys: forget the stalest entries.
            for stale in list(self._failures)[: self._max_keys // 10]:
                del self._failures[stale]
        self._failures.setdefault(key, deque(maxlen=self.max_failures)).append(now)

    def succeeded(self, key: str) -> None:
        self._failures.pop(key, None)


class TokenBucket:
    """`rate_per_s` on average, bursts up to `burst`. rate 0 means unlimited."""

    __slots__ = ("_last", "_tokens", "burst", "rate_per_s")

    def __init__(self, rate_per_s: float, burst: float, now: float) -> None:
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._tokens = burst
        self._last = now

    def take(self, now: float, what: str) -> None:
        if self.rate_per_s <= 0:
            return
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate_per_s)
        self._last = now
        if self._tokens < 1:
            raise LimitExceeded(f"{what}: more than {self.rate_per_s:g} per second")
        self._tokens -= 1
