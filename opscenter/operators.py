"""Operator accounts of the operator listener: names and argon2id password hashes in the center's database.

``vcr-opscenter operator add NAME`` creates one (the password comes from the prompt or stdin). The
operator listener (opscenter/operator_app.py) checks HTTP Basic credentials against these; failed
logins are rate-limited per client address and per account (shared buckets, so every worker counts
them), and a refused login costs no password hash. A successful check is remembered for a few
minutes (keyed by an HMAC of the credentials with a per-process key, and only while the stored hash is
unchanged), so the page's refresh does not cost an argon2 computation (64 MiB, ~0.1 s) every time.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import threading
import time
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import delete, select, update

from opscenter.db import Database, iso, operators, utcnow

log = logging.getLogger("vcr-opscenter")

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
MIN_PASSWORD = 12
MAX_PASSWORD = 256

# argon2id with argon2-cffi's defaults (RFC 9106's second recommended option: t=3, m=64 MiB, p=4).
HASHER = PasswordHasher()  # also the customer accounts' (opscenter/panel/accounts.py)
_DUMMY: list[str] = []  # a hash of nothing: unknown names cost as much as wrong passwords


def dummy_hash() -> str:
    """A hash to verify against when there is no account: a refusal costs as much as a wrong password."""
    if not _DUMMY:
        _DUMMY.append(HASHER.hash(secrets.token_urlsafe(16)))
    return _DUMMY[0]


class OperatorError(ValueError):
    """A bad name or password, or an account that exists / does not exist (message: Japanese / English)."""


def check_name(name: str) -> str:
    if not NAME_RE.fullmatch(name or ""):
        raise OperatorError("オペレーター名は英数字と . _ @ - の 1-64 文字 / an operator name is 1-64 characters: "
                            "letters, digits, . _ @ - (starting with a letter or digit)")
    return name


def check_password_length(password: str, error: type[ValueError]) -> None:
    """``error`` unless ``password`` has MIN_PASSWORD to MAX_PASSWORD characters (operators and customers)."""
    if len(password) < MIN_PASSWORD:
        raise error(f"パスワードは {MIN_PASSWORD} 文字以上 / the password needs at least {MIN_PASSWORD} "
                    "characters")
    if len(password) > MAX_PASSWORD:
        raise error(f"パスワードは {MAX_PASSWORD} 文字まで / the password is at most {MAX_PASSWORD} characters")


def check_password(password: str) -> str:
    check_password_length(password, OperatorError)
    if not all(" " <= ch <= "~" for ch in password):
        # HTTP Basic credentials are decoded as ASCII by the listener (fastapi.security.HTTPBasic)
        raise OperatorError("パスワードは ASCII の印字可能文字のみ / the password must be printable ASCII "
                            "(HTTP Basic credentials are ASCII)")
    return password


def add(db: Database, name: str, password: str) -> None:
    check_name(name)
    digest = HASHER.hash(check_password(password))
    with db.write() as conn:
        if conn.execute(select(operators.c.name).where(operators.c.name == name)).first() is not None:
            raise OperatorError(f"オペレーター {name} は登録済み / operator {name} exists "
                                "(vcr-opscenter operator passwd NAME changes the password)")
        conn.execute(operators.insert().values(name=name, password_hash=digest, created_at=utcnow()))


def set_password(db: Database, name: str, password: str) -> None:
    digest = HASHER.hash(check_password(password))
    with db.write() as conn:
        if conn.execute(update(operators).where(operators.c.name == name)
                        .values(password_hash=digest)).rowcount != 1:
            raise OperatorError(f"オペレーター {name} はいません / no operator {name}")


def remove(db: Database, name: str) -> bool:
    with db.write() as conn:
        return bool(conn.execute(delete(operators).where(operators.c.name == name)).rowcount)


def list_operators(db: Database) -> list[dict[str, Any]]:
    with db.read() as conn:
        rows = conn.execute(select(operators.c.name, operators.c.created_at, operators.c.last_login_at)
                            .order_by(operators.c.name)).all()
    return [{"name": r[0], "created_at": iso(r[1]), "last_login_at": iso(r[2])} for r in rows]


class Verifier:
    """Checks operator credentials against the database, remembering recent successes."""

    def __init__(self, db: Database, *, remember: float = 300.0, max_entries: int = 1000) -> None:
        self.db = db
        self.remember = remember
        self.max_entries = max_entries
        self._key = secrets.token_bytes(32)
        self._ok: dict[bytes, tuple[float, str]] = {}  # hmac(name, password) -> (until, hash it matched)
        self._lock = threading.Lock()

    def _stored(self, name: str) -> str | None:
        with self.db.read() as conn:
            return conn.execute(select(operators.c.password_hash).where(operators.c.name == name)).scalar()

    def verify(self, name: str, password: str) -> bool:
        if len(name) > 64 or len(password) > MAX_PASSWORD:
            return False
        stored = self._stored(name)
        mac = hmac.new(self._key, name.encode() + b"\0" + password.encode(), hashlib.sha256).digest()
        now = time.monotonic()
        with self._lock:
            hit = self._ok.get(mac)
        if hit is not None and stored is not None and hit[0] > now and hmac.compare_digest(hit[1], stored):
            return True
        if stored is None:
            try:
                HASHER.verify(dummy_hash(), password)
            except VerificationError:
                pass
            return False
        try:
            HASHER.verify(stored, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False
        if HASHER.check_needs_rehash(stored):
            stored = HASHER.hash(password)
            with self.db.write() as conn:
                conn.execute(update(operators).where(operators.c.name == name).values(password_hash=stored))
        with self.db.write() as conn:
            conn.execute(update(operators).where(operators.c.name == name).values(last_login_at=utcnow()))
        with self._lock:
            if len(self._ok) >= self.max_entries:
                self._ok = {k: v for k, v in self._ok.items() if v[0] > now}
                if len(self._ok) >= self.max_entries:
                    self._ok.clear()
            self._ok[mac] = (now + self.remember, stored)
        return True
