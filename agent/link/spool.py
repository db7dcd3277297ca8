"""The durable alarm spool: every EVE record bound for the operations center waits here until acked.

SQLite in WAL mode, ``synchronous=FULL``:

* In WAL mode ``synchronous=NORMAL`` fsyncs only at checkpoints. That survives ``kill -9`` (the
  data is in the OS page cache) but a power cut can roll back the last committed transactions. The
  box has no UPS and the seed promises that alarms are collected, so the spool uses ``FULL``: the
  WAL is fsynced at every commit and a committed event survives a power cut.
* The cost of one fsync per commit is paid once per *group*: ``submit()`` (the daemon's EVE
  listener) only appends to a bounded in-memory queue; a writer thread commits whatever has
  arrived in one transaction. The alarm path never waits for the disk; an event is durable a few
  milliseconds after it was written to ``eve.json``.

Every event gets a UUID ``event_id`` when it enters. ``lease()`` hands out a batch (most severe
first, then oldest), ``ack()`` deletes a batch the center acknowledged, ``release()`` returns a
batch that was not acknowledged. Nothing is deleted before the ack, so delivery is at least once
and the center deduplicates by ``event_id``. In-flight state is not persisted: after a crash the
whole spool is pending again.

The spool is bounded (``max_events``, ``max_bytes`` of event JSON). When a commit would exceed a
bound, the lowest-severity events go first (EVE severity 1 high ... 4 info; records that are not
alerts rank below 4), newest first within a severity (so the start of an incident is kept). Drops
are counted by severity and reported to the center by one pending ``gap`` event that is updated
while it waits and never dropped itself.
"""
from __future__ import annotations

import collections
import json
import logging
import os
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

log = logging.getLogger(__name__)

RANK_GAP = 0  # gap events: never dropped, sent first
RANK_OTHER = 5  # EVE records that are not alerts (drop, anomaly, ...): dropped first
SEVERITY_KEYS = ("1", "2", "3", "4", "other")
GAP_SEVERITY = 2  # what a gap event is sent as (the API takes 1-4): lost alarms matter

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT    NOT NULL UNIQUE,
    rank     INTEGER NOT NULL,
    size     INTEGER NOT NULL,
    created  REAL    NOT NULL,
    body     TEXT    NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_rank ON events (rank, seq);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class SpoolError(RuntimeError):
    """The spool database cannot be opened or written."""


def rank_of(rec: dict[str, Any]) -> int:
    """1-4 for an alert (its EVE severity, clamped) and for an update/upgrade record (its own ``severity``),
    RANK_GAP for a gap event, RANK_OTHER otherwise."""
    kind = rec.get("event_type")
    if kind == "gap":
        return RANK_GAP
    if kind == "alert":
        try:
            return min(4, max(1, int((rec.get("alert") or {}).get("severity", 3))))
        except (TypeError, ValueError):
            return 3
    if kind in ("update", "upgrade"):  # signed updates and upgrades carry their own severity (1: tampered, rollback...)
        try:
            return min(4, max(1, int((rec.get(kind) or {}).get("severity", 4))))
        except (TypeError, ValueError):
            return 4
    return RANK_OTHER


def severity_key(rank: int) -> str:
    return str(rank) if 1 <= rank <= 4 else "other"


@dataclass(frozen=True)
class SpoolEvent:
    seq: int
    event_id: str
    rank: int
    body: str  # the EVE record as JSON

    @property
    def severity(self) -> int:
        """What the API gets: the EVE severity 1-4 (non-alerts as 4, gap events as GAP_SEVERITY)."""
        return GAP_SEVERITY if self.rank == RANK_GAP else min(4, self.rank)

    def wire(self) -> dict[str, Any]:
        return {"event_id": self.event_id, "severity": self.severity, "event": json.loads(self.body)}


