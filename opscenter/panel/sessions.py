"""Login sessions of the control panel and the console, kept in the center's database.

The cookie carries a random id (32 bytes, ``secrets.token_urlsafe``); the table stores only its sha256,
so a copy of the database opens no session. Each session has a CSRF token (checked on every POST), an
idle timeout and an absolute lifetime (``panel_session_idle_minutes``, ``panel_session_hours``). A
session in stage ``mfa`` has passed the password but not yet the TOTP code and opens nothing but the
TOTP form (5 minutes). Logout deletes the row; a password change or a disabled account deletes every
session of that account. All workers see the same sessions (they are rows, like the rate limits).
"""
from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import and_, delete, select, update

from opscenter.db import Database, panel_sessions, utcnow

MFA_MINUTES = 5
TOUCH_EVERY = dt.timedelta(seconds=60)  # seen_at is written at most this often per session


def _hash(sid: str) -> str:
    return hashlib.sha256(sid.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Session:
    sid_hash: str
    kind: str  # customer | operator
    subject: str
    contract_id: str | None
    stage: str  # mfa | ok
    csrf: str
    created_at: dt.datetime
    expires_at: dt.datetime


class SessionStore:
    def __init__(self, db: Database, *, idle_minutes: int, max_hours: int) -> None:
        self.db = db
        self.idle = dt.timedelta(minutes=idle_minutes)
        self.max_age = dt.timedelta(hours=max_hours)

    def create(self, kind: str, subject: str, *, contract_id: str | None, stage: str, ip: str | None) -> str:
        """A new session; returns the cookie value (the only copy of the id)."""
        sid = secrets.token_urlsafe(32)
        now = utcnow()
        life = dt.timedelta(minutes=MFA_MINUTES) if stage == "mfa" else self.max_age
        with self.db.write() as conn:
            conn.execute(delete(panel_sessions).where(panel_sessions.c.expires_at < now))  # prune
            conn.execute(panel_sessions.insert().values(
                sid_hash=_hash(sid), kind=kind, subject=subject, contract_id=contract_id, stage=stage,
                csrf=secrets.token_urlsafe(32), created_at=now, seen_at=now, expires_at=now + life,
                ip=(ip or "")[:64] or None))
        return sid

    def get(self, sid: str | None, kind: str) -> Session | None:
        """The live session of that kind behind a cookie value, or None (expired ones are deleted)."""
        if not sid or len(sid) > 100:
            return None
        h = _hash(sid)
        now = utcnow()
        with self.db.read() as conn:
            row = conn.execute(select(panel_sessions).where(and_(
                panel_sessions.c.sid_hash == h, panel_sessions.c.kind == kind))).mappings().first()
        if row is None:
            return None
        if row["expires_at"] <= now or (row["stage"] == "ok" and now - row["seen_at"] > self.idle):
            self.delete(sid)
            return None
        if now - row["seen_at"] > TOUCH_EVERY:
            with self.db.write() as conn:
                conn.execute(update(panel_sessions).where(panel_sessions.c.sid_hash == h).values(seen_at=now))
        return Session(h, row["kind"], row["subject"], row["contract_id"], row["stage"], row["csrf"],
                       row["created_at"], row["expires_at"])

    def delete(self, sid: str | None) -> None:
        if sid:
            with self.db.write() as conn:
                conn.execute(delete(panel_sessions).where(panel_sessions.c.sid_hash == _hash(sid)))

    def end_all(self, kind: str, subject: str, *, keep: str | None = None) -> int:
        """End every session of an account (password changed, account disabled), except ``keep``."""
        cond = and_(panel_sessions.c.kind == kind, panel_sessions.c.subject == subject)
        if keep:
            cond = and_(cond, panel_sessions.c.sid_hash != _hash(keep))
        with self.db.write() as conn:
            return conn.execute(delete(panel_sessions).where(cond)).rowcount or 0
