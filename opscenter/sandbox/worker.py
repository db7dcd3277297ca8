"""The worker draining the analysis queue: claim a file, run the analyzer, store the verdict.

Runs as a thread of each center process (``sandbox_workers`` of them; several processes share the
queue safely, opscenter/sandbox/queue.py). An analyzer that raises never stops the worker: the
file goes back to the queue, and fails after ``max_attempts``.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any

from opscenter.db import Database
from opscenter.sandbox import queue
from opscenter.sandbox.analyzer import Analyzer

log = logging.getLogger("vcr-opscenter.sandbox")


def run_once(db: Database, analyzer: Analyzer, *, stale_after: float = 300.0, max_attempts: int = 3) -> dict[str, Any] | None:
    """Analyse one queued file; returns {"sha256", "verdict", "score", "seconds"} or None when the queue is empty."""
    job = queue.claim(db, stale_after=stale_after, max_attempts=max_attempts)
    if job is None:
        return None
    started = time.monotonic()
    meta = {k: job[k] for k in ("sha256", "size", "magic", "filename")}
    try:
        analysis = analyzer.analyze(job["data"], meta)
    except Exception as exc:  # hostile input must not kill the worker
        log.exception("sandbox: analyzer %s failed on %s", getattr(analyzer, "name", "?"), job["sha256"])
        queue.fail(db, job, f"{type(exc).__name__}: {exc}", max_attempts=max_attempts)
        return {"sha256": job["sha256"], "verdict": None, "score": None, "seconds": time.monotonic() - started}
    queue.complete(db, job, analysis)
    log.info("sandbox: %s (%s, %d bytes) is %s, score %d: %s", job["sha256"], job["filename"] or "-", job["size"],
             analysis.verdict, analysis.score, "; ".join(analysis.reasons[:5]) or "no findings")
    return {"sha256": job["sha256"], "verdict": analysis.verdict, "score": analysis.score,
            "seconds": time.monotonic() - started}


class SandboxWorker(threading.Thread):
    def __init__(self, db: Database, analyzer: Analyzer, *, idle_wait: float = 0.5, stale_after: float = 300.0,
                 max_attempts: int = 3, name: str = "sandbox-worker") -> None:
        super().__init__(name=name, daemon=True)
        self.db, self.analyzer = db, analyzer
        self.idle_wait, self.stale_after, self.max_attempts = idle_wait, stale_after, max_attempts
        self.stopping = threading.Event()
        self.analysed = 0

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                done = run_once(self.db, self.analyzer, stale_after=self.stale_after, max_attempts=self.max_attempts)
            except Exception as exc:  # a database hiccup: wait and go on
                log.error("sandbox worker: %s", exc)
                done = None
            if done is None:
                self.stopping.wait(self.idle_wait)
            else:
                self.analysed += 1

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=10)
