"""The console's sandbox queue: files with verdicts and reasons; the override is for admins, needs the
CSRF token and a note, and is recorded."""
from __future__ import annotations

import hashlib
from pathlib import Path

from lab.sandbox_samples import pe
from opscenter.sandbox import queue
from opscenter.sandbox.analyzer import StaticAnalyzer
from opscenter.sandbox.worker import run_once
from tests.opscenter.helpers import bearer
from tests.opscenter.panelkit import logged_in, make_env


def test_queue_page_and_override(tmp_path: Path):
    env = make_env(tmp_path)
    box = env.box("C-A", "SER-A")
    sample = pe(salt=b"console")
    h = hashlib.sha256(sample).hexdigest()
    r = env.device.post("/api/v1/sandbox/files", params={"sha256": h, "name": "請求書.exe", "lan_host": "192.168.10.23"},
                        content=sample, headers={**bearer(box["token"]), "Content-Type": "application/octet-stream"})
    assert r.status_code == 202
    env.operator("boss", "admin")
    env.operator("opa", "operator")
    ops = env.console()
    tok = logged_in(ops, "/console", "opa")
    page = ops.get("/console/sandbox").text
    assert "請求書.exe" in page and "解析待ち" in page  # queued, not judged yet
    run_once(env.db, StaticAnalyzer())
    page = ops.get("/console/sandbox").text
    assert "危険" in page and "VCR_Sandbox_Test_Marker" in page
    detail = ops.get(f"/console/sandbox/{h}").text
    assert "192.168.10.23" in detail and 'id="admin-only"' in detail and 'id="override-form"' not in detail
    # an operator may not override, even with the token
    r = ops.post(f"/console/sandbox/{h}/override", data={"csrf": tok, "verdict": "clean", "note": "x"})
    assert r.status_code == 403
    assert ops.get("/console/sandbox/" + "0" * 64).status_code == 404
    assert ops.get("/console/sandbox/../etc").status_code == 404
    admin = env.console()
    tok = logged_in(admin, "/console", "boss")
    assert admin.post(f"/console/sandbox/{h}/override", data={"verdict": "clean", "note": "x"}).status_code == 403
    assert admin.post(f"/console/sandbox/{h}/override", data={"csrf": tok, "verdict": "clean", "note": ""}
                      ).status_code == 400  # a note is required
    assert admin.post(f"/console/sandbox/{h}/override", data={"csrf": tok, "verdict": "harmless", "note": "n"}
                      ).status_code == 400
    r = admin.post(f"/console/sandbox/{h}/override", data={"csrf": tok, "verdict": "clean", "note": "社内ツール (確認済み)"})
    assert r.status_code == 303 and "done=saved" in r.headers["location"]
    assert queue.verdicts(env.db, [h])[h]["verdict"] == "clean"
    detail = admin.get(f"/console/sandbox/{h}").text
    assert "社内ツール (確認済み)" in detail and "boss" in detail
    v = env.device.post("/api/v1/sandbox/verdicts", json={"sha256": [h]}, headers=bearer(box["token"])).json()
    assert v["verdicts"][h]["verdict"] == "clean"  # every box gets the operator's verdict


def test_customers_are_told_what_each_sandbox_alarm_means():
    """The engine's own records (filters/sandbox/engine.py) explained: the retro alarm is urgent and says the
    PC already has the file; a file passed before its verdict is for the record only."""
    from filters.engine import EngineContext
    from filters.sandbox.engine import Sandbox
    from opscenter.panel.explain import explain
    from tests.filters.sandbox.test_engine import CENTER, Conn

    sb = Sandbox()
    sb.configure({"enabled": True, **CENTER, "hold_timeout": 0.5}, EngineContext())
    conn = Conn(sb)
    conn.get(pe(salt=b"explain"))
    ((hold_id, _),) = conn.pipe.take_io()
    conn.pipe.tick(conn.ts + 1)
    conn.pipe.io_done(hold_id, {"verdict": "malicious", "reasons": ["yara VCR_Sandbox_Test_Marker (+100)"]}, None,
                      conn.ts + 5)
    passed, retro = [e for e in conn.eve if e["event_type"] == "alert"]
    x = explain(passed)
    assert x.engine == "sandbox" and x.level == "low" and "setup.exe" in x.what[0] and x.pc == "192.0.2.10"
    x = explain(retro)
    assert x.level == "high" and "届いていました" in x.what[0] and "ネットワークから外し" in x.todo[0]
    assert x.pc == "192.0.2.10" and x.remote == "files.example"
    blocked = Conn(sb).get(pe(salt=b"explain"))
    assert blocked and blocked[0].outcome.name == "DROP"
