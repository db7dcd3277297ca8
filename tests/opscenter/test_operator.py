"""Security issue, item 5: operator views only on their own listener, only for operator accounts.

The device listener serves the device API and nothing else (no page, no /docs, no /openapi.json);
the operator listener (127.0.0.1 by default) answers 401 to anyone without an operator account,
with a failed-login limit; accounts are argon2id hashes made by ``vcr-opscenter operator add``.
"""
from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from typing import Iterator

import pytest
from fastapi.testclient import TestClient

from opscenter.app import create_app
from opscenter.operator_app import create_operator_app
from opscenter.operators import add as add_operator
from opscenter.settings import Settings
from lab.center import Center, start_center
from tests.opscenter.helpers import TEST_SETTINGS, activate_box, bearer, checkin_body

OPERATOR_PATHS = ["/", "/docs", "/openapi.json", "/redoc", "/api/operator/v1/devices", "/api/operator/v1/alarms",
                  "/api/operator/v1/events"]


@pytest.fixture(scope="module")
def center(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Center]:
    # many failed logins on purpose here; their limit has its own test below
    c = start_center(tmp_path_factory.mktemp("opcenter"), "127.0.0.1:0",
                     settings={**TEST_SETTINGS, "operator_login_burst": 1000})
    yield c
    c.close()


def test_defaults_put_the_operator_listener_on_loopback():
    s = Settings()
    assert s.operator_listen == "127.0.0.1:8443" and s.listen == "0.0.0.0:443"
    with pytest.raises(ValueError):
        Settings(listen="0.0.0.0:443", operator_listen="127.0.0.1:443")  # needs a port of its own
    assert Settings(operator_listen="").operator_listen is None  # no operator listener at all


def test_device_listener_serves_no_operator_views_and_no_schema(center: Center):
    s = center.session()
    for path in OPERATOR_PATHS:
        for auth in (None, center.operator_auth):
            r = s.get(f"{center.url}{path}", auth=auth, timeout=10)
            assert r.status_code == 404, (path, r.status_code, r.text[:200])
            assert r.json()["error"] == "not_found"
    # and it still works for the boxes
    box = activate_box(center, "C-DEV", "VCR-DEV", "h")
    r = s.post(f"{center.url}/api/v1/checkin", json=checkin_body(), headers=bearer(box["token"]), timeout=10)
    assert r.status_code == 200


def test_operator_listener_wants_an_operator(center: Center):
    assert center.operator_url and center.operator_url.startswith("https://127.0.0.1:")
    assert center.operator_url != center.url
    s = center.session()
    for path in OPERATOR_PATHS + ["/nothing-here", "/api/v1/time"]:
        for auth in (None, ("operator", "wrong password!"), ("nobody", center.operator_auth[1])):
            r = s.get(f"{center.operator_url}{path}", auth=auth, timeout=10)
            assert r.status_code == 401, (path, auth, r.status_code)
            assert r.json()["error"] == "unauthorized" and "server_time" in r.json()
            assert r.headers["WWW-Authenticate"].startswith('Basic realm="vcr-opscenter operator"')
    r = s.get(f"{center.operator_url}/", headers=bearer("a-device-token"), timeout=10)
    assert r.status_code == 401  # a device token is no operator credential


