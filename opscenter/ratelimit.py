"""Token buckets per key (device, client address), in memory, per worker process.

``take`` answers 0 when the request may go on, else the seconds until a token is there: the
``Retry-After`` the box must honour. A rate of 0 disables the limiter.
"""
from __future__ import annotations

import math
import threading
import time


class TokenBuckets:
    def __init__(self, rate: float, burst: int, *, max_keys: int = 100_000) -> None:
        self.rate = rate
        self.burst = max(1, burst)
        self.max_keys = max_keys
        self._state: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def take(self, key: str, now: float | None = None) -> float:
        if self.rate <= 0:
            return 0.0
        now = time.monotonic() if now is None else now
        with self._lock:
            tokens, at = self._state.get(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - at) * self.rate)
            if tokens >= 1.0:
                self._state[key] = (tokens - 1.0, now)
                wait = 0.0
            else:
                self._state[key] = (tokens, now)
                wait = (1.0 - tokens) / self.rate
            if len(self._state) > self.max_keys:
                self._forget(now)
        return wait

    def _forget(self, now: float) -> None:
        """Drop buckets that are full again (they carry no state)."""
        full_after = self.burst / self.rate
        for k in [k for k, (_t, at) in self._state.items() if now - at > full_after]:
            del self._state[k]


def retry_after(wait: float) -> str:
    """Whole seconds, at least 1 (the header has no fractions)."""
    return str(max(1, math.ceil(wait)))
