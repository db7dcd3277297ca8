"""Customer administrator accounts (one contract each) and the operators' roles and TOTP.

Passwords are argon2id hashes (argon2-cffi's defaults, as for operators: opscenter/operators.py). A
customer account sees its own contract and nothing else; it is made by an operator (``vcr-opscenter
customer add --contract C NAME`` or the console, admins only). Operator accounts stay in the
``operators`` table; ``operator_profiles`` adds the role (``admin`` or ``operator``, see ROLES) and
TOTP. An operator without a profile row has the role ``operator``.
"""
from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import Any

from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import and_, select, update

from opscenter.db import Database, contracts, customer_accounts, iso, operator_profiles, operators, utcnow
from opscenter.operators import HASHER, MAX_PASSWORD, check_password_length, dummy_hash

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}")

# What each operator role may do (checked on the server for every console request):
#   operator: see everything; triage alarms; handle change requests (status, notes, apply as a config
#             task); handle replacement requests (status, notes)
#   admin:    all of that, plus customer accounts (add, disable, reset password or TOTP) and issuing
#             replacement codes (which moves a contract to a new box)
ROLES = ("admin", "operator")
DEFAULT_ROLE = "operator"


class AccountError(ValueError):
    """Bad input for an account (message: Japanese / English)."""


def check_name(name: str) -> str:
    if not NAME_RE.fullmatch(name or ""):
        raise AccountError("ログイン名は英数字と . _ @ + - の 1-128 文字 / a login name is 1-128 characters: letters, "
                           "digits, . _ @ + - (starting with a letter or digit)")
    return name


def check_password(password: str) -> str:
    check_password_length(password, AccountError)
    if any(ord(c) < 32 or ord(c) == 127 for c in password):
        raise AccountError("パスワードに制御文字は使えません / the password may not contain control characters")
    return password


def hash_password(password: str) -> str:
    return HASHER.hash(check_password(password))


def verify_hash(stored: str | None, password: str) -> bool:
    """argon2 check; an unknown account (``stored`` None) costs the same as a wrong password."""
    if len(password) > MAX_PASSWORD:
        return False
    try:
        return HASHER.verify(stored or dummy_hash(), password) and stored is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def generate_password() -> str:
    """An initial password to hand over (about 100 bits, easy to type: no 0/O, 1/l)."""
    alphabet = "abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
    raw = "".join(secrets.choice(alphabet) for _ in range(16))
    return "-".join(raw[i:i + 4] for i in range(0, 16, 4))


# customers -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Customer:
    id: int
    name: str
    contract_id: str
    display_name: str
    totp: bool
    disabled: bool


def _customer(row: Any) -> Customer:
    return Customer(int(row["id"]), row["name"], row["contract_id"], row["display_name"] or "",
                    row["totp_secret"] is not None, row["disabled_at"] is not None)


def add_customer(db: Database, contract_id: str, name: str, password: str, *, display_name: str = "",
                 created_by: str = "") -> Customer:
    check_name(name)
    digest = hash_password(password)
    if len(display_name) > 128 or any(ord(c) < 32 for c in display_name):
        raise AccountError("表示名は 128 文字までの文字列 / the display name is at most 128 plain characters")
    with db.write() as conn:
        if conn.execute(select(contracts.c.contract_id).where(contracts.c.contract_id == contract_id)).first() is None:
            raise AccountError(f"契約 {contract_id} はありません / no contract {contract_id} "
                               "(vcr-opscenter issue-code --contract C creates it)")
        if conn.execute(select(customer_accounts.c.id).where(customer_accounts.c.name == name)).first() is not None:
            raise AccountError(f"ログイン名 {name} は使われています / login name {name} is taken")
        r = conn.execute(customer_accounts.insert().values(
            name=name, contract_id=contract_id, display_name=display_name, password_hash=digest,
            created_at=utcnow(), created_by=created_by))
        cid = int(r.inserted_primary_key[0])
        row = conn.execute(select(customer_accounts).where(customer_accounts.c.id == cid)).mappings().one()
    return _customer(row)


def get_customer(db: Database, account_id: int | str) -> Customer | None:
    try:
        account_id = int(account_id)
    except (TypeError, ValueError):
        return None
    with db.read() as conn:
        row = conn.execute(select(customer_accounts).where(customer_accounts.c.id == account_id)).mappings().first()
    return _customer(row) if row else None


def find_customer(db: Database, name: str) -> Customer | None:
    with db.read() as conn:
        row = conn.execute(select(customer_accounts).where(customer_accounts.c.name == name)).mappings().first()
    return _customer(row) if row else None


def verify_customer(db: Database, name: str, password: str) -> Customer | None:
    """The account if the password is right and the account enabled, else None (same cost either way)."""
    if len(name) > 128:
        verify_hash(None, password)
        return None
    with db.read() as conn:
        row = conn.execute(select(customer_accounts).where(customer_accounts.c.name == name)).mappings().first()
    if not verify_hash(row["password_hash"] if row else None, password) or row is None:
        return None
    if row["disabled_at"] is not None:
        return None
    with db.write() as conn:
        values: dict[str, Any] = {"last_login_at": utcnow()}
        if HASHER.check_needs_rehash(row["password_hash"]):
            values["password_hash"] = HASHER.hash(password)
        conn.execute(update(customer_accounts).where(customer_accounts.c.id == row["id"]).values(**values))
    return _customer(row)


