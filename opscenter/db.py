"""Storage: the tables (SQLAlchemy Core), engines for SQLite (WAL) and PostgreSQL, and transaction helpers.

Times are stored as naive UTC datetimes. Writes on SQLite take the write lock up front
(``BEGIN IMMEDIATE``) so a read-then-write transaction never fails on a lock upgrade; reads stay
deferred and never block under WAL.
"""
from __future__ import annotations

import datetime as dt
import os
import threading
from contextlib import contextmanager, nullcontext
from typing import Any, Callable, Iterator

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    event,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import NullPool

metadata = MetaData()
# SQLAlchemy Table declarations below: alike in shape by nature (columns, keys), kept as declarations.

# BIGINT ids on PostgreSQL; INTEGER PRIMARY KEY (the rowid) on SQLite.
BigId = BigInteger().with_variant(Integer(), "sqlite")
Json = JSON().with_variant(postgresql.JSONB(), "postgresql")


# Columns several tables have (a Column belongs to one table: each call makes new ones).
def _id() -> Column:
    """The row's own id, assigned by the database."""
    return Column("id", BigId, primary_key=True, autoincrement=True)


def _contract() -> Column:
    """The contract the row belongs to."""
    return Column("contract_id", String(64), ForeignKey("contracts.contract_id"), nullable=False)


def _totp() -> tuple[Column, ...]:
    """An account's TOTP: the secret (base32, set once enrolment is verified), the secret shown during
    enrolment (not yet verified), the last accepted 30 s step (no replay)."""
    return (Column("totp_secret", String(64), nullable=True), Column("totp_pending", String(64), nullable=True),
            Column("totp_last_step", BigInteger, nullable=True))

contracts = Table(
    "contracts",
    metadata,
    Column("contract_id", String(64), primary_key=True),
    Column("term_days", Integer, nullable=False),
    Column("term_start", DateTime, nullable=True),  # set by the first activation (service start = install day)
    Column("term_end", DateTime, nullable=True),
    Column("device_id", String(40), nullable=True),  # the box the contract is bound to
    Column("created_at", DateTime, nullable=False),
)

activation_codes = Table(
    "activation_codes",
    metadata,
    Column("code_hash", String(64), primary_key=True),  # sha256 of the normalised code
    _contract(),
    Column("serial", String(128), nullable=True),  # bound to one box when set
    Column("kind", String(16), nullable=False),  # initial | replacement
    Column("created_at", DateTime, nullable=False),
    Column("expires_at", DateTime, nullable=True),
    Column("used_at", DateTime, nullable=True),
    Column("used_by", String(40), nullable=True),
)

devices = Table(
    "devices",
    metadata,
    Column("device_id", String(40), primary_key=True),
    _contract(),
    Column("serial", String(128), nullable=False),
    Column("hostname", String(255), nullable=False, default=""),
    Column("token_hash", String(64), nullable=True, unique=True),  # sha256 of the bearer token
    Column("activated_at", DateTime, nullable=False),
    Column("revoked_at", DateTime, nullable=True),
    Column("heartbeat_interval", Float, nullable=False),
    Column("last_checkin_at", DateTime, nullable=True),
    Column("last_ip", String(64), nullable=True),
    Column("agent_version", String(64), nullable=True),
    Column("config_revision", Integer, nullable=True),
    Column("status", String(16), nullable=False),  # online | offline | revoked (as last recorded)
    Column("status_changed_at", DateTime, nullable=False),
    Column("checkins", BigInteger, nullable=False, default=0),
    Index("ix_devices_contract", "contract_id"),
    Index("ix_devices_serial", "serial"),
)

# The latest check-in of each device, whole.
health = Table(
    "health",
    metadata,
    Column("device_id", String(40), ForeignKey("devices.device_id"), primary_key=True),
    Column("received_at", DateTime, nullable=False),
    Column("body", Json, nullable=False),
)

