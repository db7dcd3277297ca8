"""The analysis queue in the database (tables sandbox_files, sandbox_submissions, sandbox_overrides)
and the verdicts by SHA-256 every box shares.

A file is queued once, whichever box sends it first; a worker claims it with a conditional update
(safe with several center processes, on SQLite and PostgreSQL), analyses it and stores the verdict,
then drops the bytes. A claim older than ``stale_after`` seconds (a worker that died) is taken again;
after ``max_attempts`` the file is ``failed`` (no verdict: the boxes keep treating it as unknown).
The operator's override wins over the analyzer's verdict.
"""
from __future__ import annotations

import datetime as dt
import logging
from typing import Any, Iterable

from sqlalchemy import and_, func, or_, select, update

from opscenter.db import Database, iso, sandbox_files, sandbox_overrides, sandbox_submissions, utcnow
from opscenter.sandbox.analyzer import VERDICTS, Analysis

log = logging.getLogger("vcr-opscenter.sandbox")

FINAL = VERDICTS  # malicious | suspicious | clean
STATUSES = ("queued", "running", "done", "failed")


def _effective(r: Any) -> str:
    """What the boxes are told: the override, else the analyzer's verdict, else pending/unknown."""
    if r.override:
        return str(r.override)
    if r.status == "done" and r.verdict:
        return str(r.verdict)
    if r.status in ("queued", "running"):
        return "pending"
    return "unknown"


def verdicts(db: Database, hashes: Iterable[str]) -> dict[str, dict[str, Any]]:
    """The verdict of each hash: {"verdict", "score", "reasons", "updated_at"}; "unknown" when never seen."""
    wanted = sorted(set(hashes))
    out = {h: {"verdict": "unknown", "score": None, "reasons": [], "updated_at": None} for h in wanted}
    if not wanted:
        return out
    cols = (sandbox_files.c.sha256, sandbox_files.c.status, sandbox_files.c.verdict, sandbox_files.c.score,
            sandbox_files.c.reasons, sandbox_files.c.override, sandbox_files.c.override_note,
            sandbox_files.c.updated_at)
    with db.read() as conn:
        for r in conn.execute(select(*cols).where(sandbox_files.c.sha256.in_(wanted))):
            reasons = list(r.reasons or [])
            if r.override:
                reasons = [f"operator override: {r.override}" + (f" ({r.override_note})" if r.override_note else "")
                           ] + reasons
            out[r.sha256] = {"verdict": _effective(r), "score": r.score, "reasons": reasons[:20],
                             "updated_at": iso(r.updated_at)}
    return out


def changed_since(db: Database, since: dt.datetime, *, limit: int = 1000, conn: Any = None) -> dict[str, str]:
    """{sha256: verdict} of the files whose verdict (the analyzer's or the operator's) changed since ``since``:
    sent with each check-in, so a box replaces what it cached (a file found malicious at one customer is
    blocked at all of them within one check-in). Newest first, at most ``limit``."""
    f = sandbox_files.c
    with db.read(conn) as c:
        rows = c.execute(select(f.sha256, f.status, f.verdict, f.override).where(f.updated_at >= since)
                         .order_by(f.updated_at.desc()).limit(limit)).all()
    return {r.sha256: v for r in rows if (v := _effective(r)) in FINAL}


def submissions_today(db: Database, device_id: str, now: dt.datetime, conn: Any = None) -> int:
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    with db.read(conn) as c:
        return int(c.execute(select(func.count()).select_from(sandbox_submissions).where(
            and_(sandbox_submissions.c.device_id == device_id, sandbox_submissions.c.at >= day))).scalar() or 0)


