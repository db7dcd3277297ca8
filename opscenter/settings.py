"""Operations center settings: a YAML file, command-line overrides, defaults (nothing starts from a bad file)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

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
    html_page: bool = Field(True, description="the read-only device/alarm page at / of the operator listener")
    # Operator listener: the page, the operator JSON, /docs and /openapi.json, behind operator accounts
    # (HTTP Basic over TLS; `vcr-opscenter operator add NAME`). Never served on the device listener.
    operator_listen: str | None = Field("127.0.0.1:8443", description="HOST:PORT of the operator listener "
                                        "(loopback by default; empty or null: no operator listener)")
    operator_login_rate: float = Field(1 / 30, ge=0, description="failed operator logins per second allowed per "
                                       "client address and per account, shared by all workers (0: no limit)")
    operator_login_burst: int = Field(10, ge=1)
    # Control panel for customer administrators (/panel/ on the device listener) and the operators'
    # console (/console/ on the operator listener): opscenter/panel/, docs/opscenter-api.md.
    panel: bool = Field(True, description="serve the customer control panel at /panel/ of the device listener")
    panel_session_idle_minutes: int = Field(30, ge=1, description="a panel or console session ends after this "
                                            "many minutes without a request")
    panel_session_hours: int = Field(12, ge=1, description="a panel or console session ends this many hours "
                                     "after login, used or not")
    change_requests_per_month: int = Field(4, ge=0, description="change requests a contract may file per month "
                                           "(Japan time; 0: no limit)")
    change_due_business_days: int = Field(5, ge=1, description="a change request is due this many business days "
                                          "after the day it was filed")
    tuf_repo: str | None = Field(None, description="TUF repository folder (opscenter/tufrepo.py) served at /tuf/")
    categories: str | None = Field(None, description="UT1-layout category folder answering GET /api/v1/category")
    category_ttl: int = Field(3600, ge=1, description="seconds a box may cache a category answer")
    antispam_controller: str | None = Field(None, description="the center's rspamd controller (http://host:11334) "
                                            "learning the spam and ham boxes report at POST /api/v1/antispam/learn")
    antispam_password: str = Field("", description="that controller's password (none when the center's address is "
                                   "one of its secure_ip)")
    antispam_report_rate: float = Field(0.2, ge=0, description="spam report batches per second per device (0: no limit)")
    antispam_report_burst: int = Field(10, ge=1)
    antispam_report_max_bytes: int = Field(4 << 20, ge=1024, description="largest spam report batch (with consented "
                                           "whole messages)")
    antispam_digest_min_devices: int = Field(1, ge=1, description="boxes that must report a spam digest before every "
                                             "box gets it")

    # Sandbox (opscenter/sandbox/, docs/sandbox.md): verdicts by SHA-256 for every box, an analysis queue
    # in the database drained by worker threads of each center process.
    sandbox: bool = Field(True, description="serve the sandbox endpoints (/api/v1/sandbox/...) and analyse files")
    sandbox_workers: int = Field(1, ge=0, le=16, description="analysis worker threads per center process "
                                 "(0: this process only queues)")
    sandbox_max_bytes: int = Field(16 << 20, ge=1024, le=256 << 20, description="largest file a box may submit")
    sandbox_submit_rate: float = Field(0.5, ge=0, description="submissions per second per device (0: no limit)")
    sandbox_submit_burst: int = Field(20, ge=1)
    sandbox_quota_files: int = Field(2000, ge=0, description="submissions per device per UTC day (0: no quota)")
    sandbox_clamd_socket: str | None = Field(None, description="the center's own clamd socket; set: every file "
                                             "is also scanned by ClamAV")
    sandbox_rules: str | None = Field(None, description="a folder of extra YARA rules (*.yar) besides the shipped ones")
    sandbox_clean_ttl: int = Field(6 * 3600, ge=0, description="seconds a box may keep a clean verdict")
    sandbox_bad_ttl: int = Field(7 * 86400, ge=0, description="seconds a box may keep a malicious or suspicious "
                                 "verdict")

    # Device link
    heartbeat_interval: float = Field(60.0, gt=0, description="seconds between check-ins told to the boxes")
    offline_after_missed: int = Field(3, ge=1, description="a box is offline after missing this many check-ins")
    sweep_interval: float | None = Field(None, gt=0, description="offline sweep period (default min(interval, 30 s))")
    checkin_history: int = Field(1000, ge=1, description="check-in history rows kept per device")
    default_term_days: int = Field(730, ge=1, description="license term of a new contract (minimum term: two years)")
    code_valid_days: int = Field(90, ge=1, description="activation codes expire after this many days")

    # Limits. A rate of 0 turns that limiter off. The buckets live in the database (table rate_buckets),
    # so every worker process of the center draws from the same ones.
    max_alarm_events: int = Field(1000, ge=1)
    max_alarm_bytes: int = Field(4 << 20, ge=1024)
    max_body_bytes: int = Field(1 << 20, ge=1024, description="other JSON bodies (check-in, task status)")
    max_backup_bytes: int = Field(4 << 20, ge=1024, description="decoded size of one config backup")
    backups_kept: int = Field(20, ge=1, description="backup revisions kept per contract")
    alarm_rate: float = Field(2.0, ge=0, description="alarm batches per second per device")
    alarm_burst: int = Field(10, ge=1)
    alarm_global_rate: float = Field(100.0, ge=0, description="alarm batches per second over all devices "
                                                              "(shared by all workers)")
    alarm_global_burst: int = Field(500, ge=1)
    alarm_quota_events: int = Field(200_000, ge=0, description="alarms stored per device per UTC day (0: no quota)")
    alarm_quota_bytes: int = Field(256 << 20, ge=0, description="alarm bytes received per device per UTC day "
                                                               "(0: no quota)")
    checkin_rate: float | None = Field(None, ge=0, description="check-ins per second per device "
                                                                "(default: 4 per heartbeat interval)")
    checkin_burst: int = Field(5, ge=1)
    activate_rate: float = Field(1.0, ge=0, description="activation attempts per second per client address")
    activate_burst: int = Field(30, ge=1)
    alarm_retention_days: int = Field(400, ge=0, description="0 keeps alarms forever")

    # The customer's side: settings sheets, installation confirmation, mail notifications (opscenter/notify.py)
    public_url: str | None = Field(None, description="https://host[:port] the boxes reach the center at, written into "
                                   "the configuration made from a settings sheet (default: the URL the box used)")
    smtp_host: str | None = Field(None, description="SMTP server of the notification mails (unset: no mails are sent)")
    smtp_port: int = Field(25, ge=1, le=65535)
    smtp_from: str = Field("vcr-opscenter@localhost", description="sender address of the notification mails")
    smtp_starttls: bool = Field(False, description="STARTTLS before sending (and before smtp_user's login)")
    smtp_user: str | None = None
    smtp_password: str | None = None
    smtp_timeout: float = Field(30.0, gt=0)
    confirm_interval: float = Field(30.0, ge=0, description="seconds between installation-confirmation evaluations "
                                    "of one unconfirmed box (0: at every check-in)")
    notify_interval: float = Field(15.0, gt=0, description="seconds between passes of the notifier (offline scan, "
                                                           "due mails)")
    notify_window_s: int = Field(600, ge=1, description="default digest window of severe alarms per contract, seconds")
    notify_offline_after_s: int = Field(900, ge=1, description="default: a box offline this long is mailed, seconds")

    # Monthly reports (opscenter/report/): generated for every contract on the 1st of each month (Japan time)
    # for the month before, and on demand (vcr-opscenter report).
    report_key: str | None = Field(None, description="Ed25519 key signing the operating records "
                                   "(vcr-opscenter report-key); no key: no scheduled reports")
    report_schedule: bool = Field(True, description="generate last month's reports from report_hour on the 1st")
    report_hour: int = Field(2, ge=0, le=23, description="hour (Japan time) on the 1st when the monthly reports start")
    report_workers: int = Field(1, ge=1, le=64, description="processes generating reports in parallel")

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

    @field_validator("operator_listen")
    @classmethod
    def _operator_listen(cls, v: str | None) -> str | None:
        if not v:
            return None
        split_listen(v)
        return v

    @model_validator(mode="after")
    def _distinct_ports(self) -> "Settings":
        if self.operator_listen:
            port, oport = split_listen(self.listen)[1], split_listen(self.operator_listen)[1]
            if port and port == oport:
                raise ValueError("operator_listen needs a port of its own (not the device listener's port)")
        return self

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
