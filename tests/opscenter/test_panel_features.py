"""Control panel features: due dates over holidays, the monthly quota, alarm explanations, the month's
uptime (the operating record), applying a change request through the box's check, the customer CLI."""
from __future__ import annotations

import datetime as dt
import io
import json
import sys
from pathlib import Path

import pytest
from sqlalchemy import select, update

from opscenter.db import contracts, device_events, devices, tasks
from opscenter import configcheck
from opscenter.panel import availability, bizdays, store
from opscenter.panel.explain import ENGINE_NAMES, explain
from tests.opscenter.panelkit import PASSWORD, atp_event, csrf, logged_in, make_env


# due dates ------------------------------------------------------------------------------------

@pytest.mark.parametrize("filed, due", [
    ("2026-12-28", "2027-01-08"),  # Monday before the year-end break: Dec 29 - Jan 3 off, then Jan 4-8
    ("2026-12-25", "2027-01-07"),  # Friday: Dec 28, then Jan 4, 5, 6, 7
    ("2027-01-03", "2027-01-08"),  # filed inside the break
    ("2026-04-30", "2026-05-12"),  # Golden Week: May 1, then 3-6 off (May 6 substitute holiday), 7, 8, 11, 12
    ("2026-05-02", "2026-05-13"),  # Saturday of Golden Week
    ("2026-09-18", "2026-09-30"),  # Silver Week 2026: 21 Respect for the Aged, 22 citizens' holiday, 23 equinox; 24, 25, 28, 29, 30
    ("2026-11-25", "2026-12-02"),  # an ordinary Wednesday
])
def test_due_dates_skip_weekends_holidays_and_year_end(filed, due):
    assert bizdays.add_business_days(dt.date.fromisoformat(filed), 5) == dt.date.fromisoformat(due)


def test_due_date_uses_the_day_in_japan():
    # 2026-12-27 16:00 UTC is Monday 2026-12-28 01:00 in Japan
    assert bizdays.due_date(dt.datetime(2026, 12, 27, 16, 0), 5) == dt.date(2027, 1, 8)
    # 14:59 UTC is still Sunday 2026-12-27 in Japan: Monday 28 is then the first business day
    assert bizdays.due_date(dt.datetime(2026, 12, 27, 14, 59), 5) == dt.date(2027, 1, 7)
    assert bizdays.month_of(dt.datetime(2026, 11, 30, 15, 0)) == "2026-12"
    assert not bizdays.is_business_day(dt.date(2027, 1, 11))  # Coming of Age Day
    assert bizdays.holiday_name(dt.date(2026, 12, 31)) == "年末年始"
    assert bizdays.business_days_between(dt.date(2026, 12, 28), dt.date(2027, 1, 8)) == 5


@pytest.fixture
def env(tmp_path: Path):
    e = make_env(tmp_path)
    e.box("C-A", "SER-A")
    e.customer("C-A", "alice@a.example")
    yield e
    e.device.__exit__(None, None, None)


def test_change_request_due_date_is_stored_and_shown(env):
    row = store.create_change(env.db, "C-A", category="web_allow", summary="allow x", detail="", by="alice",
                              per_month=4, business_days=5, now=dt.datetime(2026, 12, 28, 1, 0))
    assert row["due_date"] == dt.date(2027, 1, 8) and row["month"] == "2026-12"
    c = env.panel()
    logged_in(c, "/panel", "alice@a.example")
    page = c.get(f"/panel/changes/{row['id']}").text
    assert 'data-date="2027-01-08"' in page and "2027年1月8日 (金)" in page
    assert "Fri 8 Jan 2027" in c.get(f"/panel/changes/{row['id']}?lang=en").text


def test_monthly_quota(env):
    c = env.panel()
    tok = logged_in(c, "/panel", "alice@a.example")
    ids = []
    for i in range(4):
        r = c.post("/panel/changes", data={"csrf": tok, "category": "other", "summary": f"change {i}"})
        assert r.status_code == 303
        ids.append(int(r.headers["location"].split("/")[-1].split("?")[0]))
    r = c.post("/panel/changes", data={"csrf": tok, "category": "other", "summary": "one too many"})
    assert r.status_code == 409 and "上限" in r.text
    assert c.post(f"/panel/changes/{ids[0]}/cancel", data={"csrf": tok}).status_code == 303
    assert store.change(env.db, ids[0], "C-A")["status"] == "cancelled"
    assert c.post("/panel/changes", data={"csrf": tok, "category": "other", "summary": "fits again"}).status_code == 303
    q = store.quota(env.db, "C-A", bizdays.month_of(dt.datetime.utcnow()), 4)
    assert q["used"] == 4 and q["left"] == 0
    # bad input
    r = c.post("/panel/changes", data={"csrf": tok, "category": "nonsense", "summary": "x"})
    assert r.status_code in (400, 409)


