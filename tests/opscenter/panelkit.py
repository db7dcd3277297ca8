"""Helpers for the control panel and console tests: apps on one database, boxes with check-ins and alarms,
accounts, logged-in clients (TestClient over https://, so the Secure cookies are sent back)."""
from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from opscenter.app import create_app
from opscenter.operators import add as add_operator
from opscenter.panel import accounts
from opscenter.panel.console import create_console_app
from opscenter.panel.customer import create_customer_app
from opscenter.settings import Settings
from tests.opscenter.helpers import TEST_SETTINGS, activate, bearer, checkin_body, issue

PASSWORD = "correct horse battery staple"
CSRF_RE = re.compile(r'name="csrf" value="([^"]+)"')


def atp_event(pc: str = "192.168.10.23", threat: str = "QakBot", host: str = "c2.bad.example") -> dict[str, Any]:
    return {"timestamp": "2026-11-25T22:00:00.000000+0000", "event_type": "alert", "src_ip": pc, "src_port": 51000,
            "dest_ip": "203.0.113.9", "dest_port": 443, "proto": "TCP", "in_iface": "lan",
            "alert": {"action": "blocked", "gid": 1, "signature_id": 9400004, "rev": 1, "engine": "atp",
                      "signature": f"VCR ATP: TLS connection to a listed C&C domain ({threat})",
                      "category": "A Network Trojan was detected", "severity": 1},
            "atp": {"lan_host": pc, "indicator": host, "indicator_type": "domain", "threat": threat,
                    "source": "threatfox", "where": "tls_sni", "seen": host}}


@dataclass
class Env:
    settings: Settings
    device: TestClient
    boxes: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def db(self) -> Any:
        return self.device.app.state.db  # type: ignore[attr-defined]

    def box(self, contract: str, serial: str) -> dict[str, Any]:
        b = activate(self.device, issue(self.device, contract, serial), serial).json()
        self.boxes[contract] = b
        self.checkin(contract)
        return b

    def checkin(self, contract: str, **extra: Any) -> None:
        r = self.device.post("/api/v1/checkin", json=checkin_body(**extra), headers=bearer(self.boxes[contract]["token"]))
        assert r.status_code == 200, r.text

    def alarm(self, contract: str, event: dict[str, Any], severity: int = 1) -> int:
        eid = str(uuid.uuid4())
        r = self.device.post("/api/v1/alarms", json={"events": [{"event_id": eid, "severity": severity, "event": event}]},
                             headers=bearer(self.boxes[contract]["token"]))
        assert r.status_code == 200 and r.json()["accepted"] == 1, r.text
        from sqlalchemy import select

        from opscenter.db import alarms

        with self.db.read() as conn:
            return int(conn.execute(select(alarms.c.id).where(alarms.c.event_id == eid)).scalar_one())

    def customer(self, contract: str, name: str, password: str = PASSWORD) -> accounts.Customer:
        return accounts.add_customer(self.db, contract, name, password)

    def operator(self, name: str, role: str, password: str = PASSWORD) -> None:
        add_operator(self.db, name, password)
        accounts.set_role(self.db, name, role)

    def panel(self) -> TestClient:
        return TestClient(create_customer_app(self.settings, self.db), base_url="https://testserver",
                          follow_redirects=False)

    def console(self) -> TestClient:
        return TestClient(create_console_app(self.settings, self.db), base_url="https://testserver",
                          follow_redirects=False)


def make_env(tmp_path: Path, **overrides: Any) -> Env:
    settings = Settings.model_validate({"db": f"sqlite:///{tmp_path / 'center.db'}", **TEST_SETTINGS,
                                        "operator_login_burst": 1000, **overrides})
    device = TestClient(create_app(settings, sweep=False))
    device.__enter__()
    return Env(settings, device)


def csrf(client: TestClient, path: str) -> str:
    r = client.get(path)
    assert r.status_code == 200, (path, r.status_code, r.text[:500])
    m = CSRF_RE.search(r.text)
    assert m, f"no CSRF token on {path}"
    return m.group(1)


def login(client: TestClient, prefix: str, name: str, password: str = PASSWORD) -> Any:
    tok = csrf(client, f"{prefix}/login")
    return client.post(f"{prefix}/login", data={"csrf": tok, "name": name, "password": password,
                                                "next": f"{prefix}/"})


def logged_in(client: TestClient, prefix: str, name: str, password: str = PASSWORD) -> str:
    """Log in; returns the session's CSRF token."""
    r = login(client, prefix, name, password)
    assert r.status_code == 303 and r.headers["location"] == f"{prefix}/", (r.status_code, r.text[:300])
    return csrf(client, f"{prefix}/account")


def app_routes(kind: str) -> list[tuple[str, str]]:
    """(method, path) of every page route of the customer panel or the console (from the routers the
    application includes: a page added later is covered without changing the tests)."""
    from importlib import import_module

    from fastapi.routing import APIRoute

    from opscenter.panel import authroutes
    from opscenter.panel import console as console_pkg
    from opscenter.panel import customer as customer_pkg

    pkg = customer_pkg if kind == "customer" else console_pkg
    routers = [authroutes.router] + [import_module(f"{pkg.__name__}.{m}").router for m in pkg.PAGES]
    out = []
    for router in routers:
        for r in router.routes:
            if isinstance(r, APIRoute):
                for m in sorted(r.methods):
                    out.append((m, pkg.PREFIX + r.path))
    return out
