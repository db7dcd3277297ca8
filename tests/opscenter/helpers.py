"""Shared helpers for the operations center tests: bodies the box sends, and an app on a given database."""
from __future__ import annotations

import uuid
from typing import Any

from fastapi.testclient import TestClient

from agent.link.center import auth_headers as bearer  # noqa: F401  (the box's own header: what the center gets)
from opscenter.app import create_app
from opscenter.settings import Settings

# Limits loose enough that only the tests about limits hit them.
TEST_SETTINGS: dict[str, Any] = {"checkin_rate": 0, "alarm_rate": 0, "activate_rate": 0,
                                 "sandbox_workers": 0}  # the sandbox tests drive the queue themselves


def checkin_body(**extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "sent_at": "2026-11-25T22:00:00Z",
        "agent_version": "0.1.0",
        "config_revision": 3,
        "signatures": {"ips": "2026.11.25.1", "webcat": "2026.11.20"},
        "health": {"cpu_percent": 3.5, "memory_percent": 41.0, "disk_percent": 12.0, "load": [0.1, 0.2, 0.3],
                   "uptime_s": 86400,
                   "interfaces": {"lan0": {"rx_bytes": 1, "tx_bytes": 2, "rx_packets": 3, "tx_packets": 4,
                                           "errin": 0, "errout": 0, "dropin": 0, "dropout": 0}}},
        "engines": {"ips": {"rules_loaded": 24811, "alerts": 3}},
        "spool": {"pending": 0, "dropped": 0},
        "portcheck": {"checked_at": "2026-11-25T21:59:00Z", "ok": True, "results": []},
    }
    body.update(extra)
    return body


def eve_alert(i: int = 0, sid: int = 2000001) -> dict[str, Any]:
    return {
        "timestamp": "2026-11-25T22:00:00.000000+0000", "event_type": "alert", "flow_id": 1000 + i,
        "src_ip": "192.0.2.10", "src_port": 40000 + i % 20000, "dest_ip": "198.51.100.7", "dest_port": 23,
        "proto": "TCP",
        "alert": {"action": "blocked", "gid": 1, "signature_id": sid, "rev": 1,
                  "signature": f"VCR outbound telnet {i}", "category": "Policy", "severity": 2},
    }


def batch(n: int, *, ids: list[str] | None = None) -> dict[str, Any]:
    ids = ids or [str(uuid.uuid4()) for _ in range(n)]
    return {"events": [{"event_id": e, "severity": 2, "event": eve_alert(i)} for i, e in enumerate(ids)]}


def make_client(db_url: str, **overrides: Any) -> TestClient:
    """A TestClient on a fresh app (enter it with ``with``)."""
    settings = Settings.model_validate({"db": db_url, **TEST_SETTINGS, **overrides})
    return TestClient(create_app(settings))


def issue(client: TestClient, contract: str, serial: str | None = None, kind: str = "initial", **kw: Any) -> str:
    from opscenter.enroll import issue_code

    return issue_code(client.app.state.db, contract, serial=serial, kind=kind, **kw).code  # type: ignore[attr-defined]


def activate(client: Any, code: str, serial: str, base: str = "") -> Any:
    return client.post(f"{base}/api/v1/activate",
                       json={"serial": serial, "activation_code": code, "agent_version": "0.1.0", "hostname": serial})


def activate_box(center: Any, contract: str, serial: str, hostname: str = "box") -> dict[str, Any]:
    """A box activated over HTTPS at a running center (lab/center.py) with a code issued for it: the
    center's answer (device_id, token...)."""
    import requests

    code = center.issue_code(contract, serial)
    r = requests.post(f"{center.url}/api/v1/activate", verify=center.ca, timeout=10,
                      json={"serial": serial, "activation_code": code, "agent_version": "0.1.0", "hostname": hostname})
    assert r.status_code == 201, r.text
    return r.json()


def deliver_config(client: Any, box: dict[str, Any], *revisions: int) -> list[int]:
    """Queue a config task per revision for ``box`` and deliver them with a check-in (the center then
    accepts backups of those revisions from that box)."""
    from opscenter.fleet import add_task

    ids = [add_task(client.app.state.db, box["device_id"], "config", {"revision": r, "config": "{}"})
           for r in revisions]
    r = client.post("/api/v1/checkin", json=checkin_body(), headers=bearer(box["token"]))
    assert r.status_code == 200, r.text
    return ids