def test_replacement_request_is_recorded_once(env):
    c = env.panel()
    tok = logged_in(c, "/panel", "alice@a.example")
    assert c.post("/panel/replacement", data={"csrf": tok, "symptom": "", "contact": ""}).status_code == 400
    r = c.post("/panel/replacement", data={"csrf": tok, "symptom": "電源が入らない", "contact": "山田 03-1234-5678"})
    assert r.status_code == 303
    rows = store.replacements(env.db, "C-A")
    assert len(rows) == 1 and rows[0]["symptom"] == "電源が入らない" and rows[0]["device_id"] == env.boxes["C-A"]["device_id"]
    assert c.post("/panel/replacement", data={"csrf": tok, "symptom": "again"}).status_code == 409
    assert "電源が入らない" in c.get("/panel/replacement").text


# explanations -----------------------------------------------------------------------------------

EVENTS = {
    "atp": atp_event(pc="192.168.1.23"),
    "webfilter": {"event_type": "alert", "src_ip": "192.168.1.5", "dest_ip": "198.51.100.4", "dest_port": 443,
                  "in_iface": "lan", "alert": {"action": "blocked", "signature_id": 9300001, "engine": "webfilter",
                                               "signature": "VCR webfilter: blocked category"},
                  "webfilter": {"host": "phish.example", "categories": ["phishing"], "reason": "category"}},
    "firewall": {"event_type": "alert", "src_ip": "203.0.113.50", "src_port": 4444, "dest_ip": "192.168.1.7",
                 "dest_port": 3389, "in_iface": "wan",
                 "alert": {"action": "blocked", "signature_id": 9000000, "engine": "firewall",
                           "signature": "VCR firewall: default deny wan_to_lan"}},
    "ips": {"event_type": "alert", "src_ip": "192.168.1.8", "dest_ip": "198.51.100.9", "dest_port": 23,
            "in_iface": "lan", "direction": "to_server",
            "alert": {"action": "allowed", "signature_id": 2000001, "signature": "ET POLICY outbound telnet",
                      "severity": 2, "category": "Policy"}},
    "av": {"event_type": "alert", "src_ip": "198.51.100.2", "dest_ip": "192.168.1.9", "in_iface": "wan",
           "alert": {"action": "blocked", "engine": "av", "signature": "EICAR"}, "av": {"virus": "EICAR-Test"}},
    "antispam": {"event_type": "alert", "alert": {"action": "blocked", "engine": "antispam", "signature": "spam"},
                 "antispam": {"from": "spammer@example.net"}},
    "sandbox": {"event_type": "alert", "src_ip": "192.168.1.4", "dest_ip": "198.51.100.3",
                "alert": {"action": "blocked", "engine": "sandbox", "signature": "sandbox verdict"},
                "sandbox": {"file": "invoice.exe"}},
    "spool": {"event_type": "gap", "dropped": 12},
}


@pytest.mark.parametrize("engine", sorted(EVENTS))
def test_each_engine_has_an_explanation(engine):
    x = explain(EVENTS[engine])
    assert x.engine == engine and x.title[0] and x.what[0] and x.todo[0] and x.what[1]
    assert x.action in ("blocked", "alerted", "info")
    if engine in ("atp", "webfilter", "firewall", "ips", "av", "sandbox"):
        assert x.pc and x.pc.startswith("192.168.1."), (engine, x.pc)
        assert x.pc in x.what[0]
    assert engine in ENGINE_NAMES


def test_explanations_say_what_was_done():
    assert explain(EVENTS["atp"]).action == "blocked" and "遮断" in explain(EVENTS["atp"]).what[0]
    ips = explain(EVENTS["ips"])
    assert ips.action == "alerted" and "止めていません" in ips.what[0] and "192.168.1.8" == ips.pc
    assert explain(EVENTS["atp"]).level == "high"
    assert "フィッシング" in explain(EVENTS["webfilter"]).what[0]
    fw = explain(EVENTS["firewall"])
    assert "203.0.113.50" in fw.what[0] and fw.pc == "192.168.1.7"


