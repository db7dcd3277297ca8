"""The box's durable queue of spam reports for the center (docs/mail.md, "What a box reports").

The anti-spam engine hands a report (filters/antispam/report.py: digests of clear spam, the whole
message only with the customer's consent) to ``submit``, from the mail thread: it only appends to a
bounded in-memory deque, so a slow disk or an unreachable center never holds up mail. A writer
thread commits to SQLite (WAL); ``ReportSender`` sends batches over the center link (same client,
TLS and device token as the alarms) at a bounded rate and deletes them only once the center acked.
Bounded like the alarm spool: at most ``max_reports`` rows and ``max_bytes``; when full, new reports
are dropped and counted (a report is worth less than an alarm; what is queued stays queued).
"""
from __future__ import annotations

import collections
import json
import logging
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Callable

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS reports (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    size    INTEGER NOT NULL,
    created REAL    NOT NULL,
    body    TEXT    NOT NULL
);
"""


class ReportQueue:
    def __init__(self, path: str | os.PathLike[str], *, max_reports: int = 5000, max_bytes: int = 32 << 20,
                 memory_max: int = 1000) -> None:
        if max_reports < 1 or max_bytes < 1:
            raise ValueError("report queue bounds must be positive")
        self.path = Path(path)
        self.max_reports = max_reports
        self.max_bytes = max_bytes
        self.memory_max = memory_max
        self.dropped = 0
        self._pending: collections.deque[str] = collections.deque()
        self._lock = threading.Lock()  # the in-memory deque only: submit never waits for the disk
        self._db_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600))
        self._db = sqlite3.connect(str(self.path), timeout=30, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)
        self._writer = threading.Thread(target=self._write_loop, name="spam-report-writer", daemon=True)
        self._writer.start()

    # -- the mail thread's call: never blocks on the disk ----------------------------------------
    def submit(self, report: dict[str, Any]) -> bool:
        body = json.dumps(report, separators=(",", ":"), ensure_ascii=True)
        with self._lock:
            if len(self._pending) >= self.memory_max:
                self.dropped += 1
                return False
            self._pending.append(body)
        self._wake.set()
        return True

    def _write_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(0.5)
            self._wake.clear()
            self.flush()

    def flush(self) -> None:
        # The database lock is taken first so that a report is always either pending or in the
        # database for anyone holding it (``__len__``, a second flush); submit takes only ``_lock``.
        with self._db_lock:
            with self._lock:
                batch = list(self._pending)
                self._pending.clear()
            if not batch:
                return
            n, size = self._db.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM reports").fetchone()
            rows = []
            for body in batch:
                if n + 1 > self.max_reports or size + len(body) > self.max_bytes:
                    self.dropped += 1
                    continue
                n += 1
                size += len(body)
                rows.append((len(body), time.time(), body))
            try:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.executemany("INSERT INTO reports (size, created, body) VALUES (?, ?, ?)", rows)
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                self.dropped += len(rows)
                log.warning("spam reports not queued: %s", exc)

    # -- the sender's calls ------------------------------------------------------------------------
    def peek(self, limit: int, max_bytes: int) -> list[tuple[int, dict[str, Any]]]:
        out, total = [], 0
        with self._db_lock:
            for seq, size, body in self._db.execute("SELECT seq, size, body FROM reports ORDER BY seq LIMIT ?", (limit,)):
                if out and total + size > max_bytes:
                    break
                total += size
                out.append((seq, json.loads(body)))
        return out

    def ack(self, seqs: list[int]) -> None:
        with self._db_lock:
            self._db.executemany("DELETE FROM reports WHERE seq = ?", [(s,) for s in seqs])

    def __len__(self) -> int:
        with self._db_lock:
            return self._db.execute("SELECT COUNT(*) FROM reports").fetchone()[0] + len(self._pending)

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self._writer.join(timeout=5)
        self.flush()
        with self._db_lock:
            self._db.close()


class ReportSender(threading.Thread):
    """Sends the queued reports with ``post(reports)`` (the center link's client; raises when the
    center did not take them): at most ``batch`` reports / ``batch_bytes`` per request and one
    request per ``interval`` seconds; after a failure it waits ``retry`` seconds (doubling, capped)."""

    def __init__(self, queue: ReportQueue, post: Callable[[list[dict[str, Any]]], Any], *, batch: int = 50,
                 batch_bytes: int = 4 << 20, interval: float = 10.0, retry: float = 30.0, retry_cap: float = 900.0) -> None:
        super().__init__(name="spam-report-sender", daemon=True)
        self.queue, self.post = queue, post
        self.batch, self.batch_bytes, self.interval = batch, batch_bytes, interval
        self.retry, self.retry_cap = retry, retry_cap
        self.sent = self.failures = 0
        self.last_error = ""
        self._stop = threading.Event()

    def send_once(self) -> int:
        rows = self.queue.peek(self.batch, self.batch_bytes)
        if not rows:
            return 0
        self.post([r for _, r in rows])
        self.queue.ack([s for s, _ in rows])
        self.sent += len(rows)
        return len(rows)

    def run(self) -> None:
        delay = self.retry
        while not self._stop.is_set():
            try:
                self.send_once()
                delay = self.retry
                wait = self.interval
            except Exception as exc:  # noqa: BLE001 - center down, refused, ...: kept and retried
                self.failures += 1
                self.last_error = str(exc)[:300]
                wait, delay = delay, min(self.retry_cap, delay * 2)
            self._stop.wait(wait)

    def stop(self) -> None:
        self._stop.set()


def connect(engine: Any, link: Any, queue: ReportQueue) -> None:
    """Wire the anti-spam engine to the center link: its reports go to ``queue``; the digests the
    center lists (check-in reply) go to its known-digest list. (The sender is started by the caller
    with the link's ``send_spam_reports``.)"""
    engine.reports = queue.submit
    link.known_spam_digests = engine.add_known_digests