def customer_password_ok(db: Database, account_id: int, password: str) -> bool:
    with db.read() as conn:
        stored = conn.execute(select(customer_accounts.c.password_hash)
                              .where(customer_accounts.c.id == account_id)).scalar()
    return verify_hash(stored, password)


def set_customer_password(db: Database, account_id: int, password: str) -> None:
    digest = hash_password(password)
    with db.write() as conn:
        conn.execute(update(customer_accounts).where(customer_accounts.c.id == account_id)
                     .values(password_hash=digest))


def set_customer_disabled(db: Database, account_id: int, disabled: bool) -> bool:
    with db.write() as conn:
        return bool(conn.execute(update(customer_accounts).where(customer_accounts.c.id == account_id)
                                 .values(disabled_at=utcnow() if disabled else None)).rowcount)


def list_customers(db: Database, contract_id: str | None = None) -> list[dict[str, Any]]:
    q = select(customer_accounts).order_by(customer_accounts.c.contract_id, customer_accounts.c.name)
    if contract_id:
        q = q.where(customer_accounts.c.contract_id == contract_id)
    with db.read() as conn:
        rows = conn.execute(q).mappings().all()
    return [{"id": r["id"], "name": r["name"], "contract_id": r["contract_id"], "display_name": r["display_name"],
             "totp": r["totp_secret"] is not None, "disabled": r["disabled_at"] is not None,
             "created_at": iso(r["created_at"]), "created_by": r["created_by"],
             "last_login_at": iso(r["last_login_at"])} for r in rows]


# operators --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Operator:
    name: str
    role: str
    totp: bool


def get_operator(db: Database, name: str) -> Operator | None:
    """The operator account with its role, or None when there is no such account."""
    q = (select(operators.c.name, operator_profiles.c.role, operator_profiles.c.totp_secret)
         .select_from(operators.outerjoin(operator_profiles, operator_profiles.c.name == operators.c.name))
         .where(operators.c.name == name))
    with db.read() as conn:
        row = conn.execute(q).first()
    if row is None:
        return None
    role = row[1] if row[1] in ROLES else DEFAULT_ROLE
    return Operator(row[0], role, row[2] is not None)


def _ensure_profile(conn: Any, db: Database, name: str) -> None:
    conn.execute(db.insert(operator_profiles).values(name=name, role=DEFAULT_ROLE, updated_at=utcnow())
                 .on_conflict_do_nothing(index_elements=[operator_profiles.c.name]))


def set_role(db: Database, name: str, role: str) -> None:
    if role not in ROLES:
        raise AccountError(f"役割は {' / '.join(ROLES)} のどれか / the role is one of {', '.join(ROLES)}")
    with db.write() as conn:
        if conn.execute(select(operators.c.name).where(operators.c.name == name)).first() is None:
            raise AccountError(f"オペレーター {name} はいません / no operator {name}")
        _ensure_profile(conn, db, name)
        conn.execute(update(operator_profiles).where(operator_profiles.c.name == name)
                     .values(role=role, updated_at=utcnow()))


def list_roles(db: Database) -> dict[str, str]:
    with db.read() as conn:
        rows = conn.execute(select(operators.c.name, operator_profiles.c.role).select_from(
            operators.outerjoin(operator_profiles, operator_profiles.c.name == operators.c.name))).all()
    return {r[0]: r[1] if r[1] in ROLES else DEFAULT_ROLE for r in rows}


# TOTP state, for either kind of account --------------------------------------------------------

def _totp_table(kind: str) -> tuple[Any, Any]:
    if kind == "customer":
        return customer_accounts, customer_accounts.c.id
    return operator_profiles, operator_profiles.c.name


def _key(kind: str, subject: str) -> Any:
    return int(subject) if kind == "customer" else subject


def totp_state(db: Database, kind: str, subject: str) -> dict[str, Any]:
    table, key = _totp_table(kind)
    with db.read() as conn:
        row = conn.execute(select(table.c.totp_secret, table.c.totp_pending, table.c.totp_last_step)
                           .where(key == _key(kind, subject))).first()
    if row is None:
        return {"secret": None, "pending": None, "last_step": None}
    return {"secret": row[0], "pending": row[1], "last_step": row[2]}


def set_totp_pending(db: Database, kind: str, subject: str, secret: str | None) -> None:
    table, key = _totp_table(kind)
    with db.write() as conn:
        if kind == "operator":
            _ensure_profile(conn, db, subject)
        conn.execute(update(table).where(key == _key(kind, subject)).values(totp_pending=secret))


def enable_totp(db: Database, kind: str, subject: str, secret: str, step: int) -> None:
    table, key = _totp_table(kind)
    with db.write() as conn:
        conn.execute(update(table).where(key == _key(kind, subject))
                     .values(totp_secret=secret, totp_pending=None, totp_last_step=step))


def disable_totp(db: Database, kind: str, subject: str) -> None:
    table, key = _totp_table(kind)
    with db.write() as conn:
        conn.execute(update(table).where(key == _key(kind, subject))
                     .values(totp_secret=None, totp_pending=None, totp_last_step=None))


def claim_totp_step(db: Database, kind: str, subject: str, step: int) -> bool:
    """Record ``step`` as used; False if it (or a later one) was used already: a code works once."""
    table, key = _totp_table(kind)
    with db.write() as conn:
        r = conn.execute(update(table).where(and_(
            key == _key(kind, subject),
            (table.c.totp_last_step.is_(None)) | (table.c.totp_last_step < step))).values(totp_last_step=step))
        return bool(r.rowcount)