@pytest.mark.parametrize("junk", [None, 3, "x", [], {}, {"event_type": "alert"}, {"alert": "no"},
                                  {"event_type": "alert", "alert": {"signature_id": "9400001", "engine": 5}},
                                  {"event_type": "weird", "src_ip": "\x1b[31m", "alert": {"signature": "\u202e"}}])
def test_odd_records_get_the_fallback_and_plain_text(junk):
    x = explain(junk)
    assert x.title[0] and x.todo[0]
    assert "\x1b" not in x.what[0] and "\u202e" not in x.what[0]


# uptime ----------------------------------------------------------------------------------------

def test_month_uptime_is_the_operating_record(env):
    """The panel's month figure comes from the check-in spans (the operating record's computation), not
    from offline/online events: an outage only recorded as events does not count, one in the spans does."""
    from opscenter.db import checkin_spans
    from opscenter.report.operating import operating_record
    from opscenter.report.period import Month

    dev = env.boxes["C-A"]["device_id"]
    start, _end = availability.month_bounds("2026-11")
    with env.db.write() as conn:
        conn.execute(update(devices).values(activated_at=start, last_checkin_at=start + dt.timedelta(days=30)))
        conn.execute(update(contracts).values(term_start=start))
        conn.execute(device_events.delete())
        conn.execute(checkin_spans.delete())
        # checking in all month except day 10 00:00 to day 12 00:00 (2 of 30 days)
        for a, b in ((start, start + dt.timedelta(days=9)), (start + dt.timedelta(days=11), start + dt.timedelta(days=30))):
            conn.execute(checkin_spans.insert().values(device_id=dev, first_at=a, last_at=b, checkins=100,
                                                       interval=60.0, protecting=1))
        # events the old computation used, saying something else: ignored
        conn.execute(device_events.insert().values(device_id=dev, kind="offline", at=start + dt.timedelta(days=20),
                                                   detail={"last_checkin": "2026-11-20T00:00:00Z"}))
    now = start + dt.timedelta(days=30)
    rep = availability.month_report(env.db, "C-A", "2026-11", now, 3, 60.0)
    rec = operating_record(env.db, "C-A", Month.parse("2026-11"), misses=3, default_interval=60.0, now=now)
    assert rep["record"] == rec
    assert rep["percent"] == rec["availability_percent"] == "93.33"  # 28/30, rounded down
    assert rep["share"] == pytest.approx(28 / 30, abs=1e-6)
    shares = [d["share"] for d in rep["days"]]
    assert shares[9] == 0 and shares[10] == 0 and shares[8] == 1 and shares[11] == 1 and shares[20] == 1
    assert [(o["kind"], o["start"], o["end"]) for o in rep["outages"]] == [
        ("no_checkin", start + dt.timedelta(days=9), start + dt.timedelta(days=11))]
    # a month before the service started has nothing to count
    before = availability.month_report(env.db, "C-A", "2026-10", start, 3, 60.0)
    assert before["share"] is None and before["percent"] is None and all(d["share"] is None for d in before["days"])


def test_status_page_shows_operating_normally(env):
    from opscenter.db import checkin_spans, utcnow

    env.alarm("C-A", atp_event(pc="192.168.10.23"))
    began = utcnow() - dt.timedelta(hours=2)  # in service and checking in for two hours
    with env.db.write() as conn:
        conn.execute(update(contracts).values(term_start=began))
        conn.execute(update(checkin_spans).values(first_at=began))
    c = env.panel()
    logged_in(c, "/panel", "alice@a.example")
    page = c.get("/panel/").text
    assert 'data-state="ok"' in page and "UTM は正常に稼働しています" in page
    assert 'id="month-share">100.00%<' in page and "SER-A" in page and 'id="month-no-outages"' in page
    assert "192.168.10.23" in page and "ウイルス感染の疑い" in page
    assert 'id="installation-slot"' in page and 'id="install-pending"' in page  # not every criterion yet
    assert 'id="mail-scope"' in page and "SSL/TLS で暗号化されたメールは UTM では検査できません" in page  # said plainly
    en = c.get("/panel/?lang=en").text
    assert "The UTM is operating normally" in en and "UTM は正常" not in en
    assert "Mail over SSL/TLS cannot be inspected" in en
    assert "The UTM is operating normally" in c.get("/panel/").text  # remembered in a cookie
    reports = c.get("/panel/reports?lang=ja").text
    assert 'id="reports-slot"' in reports and "まだレポートはありません" in reports