def test_operator_gets_the_page_json_docs_and_schema(center: Center):
    box = activate_box(center, "C-OP", "VCR-OP", "h")
    s = center.session()
    s.auth = center.operator_auth
    s.post(f"{center.url}/api/v1/checkin", json=checkin_body(), headers=bearer(box["token"]), timeout=10, auth=None)
    page = s.get(f"{center.operator_url}/", timeout=10)
    assert page.status_code == 200 and "運用センター / Operations center" in page.text and box["device_id"] in page.text
    devs = s.get(f"{center.operator_url}/api/operator/v1/devices", timeout=10).json()["devices"]
    mine = next(d for d in devs if d["device_id"] == box["device_id"])
    assert mine["serial"] == "VCR-OP" and mine["alarms_today"]["events"] == 0
    assert s.get(f"{center.operator_url}/api/operator/v1/alarms?limit=5", timeout=10).json()["alarms"] == []
    assert s.get(f"{center.operator_url}/api/operator/v1/events?device={box['device_id']}",
                 timeout=10).json()["events"][0]["kind"] == "activated"
    schema = s.get(f"{center.operator_url}/openapi.json", timeout=10).json()
    assert schema["info"]["title"] == "vcr-agent operations center"
    assert {"/api/v1/checkin", "/api/v1/backups", "/api/operator/v1/devices"} <= set(schema["paths"])
    docs = s.get(f"{center.operator_url}/docs", timeout=10)
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    assert s.get(f"{center.operator_url}/nothing-here", timeout=10).status_code == 404
    # the operator listener does not serve the device API
    assert s.post(f"{center.operator_url}/api/v1/activate", json={}, timeout=10).status_code == 404


def test_failed_logins_are_rate_limited(tmp_path: Path):
    settings = Settings.model_validate({"db": f"sqlite:///{tmp_path / 'c.db'}", **TEST_SETTINGS,
                                        "operator_login_rate": 0.01, "operator_login_burst": 3})
    device = create_app(settings)
    with TestClient(device):
        db = device.state.db
        add_operator(db, "alice", "correct horse battery")
        with TestClient(create_operator_app(settings, db, device.openapi)) as op:
            assert op.get("/", auth=("alice", "correct horse battery")).status_code == 200
            codes = [op.get("/", auth=("alice", f"guess {i}")).status_code for i in range(3)]
            assert codes == [401, 401, 401]
            r = op.get("/", auth=("alice", "correct horse battery"))  # even the right password waits now
            assert r.status_code == 429 and r.json()["error"] == "rate_limited"
            assert int(r.headers["Retry-After"]) >= 1 and r.json()["retry_after"] >= 1
            assert op.get("/", auth=("bob", "anything at all")).status_code == 429  # same address


def test_operator_cli_stores_argon2id_hashes_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]):
    from opscenter.cli import main

    db = f"sqlite:///{tmp_path / 'c.db'}"

    class Run:
        def __init__(self, code: int, out: str) -> None:
            self.returncode, self.stdout = code, out

    def run(*args: str, password: str = "") -> Run:  # `vcr-opscenter operator ...`, the password on stdin
        monkeypatch.setattr(sys, "stdin", io.StringIO(password))
        code = main(["operator", *args, "--db", db])
        return Run(code, capsys.readouterr().out)

    assert run("add", "alice", password="short\n").returncode == 1  # too short
    assert run("add", "bad\x1bname", password="long enough password\n").returncode == 1
    r = run("add", "alice", password="long enough password\n")
    assert r.returncode == 0 and "operator added: alice" in r.stdout
    assert run("add", "alice", password="another long password\n").returncode == 1  # exists
    listed = json.loads(run("list", "--json").stdout)
    assert [o["name"] for o in listed] == ["alice"]
    from opscenter.db import Database, operators
    from opscenter.operators import Verifier

    d = Database(db)
    try:
        with d.read() as conn:
            (stored,) = conn.execute(operators.select().with_only_columns(operators.c.password_hash)).one()
        assert stored.startswith("$argon2id$") and "long enough" not in stored
        v = Verifier(d)
        assert v.verify("alice", "long enough password") and not v.verify("alice", "long enough passwore")
        assert run("passwd", "alice", password="a brand new password\n").returncode == 0
        assert not v.verify("alice", "long enough password")  # a remembered success ends with the hash
        assert v.verify("alice", "a brand new password")
        assert run("remove", "alice").returncode == 0
        assert not v.verify("alice", "a brand new password")
        assert run("remove", "alice").returncode == 1
    finally:
        d.dispose()
