"""Start a real operations center for tests and demos: its own CA, a database, ``vcr-opscenter serve`` as a
subprocess (optionally inside a network namespace), and the operator's actions as methods.

    from lab.center import start_center

    center = start_center(tmp_path / "center", "127.0.0.1:0")            # on this host
    center = start_center(workdir, "192.0.2.80:443", netns="vcr-wan",    # in the lab's WAN namespace
                          names=["center.lab.example"], heartbeat_interval=5)
    code = center.issue_code("C-100", serial="VCR-0001")
    ...  # the box activates against center.url, trusting center.ca
    center.devices(); center.alarms(); center.alarm_count(device_id)
    center.stop(); center.start()   # same address, same database, same certificate
    center.kill()                   # SIGKILL to the server's process group
    center.close()                  # stop + release the database handle (also on `with`)

Everything the operator commands do is available here without the server running (they work on
the database directly, which lives in ``workdir`` unless ``db`` is given).
"""
from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import yaml

from opscenter.ca import init_ca
from opscenter.db import Database
from opscenter.settings import Settings, join_listen, split_listen


class CenterError(RuntimeError):
    """The center did not start (the message carries the tail of its log)."""


class Center:
    """A running (or stopped) reference center and the operator's view of it."""

    def __init__(self, workdir: Path, listen: str, *, netns: str | None, settings: dict[str, Any], ca: Path,
                 cert: Path, key: Path, host_for_url: str | None = None) -> None:
        self.workdir = workdir
        self.listen = listen
        self.netns = netns
        self.settings_data = settings
        self.ca = ca
        self.cert = cert
        self.key = key
        self.config_path = workdir / "opscenter.yaml"
        self.log_path = workdir / "opscenter.log"
        self.ready_path = workdir / "ready.json"
        self.host_for_url = host_for_url
        self.proc: subprocess.Popen[bytes] | None = None
        self._db: Database | None = None
        self.operator_listen: str | None = None  # the operator listener (page, /docs), from the ready file
        self.operator_auth = ("operator", "")  # (name, password) of an operator account, made at start

    @property
    def operator_url(self) -> str | None:
        return f"https://{self.operator_listen}" if self.operator_listen else None

    # addresses ----------------------------------------------------------------------------------
    @property
    def db_url(self) -> str:
        return str(self.settings_data["db"])

    @property
    def host(self) -> str:
        return split_listen(self.listen)[0]

    @property
    def port(self) -> int:
        return split_listen(self.listen)[1]

    @property
    def url(self) -> str:
        """``https://HOST:PORT`` (HOST is ``host_for_url`` if given, e.g. a DNS name in the certificate)."""
        host = self.host_for_url or self.host
        if host in ("0.0.0.0", "::"):
            host = "127.0.0.1"
        return f"https://{join_listen(host, self.port)}"

    @property
    def settings(self) -> Settings:
        return Settings.model_validate(self.settings_data)

    @property
    def db(self) -> Database:
        if self._db is None:
            self._db = Database(self.db_url, pool_size=2, max_overflow=4)
            self._db.create_tables()
        return self._db

    # process ------------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "opscenter", "serve", "--config", str(self.config_path)]
        return (["ip", "netns", "exec", self.netns] + cmd) if self.netns else cmd

    def start(self, timeout: float = 30.0) -> "Center":
        """Start the server (again) on the same address and database; returns once it accepts connections."""
        if self.running:
            return self
        data = {**self.settings_data, "listen": self.listen, "ready_file": str(self.ready_path)}
        if not self.operator_auth[1]:
            import secrets

            from opscenter.operators import OperatorError, add, set_password

            self.operator_auth = ("operator", secrets.token_urlsafe(18))
            try:
                add(self.db, *self.operator_auth)
            except OperatorError:  # a database an earlier Center made
                set_password(self.db, *self.operator_auth)
            from opscenter.panel.accounts import set_role

            set_role(self.db, self.operator_auth[0], "admin")  # the lab's operator may do everything
        self.config_path.write_text(yaml.safe_dump(data, sort_keys=True), encoding="utf-8")
        self.ready_path.unlink(missing_ok=True)
        log = open(self.log_path, "ab")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("VCR_OPSCENTER_DB", None)
        env.pop("VCR_OPSCENTER_CONFIG", None)
        self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env=env, cwd=str(self.workdir), start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ready_path.exists():
                try:
                    ready = json.loads(self.ready_path.read_text())
                except ValueError:
                    ready = None
                if ready:
                    self.listen = ready["listen"]  # the real port when asked for port 0
                    self.operator_listen = ready.get("operator_listen")
                    if self.operator_listen:  # keep its port across restarts too
                        self.settings_data = {**self.settings_data, "operator_listen": self.operator_listen}
                    return self
            if self.proc.poll() is not None:
                raise CenterError(f"the operations center exited with {self.proc.returncode}:\n{self.log_tail()}")
            time.sleep(0.05)
        self.kill()
        raise CenterError(f"the operations center did not become ready in {timeout:.0f} s:\n{self.log_tail()}")

    def stop(self, timeout: float = 15.0) -> None:
        """Graceful stop (SIGTERM), then SIGKILL of its process group if it hangs."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._reap_group()
        self.proc = None

    def kill(self) -> None:
        """SIGKILL the server and its workers (its own process group)."""
        if self.proc is None:
            return
        self._reap_group()
        self.proc.wait(10)
        self.proc = None

    def _reap_group(self) -> None:
        """Workers left behind by a parent that died: SIGKILL what is left of the group."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def restart(self, timeout: float = 30.0) -> "Center":
        self.stop()
        return self.start(timeout)

    def close(self) -> None:
        self.stop()
        if self._db is not None:
            self._db.dispose()
            self._db = None

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def __enter__(self) -> "Center":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # operator actions ---------------------------------------------------------------------------
    def issue_code(self, contract: str, serial: str | None = None, *, term_days: int | None = None,
                   valid_days: int | None = 90) -> str:
        from opscenter.enroll import issue_code

        return issue_code(self.db, contract, serial=serial, term_days=term_days, valid_days=valid_days,
                          default_term_days=self.settings.default_term_days).code

    def replace(self, contract: str, serial: str | None = None) -> str:
        """The replacement flow: a code that moves ``contract`` to a new box."""
        from opscenter.enroll import replacement_code

        return replacement_code(self.db, contract, serial=serial).code

    def revoke(self, device_id: str) -> bool:
        from opscenter.enroll import revoke

        return revoke(self.db, device_id)

    def devices(self, include_revoked: bool = False) -> list[dict[str, Any]]:
        """Same rows as ``vcr-opscenter devices --json``."""
        from opscenter.views import list_devices

        return list_devices(self.db, self.settings.offline_after_missed, include_revoked=include_revoked)

    def device(self, device_id: str) -> dict[str, Any] | None:
        return next((d for d in self.devices(True) if d["device_id"] == device_id), None)

    def alarms(self, device_id: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        """Newest first, as ``vcr-opscenter alarms --json``."""
        from opscenter.alarms import recent

        return recent(self.db, device_id=device_id, limit=limit)

    def alarm_count(self, device_id: str | None = None) -> int:
        from opscenter.alarms import count

        return count(self.db, device_id)

    def events(self, device_id: str | None = None, kind: str | None = None) -> list[dict[str, Any]]:
        from opscenter.views import list_events

        return list_events(self.db, device_id=device_id, kind=kind, limit=10_000)

    def add_task(self, device_id: str, kind: str, params: dict[str, Any] | None = None) -> int:
        from opscenter.fleet import add_task

        return add_task(self.db, device_id, kind, params or {})

    def tasks(self, device_id: str | None = None) -> list[dict[str, Any]]:
        from opscenter.fleet import list_tasks

        return list_tasks(self.db, device_id)

    def set_desired(self, device_id: str | None = None, **kw: Any) -> dict[str, Any]:
        from opscenter.fleet import set_desired

        return set_desired(self.db, device_id or "*", **kw)

    def latest_backup(self, contract: str) -> dict[str, Any] | None:
        from opscenter.enroll import latest_backup

        return latest_backup(self.db, contract)

    def add_customer(self, contract: str, name: str, password: str | None = None) -> str:
        """A customer administrator account of ``contract`` for the control panel; returns its password."""
        import secrets

        from opscenter.panel.accounts import add_customer

        password = password or secrets.token_urlsafe(18)
        add_customer(self.db, contract, name, password, created_by="lab")
        return password

    def add_operator(self, name: str, role: str = "operator", password: str | None = None) -> str:
        """Another operator account (``role`` admin or operator); returns its password."""
        import secrets

        from opscenter.operators import add
        from opscenter.panel.accounts import set_role

        password = password or secrets.token_urlsafe(18)
        add(self.db, name, password)
        set_role(self.db, name, role)
        return password

    @property
    def panel_url(self) -> str:
        """The customer control panel (on the device listener)."""
        return f"{self.url}/panel/"

    @property
    def console_url(self) -> str | None:
        """The operators' console (on the operator listener)."""
        return f"{self.operator_url}/console/" if self.operator_url else None

    def wait_for(self, what: Callable[[], Any], timeout: float = 30.0, interval: float = 0.2) -> Any:
        """Poll ``what()`` until it returns something truthy; that value, or TimeoutError."""
        deadline = time.monotonic() + timeout
        while True:
            value = what()
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"condition not met in {timeout:.0f} s")
            time.sleep(interval)

    def session(self) -> Any:
        """A requests.Session trusting the center's CA (only where the center's address is reachable)."""
        import requests

        s = requests.Session()
        s.verify = str(self.ca)
        # With trust_env, $REQUESTS_CA_BUNDLE would silently win over Session.verify (requests #3829).
        s.trust_env = False
        return s