def test_status_page_mail_not_measured_versus_zero(env):
    """Mail the box could not inspect: "not measured" while the box reports no such counter this month,
    0 once it reports the counter without an increase, then the count."""
    c = env.panel()
    logged_in(c, "/panel", "alice@a.example")
    page = c.get("/panel/?lang=ja").text
    assert 'id="mail-uninspected-none"' in page and "0 通という意味ではありません" in page
    assert 'id="mail-uninspected"' not in page
    counter = lambda n: {"engines": {"mail": {"counters": {"mail.uninspected": n}}}}  # noqa: E731
    env.checkin("C-A", **counter(0))  # the mail engine starts reporting: nothing uninspected yet
    env.checkin("C-A", **counter(0))
    page = c.get("/panel/?lang=ja").text
    assert 'id="mail-uninspected">0 通' in page and 'id="mail-uninspected-none"' not in page
    assert "暗号化のために検査できなかったメールはありませんでした" in page
    env.checkin("C-A", **counter(3))
    page = c.get("/panel/?lang=en").text
    assert 'id="mail-uninspected">3 mails' in page and "password-protected ZIP" in page


def test_customer_downloads_only_their_own_stored_reports(env):
    """The schedule stores each contract's report (opscenter/report/); the panel lists and serves them."""
    from opscenter.db import reports

    env.box("C-B", "SER-B")
    now = dt.datetime(2026, 12, 1, 17, 0)
    with env.db.write() as conn:
        for contract, month in (("C-A", "2026-11"), ("C-B", "2026-10")):
            conn.execute(reports.insert().values(
                contract_id=contract, month=month, status="done", attempts=1, claimed_at=now, generated_at=now,
                pdf=f"%PDF-{contract}".encode(), html=f"<html>{contract}</html>".encode(), record=b"{}", summary={}))
    c = env.panel()
    logged_in(c, "/panel", "alice@a.example")
    page = c.get("/panel/reports?lang=ja").text
    assert 'id="report-list"' in page and "2026-11" in page and "2026-10" not in page
    pdf = c.get("/panel/reports/2026-11/pdf")
    assert pdf.status_code == 200 and pdf.content == b"%PDF-C-A" and pdf.headers["content-type"] == "application/pdf"
    assert "attachment" in pdf.headers["content-disposition"]
    assert c.get("/panel/reports/2026-11/html").content == b"<html>C-A</html>"
    assert c.get("/panel/reports/2026-10/pdf").status_code == 404  # C-B's month: not this customer's
    assert c.get("/panel/reports/2026-11/secrets").status_code == 404


def test_the_reports_page_gives_the_public_key_that_verifies_the_downloaded_record(tmp_path: Path):
    """The customer (or the insurer) downloads the signed record and the center's public key from the panel
    and checks it offline with ``vcr-opscenter verify-report``; a changed byte fails."""
    from opscenter.cli import main
    from opscenter.db import reports
    from opscenter.report.operating import operating_record
    from opscenter.report.period import Month
    from opscenter.report.signing import SigningKey, ensure_key, sign_record

    key_path, pub_path, _ = ensure_key(tmp_path / "keys")
    e = make_env(tmp_path, report_key=str(key_path))
    try:
        e.box("C-A", "SER-A")
        e.customer("C-A", "alice@a.example")
        key = SigningKey.load(key_path)
        now = dt.datetime(2026, 12, 1, 17, 0)
        rec = operating_record(e.db, "C-A", Month.parse("2026-11"), misses=3, default_interval=60.0, now=now)
        with e.db.write() as conn:
            conn.execute(reports.insert().values(
                contract_id="C-A", month="2026-11", status="done", attempts=1, claimed_at=now, generated_at=now,
                pdf=b"%PDF-", html=b"<html></html>", record=sign_record(rec, key, "2026-12-01T17:00:00Z"),
                summary={}))
        c = e.panel()
        logged_in(c, "/panel", "alice@a.example")
        page = c.get("/panel/reports?lang=ja").text
        assert f'id="key-id">{key.key_id}<' in page and "verify-report" in page
        assert "書き換えられていない" in page and "not changed" in page
        pub = c.get("/panel/reports/report-signing.pub")
        assert pub.status_code == 200 and pub.content == pub_path.read_bytes()
        record = c.get("/panel/reports/2026-11/record").content
        (tmp_path / "dl").mkdir()
        (tmp_path / "dl" / "report-signing.pub").write_bytes(pub.content)
        f = tmp_path / "dl" / "vcr-report-2026-11.record.json"
        f.write_bytes(record)
        assert main(["verify-report", str(f), "--pubkey", str(tmp_path / "dl" / "report-signing.pub")]) == 0
        f.write_bytes(record.replace(b'"C-A"', b'"C-B"', 1))
        assert main(["verify-report", str(f), "--pubkey", str(tmp_path / "dl" / "report-signing.pub")]) == 1
        assert e.panel().get("/panel/reports/report-signing.pub").status_code == 303  # to the login page
    finally:
        e.device.__exit__(None, None, None)


