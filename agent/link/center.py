"""The operations-center link (issue 5): activation, check-ins, alarm delivery from the spool, port checks.

* Every call goes over HTTPS and checks the center's certificate against ``center.ca_file``
  (``requests`` with ``verify=<ca file>``; never ``verify=False``; proxies from the environment are
  ignored so a stray variable cannot reroute the link).
* ``activate()`` exchanges the serial and activation code for a credential, stored in the state
  file with mode 0600. It runs only from ``vcr-agent activate``: the link never enrolls itself.
* The check-in runs every ``heartbeat_interval`` (or the center's ``next_checkin``) with full
  jitter; failures back off exponentially with full jitter (AWS "Exponential Backoff And
  Jitter"); ``Retry-After`` from a 429/503 is waited out before the jittered backoff starts.
* A 401 makes the box check its clock against the center (``GET /api/v1/time``, its
  ``server_time`` and ``Date``): more than ``clock_tolerance`` apart is a clock problem, otherwise
  the credential was rejected. Either way the credential stays, the problem goes to the log, the
  status and (as an alarm) the spool, and the link backs off. A TLS failure makes it ask the NTP
  servers, since a wrong clock breaks certificate checks too.
* Alarms drain from the spool in batches, rate-limited by a token bucket, deleted only after
  the center's 200.
"""
from __future__ import annotations

import datetime as _dt
import email.utils
import json
import logging
import os
import random
import socket
import threading
import time
from pathlib import Path
from typing import Any, Callable

import requests

from agent.config import AgentConfig
from agent.fsutil import atomic_write
from agent.link.spool import Spool, SpoolError, SpoolEvent, TokenBucket

log = logging.getLogger(__name__)

API = "/api/v1"
CONNECT_TIMEOUT = 5.0
CLOCK_SID = 9100001
CREDENTIAL_SID = 9100002
AGENT_CATEGORY = "Agent health"


