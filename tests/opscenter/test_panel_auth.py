"""Control panel and console: logins, sessions (cookie flags, expiry, logout), CSRF on every POST, the
shared login rate limit, TOTP (enrolment, login, no replay) and operator roles."""
from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import pyotp
import pytest
from sqlalchemy import update

from opscenter.db import panel_sessions
from tests.opscenter.panelkit import PASSWORD, csrf, logged_in, login, make_env


@pytest.fixture
def env(tmp_path: Path):
    e = make_env(tmp_path)
    e.box("C-A", "SER-A")
    e.customer("C-A", "alice@a.example")
    e.operator("opa", "admin")
    e.operator("opo", "operator")
    yield e
    e.device.__exit__(None, None, None)


def test_login_sets_a_strict_session_cookie_and_a_bad_password_does_not(env):
    c = env.panel()
    r = login(c, "/panel", "alice@a.example", "wrong password here")
    assert r.status_code == 401 and "ログイン名またはパスワードが違います" in r.text
    assert "__Host-vcr-panel" not in r.headers.get("set-cookie", "")
    r = login(c, "/panel", "nobody@a.example", PASSWORD)
    assert r.status_code == 401
    r = login(c, "/panel", "alice@a.example")
    assert r.status_code == 303
    cookie = [h for h in r.headers.get_list("set-cookie") if h.startswith("__Host-vcr-panel=")][0].lower()
    for flag in ("secure", "httponly", "samesite=lax", "path=/"):
        assert flag in cookie
    assert "domain=" not in cookie
    page = c.get("/panel/")
    assert page.status_code == 200 and "稼働状況" in page.text
    for h in ("content-security-policy", "x-frame-options", "strict-transport-security"):
        assert h in page.headers
    assert page.headers["cache-control"] == "no-store"


def test_pages_need_a_login(env):
    c = env.panel()
    for path in ("/panel/", "/panel/alarms", "/panel/changes", "/panel/replacement", "/panel/reports",
                 "/panel/account", "/panel/alarms/1", "/panel/changes/1"):
        r = c.get(path)
        assert r.status_code == 303 and r.headers["location"].startswith("/panel/login?next="), path
    o = env.console()
    for path in ("/console/", "/console/alarms", "/console/customers", "/console/changes/1"):
        r = o.get(path)
        assert r.status_code == 303 and r.headers["location"].startswith("/console/login"), path


def test_login_redirect_stays_in_the_application(env):
    c = env.panel()
    tok = csrf(c, "/panel/login")
    for evil in ("https://evil.example/", "//evil.example/panel/", "/console/", "/panel\\@evil"):
        r = c.post("/panel/login", data={"csrf": tok, "name": "alice@a.example", "password": PASSWORD, "next": evil})
        assert r.status_code == 303 and r.headers["location"] == "/panel/", evil


def test_csrf_missing_or_wrong_is_403(env):
    c = env.panel()
    # the login form: double-submit cookie
    r = c.post("/panel/login", data={"name": "alice@a.example", "password": PASSWORD})
    assert r.status_code == 403
    r = c.post("/panel/login", data={"csrf": "forged", "name": "alice@a.example", "password": PASSWORD})
    assert r.status_code == 403
    tok = logged_in(c, "/panel", "alice@a.example")
    form = {"category": "web_allow", "summary": "allow example.com"}
    assert c.post("/panel/changes", data=form).status_code == 403
    assert c.post("/panel/changes", data={**form, "csrf": "x" + tok}).status_code == 403
    # another session's token does not work here
    other = env.panel()
    other_tok = logged_in(other, "/panel", "alice@a.example")
    assert c.post("/panel/changes", data={**form, "csrf": other_tok}).status_code == 403
    # a cross-site origin is refused even with the token
    assert c.post("/panel/changes", data={**form, "csrf": tok},
                  headers={"Origin": "https://evil.example"}).status_code == 403
    assert c.post("/panel/logout", data={}).status_code == 403
    from opscenter.panel import store

    assert store.changes(env.db, "C-A") == []
    r = c.post("/panel/changes", data={**form, "csrf": tok}, headers={"Origin": "https://testserver"})
    assert r.status_code == 303
    # the console too
    o = env.console()
    otok = logged_in(o, "/console", "opa")
    aid = env.alarm("C-A", {"event_type": "alert", "alert": {"signature": "x"}})
    assert o.post(f"/console/alarms/{aid}/triage", data={"status": "ack"}).status_code == 403
    assert o.post(f"/console/alarms/{aid}/triage", data={"status": "ack", "csrf": otok}).status_code == 303


