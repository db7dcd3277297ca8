"""The monthly job: on the 1st of each month (Japan time, from ``report_hour``) the reports of the month
before, for every contract in service then; stored (opscenter/report/store.py) so the control panel
lists them.

``run_due`` does one pass (also ``vcr-opscenter report --due``): each due contract is claimed, rendered
and stored, in ``report_workers`` processes. It is idempotent: a pass after a complete one finds
nothing to do, and a pass interrupted half-way (the center restarted) is finished by the next one.
``ReportScheduler`` is the background process ``vcr-opscenter serve`` starts: it wakes every
``POLL`` seconds, runs a pass when one is due, at a lower CPU priority than the API, and stops when
the server stops (or dies).
"""
from __future__ import annotations

import datetime as dt
import logging
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from opscenter.db import Database, utcnow
from opscenter.report.period import Month, to_jst

log = logging.getLogger("vcr-opscenter")

POLL = 600.0  # seconds between checks for due work
NICE = 10


def due_month(now: dt.datetime, hour: int) -> Month:
    """The month whose reports are due at ``now``: the previous month once the 1st reached ``hour`` (Japan
    time); before that, the month before it (last month's pass)."""
    local = to_jst(now)
    month = Month(local.year, local.month).previous()
    if local.day == 1 and local.hour < hour:
        month = month.previous()
    return month


@dataclass
class PassResult:
    month: str
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # claimed by another generator meanwhile
    failed: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


# -- worker side (one process of the pool, or the caller itself) ----------------------------------

_worker: dict[str, Any] = {}


def _init_worker(settings_json: str, nice: int) -> None:
    from opscenter.report.signing import SigningKey
    from opscenter.settings import Settings

    if nice:
        try:
            os.nice(nice)
        except OSError:
            pass
    settings = Settings.model_validate_json(settings_json)
    _worker["settings"] = settings
    _worker["db"] = Database(settings.db, pool_size=1, max_overflow=1, busy_timeout_ms=settings.sqlite_busy_timeout_ms)
    _worker["key"] = SigningKey.load(settings.report_key) if settings.report_key else None


def generate_one(contract_id: str, month: str, now_iso: str) -> tuple[str, str, str]:
    """Claim, render and store one report: (contract_id, "done" | "skipped" | "failed", error)."""
    from opscenter.report import store
    from opscenter.report.render import render_report

    db, settings, key = _worker["db"], _worker["settings"], _worker["key"]
    now = dt.datetime.strptime(now_iso, "%Y-%m-%dT%H:%M:%S")
    if not store.claim(db, contract_id, month, now):
        return contract_id, "skipped", ""
    try:
        ranges = _worker.setdefault("id_range", {})
        if month not in ranges:  # the month's alarm id range, looked up once per process
            from opscenter.report.figures import alarm_id_range

            ranges[month] = alarm_id_range(db, Month.parse(month))
        files = render_report(db, contract_id, month, key=key, settings=settings, now=now, id_range=ranges[month])
        store.save(db, contract_id, month, files, now=now)
    except Exception as exc:  # one bad contract must not stop the month's pass
        log.exception("report %s %s failed", contract_id, month)
        store.fail(db, contract_id, month, f"{type(exc).__name__}: {exc}")
        return contract_id, "failed", str(exc)
    return contract_id, "done", ""


# -- the pass ----------------------------------------------------------------------------------------

def run_due(settings: Any, *, month: Month | None = None, now: dt.datetime | None = None,
            workers: int | None = None, nice: int = 0) -> PassResult:
    """Generate and store every due report of ``month`` (default: the due month at ``now``)."""
    from opscenter.report import store

    if not settings.report_key:
        raise ValueError("no report signing key: set report_key (vcr-opscenter report-key)")
    now = now or utcnow()
    month = month or due_month(now, settings.report_hour)
    workers = workers or settings.report_workers
    started = time.monotonic()
    db = Database(settings.db, pool_size=1, max_overflow=1, busy_timeout_ms=settings.sqlite_busy_timeout_ms)
    db.create_tables()
    try:
        due = store.contracts_due(db, month)
    finally:
        db.dispose()
    out = PassResult(month=month.key)
    if not due:
        return out
    log.info("monthly reports for %s: %d contracts, %d process%s", month.key, len(due), workers,
             "es" if workers > 1 else "")
    stamp = now.strftime("%Y-%m-%dT%H:%M:%S")
    args = settings.model_dump_json()
    if workers <= 1:
        _init_worker(args, nice)
        try:
            results = [generate_one(c, month.key, stamp) for c in due]
        finally:
            _worker["db"].dispose()
    else:
        ctx = multiprocessing.get_context("spawn")
        pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker, initargs=(args, nice))
        try:
            results = list(pool.map(generate_one, due, [month.key] * len(due), [stamp] * len(due),
                                    chunksize=max(1, min(16, len(due) // (workers * 4) or 1))))
        finally:  # stopped half-way (SIGTERM): reports not started are left for the next pass
            pool.shutdown(wait=True, cancel_futures=True)
    for contract_id, status, error in results:
        if status == "done":
            out.done.append(contract_id)
        elif status == "skipped":
            out.skipped.append(contract_id)
        else:
            out.failed[contract_id] = error
    out.seconds = time.monotonic() - started
    log.info("monthly reports for %s: %d made, %d made elsewhere, %d failed in %.0f s", month.key, len(out.done),
             len(out.skipped), len(out.failed), out.seconds)
    return out


# -- the background process of `serve` ------------------------------------------------------------------

def _scheduler_main(settings_json: str, parent: int, poll: float) -> None:
    from opscenter.settings import Settings

    import signal
    import sys

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    settings = Settings.model_validate_json(settings_json)
    try:
        os.nice(NICE)
    except OSError:
        pass
    while os.getppid() == parent:
        try:
            run_due(settings, workers=settings.report_workers, nice=0)
        except Exception as exc:  # the next poll tries again
            log.error("monthly report pass failed: %s", exc)
        deadline = time.monotonic() + poll
        while time.monotonic() < deadline and os.getppid() == parent:
            time.sleep(min(5.0, poll))


class ReportScheduler:
    """The monthly job as a child process of the server (None from ``start`` when it is off)."""

    def __init__(self, settings: Any, poll: float = POLL) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.proc = ctx.Process(target=_scheduler_main, args=(settings.model_dump_json(), os.getpid(), poll),
                                name="vcr-opscenter-reports")

    @classmethod
    def start(cls, settings: Any, poll: float = POLL) -> "ReportScheduler | None":
        if not settings.report_schedule:
            log.info("monthly reports: schedule off (report_schedule: false)")
            return None
        if not settings.report_key:
            log.warning("monthly reports: no report_key configured, so no scheduled reports "
                        "(vcr-opscenter report-key --dir DIR, then report_key: DIR/report-signing.key)")
            return None
        s = cls(settings, poll)
        s.proc.start()
        log.info("monthly reports: scheduled on the 1st from %02d:00 JST (%d process%s)", settings.report_hour,
                 settings.report_workers, "es" if settings.report_workers > 1 else "")
        return s

    def stop(self) -> None:
        if self.proc.is_alive():
            self.proc.terminate()
        self.proc.join(timeout=10)