def test_reports_page_without_a_signing_key(env):
    c = env.panel()
    logged_in(c, "/panel", "alice@a.example")
    assert "署名鍵がまだ設定されていません" in c.get("/panel/reports?lang=ja").text
    assert c.get("/panel/reports/report-signing.pub").status_code == 404


def test_status_page_when_the_box_is_offline_or_port_check_fails(env):
    c = env.panel()
    logged_in(c, "/panel", "alice@a.example")
    env.checkin("C-A", portcheck={"ok": False, "results": [{"feature": "ips", "proto": "tcp", "port": 443,
                                                             "ok": False}]})
    assert 'data-state="warn"' in c.get("/panel/").text
    with env.db.write() as conn:
        conn.execute(update(devices).values(last_checkin_at=dt.datetime.utcnow() - dt.timedelta(hours=2)))
    assert 'data-state="down"' in c.get("/panel/").text
    e = env.console()
    env.operator("opo", "operator")
    logged_in(e, "/console", "opo")
    fleet = e.get("/console/").text
    assert 'class="offline"' in fleet


def test_installation_confirmation_is_shown_to_the_customer_and_the_operator(env):
    """The center's record (opscenter/confirm.py, evaluated at each check-in) fills the panel's slot."""
    from opscenter.db import installation_confirmations

    env.checkin("C-A")
    c = env.panel()
    logged_in(c, "/panel", "alice@a.example")
    page = c.get("/panel/?lang=ja").text
    assert 'id="install-pending"' in page and "設置確認完了" not in page
    assert "ブリッジ" in page or "DNS" in page  # the missing criteria are named
    e = env.console()
    env.operator("opi", "operator")
    logged_in(e, "/console", "opi")
    assert "設置未確認" in e.get("/console/?lang=ja").text
    with env.db.write() as conn:
        conn.execute(update(installation_confirmations).values(
            status="confirmed", confirmed_at=dt.datetime(2026, 12, 3, 5, 0)))
    page = c.get("/panel/?lang=ja").text
    assert 'id="install-confirmed"' in page and "設置確認完了 (2026-12-03)" in page
    assert "Installation confirmed (2026-12-03)" in c.get("/panel/?lang=en").text
    assert "設置未確認" not in e.get("/console/?lang=ja").text


# applying a change request ------------------------------------------------------------------------

def _fake_check(tmp_path: Path, body: str) -> tuple[str, ...]:
    script = tmp_path / "fakecheck.py"
    script.write_text(body)
    return (str(script),)