# A bounded history of check-ins (``Settings.checkin_history`` per device): the evidence the box was up.
checkins = Table(
    "checkins",
    metadata,
    _id(),
    Column("device_id", String(40), nullable=False),
    Column("received_at", DateTime, nullable=False),
    Column("sent_at", String(40), nullable=True),
    Column("cpu_percent", Float, nullable=True),
    Column("memory_percent", Float, nullable=True),
    Column("disk_percent", Float, nullable=True),
    Column("uptime_s", Float, nullable=True),
    Column("spool_pending", Integer, nullable=True),
    Column("portcheck_ok", Integer, nullable=True),  # 1 / 0 / NULL (not reported)
    Index("ix_checkins_device_id", "device_id", "id"),
)

alarms = Table(
    "alarms",
    metadata,
    _id(),
    Column("device_id", String(40), nullable=False),
    Column("event_id", String(64), nullable=False),
    Column("severity", SmallInteger, nullable=True),
    Column("event_type", String(32), nullable=True),
    Column("signature", Text, nullable=True),
    Column("received_at", DateTime, nullable=False),
    Column("event", Json, nullable=False),
    UniqueConstraint("device_id", "event_id", name="uq_alarms_device_event"),
    Index("ix_alarms_received", "received_at"),
    Index("ix_alarms_device_id", "device_id", "id"),
)

device_events = Table(
    "device_events",
    metadata,
    _id(),
    Column("device_id", String(40), nullable=False),
    Column("kind", String(32), nullable=False),  # activated, replaced, revoked, offline, online
    Column("at", DateTime, nullable=False),
    Column("detail", Json, nullable=False),
    Index("ix_device_events_device", "device_id", "id"),
)

tasks = Table(
    "tasks",
    metadata,
    Column("task_id", BigId, primary_key=True, autoincrement=True),
    Column("device_id", String(40), ForeignKey("devices.device_id"), nullable=False),
    Column("kind", String(64), nullable=False),
    Column("params", Json, nullable=False),
    Column("status", String(16), nullable=False),  # queued, delivered, then what the box reports
    Column("detail", Text, nullable=False, default=""),
    Column("created_at", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False),
    Index("ix_tasks_device_status", "device_id", "status"),
)

backups = Table(
    "backups",
    metadata,
    _id(),
    _contract(),
    Column("revision", Integer, nullable=False),
    Column("blob", LargeBinary, nullable=False),  # encrypted by the box; the center cannot read it
    Column("device_id", String(40), nullable=False),
    Column("created_at", DateTime, nullable=False),
    UniqueConstraint("contract_id", "revision", name="uq_backups_contract_revision"),
)

