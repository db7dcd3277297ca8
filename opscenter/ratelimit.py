"""Token buckets per key (device, client address, operator account).

``take`` answers 0 when the request may go on, else the seconds until a token is there: the
``Retry-After`` the box must honour. A rate of 0 disables the limiter.

:class:`SharedBuckets` keeps the buckets in the database (table ``rate_buckets``), so every worker
process of the center (``workers: N``, uvicorn's supervisor) draws from the same bucket: N workers
allow the configured rate, not N times it. A take is one conditional ``UPDATE ... RETURNING`` (an
``INSERT`` for a new key), atomic on SQLite and PostgreSQL alike. :class:`TokenBuckets` is the
in-memory variant, per process: only for limits that need not hold across workers.
"""
from __future__ import annotations

import math
import threading
import time
from typing import Any

from sqlalchemy import and_, bindparam, case, delete, literal, select, update
from sqlalchemy.engine import Connection

from opscenter.db import Database, rate_buckets


class TokenBuckets:
    """In memory, per worker process (N workers allow N times the rate): not for the center's limits."""

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


def _take_stmt(_db: Database) -> Any:
    b = bindparam
    t = rate_buckets.c
    refill = t.tokens + case((b("now") > t.at, (b("now") - t.at) * b("rate")), else_=literal(0.0))
    capped = case((refill > b("burst"), b("burst")), else_=refill)
    return (update(rate_buckets).where(and_(t.key == b("k"), capped >= 1.0))
            .values(tokens=capped - 1.0, at=b("now")).returning(t.tokens))


class SharedBuckets:
    """Token buckets in the database, shared by all worker processes of the center.

    ``prefix`` names the bucket set (``alarm``, ``checkin``, ...); keys are ``prefix:key``."""

    def __init__(self, db: Database, prefix: str, rate: float, burst: int) -> None:
        self.db = db
        self.prefix = prefix
        self.rate = rate
        self.burst = max(1, burst)

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def _key(self, key: str) -> str:
        return f"{self.prefix}:{key}"[:200]

    def take(self, key: str, conn: Connection | None = None, now: float | None = None) -> float:
        """Take one token: 0.0, or the seconds until one is there. With ``conn``, inside that caller's
        transaction (a refusal that the caller rolls back leaves the bucket as it was, which is right:
        nothing was taken); without, in a short transaction of its own."""
        if self.rate <= 0:
            return 0.0
        now = time.time() if now is None else now
        k = self._key(key)
        params = {"k": k, "now": now, "rate": self.rate, "burst": float(self.burst)}
        with self.db.write(conn) as c:
            if conn is None and self.db.dialect == "postgresql":
                c.exec_driver_sql("SET LOCAL synchronous_commit TO OFF")  # a lost bucket update is harmless
            for _ in range(2):
                if c.execute(self.db.stmt("bucket_take", _take_stmt), params).first() is not None:
                    return 0.0
                row = c.execute(select(rate_buckets.c.tokens, rate_buckets.c.at)
                                .where(rate_buckets.c.key == k)).first()
                if row is not None:
                    return self._wait(row[0], row[1], now)
                ins = self.db.insert(rate_buckets).values(key=k, tokens=float(self.burst) - 1.0, at=now)
                if c.execute(ins.on_conflict_do_nothing(index_elements=[rate_buckets.c.key])).rowcount == 1:
                    return 0.0
                # another worker created the bucket just now: take from it
        return 1.0 / self.rate

    def peek(self, key: str, conn: Connection | None = None, now: float | None = None) -> float:
        """0.0 if a token is there (nothing is taken), else the seconds until one is."""
        if self.rate <= 0:
            return 0.0
        now = time.time() if now is None else now
        with self.db.read(conn) as c:
            row = c.execute(select(rate_buckets.c.tokens, rate_buckets.c.at)
                            .where(rate_buckets.c.key == self._key(key))).first()
        return 0.0 if row is None else self._wait(row[0], row[1], now)

    def _wait(self, tokens: float, at: float, now: float) -> float:
        tokens = min(float(self.burst), tokens + max(0.0, now - at) * self.rate)
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate


def prune_buckets(db: Database, older_than: float = 86400.0) -> int:
    """Forget buckets untouched for ``older_than`` seconds (full again for any sane rate)."""
    with db.write() as conn:
        return conn.execute(delete(rate_buckets).where(rate_buckets.c.at < time.time() - older_than)).rowcount or 0


def address_key(ip: str | None) -> str:
    """The bucket key of a client address: IPv4 as is, IPv6 by its /64 (one host usually holds a whole /64,
    so per-address buckets would let it take a fresh bucket, and a fresh row, for every request)."""
    import ipaddress

    if not ip:
        return "-"
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return ip[:64]
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return str(ipaddress.ip_network(f"{addr}/64", strict=False))
    return str(addr)


def retry_after(wait: float) -> str:
    """Whole seconds, at least 1 (the header has no fractions)."""
    return str(max(1, math.ceil(wait)))