class Spool:
    """A bounded, durable FIFO of EVE records for the center (thread-safe; one process at a time)."""

    def __init__(self, path: str | os.PathLike[str], *, max_events: int = 100_000, max_bytes: int = 64 << 20,
                 queue_max: int = 20_000, synchronous: str = "FULL",
                 clock: Callable[[], float] = time.time) -> None:
        if max_events < 1 or max_bytes < 1:
            raise ValueError("spool bounds must be positive")
        self.path = Path(path)
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.queue_max = queue_max
        self.clock = clock
        self._lock = threading.RLock()
        self._inflight: set[int] = set()
        self._queue: collections.deque[dict[str, Any]] = collections.deque()
        self._overflow: collections.Counter[str] = collections.Counter()
        self._wake = threading.Condition(threading.Lock())
        self._idle = threading.Event()
        self._idle.set()
        self.changed = threading.Event()  # set after every commit that added events
        self._writer: threading.Thread | None = None
        self._closing = False
        self.write_errors = 0
        self.last_error = ""
        self._last_drop_log = -1e9
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Created 0600 before SQLite opens it: the -wal and -shm files take the same mode.
            os.close(os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600))
            self._db = sqlite3.connect(str(self.path), timeout=30, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={synchronous}")
            self._db.executescript(SCHEMA)
            os.chmod(self.path, 0o600)
        except (OSError, sqlite3.Error) as exc:
            raise SpoolError(f"cannot open the alarm spool {self.path}: {exc}") from None
        self._reload_sizes()
        self.dropped: dict[str, int] = json.loads(self._meta("dropped", "{}")) or {k: 0 for k in SEVERITY_KEYS}
        for k in SEVERITY_KEYS:
            self.dropped.setdefault(k, 0)
        self.entered = int(self._meta("entered", "0"))
        self.acked = int(self._meta("acked", "0"))

    # ------------------------------------------------------------------------------- meta
    def _meta(self, key: str, default: str) -> str:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else default

    def _set_meta(self, key: str, value: str) -> None:
        self._db.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                         (key, value))

    # ------------------------------------------------------------------------------ writing
    def put(self, rec: dict[str, Any]) -> str:
        """Add one record and commit before returning (durable on return); its new event_id."""
        return self.put_many([rec])[0]

    def put_many(self, recs: Iterable[dict[str, Any]], *, overflow: collections.Counter[str] | None = None) -> list[str]:
        """Add records in one transaction (one fsync); their event_ids, in order.

        ``overflow``: records the intake queue had no room for, by severity key, to count as drops.
        """
        rows = []
        now = self.clock()
        for rec in recs:
            body = json.dumps(rec, ensure_ascii=False, separators=(",", ":"))
            rows.append((str(uuid.uuid4()), rank_of(rec), len(body.encode("utf-8")), now, body))
        if not rows and not overflow:
            return []
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.executemany("INSERT INTO events (event_id, rank, size, created, body) VALUES (?, ?, ?, ?, ?)", rows)
                self._count += len(rows)
                self._bytes += sum(r[2] for r in rows)
                self.entered += len(rows)
                self._set_meta("entered", str(self.entered))
                self._enforce_bounds(now)
                if overflow:
                    self._record_drops(overflow, now)
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                self._reload_counts()
                raise SpoolError(f"cannot write the alarm spool {self.path}: {exc}") from None
        self.changed.set()
        return [r[0] for r in rows]

    def _rollback(self) -> None:
        try:
            self._db.execute("ROLLBACK")
        except sqlite3.Error:
            pass

    def _reload_sizes(self) -> None:
        row = self._db.execute("SELECT COUNT(*), COALESCE(SUM(size), 0), COALESCE(SUM(rank = ?), 0), "
                               "COALESCE(SUM(CASE WHEN rank = ? THEN size ELSE 0 END), 0) FROM events",
                               (RANK_GAP, RANK_GAP)).fetchone()
        self._count, self._bytes, self._gap_count, self._gap_bytes = (int(x) for x in row)

    def _reload_counts(self) -> None:
        self._reload_sizes()
        self.entered = int(self._meta("entered", "0"))
        self.dropped = json.loads(self._meta("dropped", "{}")) or {k: 0 for k in SEVERITY_KEYS}

    def _over(self) -> bool:
        """Past a bound, not counting gap events (they are tiny, one at a time, and never dropped)."""
        return (self._count - self._gap_count > self.max_events
                or self._bytes - self._gap_bytes > self.max_bytes)

    def _enforce_bounds(self, now: float) -> None:
        """Inside a transaction: drop the lowest-severity (then newest) events until within bounds."""
        if not self._over():
            return
        dropped: collections.Counter[str] = collections.Counter()
        while self._over():
            # Enough victims for the event bound at once; the byte bound may need another round.
            want = max(1, self._count - self._gap_count - self.max_events, 64)
            victims = self._db.execute(
                "SELECT seq, rank, size FROM events WHERE rank > ? ORDER BY rank DESC, seq DESC LIMIT ?",
                (RANK_GAP, want + len(self._inflight))).fetchall()
            victims = [v for v in victims if v[0] not in self._inflight]
            if not victims:
                break  # only gap and in-flight events left: the bound gives way until the ack
            chosen = []
            for seq, rank, size in victims:
                if not self._over():
                    break
                chosen.append((seq,))
                self._count -= 1
                self._bytes -= size
                dropped[severity_key(rank)] += 1
            self._db.executemany("DELETE FROM events WHERE seq = ?", chosen)
        if dropped:
            self._record_drops(dropped, now)
            if time.monotonic() - self._last_drop_log >= 60.0:  # at most one line a minute
                self._last_drop_log = time.monotonic()
                log.warning("alarm spool full (%d events, %d bytes): lowest-severity events dropped, %s so far",
                            self._count, self._bytes, {k: v for k, v in self.dropped.items() if v})

    def _record_drops(self, dropped: collections.Counter[str], now: float) -> None:
        for k, n in dropped.items():
            self.dropped[k] = self.dropped.get(k, 0) + n
        self._set_meta("dropped", json.dumps(self.dropped))
        self._note_gap(dropped, now)

    def _note_gap(self, dropped: collections.Counter[str], now: float) -> None:
        """Add the drops to the pending gap event (or queue a new one if none waits unsent)."""
        from filters.eve import timestamp

        row = self._db.execute("SELECT seq, body, size FROM events WHERE rank = ? ORDER BY seq DESC LIMIT 1",
                               (RANK_GAP,)).fetchone()
        if row is not None and row[0] not in self._inflight:
            seq, body, old_size = row[0], json.loads(row[1]), row[2]
        else:
            seq, old_size = None, 0
            body = {"timestamp": timestamp(now), "event_type": "gap", "dropped": 0,
                    "by_severity": {k: 0 for k in SEVERITY_KEYS}, "first_drop": timestamp(now)}
        body["dropped"] += sum(dropped.values())
        for k, n in dropped.items():
            body["by_severity"][k] = body["by_severity"].get(k, 0) + n
        body["last_drop"] = timestamp(now)
        body["reason"] = "spool full"
        text = json.dumps(body, separators=(",", ":"))
        size = len(text.encode("utf-8"))
        if seq is None:
            self._db.execute("INSERT INTO events (event_id, rank, size, created, body) VALUES (?, ?, ?, ?, ?)",
                             (str(uuid.uuid4()), RANK_GAP, size, now, text))
            self._count += 1
            self._gap_count += 1
        else:
            self._db.execute("UPDATE events SET body = ?, size = ? WHERE seq = ?", (text, size, seq))
        self._bytes += size - old_size
        self._gap_bytes += size - old_size

    # ------------------------------------------------------------------- asynchronous intake
    def start(self) -> None:
        """Start the writer thread behind ``submit()``."""
        if self._writer is None:
            self._writer = threading.Thread(target=self._write_loop, name="spool-writer", daemon=True)
            self._writer.start()

    def submit(self, rec: dict[str, Any]) -> None:
        """Queue a record for the writer thread; never blocks (an overflowing queue drops and counts)."""
        with self._wake:
            if len(self._queue) >= self.queue_max:
                self._queue_overflow(rec)
                self._wake.notify()
                return
            self._queue.append(rec)
            self._idle.clear()
            self._wake.notify()

    def _queue_overflow(self, rec: dict[str, Any]) -> None:
        # The disk cannot keep up (or is failing): the record stays in eve.json, not in the spool.
        # Counted here (no I/O on the caller's path); the writer folds it into the gap event.
        self._overflow[severity_key(rank_of(rec))] += 1

    def _write_loop(self) -> None:
        while True:
            with self._wake:
                while not self._queue and not self._overflow and not self._closing:
                    self._idle.set()
                    self._wake.wait()
                if not self._queue and not self._overflow and self._closing:
                    self._idle.set()
                    return
                batch = [self._queue.popleft() for _ in range(min(len(self._queue), 2000))]
                overflow, self._overflow = self._overflow, collections.Counter()
            try:
                self.put_many(batch, overflow=overflow)
            except SpoolError as exc:
                # Keep the batch and retry (a full disk may get space back); the bounded queue
                # counts what no longer fits as drops.
                self.write_errors += 1
                self.last_error = str(exc)
                log.error("%s (%d records waiting; retrying)", exc, len(batch))
                with self._wake:
                    self._queue.extendleft(reversed(batch))
                    while len(self._queue) > self.queue_max:
                        self._queue_overflow(self._queue.pop())
                    self._overflow.update(overflow)
                if self._closing:
                    return
                time.sleep(1.0)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything submitted so far is committed."""
        deadline = time.monotonic() + timeout
        while True:
            with self._wake:
                if not self._queue and self._idle.is_set():
                    return True
            if time.monotonic() >= deadline:
                return False
            self._idle.wait(0.05)

    # ------------------------------------------------------------------------------ reading
    def lease(self, limit: int) -> list[SpoolEvent]:
        """The next batch to send (most severe first, then oldest), marked in flight."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, event_id, rank, body FROM events ORDER BY rank, seq LIMIT ?",
                (limit + len(self._inflight),)).fetchall()
            batch = [SpoolEvent(*r) for r in rows if r[0] not in self._inflight][:limit]
            self._inflight.update(e.seq for e in batch)
            return batch

    def ack(self, batch: Iterable[SpoolEvent]) -> None:
        """The center stored these: delete them."""
        seqs = [e.seq for e in batch]
        if not seqs:
            return
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                removed = 0
                for i in range(0, len(seqs), 500):
                    chunk = seqs[i:i + 500]
                    marks = ",".join("?" * len(chunk))
                    row = self._db.execute(
                        "SELECT COUNT(*), COALESCE(SUM(size), 0), COALESCE(SUM(rank = ?), 0), "
                        "COALESCE(SUM(CASE WHEN rank = ? THEN size ELSE 0 END), 0) "
                        f"FROM events WHERE seq IN ({marks})", (RANK_GAP, RANK_GAP, *chunk)).fetchone()
                    self._db.execute(f"DELETE FROM events WHERE seq IN ({marks})", chunk)
                    removed += row[0] - row[2]
                    self._count -= row[0]
                    self._bytes -= row[1]
                    self._gap_count -= row[2]
                    self._gap_bytes -= row[3]
                self.acked += removed
                self._set_meta("acked", str(self.acked))
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                self._reload_counts()
                raise SpoolError(f"cannot update the alarm spool {self.path}: {exc}") from None
            finally:
                self._inflight.difference_update(seqs)

    def release(self, batch: Iterable[SpoolEvent]) -> None:
        """Not acknowledged: the batch is pending again."""
        with self._lock:
            self._inflight.difference_update(e.seq for e in batch)

    # ------------------------------------------------------------------------------- status
    def committed(self) -> int:
        """Events in the database (durable), in flight or not."""
        with self._lock:
            return self._count

    def pending(self) -> int:
        with self._lock:
            return self._count + len(self._queue)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "pending": self._count + len(self._queue),
                "pending_bytes": self._bytes,
                "in_flight": len(self._inflight),
                "entered": self.entered,
                "acked": self.acked,
                "dropped": sum(self.dropped.values()),
                "dropped_by_severity": dict(self.dropped),
                "write_errors": self.write_errors,
                "max_events": self.max_events,
                "max_bytes": self.max_bytes,
            }

    def close(self, timeout: float = 10.0) -> None:
        if self._writer is not None:
            with self._wake:
                self._closing = True
                self._wake.notify()
            self._writer.join(timeout)
            self._writer = None
        with self._lock:
            try:
                self._db.close()
            except sqlite3.Error:
                pass


class TokenBucket:
    """Rate limit for the spool drain: ``rate`` events a second, bursts up to ``burst``."""

    def __init__(self, rate: float, burst: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self.tokens = burst
        self.stamp = clock()

    def _refill(self) -> None:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def wait_time(self, n: int) -> float:
        """Seconds until ``n`` events may be sent (0 when they may go now)."""
        self._refill()
        n = min(n, self.burst)
        return 0.0 if self.tokens >= n else (n - self.tokens) / self.rate

    def take(self, n: int) -> None:
        self._refill()
        self.tokens -= n