# Operator accounts of the operator listener (opscenter/operators.py): argon2id hashes only.
operators = Table(
    "operators",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("password_hash", String(256), nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("last_login_at", DateTime, nullable=True),
)

# Token buckets shared by every worker process (opscenter/ratelimit.py): key -> tokens at a time.
rate_buckets = Table(
    "rate_buckets",
    metadata,
    Column("key", String(200), primary_key=True),
    Column("tokens", Float, nullable=False),
    Column("at", Float, nullable=False),  # time.time() of the last update
)

# Alarm storage per device and UTC day (the per-device quota, opscenter/alarms.py).
alarm_usage = Table(
    "alarm_usage",
    metadata,
    Column("device_id", String(40), primary_key=True),
    Column("day", String(10), primary_key=True),  # YYYY-MM-DD, UTC
    Column("events", BigInteger, nullable=False, default=0),
    Column("bytes", BigInteger, nullable=False, default=0),
    Column("refused_batches", BigInteger, nullable=False, default=0),
    Column("refused_events", BigInteger, nullable=False, default=0),
)

# Desired versions: scope "*" for every box, or a device id (wins key by key).
desired = Table(
    "desired",
    metadata,
    Column("scope", String(40), primary_key=True),
    Column("body", Json, nullable=False),
    Column("updated_at", DateTime, nullable=False),
)

# --- Monthly reports and the operating record (opscenter/report/) ---------------------------------
# Additive: ``create_all`` creates them beside the other tables on existing databases.

# The check-ins of each device as runs ("spans"): a check-in that comes within ``offline_after_missed``
# x the heartbeat interval of the previous one (and reports the same protection state) extends the device's
# latest span, anything else starts a new one. Exact for the outage rule of the operating record at
# a fraction of a row per check-in; kept as long as the reports need them (never pruned here).
checkin_spans = Table(
    "checkin_spans",
    metadata,
    _id(),
    Column("device_id", String(40), nullable=False),
    Column("first_at", DateTime, nullable=False),
    Column("last_at", DateTime, nullable=False),
    Column("checkins", BigInteger, nullable=False),
    Column("interval", Float, nullable=False),  # the interval told to the box at the last check-in
    Column("protecting", SmallInteger, nullable=False),  # 1: inspecting traffic, 0: the box reported it was not
    Index("ix_checkin_spans_device", "device_id", "id"),
    Index("ix_checkin_spans_device_last", "device_id", "last_at"),
)

# Per device and month (Japan time, YYYY-MM): check-in counts, the port checks seen, the engines that
# reported, and heartbeat counters summed over the month (e.g. ``mail.uninspected``).
checkin_months = Table(
    "checkin_months",
    metadata,
    Column("device_id", String(40), primary_key=True),
    Column("month", String(7), primary_key=True),
    Column("checkins", BigInteger, nullable=False, default=0),
    Column("portcheck_ok", BigInteger, nullable=False, default=0),  # check-ins whose port check passed
    Column("portcheck_failed", BigInteger, nullable=False, default=0),
    Column("engines", Json, nullable=False),  # engine name -> 1 for each engine a check-in named
    Column("counters", Json, nullable=False),  # name -> {"total": summed deltas, "last": last value seen}
    Column("first_at", DateTime, nullable=False),
    Column("last_at", DateTime, nullable=False),
)

# Generated monthly reports: one per contract and month (the unique key makes the schedule idempotent).
reports = Table(
    "reports",
    metadata,
    _id(),
    Column("contract_id", String(64), nullable=False),
    Column("month", String(7), nullable=False),  # YYYY-MM, Japan time
    Column("status", String(16), nullable=False),  # running | done | failed
    Column("attempts", Integer, nullable=False, default=1),
    Column("claimed_at", DateTime, nullable=False),
    Column("generated_at", DateTime, nullable=True),
    Column("key_id", String(32), nullable=True),
    Column("record_sha256", String(64), nullable=True),
    Column("pdf", LargeBinary, nullable=True),
    Column("html", LargeBinary, nullable=True),  # UTF-8
    Column("record", LargeBinary, nullable=True),  # the signed operating record (canonical JSON)
    Column("summary", Json, nullable=True),  # headline figures for lists (availability, threats)
    Column("error", Text, nullable=True),
    UniqueConstraint("contract_id", "month", name="uq_reports_contract_month"),
    Index("ix_reports_month", "month"),
)


def utcnow() -> dt.datetime:
    """Now, naive UTC (what the tables store)."""
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def iso(t: dt.datetime | None) -> str | None:
    """RFC 3339 UTC, seconds precision: ``2026-11-25T22:00:00Z``."""
    if t is None:
        return None
    if t.tzinfo is not None:
        t = t.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


# Per-contract secret for the boxes' encrypted config backups (issue 6): every box activated for the
# contract (a replacement box too) receives it, so it can decrypt the contract's backups. Created by
# ``create_all`` beside the other tables (additive: existing databases just gain the table).
contract_secrets = Table(
    "contract_secrets",
    metadata,
    Column("contract_id", String(64), ForeignKey("contracts.contract_id"), primary_key=True),
    Column("backup_secret", String(64), nullable=False),
    Column("created_at", DateTime, nullable=False),
)



# --- Control panel (customers) and console (operators): opscenter/panel/ -----------------------------
# Additive: ``create_all`` creates them beside the other tables on existing databases.

# Customer administrators: each bound to one contract; argon2id password hashes; optional TOTP.
customer_accounts = Table(
    "customer_accounts",
    metadata,
    _id(),
    Column("name", String(128), nullable=False, unique=True),  # login name (often a mail address)
    _contract(),
    Column("display_name", String(128), nullable=False, default=""),
    Column("password_hash", String(256), nullable=False),
    *_totp(),
    Column("created_at", DateTime, nullable=False),
    Column("created_by", String(64), nullable=False, default=""),
    Column("last_login_at", DateTime, nullable=True),
    Column("disabled_at", DateTime, nullable=True),
    Index("ix_customer_accounts_contract", "contract_id"),
)

# What an operator account may do (role) and its TOTP; an account without a row is role "operator".
operator_profiles = Table(
    "operator_profiles",
    metadata,
    Column("name", String(64), ForeignKey("operators.name", ondelete="CASCADE"), primary_key=True),
    Column("role", String(16), nullable=False),  # admin | operator
    *_totp(),
    Column("updated_at", DateTime, nullable=False),
)

# Login sessions of the panel and the console: the cookie holds a random id, the table its sha256.
panel_sessions = Table(
    "panel_sessions",
    metadata,
    Column("sid_hash", String(64), primary_key=True),
    Column("kind", String(16), nullable=False),  # customer | operator
    Column("subject", String(128), nullable=False),  # customer account id / operator name
    Column("contract_id", String(64), nullable=True),  # customers: the only contract they may see
    Column("stage", String(8), nullable=False),  # mfa (password checked, TOTP due) | ok
    Column("csrf", String(64), nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("seen_at", DateTime, nullable=False),
    Column("expires_at", DateTime, nullable=False),
    Column("ip", String(64), nullable=True),
    Index("ix_panel_sessions_subject", "kind", "subject"),
)

# The operators' triage of alarms: current state per alarm (none: "new") and the history of notes.
alarm_triage = Table(
    "alarm_triage",
    metadata,
    Column("alarm_id", BigId, ForeignKey("alarms.id", ondelete="CASCADE"), primary_key=True),
    Column("status", String(8), nullable=False),  # new | ack | closed
    Column("note", Text, nullable=False, default=""),
    Column("updated_by", String(64), nullable=False),
    Column("updated_at", DateTime, nullable=False),
)

alarm_notes = Table(
    "alarm_notes",
    metadata,
    _id(),
    Column("alarm_id", BigId, ForeignKey("alarms.id", ondelete="CASCADE"), nullable=False),
    Column("status", String(8), nullable=False),
    Column("note", Text, nullable=False, default=""),
    Column("by", String(64), nullable=False),
    Column("at", DateTime, nullable=False),
    Index("ix_alarm_notes_alarm", "alarm_id", "id"),
)

# Customers' change requests (about 4 a month, due within 5 business days) and the operators' handling.
change_requests = Table(
    "change_requests",
    metadata,
    _id(),
    _contract(),
    Column("device_id", String(40), nullable=True),  # the contract's box when filed
    Column("category", String(32), nullable=False),
    Column("summary", String(200), nullable=False),
    Column("detail", Text, nullable=False, default=""),
    Column("status", String(16), nullable=False),  # received | in_progress | applying | done | rejected | cancelled
    Column("created_by", String(128), nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("month", String(7), nullable=False),  # YYYY-MM (Japan time) it counts against
    Column("due_date", Date, nullable=False),
    Column("operator_note", Text, nullable=False, default=""),
    Column("task_id", BigInteger, nullable=True),  # the config task that applied it
    Column("revision", Integer, nullable=True),
    Column("updated_by", String(128), nullable=False, default=""),
    Column("updated_at", DateTime, nullable=False),
    Index("ix_change_requests_contract", "contract_id", "id"),
)

# Customers' replacement requests (a failed box): recorded, handled by the operators.
replacement_requests = Table(
    "replacement_requests",
    metadata,
    _id(),
    _contract(),
    Column("device_id", String(40), nullable=True),
    Column("symptom", Text, nullable=False),
    Column("contact", String(200), nullable=False, default=""),
    Column("status", String(16), nullable=False),  # received | code_issued | shipped | closed | cancelled
    Column("created_by", String(128), nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("operator_note", Text, nullable=False, default=""),
    Column("code_issued_at", DateTime, nullable=True),
    Column("code_issued_by", String(64), nullable=True),
    Column("new_serial", String(128), nullable=True),
    Column("updated_by", String(128), nullable=False, default=""),
    Column("updated_at", DateTime, nullable=False),
    Index("ix_replacement_requests_contract", "contract_id", "id"),
)

# The customer's side (opscenter/sheets.py, confirm.py, notify.py). Additive: ``create_all`` adds them.

# Settings sheets (設定シート) the operator enters before shipping, one per box serial.
settings_sheets = Table(
    "settings_sheets",
    metadata,
    Column("serial", String(64), primary_key=True),
    _contract(),
    Column("sheet", Json, nullable=False),  # checked and normalised (filters/settingsheet.py)
    Column("code_hash", String(64), nullable=True),  # the activation code issued with it: the provisioning credential
    Column("code_issued_at", DateTime, nullable=True),
    Column("created_at", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False),
    Column("updated_by", String(64), nullable=False, default=""),
    Column("fetched_at", DateTime, nullable=True),  # last fetch by the box (POST /api/v1/provision)
    Column("fetches", Integer, nullable=False, default=0),
    Index("ix_settings_sheets_contract", "contract_id"),
)

# Remote installation confirmation (設置確認), one row per device, re-evaluated on each check-in until confirmed.
installation_confirmations = Table(
    "installation_confirmations",
    metadata,
    Column("device_id", String(40), ForeignKey("devices.device_id"), primary_key=True),
    Column("contract_id", String(64), nullable=False),
    Column("serial", String(128), nullable=False),
    Column("status", String(16), nullable=False),  # pending | confirmed
    Column("criteria", Json, nullable=False),  # name -> {"ok", "since", "detail"}
    Column("last_counters", Json, nullable=True),  # lan/wan counters of the previous check-in
    Column("first_checkin_at", DateTime, nullable=True),
    Column("evaluated_at", DateTime, nullable=False),
    Column("confirmed_at", DateTime, nullable=True),
    Column("checkins_seen", Integer, nullable=False, default=0),
)

# Mail notification preferences per contract (defaults apply without a row).
notify_prefs = Table(
    "notify_prefs",
    metadata,
    Column("contract_id", String(64), primary_key=True),
    Column("enabled", Integer, nullable=False, default=1),
    Column("kinds", Json, nullable=False),  # subset of severe, offline, online
    Column("window_s", Integer, nullable=False),  # digest window of severe alarms
    Column("offline_after_s", Integer, nullable=False),  # a box offline this long is mailed
    Column("recipients", Json, nullable=False),  # [] = the contacts of the contract's settings sheets
    Column("updated_at", DateTime, nullable=False),
)

# Mails: one row per grouped notification. A severe-alarm digest is "open" (open_key = "open", unique per
# contract and kind) while its window runs; alarms arriving meanwhile are summed into it.
notifications = Table(
    "notifications",
    metadata,
    _id(),
    Column("contract_id", String(64), nullable=False),
    Column("kind", String(16), nullable=False),  # severe | offline | online
    Column("open_key", String(8), nullable=True),  # "open" while collecting, NULL once claimed
    Column("status", String(16), nullable=False),  # open | retry | sending | sent | failed | skipped
    Column("opened_at", DateTime, nullable=False),
    Column("due_at", DateTime, nullable=False),
    Column("count", Integer, nullable=False, default=0),
    Column("summary", Json, nullable=False),
    Column("recipients", Json, nullable=True),
    Column("subject", Text, nullable=True),
    Column("attempts", Integer, nullable=False, default=0),
    Column("error", Text, nullable=True),
    Column("claimed_at", DateTime, nullable=True),
    Column("sent_at", DateTime, nullable=True),
    UniqueConstraint("contract_id", "kind", "open_key", name="uq_notifications_open"),
    Index("ix_notifications_status_due", "status", "due_at"),
)

# Which offline period of a device was mailed (offline) and answered (back online): one mail each.
notify_device_state = Table(
    "notify_device_state",
    metadata,
    Column("device_id", String(40), primary_key=True),
    Column("offline_since", DateTime, nullable=True),  # status_changed_at of the offline period mailed
    Column("online_sent_for", DateTime, nullable=True),  # the offline period whose "back online" was mailed
)

# The sandbox (opscenter/sandbox/): one row per file (by SHA-256, shared by every box), the queue being the
# rows with status queued/running; the file's bytes are kept until it is analysed.
sandbox_files = Table(
    "sandbox_files",
    metadata,
    Column("sha256", String(64), primary_key=True),
    Column("size", BigInteger, nullable=False),
    Column("magic", String(128), nullable=False, default=""),
    Column("filename", String(255), nullable=False, default=""),
    Column("data", LargeBinary, nullable=True),  # dropped once analysed
    Column("status", String(8), nullable=False),  # queued | running | done | failed
    Column("attempts", Integer, nullable=False, default=0),
    Column("submitted_at", DateTime, nullable=False),
    Column("submitted_by", String(40), nullable=False),  # the first box that sent it
    Column("claimed_at", DateTime, nullable=True),
    Column("verdict", String(12), nullable=True),  # malicious | suspicious | clean (the analyzer's)
    Column("score", Integer, nullable=True),
    Column("reasons", Json, nullable=True),
    Column("analyzer", String(32), nullable=True),
    Column("error", Text, nullable=True),
    Column("analyzed_at", DateTime, nullable=True),
    Column("latency_ms", Float, nullable=True),  # submitted to analysed
    Column("override", String(12), nullable=True),  # the operator's verdict, wins over the analyzer's
    Column("override_by", String(64), nullable=True),
    Column("override_at", DateTime, nullable=True),
    Column("override_note", Text, nullable=True),
    Column("updated_at", DateTime, nullable=False),  # verdict or override changed
    Index("ix_sandbox_files_queue", "status", "submitted_at"),
    Index("ix_sandbox_files_updated", "updated_at"),
)

# Each submission by a box (the per-device daily quota counts these) and which LAN host got the file.
sandbox_submissions = Table(
    "sandbox_submissions",
    metadata,
    _id(),
    Column("sha256", String(64), nullable=False),
    Column("device_id", String(40), nullable=False),
    Column("filename", String(255), nullable=False, default=""),
    Column("lan_host", String(64), nullable=False, default=""),
    Column("at", DateTime, nullable=False),
    Index("ix_sandbox_submissions_device", "device_id", "at"),
    Index("ix_sandbox_submissions_sha", "sha256"),
)

# Anti-spam (opscenter/antispam.py): digests of clear spam the boxes reported (docs/mail.md, "What a box
# reports"); a digest is listed (sent to every box) once reported by antispam_digest_min_devices boxes.
# Additive: ``create_all`` adds them.
antispam_digests = Table(
    "antispam_digests",
    metadata,
    Column("digest", String(64), primary_key=True),
    Column("reports", Integer, nullable=False, default=0),
    Column("devices", Integer, nullable=False, default=0),
    Column("listed", Boolean, nullable=False, default=False),
    Column("first_at", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False),  # last report; when listed, the listing time
    Index("ix_antispam_digests_listed", "listed", "updated_at"),
)

antispam_reporters = Table(
    "antispam_reporters",
    metadata,
    Column("digest", String(64), primary_key=True),
    Column("device_id", String(40), primary_key=True),
)

# The operators' verdict overrides (audit): who changed which file's verdict from what to what, and why.
sandbox_overrides = Table(
    "sandbox_overrides",
    metadata,
    _id(),
    Column("sha256", String(64), nullable=False),
    Column("before", String(12), nullable=True),
    Column("after", String(12), nullable=True),  # NULL: override removed (the analyzer's verdict again)
    Column("note", Text, nullable=False, default=""),
    Column("by", String(64), nullable=False),
    Column("at", DateTime, nullable=False),
    Index("ix_sandbox_overrides_sha", "sha256", "id"),
)


class Database:
    """An engine plus the dialect-specific pieces (upsert / insert-or-ignore) and transaction helpers."""

    def __init__(self, url: str, *, pool_size: int = 10, max_overflow: int = 20, busy_timeout_ms: int = 15000,
                 echo: bool = False) -> None:
        self.url = url
        self.engine = make_engine(url, pool_size=pool_size, max_overflow=max_overflow,
                                  busy_timeout_ms=busy_timeout_ms, echo=echo)
        self.dialect = self.engine.dialect.name
        # SQLite has one writer at a time. Writers of this process queue on a mutex instead of
        # polling the file lock (SQLite's busy handler sleeps up to 100 ms between tries); other
        # processes still wait through busy_timeout.
        self._write_lock = threading.Lock() if self.dialect == "sqlite" else None
        self._stmts: dict[str, Any] = {}

    def stmt(self, key: str, build: Callable[["Database"], Any]) -> Any:
        """A statement built once per database (hot paths: building Core statements costs more than
        running them)."""
        s = self._stmts.get(key)
        if s is None:
            s = self._stmts[key] = build(self)
        return s

    @classmethod
    def from_settings(cls, settings: Any) -> "Database":
        return cls(settings.db, pool_size=settings.db_pool_size, max_overflow=settings.db_max_overflow,
                   busy_timeout_ms=settings.sqlite_busy_timeout_ms)

    def create_tables(self) -> None:
        metadata.create_all(self.engine)

    def insert(self, table: Table) -> Any:
        """A dialect insert with ``on_conflict_do_nothing`` / ``on_conflict_do_update``."""
        if self.dialect == "postgresql":
            return postgresql.insert(table)
        if self.dialect == "sqlite":
            return sqlite.insert(table)
        raise NotImplementedError(f"unsupported database dialect {self.dialect}")

    @contextmanager
    def write(self, conn: Connection | None = None) -> Iterator[Connection]:
        """A write transaction (``BEGIN IMMEDIATE`` on SQLite), committed on success; with ``conn``, that
        caller's transaction instead (a request doing several things in one transaction)."""
        if conn is not None:
            yield conn
            return
        with self._write_lock or nullcontext():
            with self.engine.connect() as conn:
                conn.execution_options(vcr_write=True)
                with conn.begin():
                    yield conn

    @contextmanager
    def read(self, conn: Connection | None = None) -> Iterator[Connection]:
        if conn is not None:
            yield conn
            return
        with self.engine.connect() as conn:
            with conn.begin():
                yield conn

    def dispose(self) -> None:
        self.engine.dispose()


def make_engine(url: str, *, pool_size: int = 10, max_overflow: int = 20, busy_timeout_ms: int = 15000,
                echo: bool = False) -> Engine:
    if url.startswith("sqlite"):
        memory = url in ("sqlite://", "sqlite:///:memory:")
        if not memory:
            from sqlalchemy.engine import make_url

            path = make_url(url).database
            if path:
                os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        kwargs: dict[str, Any] = {"connect_args": {"check_same_thread": False, "timeout": busy_timeout_ms / 1000}}
        if memory:
            from sqlalchemy.pool import StaticPool

            kwargs["poolclass"] = StaticPool
        else:
            kwargs.update(pool_size=pool_size, max_overflow=max_overflow)
        engine = create_engine(url, echo=echo, **kwargs)
        _sqlite_events(engine, busy_timeout_ms, wal=not memory)
        return engine
    if url.startswith("postgresql"):
        if pool_size <= 0:
            return create_engine(url, echo=echo, poolclass=NullPool)
        # No pool_pre_ping: it costs a round trip per checkout; a dead connection fails one request
        # with 503 + Retry-After (the box retries) and the pool replaces it.
        return create_engine(url, echo=echo, pool_size=pool_size, max_overflow=max_overflow, pool_recycle=3600)
    raise ValueError(f"unsupported database URL {url!r} (sqlite:///PATH or postgresql+psycopg://...)")


def _sqlite_events(engine: Engine, busy_timeout_ms: int, *, wal: bool) -> None:
    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves (pysqlite's own handling is wrong)
        cur = dbapi_conn.cursor()
        if wal:
            cur.execute("PRAGMA journal_mode=WAL")
            # FULL: a commit is on disk before the center answers, so an acknowledged alarm survives a power cut.
            cur.execute("PRAGMA synchronous=FULL")
        cur.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("vcr_write") else "BEGIN")
