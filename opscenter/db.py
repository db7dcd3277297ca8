"""Storage: the tables (SQLAlchemy Core), engines for SQLite (WAL) and PostgreSQL, and transaction helpers.

Times are stored as naive UTC datetimes. Writes on SQLite take the write lock up front
(``BEGIN IMMEDIATE``) so a read-then-write transaction never fails on a lock upgrade; reads stay
deferred and never block under WAL.
"""
from __future__ import annotations

import datetime as dt
import os
import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
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

# BIGINT ids on PostgreSQL; INTEGER PRIMARY KEY (the rowid) on SQLite.
BigId = BigInteger().with_variant(Integer(), "sqlite")
Json = JSON().with_variant(postgresql.JSONB(), "postgresql")

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
    Column("contract_id", String(64), ForeignKey("contracts.contract_id"), nullable=False),
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
    Column("contract_id", String(64), ForeignKey("contracts.contract_id"), nullable=False),
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
    Column("id", BigId, primary_key=True, autoincrement=True),
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
    Column("id", BigId, primary_key=True, autoincrement=True),
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
    Column("id", BigId, primary_key=True, autoincrement=True),
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
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("contract_id", String(64), ForeignKey("contracts.contract_id"), nullable=False),
    Column("revision", Integer, nullable=False),
    Column("blob", LargeBinary, nullable=False),  # encrypted by the box; the center cannot read it
    Column("device_id", String(40), nullable=False),
    Column("created_at", DateTime, nullable=False),
    UniqueConstraint("contract_id", "revision", name="uq_backups_contract_revision"),
)

# Desired versions: scope "*" for every box, or a device id (wins key by key).
desired = Table(
    "desired",
    metadata,
    Column("scope", String(40), primary_key=True),
    Column("body", Json, nullable=False),
    Column("updated_at", DateTime, nullable=False),
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
        if self._write_lock is None:
            with self.engine.connect() as conn:
                conn.execution_options(vcr_write=True)
                with conn.begin():
                    yield conn
            return
        with self._write_lock:
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