def start_center(workdir: str | os.PathLike[str], listen: str = "127.0.0.1:0", *, netns: str | None = None,
                 db: str | None = None, names: list[str] | None = None, ips: list[str] | None = None,
                 heartbeat_interval: float = 60.0, workers: int = 1, settings: dict[str, Any] | None = None,
                 host_for_url: str | None = None, start: bool = True, timeout: float = 30.0) -> Center:
    """Create the CA (``workdir/pki/ca.crt``, reused if there) and a server certificate for ``listen``'s
    address plus ``names``/``ips``, then start ``vcr-opscenter serve`` (inside ``netns`` if given).

    ``db`` defaults to SQLite in ``workdir``; ``settings`` are any other Settings fields (e.g.
    ``{"offline_after_missed": 3, "alarm_rate": 0}``). Port 0 picks a free port (kept across restarts).
    """
    wd = Path(workdir).resolve()
    wd.mkdir(parents=True, exist_ok=True)
    host, _port = split_listen(listen)
    san_ips = list(ips or [])
    try:
        if not ipaddress.ip_address(host).is_unspecified:
            san_ips.append(host)
    except ValueError:
        names = [host, *(names or [])]
    san_ips += ["127.0.0.1", "::1"]
    san_names = list(dict.fromkeys([*(names or []), "localhost"]))
    files = init_ca(wd / "pki", san_names, list(dict.fromkeys(san_ips)))
    data: dict[str, Any] = {
        "db": db or f"sqlite:///{wd / 'opscenter.db'}",
        "cert": str(files.cert),
        "key": str(files.key),
        "heartbeat_interval": heartbeat_interval,
        "workers": workers,
        "html_page": True,
        "operator_listen": "127.0.0.1:0",
        **(settings or {}),
    }
    Settings.model_validate({**data, "listen": listen})  # a bad setting fails here, not in the subprocess
    center = Center(wd, listen, netns=netns, settings=data, ca=files.ca_cert, cert=files.cert, key=files.key,
                    host_for_url=host_for_url)
    if start:
        center.start(timeout)
    return center