def submit(db: Database, device_id: str, sha256: str, data: bytes, *, filename: str, magic: str, lan_host: str,
           now: dt.datetime | None = None, conn: Any = None) -> bool:
    """Record a box's submission; queue the file unless it is already known. True when newly queued."""
    now = now or utcnow()
    with db.write(conn) as c:
        c.execute(sandbox_submissions.insert().values(sha256=sha256, device_id=device_id, filename=filename[:255],
                                                      lan_host=lan_host[:64], at=now))
        ins = db.insert(sandbox_files).values(
            sha256=sha256, size=len(data), magic=magic[:128], filename=filename[:255], data=data, status="queued",
            attempts=0, submitted_at=now, submitted_by=device_id, updated_at=now,
        ).on_conflict_do_nothing(index_elements=["sha256"]).returning(sandbox_files.c.sha256)
        queued = c.execute(ins).first() is not None  # RETURNING: rowcount is not reliable on every driver
        if not queued:  # known: a failed analysis is tried again with these bytes
            c.execute(update(sandbox_files).where(and_(sandbox_files.c.sha256 == sha256,
                                                       sandbox_files.c.status == "failed"))
                      .values(status="queued", data=data, attempts=0, error=None, submitted_at=now, updated_at=now))
    return queued


def claim(db: Database, *, stale_after: float = 300.0, max_attempts: int = 3,
          now: dt.datetime | None = None) -> dict[str, Any] | None:
    """The oldest queued file (or one whose worker died), marked running by this caller; None when idle."""
    now = now or utcnow()
    stale = now - dt.timedelta(seconds=stale_after)
    f = sandbox_files.c
    for _ in range(5):  # another worker may win a row: try the next
        with db.read() as conn:
            row = conn.execute(
                select(f.sha256, f.status, f.claimed_at, f.attempts)
                .where(or_(f.status == "queued", and_(f.status == "running", f.claimed_at < stale)))
                .order_by(f.submitted_at).limit(1)).first()
        if row is None:
            return None
        with db.write() as conn:
            if row.attempts >= max_attempts:
                conn.execute(update(sandbox_files).where(and_(f.sha256 == row.sha256, f.status == row.status))
                             .values(status="failed", data=None, error="analysis did not finish "
                                     f"after {row.attempts} attempts", updated_at=now))
                continue
            cond = f.claimed_at == row.claimed_at if row.claimed_at is not None else f.claimed_at.is_(None)
            got = conn.execute(update(sandbox_files).where(and_(f.sha256 == row.sha256, f.status == row.status, cond))
                               .values(status="running", claimed_at=now, attempts=f.attempts + 1)).rowcount
            if got != 1:
                continue
            job = conn.execute(select(f.sha256, f.size, f.magic, f.filename, f.data, f.submitted_at)
                               .where(f.sha256 == row.sha256)).first()
        if job is None or job.data is None:
            continue
        return {"sha256": job.sha256, "size": job.size, "magic": job.magic, "filename": job.filename,
                "data": bytes(job.data), "submitted_at": job.submitted_at, "claimed_at": now}
    return None


def complete(db: Database, job: dict[str, Any], analysis: Analysis, now: dt.datetime | None = None) -> None:
    now = now or utcnow()
    latency = (now - job["submitted_at"]).total_seconds() * 1000
    with db.write() as conn:
        conn.execute(update(sandbox_files).where(and_(sandbox_files.c.sha256 == job["sha256"],
                                                      sandbox_files.c.claimed_at == job["claimed_at"]))
                     .values(status="done", verdict=analysis.verdict, score=int(analysis.score),
                             reasons=[str(r)[:300] for r in analysis.reasons][:50], analyzer=analysis.analyzer[:32],
                             error=None, analyzed_at=now, latency_ms=round(latency, 1), data=None, updated_at=now))


def fail(db: Database, job: dict[str, Any], error: str, *, max_attempts: int = 3, now: dt.datetime | None = None) -> None:
    """The analyzer raised: queued again until ``max_attempts``, then failed."""
    now = now or utcnow()
    f = sandbox_files.c
    with db.write() as conn:
        row = conn.execute(select(f.attempts).where(f.sha256 == job["sha256"])).first()
        final = row is None or row.attempts >= max_attempts
        values: dict[str, Any] = {"status": "failed", "data": None} if final else {"status": "queued"}
        conn.execute(update(sandbox_files).where(and_(f.sha256 == job["sha256"], f.claimed_at == job["claimed_at"]))
                     .values(error=error[:1000], updated_at=now, **values))