def test_every_post_route_checks_csrf(env):
    """Structural: every POST route of both applications answers 403 without a token, logged in or not."""
    from tests.opscenter.panelkit import app_routes

    for client, prefix, name, kind in ((env.panel(), "/panel", "alice@a.example", "customer"),
                                       (env.console(), "/console", "opa", "operator")):
        logged_in(client, prefix, name)
        posts = [p for m, p in app_routes(kind) if m == "POST"]
        assert len(posts) >= 5
        for route in posts:
            path = route.replace("{alarm_id}", "1").replace("{request_id}", "1").replace(
                "{account_id}", "1").replace("{action}", "disable")
            r = client.post(path, data={"status": "ack"})
            assert r.status_code == 403, (path, r.status_code)


def test_login_rate_limit_applies_to_right_passwords_too(tmp_path: Path):
    e = make_env(tmp_path, operator_login_burst=2, operator_login_rate=0.001)
    e.box("C-A", "SER-A")
    e.customer("C-A", "alice@a.example")
    c = e.panel()
    assert login(c, "/panel", "alice@a.example", "bad password 1").status_code == 401
    assert login(c, "/panel", "alice@a.example", "bad password 2").status_code == 401
    r = login(c, "/panel", "alice@a.example")
    assert r.status_code == 429 and int(r.headers["Retry-After"]) > 0
    assert "__Host-vcr-panel" not in r.headers.get("set-cookie", "")
    # the console has its own buckets (shared with the operator listener's HTTP Basic)
    e.operator("opa", "admin")
    assert login(e.console(), "/console", "opa").status_code == 303
    e.device.__exit__(None, None, None)


def test_totp_enrol_login_and_no_replay(env):
    c = env.panel()
    tok = logged_in(c, "/panel", "alice@a.example")
    assert c.post("/panel/account/totp/start", data={"csrf": tok}).status_code == 303
    page = c.get("/panel/account").text
    assert "<svg" in page  # the QR code, inline
    import re

    secret = re.search(r'id="totp-secret">([A-Z2-7 ]+)<', page).group(1).replace(" ", "")
    assert c.post("/panel/account/totp/confirm", data={"csrf": tok, "code": "000000"}).status_code == 400
    totp = pyotp.TOTP(secret)
    r = c.post("/panel/account/totp/confirm", data={"csrf": tok, "code": totp.now()})
    assert r.status_code == 303 and "done=totp_on" in r.headers["location"]
    assert c.post("/panel/logout", data={"csrf": tok}).status_code == 303
    assert c.get("/panel/").status_code == 303

    r = login(c, "/panel", "alice@a.example")
    assert r.status_code == 303 and r.headers["location"].startswith("/panel/login/totp")
    # password alone opens nothing
    assert c.get("/panel/").headers["location"].startswith("/panel/login")
    mtok = csrf(c, "/panel/login/totp")
    assert c.post("/panel/login/totp", data={"csrf": mtok, "code": "123456"}).status_code == 401
    # the code of the step used at enrolment is spent: the next step's code logs in
    code = totp.at(time.time() + 30)
    r = c.post("/panel/login/totp", data={"csrf": mtok, "code": code, "next": "/panel/alarms"})
    assert r.status_code == 303 and r.headers["location"] == "/panel/alarms"
    assert c.get("/panel/").status_code == 200
    # the same code again (a replay) does not open a second session
    d = env.panel()
    assert login(d, "/panel", "alice@a.example").status_code == 303
    r = d.post("/panel/login/totp", data={"csrf": csrf(d, "/panel/login/totp"), "code": code})
    assert r.status_code == 401


def test_operator_totp(env):
    o = env.console()
    tok = logged_in(o, "/console", "opo")
    o.post("/console/account/totp/start", data={"csrf": tok})
    from opscenter.panel import accounts

    secret = accounts.totp_state(env.db, "operator", "opo")["pending"]
    assert o.post("/console/account/totp/confirm", data={"csrf": tok, "code": pyotp.TOTP(secret).now()}
                  ).status_code == 303
    p = env.console()
    r = login(p, "/console", "opo")
    assert r.headers["location"].startswith("/console/login/totp")
    r = p.post("/console/login/totp", data={"csrf": csrf(p, "/console/login/totp"),
                                            "code": pyotp.TOTP(secret).at(time.time() + 30)})
    assert r.status_code == 303 and p.get("/console/").status_code == 200