# ------------------------------------------------------------------------------------ errors
class CenterError(Exception):
    """The center answered with an error (``status``, ``code`` from the API contract)."""

    def __init__(self, status: int, code: str, message: str, *, server_time: float | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.server_time = server_time
        self.retry_after = retry_after


class Unauthorized(CenterError):
    """401: the credential is unknown or revoked (or the center thinks so)."""


class RetryLater(CenterError):
    """429 / 503: the center asks the box to wait ``retry_after`` seconds."""


class Unreachable(Exception):
    """No answer: DNS, TCP, TLS (``tls`` is True for certificate and handshake failures) or a timeout."""

    def __init__(self, message: str, *, tls: bool = False) -> None:
        super().__init__(message)
        self.tls = tls


class LinkConfigError(Exception):
    """The link cannot be used as configured (missing CA file, bad state file); bilingual message."""


# ----------------------------------------------------------------------------------- backoff
def full_jitter(attempt: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """AWS full jitter: uniform(0, min(cap, base * 2**attempt)); attempt 0 is the first retry."""
    rng = rng or random
    return rng.uniform(0.0, min(cap, base * (2 ** min(attempt, 62))))


def jittered_interval(interval: float, jitter: float, rng: random.Random | None = None) -> float:
    """uniform(interval * (1 - jitter), interval * (1 + jitter)): the mean stays ``interval``.

    ``jitter = 1`` is full jitter (0 .. 2 x interval), which spreads a fleet that started together.
    """
    rng = rng or random
    return rng.uniform(interval * (1.0 - jitter), interval * (1.0 + jitter))


class Backoff:
    """Consecutive-failure counter giving full-jitter delays; ``Retry-After`` is a floor added first."""

    def __init__(self, base: float, cap: float, rng: random.Random | None = None) -> None:
        self.base = base
        self.cap = cap
        self.rng = rng or random.Random()
        self.attempt = 0

    def next_delay(self, retry_after: float | None = None) -> float:
        d = full_jitter(self.attempt, self.base, self.cap, self.rng)
        self.attempt += 1
        if retry_after is not None and retry_after > 0:
            # wait at least what the center asked, then spread the fleet over the jitter window
            return retry_after + d
        return d

    def reset(self) -> None:
        self.attempt = 0


# --------------------------------------------------------------------------------- time
# Same shape as opscenter/panel/web.py jst(): kept apart because agent/ and opscenter/ may not share
# code, and this one answers Unix seconds (None when unparsable) where jst() answers display text.
def parse_time(text: str | None) -> float | None:
    """RFC 3339 (``...Z`` or with offset) -> Unix seconds; None when absent or unparsable."""
    if not text:
        return None
    try:
        t = _dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=_dt.timezone.utc)
    return t.timestamp()


def parse_http_date(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return email.utils.parsedate_to_datetime(text).timestamp()
    except (TypeError, ValueError, IndexError):
        return None


def iso(t: float) -> str:
    return _dt.datetime.fromtimestamp(t, _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# ------------------------------------------------------------------------------- state file
def load_state(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The stored credential, or None before activation. A damaged file is an error, not 'absent'."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise LinkConfigError(f"認証情報ファイルを読めません / cannot read the credential file {p}: {exc.strerror}") from None
    try:
        data = json.loads(text)
        if not isinstance(data, dict) or not data.get("token") or not data.get("device_id"):
            raise ValueError("no token/device_id")
    except ValueError as exc:
        raise LinkConfigError(f"認証情報ファイルが壊れています / the credential file {p} is damaged: {exc}") from None
    return data


def save_state(path: str | os.PathLike[str], data: dict[str, Any]) -> None:
    """Write the credential atomically, mode 0600 from the first byte, fsynced (file and folder)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    atomic_write(p, json.dumps(data, indent=1, ensure_ascii=False) + "\n", 0o600)


# ----------------------------------------------------------------------------------- client
def auth_headers(token: str | None) -> dict[str, str]:
    """The header that presents the box's credential to the center (``Authorization: Bearer``); none without one."""
    return {"Authorization": f"Bearer {token}"} if token else {}


class Reply:
    def __init__(self, status: int, body: dict[str, Any], headers: Any, t_sent: float, t_recv: float) -> None:
        self.status = status
        self.body = body
        self.headers = headers
        self.t_sent = t_sent
        self.t_recv = t_recv

    def server_time(self) -> float | None:
        return parse_time(self.body.get("server_time")) or parse_http_date(self.headers.get("Date"))

    def clock_offset(self) -> float | None:
        """Center's clock minus ours at the middle of the exchange (seconds)."""
        st = self.server_time()
        return None if st is None else st - (self.t_sent + self.t_recv) / 2


class CenterClient:
    """The HTTP calls of the API contract (docs/opscenter-api.md)."""

    def __init__(self, url: str, ca_file: str, *, timeout: float = 15.0, clock: Callable[[], float] = time.time,
                 user_agent: str = "vcr-agent") -> None:
        if not url.startswith("https://"):
            raise LinkConfigError(f"運用センターの URL は https:// で始まる必要があります / the center URL must be https: {url!r}")
        if not os.path.isfile(ca_file):
            raise LinkConfigError(f"運用センターの CA ファイルがありません / the center's CA file is missing: {ca_file} (center.ca_file)")
        self.url = url.rstrip("/")
        self.ca_file = ca_file
        self.timeout = timeout
        self.clock = clock
        self.session = requests.Session()
        self.session.verify = ca_file  # the center's own CA; never False
        self.session.trust_env = False  # no proxy / netrc / CA bundle from the environment
        self.session.headers["User-Agent"] = user_agent

    def close(self) -> None:
        self.session.close()

    def request(self, method: str, path: str, *, token: str | None = None, body: Any = None,
                ok: tuple[int, ...] = (200, 201)) -> Reply:
        headers = auth_headers(token)
        t_sent = self.clock()
        try:
            resp = self.session.request(method, self.url + API + path, json=body, headers=headers,
                                        timeout=(CONNECT_TIMEOUT, self.timeout), allow_redirects=False)
        except requests.exceptions.SSLError as exc:
            raise Unreachable(f"TLS: {_root_cause(exc)}", tls=True) from None
        except requests.exceptions.RequestException as exc:
            raise Unreachable(_root_cause(exc)) from None
        t_recv = self.clock()
        try:
            data = resp.json() if resp.content else {}
            if not isinstance(data, dict):
                data = {}
        except ValueError:
            data = {}
        reply = Reply(resp.status_code, data, resp.headers, t_sent, t_recv)
        if resp.status_code in ok:
            return reply
        code = str(data.get("error") or resp.reason or "error")
        message = str(data.get("message") or resp.text[:200])
        st = reply.server_time()
        if resp.status_code == 401:
            raise Unauthorized(401, code, message, server_time=st)
        if resp.status_code in (429, 503):
            ra = _retry_after(resp.headers.get("Retry-After"), self.clock())
            raise RetryLater(resp.status_code, code, message, server_time=st, retry_after=ra)
        raise CenterError(resp.status_code, code, message, server_time=st)

    def server_time(self) -> Reply:
        return self.request("GET", "/time")

    def activate(self, serial: str, code: str, *, agent_version: str, hostname: str) -> Reply:
        return self.request("POST", "/activate", body={"serial": serial, "activation_code": code,
                                                       "agent_version": agent_version, "hostname": hostname})

    def checkin(self, token: str, body: dict[str, Any]) -> Reply:
        return self.request("POST", "/checkin", token=token, body=body)

    def send_alarms(self, token: str, events: list[dict[str, Any]]) -> Reply:
        return self.request("POST", "/alarms", token=token, body={"events": events})

    def send_spam_reports(self, token: str, reports: list[dict[str, Any]]) -> Reply:
        return self.request("POST", "/antispam/report", token=token, body={"reports": reports})

    def task_status(self, token: str, task_id: int, status: str, detail: str = "") -> Reply:
        return self.request("POST", f"/tasks/{int(task_id)}/status", token=token,
                            body={"status": status, "detail": detail[:4000]})

    def backup(self, token: str, revision: int, blob_b64: str) -> Reply:
        return self.request("POST", "/backups", token=token, body={"revision": int(revision), "blob": blob_b64})


def _root_cause(exc: BaseException) -> str:
    seen = exc
    while seen.__cause__ is not None or seen.__context__ is not None:
        nxt = seen.__cause__ or seen.__context__
        if nxt is None or nxt is seen:
            break
        seen = nxt
    text = str(seen) or type(seen).__name__
    return text[:300]


def _retry_after(value: str | None, now: float) -> float:
    """Retry-After in seconds (delta-seconds or an HTTP date); 1 s when absent or bad."""
    if not value:
        return 1.0
    try:
        return max(0.0, float(value))
    except ValueError:
        t = parse_http_date(value)
        return max(0.0, t - now) if t is not None else 1.0


# ------------------------------------------------------------------------------- activation
class ActivationError(Exception):
    """Activation refused or impossible; the message is for people (Japanese / English)."""


def default_serial(cfg: AgentConfig) -> str:
    if cfg.center.serial:
        return cfg.center.serial
    try:
        s = Path("/sys/class/dmi/id/product_serial").read_text().strip()
    except OSError:
        s = ""
    if s and s.lower() not in ("0", "none", "not specified", "to be filled by o.e.m.", "default string"):
        return s
    return ""


def install_tuf_root(cfg: AgentConfig, root_text: Any) -> bool:
    """The signed-update trust anchor from the activation reply (an authenticated TLS channel to the
    center's pinned CA). An existing root is kept: TUF moves it forward itself, through signed
    root rotations, and a later activation must not be able to swap it."""
    path = Path(cfg.updates.trusted_root)
    if not isinstance(root_text, str) or not root_text or path.exists():
        return False
    try:
        json.loads(root_text)
    except ValueError:
        log.error("activation: the center's TUF root is not JSON; signed updates stay off until one is installed")
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, root_text, 0o644)
    log.info("activation: installed the signed-update root at %s", path)
    return True


def activate(cfg: AgentConfig, *, code: str, serial: str = "", replace: bool = False,
             clock: Callable[[], float] | None = None) -> dict[str, Any]:
    """``vcr-agent activate``: exchange the code for a credential and store it. Returns the state."""
    from agent.link.health import agent_version

    c = cfg.center
    if not c.url:
        raise ActivationError("運用センターの URL が設定されていません / center.url is not set in the configuration")
    serial = serial or default_serial(cfg)
    if not serial:
        raise ActivationError("シリアル番号がわかりません。--serial で指定してください / "
                              "the box's serial number is unknown: give --serial (or center.serial)")
    try:
        old = load_state(c.state_file)
    except LinkConfigError:
        if not replace:
            raise
        old = None
    if old and not replace:
        raise ActivationError(
            f"この機器はすでにアクティベーション済みです (device {old.get('device_id')}, contract {old.get('contract_id')})。"
            f"交換機として登録し直す場合は --replace を付けてください / "
            f"this box is already activated (device {old.get('device_id')}, contract {old.get('contract_id')}); "
            f"use --replace to activate it again with a replacement code")
    skew = c.clock_skew_s
    client = CenterClient(c.url, c.ca_file, timeout=c.request_timeout,
                          clock=clock or (lambda: time.time() + skew), user_agent=f"vcr-agent/{agent_version()}")
    try:
        reply = client.activate(serial, code, agent_version=agent_version(), hostname=socket.gethostname())
    except Unreachable as exc:
        raise ActivationError(f"運用センターに接続できません / cannot reach the operations center ({c.url}): {exc}. "
                              "`vcr-agent portcheck` で通信を確認してください / check the network with `vcr-agent portcheck`") from None
    except CenterError as exc:
        if exc.status == 409:
            raise ActivationError(
                "この契約は別の機器で使用中です。機器交換の場合は運用センターに交換用コードの発行を依頼し "
                "(vcr-opscenter replace CONTRACT)、そのコードで `vcr-agent activate --replace` を実行してください / "
                "the contract is bound to another box: for a replacement box ask the operations center for a "
                "replacement code (vcr-opscenter replace CONTRACT) and run `vcr-agent activate --replace` with it"
                f" [{exc.message}]") from None
        if exc.status == 403:
            raise ActivationError(
                "アクティベーションコードが無効です (未登録、使用済み、または別のシリアル番号用) / "
                f"the activation code is not valid (unknown, used, or for another serial) [{exc.message}]") from None
        raise ActivationError(f"アクティベーションに失敗しました / activation failed: {exc}") from None
    finally:
        client.close()
    body = reply.body
    state = {
        "device_id": body.get("device_id"),
        "token": body.get("token"),
        "contract_id": body.get("contract_id"),
        "license": body.get("license") or {},
        "heartbeat_interval": body.get("heartbeat_interval"),
        "serial": serial,
        "center_url": c.url,
        "activated_at": iso(time.time()),
        "replaced": bool(replace),
        "backup_secret": body.get("backup_secret") or "",  # key material of the encrypted config backups
    }
    if not state["token"] or not state["device_id"]:
        raise ActivationError(f"運用センターの応答が不正です / the center's answer has no credential: {body}")
    if old and replace:
        backup = Path(c.state_file).with_name(Path(c.state_file).name + ".replaced")
        save_state(backup, old)
    state["tuf_root_installed"] = install_tuf_root(cfg, body.get("tuf_root"))
    save_state(c.state_file, state)
    if body.get("restore"):
        save_state(Path(c.state_file).with_name("center-restore.json"), {"restore": body["restore"], "received_at": iso(time.time())})
        state["restore_saved"] = True
    offset = reply.clock_offset()
    state["clock_offset_s"] = None if offset is None else round(offset, 3)
    return state


# ------------------------------------------------------------------------------------- link
def problem_alarm(sid: int, signature: str, details: dict[str, Any], now: float) -> dict[str, Any]:
    """An EVE alert about the agent itself (clock, credential): spooled like any alarm."""
    from filters.eve import timestamp

    return {
        "timestamp": timestamp(now),
        "event_type": "alert",
        "alert": {"action": "allowed", "gid": 1, "signature_id": sid, "rev": 1, "signature": signature,
                  "category": AGENT_CATEGORY, "severity": 2, "engine": "agent"},
        "agent": details,
    }


class CenterLink:
    """The running link inside ``vcr-agent run``: check-in thread, drain thread, port checks.

    ``alarm_sink`` receives the agent's own alarms (the daemon passes ``EveLog.write``, whose
    listener puts them into the spool; standalone they go to the spool directly).
    """

    def __init__(self, cfg: AgentConfig, *, config_path: str = "", spool: Spool | None = None,
                 alarm_sink: Callable[[dict[str, Any]], None] | None = None,
                 bundles: Callable[[], dict[str, str]] | None = None,
                 rng: random.Random | None = None, tasks: Any = None) -> None:
        from agent.link.health import Versions, agent_version, prime_cpu

        self.cfg = cfg
        self.c = cfg.center
        self.skew = self.c.clock_skew_s
        self.rng = rng or random.Random()
        self.stopping = threading.Event()
        self.wake = threading.Event()  # a new credential or a cleared problem: re-evaluate now
        self.lock = threading.Lock()
        self.clock_lock = threading.Lock()
        self.spool = spool or Spool(self.c.spool.path, max_events=self.c.spool.max_events, max_bytes=self.c.spool.max_bytes)
        self.alarm_sink = alarm_sink or self.spool.put
        self.bundles = bundles  # {kind: version} of the live signed bundles (agent/lifecycle/updates.py), if any
        self.versions = Versions(cfg, config_path)
        self.agent_version = agent_version()
        self.client: CenterClient | None = None
        self.client_error = ""
        self.cred: dict[str, Any] | None = None
        self.cred_mtime = 0.0
        self.threads: list[threading.Thread] = []
        # status
        self.problem = ""  # "", "clock", "credential_rejected"
        self.problem_detail = ""
        self.clock_offset: float | None = None
        self.clock_problem = False
        self.state = "starting"
        self.last_error = ""
        self.last_checkin: float | None = None
        self.last_checkin_ok: float | None = None
        self.checkins_ok = 0
        self.checkins_failed = 0
        self.next_checkin_at: float | None = None
        self.desired: dict[str, Any] = {}
        self.tasks: list[dict[str, Any]] = []
        self.task_runner = tasks  # agent.link.tasks.TaskRunner (issue 6), fed with every reply's tasks
        self.known_spam_digests: Callable[[list[str]], int] | None = None  # the anti-spam engine's list (issue 14)
        self.spam_reports_dropped = 0  # reports the center refused as malformed (dropped, not retried)
        self.on_checkin: list[Callable[[float], None]] = []  # after every successful check-in (its start time)
        self.config_revision: Callable[[], int] | None = None  # the applied config revision (agent/lifecycle/remoteconfig.py)
        self.license: dict[str, Any] = {}
        self.sent_events = 0
        self.sent_batches = 0
        self.duplicates = 0
        self.rejected = 0
        self.retry_later = 0  # 429/503 answers (each waited out)
        self.drain_rate = 0.0  # events/s over the last batches
        self.portcheck: dict[str, Any] | None = None
        self.portcheck_at = 0.0
        prime_cpu()
        self._make_client()

    # -- plumbing ----------------------------------------------------------------------------
    def now(self) -> float:
        return time.time() + self.skew

    def _make_client(self) -> None:
        try:
            self.client = CenterClient(self.c.url, self.c.ca_file, timeout=self.c.request_timeout, clock=self.now,
                                       user_agent=f"vcr-agent/{self.agent_version}")
            self.client_error = ""
        except LinkConfigError as exc:
            self.client = None
            self.client_error = str(exc)

    def _load_cred(self) -> None:
        """Pick up the credential `vcr-agent activate` stored (also a replacement while running)."""
        try:
            mtime = os.stat(self.c.state_file).st_mtime
        except OSError:
            if self.cred is not None:
                log.warning("credential file %s disappeared; keeping the credential in memory", self.c.state_file)
            return
        if self.cred is not None and mtime == self.cred_mtime:
            return
        try:
            cred = load_state(self.c.state_file)
        except LinkConfigError as exc:
            self.last_error = str(exc)
            return
        if cred is None:
            return
        fresh = self.cred is None or cred.get("token") != self.cred.get("token")
        self.cred, self.cred_mtime = cred, mtime
        self.license = cred.get("license") or {}
        if fresh:
            log.info("operations center credential loaded: device %s, contract %s", cred.get("device_id"), cred.get("contract_id"))
            with self.lock:
                if self.problem == "credential_rejected":  # a new credential deserves a fresh try
                    self.problem, self.problem_detail = "", ""
            self.wake.set()

    def _sleep(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True when woken early (stop or new credential)."""
        if seconds <= 0:
            return False
        woke = self.wake.wait(seconds)
        if woke:
            self.wake.clear()
        return woke or self.stopping.is_set()

    # -- clock and auth ----------------------------------------------------------------------
    def _note_offset(self, offset: float | None, source: str) -> None:
        if offset is None:
            return
        self.clock_offset = offset
        bad = abs(offset) > self.c.clock_tolerance
        with self.clock_lock:  # both threads may see it at once: one alarm per transition
            changed = bad != self.clock_problem
            self.clock_problem = bad
        if not changed:
            return
        if bad:
            msg = (f"clock differs from the {source} by {offset:+.1f} s (more than {self.c.clock_tolerance:g} s); "
                   "fix the box's time (NTP, UDP 123)")
            log.error("%s", msg)
            side = "behind" if offset > 0 else "ahead of"
            self._raise_alarm(CLOCK_SID, f"VCR agent: clock is off by {offset:+.0f} s ({side} the {source})",
                              {"problem": "clock", "offset_s": round(offset, 3), "source": source,
                               "tolerance_s": self.c.clock_tolerance, "message": msg,
                               "message_ja": f"UTM の時計が{'遅れて' if offset > 0 else '進んで'}います ({abs(offset):.0f} 秒)。"
                                             "NTP (UDP 123) を確認してください"})
        else:
            log.info("clock agrees with the %s again (%+.1f s)", source, offset)

    def _raise_alarm(self, sid: int, signature: str, details: dict[str, Any]) -> None:
        try:
            self.alarm_sink(problem_alarm(sid, signature, details, self.now()))
        except Exception:  # noqa: BLE001 - never let reporting kill the link
            log.exception("cannot record the agent alarm %r", signature)

    def _on_unauthorized(self, exc: Unauthorized) -> None:
        """401: compare clocks before anything else. Never re-enroll; keep the credential."""
        offset = None
        try:
            assert self.client is not None
            offset = self.client.server_time().clock_offset()
        except (Unreachable, CenterError) as err:
            log.warning("clock check after 401 failed: %s", err)
            if exc.server_time is not None:
                offset = exc.server_time - self.now()
        if offset is not None:
            self._note_offset(offset, "operations center")
        with self.lock:
            before = self.problem
            if offset is not None and abs(offset) > self.c.clock_tolerance:
                self.problem = "clock"
                self.problem_detail = f"the center rejected the credential and the clock is off by {offset:+.0f} s"
            else:
                self.problem = "credential_rejected"
                self.problem_detail = ("the center rejected the credential (revoked or replaced?); the box keeps it "
                                       "and retries; a replacement needs `vcr-agent activate --replace`")
        if before != self.problem:
            log.error("operations center: %s (device %s)", self.problem_detail, (self.cred or {}).get("device_id"))
            if self.problem == "credential_rejected":
                self._raise_alarm(CREDENTIAL_SID, "VCR agent: the operations center rejected the device credential",
                                  {"problem": "credential_rejected", "device_id": (self.cred or {}).get("device_id"),
                                   "clock_offset_s": None if offset is None else round(offset, 3)})

    def _on_tls_failure(self) -> None:
        """A certificate check can fail because our clock is wrong: ask NTP (UDP 123)."""
        from agent.link.ntp import NtpError, query
        from agent.link.portcheck import Resolver, dns_servers

        resolver = Resolver(dns_servers(self.cfg), 3.0)
        for server in self.c.ntp_servers:
            addr = resolver.resolve(server)
            if not addr:
                continue
            try:
                r = query(addr, timeout=3.0, clock=self.now)
            except NtpError:
                continue
            self._note_offset(r.offset, f"NTP server {server}")
            if self.clock_problem:
                with self.lock:
                    self.problem = "clock"
                    self.problem_detail = f"TLS to the center fails and the clock is off by {r.offset:+.0f} s (NTP {server})"
            return

    def _ok(self) -> None:
        with self.lock:
            if self.problem:
                log.info("operations center accepts the box again (was: %s)", self.problem)
            self.problem, self.problem_detail = "", ""

    # -- check-in ------------------------------------------------------------------------------
    def _run_portcheck(self) -> None:
        from agent.link.portcheck import format_text, run_portcheck

        try:
            res = run_portcheck(self.cfg)
        except Exception as exc:  # noqa: BLE001 - a broken check must not stop the link
            log.exception("port check failed to run")
            self.portcheck = {"checked_at": iso(time.time()), "ok": False, "error": str(exc), "results": []}
            return
        self.portcheck = res.as_dict()
        self.portcheck_at = time.monotonic()
        if res.ok:
            log.info("port check: everything table 4 needs is reachable")
        else:
            log.warning("port check found problems:\n%s", format_text(res))

    def _sandbox_verdicts(self, body: dict[str, Any]) -> None:
        """Sandbox verdicts that changed at the center lately go into the box's verdict cache (a file found
        malicious at another customer replaces a clean verdict cached here; agent/link/sandbox.py)."""
        section = self.cfg.engines.get("sandbox") or {}
        if not section.get("enabled"):
            return
        from agent.link.sandbox import apply_verdicts

        try:
            n = apply_verdicts(section, body.get("verdicts"))
        except Exception:  # noqa: BLE001 - the check-in goes on; lookups still ask the center
            log.exception("sandbox verdicts from the check-in not stored")
            return
        if n:
            log.info("sandbox: %d verdict(s) from the center stored in the cache", n)

    def checkin_once(self) -> float:
        """One check-in; returns the seconds until the next one."""
        from agent.link.health import heartbeat_body

        assert self.client is not None and self.cred is not None
        bundles = None
        if self.bundles is not None:
            try:
                bundles = self.bundles()
            except Exception as exc:  # noqa: BLE001 - a heartbeat without versions beats none
                log.warning("bundle versions unavailable: %s", exc)
        body = heartbeat_body(self.cfg, self.versions, now_iso=iso(self.now()), spool=self.spool.stats(),
                              portcheck=self.portcheck, link=self.link_summary(), bundles=bundles)
        if self.config_revision is not None:
            try:
                body["config_revision"] = int(self.config_revision())
            except Exception:  # noqa: BLE001
                log.exception("config revision unavailable")
        self.last_checkin = time.time()
        reply = self.client.checkin(self.cred["token"], body)
        self.last_checkin_ok = time.time()
        self.checkins_ok += 1
        self._note_offset(reply.clock_offset(), "operations center")
        self._ok()
        data = reply.body
        if isinstance(data.get("sandbox"), dict):
            self._sandbox_verdicts(data["sandbox"])
        spam = data.get("antispam")
        if self.known_spam_digests is not None and isinstance(spam, dict) and isinstance(spam.get("known_digests"), list):
            try:
                self.known_spam_digests([d for d in spam["known_digests"][:20_000] if isinstance(d, str)])
            except Exception:  # noqa: BLE001 - a listener must not break the check-in
                log.exception("known spam digests from the check-in not stored")
        self.desired = data.get("desired") or {}
        self.tasks = data.get("tasks") or []
        if data.get("license"):
            self.license = data["license"]
        for fn in list(self.on_checkin):
            try:
                fn(self.last_checkin)  # when this check-in started
            except Exception:  # noqa: BLE001 - a listener must not break the check-in
                log.exception("check-in listener failed")
        if self.task_runner is not None:
            self.task_runner.submit(self.tasks if isinstance(self.tasks, list) else [])
        try:
            interval = float(data.get("next_checkin") or self.c.heartbeat_interval)
        except (TypeError, ValueError):
            interval = self.c.heartbeat_interval
        interval = min(max(interval, 1.0), 86400.0)
        return jittered_interval(interval, self.c.jitter, self.rng)

    def _checkin_loop(self) -> None:
        backoff = Backoff(self.c.backoff_base, self.c.backoff_cap, self.rng)
        pc = self.c.portcheck
        if pc.enabled:
            self._run_portcheck()
        # spread a fleet that powers up together (after a blackout) over the first seconds
        next_at = time.monotonic() + self.rng.uniform(0, min(5.0, self.c.heartbeat_interval))
        while not self.stopping.is_set():
            self._load_cred()
            if pc.enabled and time.monotonic() - self.portcheck_at >= pc.interval:
                self._run_portcheck()
            if self.client is None:
                self.state = "error"
                self._sleep(30)
                continue
            if self.cred is None:
                self.state = "not_activated"
                self._sleep(2.0)
                continue
            wait = next_at - time.monotonic()
            if wait > 0:
                self.next_checkin_at = time.time() + wait
                if self._sleep(min(wait, 2.0)):
                    next_at = min(next_at, time.monotonic())  # new credential: check in now
                continue
            try:
                delay = self.checkin_once()
                backoff.reset()
                self.state = "ok"
                self.last_error = ""
            except Unauthorized as exc:
                self.checkins_failed += 1
                self.last_error = str(exc)
                self._on_unauthorized(exc)
                self.state = self.problem or "credential_rejected"
                delay = backoff.next_delay()
            except RetryLater as exc:
                self.retry_later += 1
                self.checkins_failed += 1
                self.last_error = str(exc)
                self.state = "busy"
                delay = backoff.next_delay(exc.retry_after)
            except (Unreachable, CenterError) as exc:
                self.checkins_failed += 1
                self.last_error = str(exc)
                self.state = "unreachable" if isinstance(exc, Unreachable) else "error"
                if isinstance(exc, Unreachable) and exc.tls:
                    self._on_tls_failure()
                delay = backoff.next_delay()
                log.warning("check-in failed (%s); next try in %.1f s", exc, delay)
            except Exception as exc:  # noqa: BLE001 - the link must outlive any bug in a report
                self.checkins_failed += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("check-in failed")
                delay = backoff.next_delay()
            next_at = time.monotonic() + delay

    # -- alarm drain ---------------------------------------------------------------------------
    def _send_batch(self, batch: list[SpoolEvent]) -> None:
        """Send one leased batch; acks on success, releases otherwise (the exception propagates)."""
        assert self.client is not None and self.cred is not None
        t0 = time.monotonic()
        try:
            reply = self.client.send_alarms(self.cred["token"], [e.wire() for e in batch])
        except CenterError as exc:
            if exc.status in (400, 413) and not isinstance(exc, (Unauthorized, RetryLater)):
                self._bisect_rejected(batch, exc)
                return
            self.spool.release(batch)
            raise
        except BaseException:
            self.spool.release(batch)
            raise
        self.spool.ack(batch)
        dt = max(time.monotonic() - t0, 1e-6)
        self.sent_events += len(batch)
        self.sent_batches += 1
        self.duplicates += int(reply.body.get("duplicates") or 0)
        self.drain_rate = 0.7 * self.drain_rate + 0.3 * (len(batch) / dt) if self.drain_rate else len(batch) / dt

    def _bisect_rejected(self, batch: list[SpoolEvent], exc: CenterError) -> None:
        """400 (an event it cannot take) or 413 (too big): halve the batch until the culprit is alone."""
        if len(batch) == 1:
            self.spool.ack(batch)  # the center will never take it: it must not block the queue
            self.rejected += 1
            log.error("center refused event %s (%s); dropped from the spool", batch[0].event_id, exc.message)
            return
        half = len(batch) // 2
        parts = [batch[:half], batch[half:]]
        for i, part in enumerate(parts):
            try:
                self._send_batch(part)
            except BaseException:
                for rest in parts[i + 1:]:
                    self.spool.release(rest)
                raise

    def _drain_loop(self) -> None:
        d = self.c.drain
        bucket = TokenBucket(d.rate, max(1, d.batch))
        backoff = Backoff(self.c.backoff_base, self.c.backoff_cap, self.rng)
        while not self.stopping.is_set():
            if self.client is None or self.cred is None or self.problem:
                self._sleep(1.0)  # the check-in loop owns recovery from auth problems
                continue
            pending = self.spool.committed()
            if pending == 0:
                self.spool.changed.wait(1.0)
                self.spool.changed.clear()
                continue
            n = min(d.batch, pending)
            wait = bucket.wait_time(n)
            if wait > 0:
                self.stopping.wait(wait)
                continue
            batch = self.spool.lease(n)
            if not batch:
                self.stopping.wait(0.2)
                continue
            bucket.take(len(batch))
            try:
                self._send_batch(batch)
                backoff.reset()
            except Unauthorized as exc:
                self._release_all(batch)
                self._on_unauthorized(exc)
            except RetryLater as exc:
                self.retry_later += 1
                self._release_all(batch)
                delay = backoff.next_delay(exc.retry_after)
                log.info("center busy (%s): alarms wait %.1f s", exc.code, delay)
                self.stopping.wait(delay)
            except (Unreachable, CenterError, SpoolError) as exc:
                self._release_all(batch)
                delay = backoff.next_delay()
                self.last_error = str(exc)
                log.warning("alarm delivery failed (%s); %d events wait, next try in %.1f s", exc, self.spool.pending(), delay)
                self.stopping.wait(delay)
            except Exception:  # noqa: BLE001
                self._release_all(batch)
                log.exception("alarm delivery failed")
                self.stopping.wait(backoff.next_delay())

    def _release_all(self, batch: list[SpoolEvent]) -> None:
        self.spool.release(batch)

    # -- tasks (issue 6) -----------------------------------------------------------------------
    def send_spam_reports(self, reports: list[dict[str, Any]]) -> None:
        """Send queued spam reports (agent/link/spamreport.py's sender) over this link's client and
        credential. Raises while the center cannot take them (kept and retried); a batch the center
        refuses as malformed (400/413/422) is dropped and counted, so it never blocks the queue."""
        if self.client is None or self.cred is None:
            raise Unreachable("not activated or no center client yet")
        try:
            self.client.send_spam_reports(self.cred["token"], reports)
        except CenterError as exc:
            if exc.status in (400, 413, 422) and not isinstance(exc, (Unauthorized, RetryLater)):
                self.spam_reports_dropped += len(reports)
                log.warning("center refused %d spam report(s), dropped: %s %s", len(reports), exc.status, exc)
                return
            raise

    def report_task(self, task_id: int, status: str, detail: str) -> None:
        """TaskRunner's ``report``: raises while the center cannot take it (the runner retries)."""
        if self.client is None or self.cred is None:
            raise Unreachable("the link is not ready (no client or not activated)")
        try:
            self.client.task_status(self.cred["token"], task_id, status, detail)
        except (Unauthorized, RetryLater):
            raise
        except CenterError as exc:
            if exc.status in (400, 404, 413, 422):  # it will never take this one: drop it
                log.error("center refused status %s for task %s (%s); dropped", status, task_id, exc)
                return
            raise

    def reset_connections(self) -> None:
        """Drop pooled connections: the next request resolves, connects and handshakes anew."""
        if self.client is not None:
            self.client.session.close()

    def send_backup(self, revision: int, blob_b64: str) -> None:
        if self.client is None or self.cred is None:
            raise Unreachable("the link is not ready (no client or not activated)")
        self.client.backup(self.cred["token"], revision, blob_b64)

    # -- life cycle ----------------------------------------------------------------------------
    def start(self) -> None:
        self.spool.start()
        self._load_cred()
        for name, fn in (("center-checkin", self._checkin_loop), ("center-drain", self._drain_loop)):
            t = threading.Thread(target=fn, name=name, daemon=True)
            t.start()
            self.threads.append(t)
        log.info("operations center link started (%s, %s)", self.c.url,
                 f"device {self.cred.get('device_id')}" if self.cred else "not activated yet")

    def stop(self, timeout: float = 3.0) -> None:
        self.stopping.set()
        self.wake.set()
        self.spool.changed.set()
        for t in self.threads:
            t.join(timeout)
        self.spool.close()
        if self.client is not None:
            self.client.close()

    # -- status ----------------------------------------------------------------------------------
    def link_summary(self) -> dict[str, Any]:
        return {"problem": self.problem, "clock_offset_s": None if self.clock_offset is None else round(self.clock_offset, 3),
                "clock_problem": self.clock_problem, "checkins_failed": self.checkins_failed}

    def status(self) -> dict[str, Any]:
        pc = self.portcheck or {}
        return {
            "enabled": True,
            "url": self.c.url,
            "activated": self.cred is not None,
            "device_id": (self.cred or {}).get("device_id"),
            "contract_id": (self.cred or {}).get("contract_id"),
            "license": self.license,
            "state": self.problem or self.state,
            "problem": self.problem,
            "problem_detail": self.problem_detail,
            "clock_problem": self.clock_problem,
            "clock_offset_s": None if self.clock_offset is None else round(self.clock_offset, 3),
            "config_error": self.client_error,
            "last_error": self.last_error,
            "last_checkin": iso(self.last_checkin) if self.last_checkin else None,
            "last_checkin_ok": iso(self.last_checkin_ok) if self.last_checkin_ok else None,
            "next_checkin": iso(self.next_checkin_at) if self.next_checkin_at else None,
            "checkins_ok": self.checkins_ok,
            "checkins_failed": self.checkins_failed,
            "spool": self.spool.stats(),
            "sent": {"events": self.sent_events, "batches": self.sent_batches, "duplicates": self.duplicates,
                     "rejected": self.rejected, "retry_later": self.retry_later, "rate_eps": round(self.drain_rate, 1)},
            "desired": self.desired,
            "tasks": len(self.tasks),
            "task_runner": self.task_runner.status() if self.task_runner is not None else None,
            "portcheck": {"checked_at": pc.get("checked_at"), "ok": pc.get("ok"),
                          "failed_features": [f["feature"] for f in pc.get("features", []) if not f.get("ok")]} if pc else None,
        }