def override(db: Database, sha256: str, verdict: str | None, note: str, by: str) -> dict[str, Any]:
    """Set (or with None clear) the operator's verdict of a file; recorded in sandbox_overrides."""
    if verdict is not None and verdict not in FINAL:
        raise ValueError(f"verdict must be one of {', '.join(FINAL)}")
    now = utcnow()
    f = sandbox_files.c
    with db.write() as conn:
        row = conn.execute(select(f.sha256, f.status, f.verdict, f.override).where(f.sha256 == sha256)).first()
        if row is None:
            raise LookupError(sha256)
        before = _effective(row)
        conn.execute(update(sandbox_files).where(f.sha256 == sha256).values(
            override=verdict, override_by=by if verdict else None, override_at=now if verdict else None,
            override_note=note[:1000] if verdict else None, updated_at=now))
        conn.execute(sandbox_overrides.insert().values(sha256=sha256, before=before, after=verdict, note=note[:1000],
                                                       by=by, at=now))
    log.warning("sandbox verdict of %s overridden by %s: %s -> %s (%s)", sha256, by, before, verdict or "analyzer",
                note[:200])
    return {"sha256": sha256, "before": before, "after": verdict}


def listing(db: Database, *, status: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
    f = sandbox_files.c
    q = select(f.sha256, f.size, f.magic, f.filename, f.status, f.verdict, f.score, f.reasons, f.override,
               f.override_by, f.override_at, f.override_note, f.submitted_at, f.submitted_by, f.analyzed_at,
               f.latency_ms, f.error, f.attempts)
    if status in STATUSES:
        q = q.where(f.status == status)
    q = q.order_by(f.submitted_at.desc()).limit(limit)
    with db.read() as conn:
        rows = conn.execute(q).all()
        counts = dict(conn.execute(select(sandbox_submissions.c.sha256, func.count())
                                   .where(sandbox_submissions.c.sha256.in_([r.sha256 for r in rows]))
                                   .group_by(sandbox_submissions.c.sha256)).all()) if rows else {}
    return [{**r._asdict(), "effective": _effective(r), "reasons": list(r.reasons or []),
             "submissions": int(counts.get(r.sha256, 0))} for r in rows]


def detail(db: Database, sha256: str) -> dict[str, Any] | None:
    rows = [r for r in listing_one(db, sha256)]
    return rows[0] if rows else None


def listing_one(db: Database, sha256: str) -> list[dict[str, Any]]:
    f = sandbox_files.c
    with db.read() as conn:
        r = conn.execute(select(f.sha256, f.size, f.magic, f.filename, f.status, f.verdict, f.score, f.reasons,
                                f.override, f.override_by, f.override_at, f.override_note, f.submitted_at,
                                f.submitted_by, f.analyzed_at, f.latency_ms, f.error, f.attempts)
                         .where(f.sha256 == sha256)).first()
        if r is None:
            return []
        subs = [s._asdict() for s in conn.execute(
            select(sandbox_submissions.c.device_id, sandbox_submissions.c.filename, sandbox_submissions.c.lan_host,
                   sandbox_submissions.c.at).where(sandbox_submissions.c.sha256 == sha256)
            .order_by(sandbox_submissions.c.id.desc()).limit(50))]
        history = [h._asdict() for h in conn.execute(
            select(sandbox_overrides.c.before, sandbox_overrides.c.after, sandbox_overrides.c.note,
                   sandbox_overrides.c.by, sandbox_overrides.c.at).where(sandbox_overrides.c.sha256 == sha256)
            .order_by(sandbox_overrides.c.id.desc()))]
    return [{**r._asdict(), "effective": _effective(r), "reasons": list(r.reasons or []), "submissions_list": subs,
             "overrides": history}]
