"""Operations center settings: a YAML file, command-line overrides, defaults (nothing starts from a bad file)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

DEFAULT_CONFIG = Path("/etc/vcr-opscenter/opscenter.yaml")
DEFAULT_DB = "sqlite:////var/lib/vcr-opscenter/opscenter.db"
CONFIG_ENV = "VCR_OPSCENTER_CONFIG"
DB_ENV = "VCR_OPSCENTER_DB"


class SettingsError(ValueError):
    """A bad settings file or value; the message names the file and the key."""


class Settings(BaseModel):
    """Everything the center needs; every field can be set in the YAML file under the same name."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    db: str = Field(DEFAULT_DB, description="SQLAlchemy URL: sqlite:///PATH or postgresql+psycopg://...")
    listen: str = Field("0.0.0.0:443", description="HOST:PORT ([V6]:PORT for IPv6); port 0 picks a free port")
    cert: str | None = Field(None, description="server certificate (PEM, with chain)")
    key: str | None = Field(None, description="server private key (PEM)")
    workers: int = Field(1, ge=1, le=64, description="uvicorn worker processes")
    ready_file: str | None = Field(None, description="written (JSON: listen, pid) once the socket accepts connections")
    log_level: str = "info"
    access_log: bool = False
    html_page: bool = Field(False, description="read-only device/alarm page at / (operator network only)")
    tuf_repo: str | None = Field(None, description="TUF repository folder (opscenter/tufrepo.py) served at /tuf/")
    categories: str | None = Field(None, description="UT1-layout category folder answering GET /api/v1/category")
    category_ttl: int = Field(3600, ge=1, description="seconds a box may cache a category answer")

    # Device link
    heartbeat_interval: float = Field(60.0, gt=0, description="seconds between check-ins told to the boxes")
    offline_after_missed: int = Field(3, ge=1, description="a box is offline after missing this many check-ins")
    sweep_interval: float | None = Field(None, gt=0, description="offline sweep period (default min(interval, 30 s))")
    checkin_history: int = Field(1000, ge=1, description="check-in history rows kept per device")
    default_term_days: int = Field(730, ge=1, description="license term of a new contract (minimum term: two years)")
    code_valid_days: int = Field(90, ge=1, description="activation codes expire after this many days")

    # Limits. A rate of 0 turns that limiter off.
    max_alarm_events: int = Field(1000, ge=1)
    max_alarm_bytes: int = Field(4 << 20, ge=1024)
    max_body_bytes: int = Field(1 << 20, ge=1024, description="other JSON bodies (check-in, task status)")
    max_backup_bytes: int = Field(4 << 20, ge=1024, description="decoded size of one config backup")
    backups_kept: int = Field(20, ge=1, description="backup revisions kept per contract")
    alarm_rate: float = Field(2.0, ge=0, description="alarm batches per second per device")
    alarm_burst: int = Field(10, ge=1)
    alarm_global_rate: float = Field(0.0, ge=0, description="alarm batches per second over all devices (per worker)")
    alarm_global_burst: int = Field(200, ge=1)
    checkin_rate: float | None = Field(None, ge=0, description="check-ins per second per device "
                                                                "(default: 4 per heartbeat interval)")
    checkin_burst: int = Field(5, ge=1)
    activate_rate: float = Field(1.0, ge=0, description="activation attempts per second per client address")
    activate_burst: int = Field(30, ge=1)
    alarm_retention_days: int = Field(400, ge=0, description="0 keeps alarms forever")

    # Database
    db_pool_size: int = Field(10, ge=1)
    db_max_overflow: int = Field(20, ge=0)
    sqlite_busy_timeout_ms: int = Field(15000, ge=0)
    threadpool: int = Field(40, ge=4, description="threads serving blocking requests per worker")

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        split_listen(v)
        return v

    @field_validator("db")
    @classmethod
    def _db(cls, v: str) -> str:
        if not v.startswith(("sqlite:", "postgresql")):
            raise ValueError("expected sqlite:///PATH or postgresql+psycopg://USER@HOST/DB")
        if v.startswith("postgresql://") or v.startswith("postgres://"):
            raise ValueError("use the psycopg driver: postgresql+psycopg://...")
        return v

    @property
    def effective_sweep_interval(self) -> float:
        return self.sweep_interval or min(self.heartbeat_interval, 30.0)

    @property
    def effective_checkin_rate(self) -> float:
        return self.checkin_rate if self.checkin_rate is not None else 4.0 / self.heartbeat_interval

    @property
    def offline_after(self) -> float:
        """Seconds without a check-in after which a box on the default interval counts as offline."""
        return self.offline_after_missed * self.heartbeat_interval


def split_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6]:PORT`` -> (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    p = int(port)
    if p > 65535:
        raise ValueError(f"port out of range in {text!r}")
    return host, p


def join_listen(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _explain(exc: ValidationError, path: str | None) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err["loc"]) or "(top level)"
        parts.append(f"{loc}: {err['msg']}")
    where = f"{path}: " if path else ""
    return where + "; ".join(parts)


def load_settings(path: str | os.PathLike[str] | None = None, **overrides: Any) -> Settings:
    """Settings from ``path`` (or $VCR_OPSCENTER_CONFIG, or /etc/vcr-opscenter/opscenter.yaml if present),
    then $VCR_OPSCENTER_DB, then the non-None ``overrides``."""
    data: dict[str, Any] = {}
    chosen = path or os.environ.get(CONFIG_ENV) or (DEFAULT_CONFIG if DEFAULT_CONFIG.exists() else None)
    if chosen:
        try:
            loaded = yaml.safe_load(Path(chosen).read_text(encoding="utf-8"))
        except OSError as exc:
            raise SettingsError(f"{chosen}: cannot read: {exc.strerror or exc}") from None
        except yaml.YAMLError as exc:
            raise SettingsError(f"{chosen}: not valid YAML: {exc}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise SettingsError(f"{chosen}: expected a mapping at the top level")
        data.update(loaded or {})
    if os.environ.get(DB_ENV) and overrides.get("db") is None:
        data["db"] = os.environ[DB_ENV]
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise SettingsError(_explain(exc, str(chosen) if chosen else None)) from None