def test_apply_runs_the_check_and_queues_a_config_task(env, tmp_path, monkeypatch):
    env.operator("opo", "operator")
    row = store.create_change(env.db, "C-A", category="web_allow", summary="allow x", detail="", by="alice",
                              per_month=4, business_days=5)
    o = env.console()
    tok = logged_in(o, "/console", "opo")
    data = {"csrf": tok, "revision": "7", "config": "engines: {}\n"}
    # 1. the box's real check (vcr-agent config check-remote) refuses a command: nothing queued
    danger = {**data, "config": "upgrade:\n  restart_command: [sh, -c, id]\n"}
    r = o.post(f"/console/changes/{row['id']}/apply", data=danger)
    assert r.status_code == 422 and "upgrade.restart_command" in r.text
    with env.db.read() as conn:
        assert conn.execute(select(tasks).where(tasks.c.kind == "config")).first() is None
    # 2. the check refuses the revision
    bad = _fake_check(tmp_path, "import json,sys\nprint(json.dumps({'ok': False, 'errors': [{'key': 'engines.ips', "
                                "'message': 'unknown key'}]}))\nsys.exit(1)\n")
    monkeypatch.setattr(configcheck, "COMMAND", bad)
    r = o.post(f"/console/changes/{row['id']}/apply", data=data)
    assert r.status_code == 422 and "unknown key" in r.text
    # 3. the check passes: a config task with the revision, the request is applying
    good = _fake_check(tmp_path, "import json,sys\nassert open(sys.argv[1]).read() == 'engines: {}\\n'\n"
                                 "assert sys.argv[2] == '--json'\nprint(json.dumps({'ok': True}))\n")
    monkeypatch.setattr(configcheck, "COMMAND", good)
    r = o.post(f"/console/changes/{row['id']}/apply", data=data)
    assert r.status_code == 303, r.text[:2000]
    with env.db.read() as conn:
        t = conn.execute(select(tasks).where(tasks.c.kind == "config")).mappings().one()
    assert t["params"]["revision"] == 7 and t["params"]["config"] == "engines: {}\n"
    assert t["device_id"] == env.boxes["C-A"]["device_id"]
    ch = store.change(env.db, row["id"], None)
    assert ch["status"] == "applying" and ch["task_id"] == t["task_id"]
    # the box reports the revision applied: the customer sees the request done
    from tests.opscenter.helpers import bearer

    env.checkin("C-A")
    env.device.post(f"/api/v1/tasks/{t['task_id']}/status", json={"status": "applied", "detail": ""},
                    headers=bearer(env.boxes["C-A"]["token"]))
    assert store.change(env.db, row["id"], "C-A")["shown_status"] == "done"
    # applying twice is refused
    assert o.post(f"/console/changes/{row['id']}/apply", data=data).status_code == 409


def test_check_remote_reports_unavailable_for_a_missing_command():
    r = configcheck.check_remote("x: 1\n", command=("-m", "agent.cli", "no-such-command"))
    assert r.outcome == "unavailable" and not r.ok
    r = configcheck.check_remote("x: 1\n", command=("-m", "no_such_module_here"))
    assert r.outcome == "unavailable"


# CLI ------------------------------------------------------------------------------------------------

def test_customer_cli(env, monkeypatch, capsys):
    from opscenter.cli import main

    db = env.settings.db
    monkeypatch.setattr(sys, "stdin", io.StringIO(PASSWORD + "\n"))
    assert main(["customer", "add", "--contract", "C-A", "carol@a.example", "--db", db]) == 0
    assert main(["customer", "add", "--contract", "C-NONE", "dave@a.example", "--generate", "--db", db]) == 1
    assert main(["customer", "list", "--json", "--db", db]) == 0
    out = capsys.readouterr().out
    names = [r["name"] for r in json.loads(out[out.index("["):])]
    assert "carol@a.example" in names and "dave@a.example" not in names
    c = env.panel()
    logged_in(c, "/panel", "carol@a.example")
    assert main(["customer", "disable", "carol@a.example", "--db", db]) == 0
    assert c.get("/panel/").status_code == 303
    from opscenter.operators import add

    add(env.db, "ops2", PASSWORD)
    assert main(["operator", "role", "ops2", "admin", "--db", db]) == 0
    from opscenter.panel.accounts import get_operator

    assert get_operator(env.db, "ops2").role == "admin"
    assert main(["operator", "remove", "ops2", "--db", db]) == 0  # the profile goes with it
    assert get_operator(env.db, "ops2") is None
    _ = csrf


def test_box_text_is_escaped_once_in_every_page(env):
    ev = {"event_type": "alert", "src_ip": "192.168.1.5", "dest_ip": "198.51.100.4", "in_iface": "lan",
          "alert": {"action": "blocked", "signature_id": 2000009, "signature": "<script>alert(1)</script> C&C"}}
    aid = env.alarm("C-A", ev)
    env.operator("opo", "operator")
    c = env.panel()
    logged_in(c, "/panel", "alice@a.example")
    o = env.console()
    logged_in(o, "/console", "opo")
    for client, path in ((c, f"/panel/alarms/{aid}"), (c, "/panel/alarms"), (o, "/console/alarms"),
                         (o, f"/console/alarms/{aid}")):
        page = client.get(path).text
        assert "<script>alert" not in page, path
        assert "&lt;script&gt;" in page and "&amp;amp;" not in page, path