def test_session_idle_and_absolute_expiry_and_logout(env):
    c = env.panel()
    tok = logged_in(c, "/panel", "alice@a.example")
    old = dt.datetime.utcnow() - dt.timedelta(minutes=env.settings.panel_session_idle_minutes + 1)
    with env.db.write() as conn:
        conn.execute(update(panel_sessions).values(seen_at=old))
    assert c.get("/panel/").status_code == 303  # idle too long

    tok = logged_in(c, "/panel", "alice@a.example")
    with env.db.write() as conn:
        conn.execute(update(panel_sessions).values(expires_at=dt.datetime.utcnow() - dt.timedelta(seconds=1)))
    assert c.get("/panel/").status_code == 303  # past its lifetime

    tok = logged_in(c, "/panel", "alice@a.example")
    cookie = c.cookies.get("__Host-vcr-panel")
    assert c.post("/panel/logout", data={"csrf": tok}).status_code == 303
    d = env.panel()
    d.cookies.set("__Host-vcr-panel", cookie, domain="testserver.local")
    assert d.get("/panel/").status_code == 303  # the old cookie value opens nothing


def test_disabled_account_and_password_change_end_sessions(env):
    from opscenter.panel import accounts

    c = env.panel()
    logged_in(c, "/panel", "alice@a.example")
    acct = accounts.find_customer(env.db, "alice@a.example")
    o = env.console()
    otok = logged_in(o, "/console", "opa")
    assert o.post(f"/console/customers/{acct.id}/disable", data={"csrf": otok}).status_code == 303
    assert c.get("/panel/").status_code == 303
    assert login(c, "/panel", "alice@a.example").status_code == 401
    o.post(f"/console/customers/{acct.id}/enable", data={"csrf": otok})
    tok = logged_in(c, "/panel", "alice@a.example")
    d = env.panel()
    logged_in(d, "/panel", "alice@a.example")
    r = c.post("/panel/account/password", data={"csrf": tok, "current": PASSWORD, "new": "a new long password",
                                                "again": "a new long password"})
    assert r.status_code == 303
    assert c.get("/panel/").status_code == 200  # this session stays
    assert d.get("/panel/").status_code == 303  # the other one ended
    assert login(d, "/panel", "alice@a.example", "a new long password").status_code == 303


def test_roles_are_enforced_on_the_server(env):
    from opscenter.panel import store

    aid = env.alarm("C-A", {"event_type": "alert", "alert": {"signature": "x"}})
    repl = store.create_replacement(env.db, "C-A", symptom="no power", contact="", by="alice")
    op = env.console()
    tok = logged_in(op, "/console", "opo")
    assert op.get("/console/").status_code == 200
    assert op.get("/console/customers").status_code == 403
    assert "/console/customers" not in op.get("/console/").text  # not in the menu either
    assert op.post("/console/customers", data={"csrf": tok, "contract": "C-A", "name": "mallory"}).status_code == 403
    assert op.post(f"/console/replacements/{repl['id']}/code", data={"csrf": tok}).status_code == 403
    assert op.post(f"/console/alarms/{aid}/triage", data={"csrf": tok, "status": "ack", "note": "seen"}
                   ).status_code == 303
    assert store.alarm(env.db, aid, None)["status"] == "ack"

    ad = env.console()
    atok = logged_in(ad, "/console", "opa")
    r = ad.post("/console/customers", data={"csrf": atok, "contract": "C-A", "name": "bob@a.example"})
    assert r.status_code == 200 and 'id="secret"' in r.text
    r = ad.post(f"/console/replacements/{repl['id']}/code", data={"csrf": atok, "serial": "SER-NEW"})
    assert r.status_code == 200
    import re

    code = re.search(r'id="secret">([0-9A-Z-]+)<', r.text).group(1)
    from tests.opscenter.helpers import activate

    new = activate(env.device, code, "SER-NEW")
    assert new.status_code == 201 and new.json()["contract_id"] == "C-A"
    assert store.replacement(env.db, repl["id"], None)["status"] == "code_issued"


def test_customers_cannot_use_the_console(env):
    c = env.panel()
    logged_in(c, "/panel", "alice@a.example")
    sid = c.cookies.get("__Host-vcr-panel")
    o = env.console()
    o.cookies.set("__Host-vcr-console", sid, domain="testserver.local")
    for path in ("/console/", "/console/alarms", "/console/customers", "/console/changes"):
        assert o.get(path).status_code == 303  # a customer session is no operator session
    assert login(o, "/console", "alice@a.example").status_code == 401  # nor a customer login an operator one
