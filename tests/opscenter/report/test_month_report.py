"""Done means: a month of check-ins and alarms stored at the center (through its own functions) makes a
report whose figures match the alarms stored there, computed here independently from the table."""
from __future__ import annotations

import datetime as dt
import shutil
import subprocess
from collections import Counter

import pytest
from sqlalchemy import select

from opscenter.db import alarms
from opscenter.report.render import render_report
from opscenter.report.signing import verify
from tests.opscenter.report.conftest import INTERVAL, MONTH, SimMonth, at

JST = dt.timezone(dt.timedelta(hours=9))
ENGINES = {"ips": "ips", "atp": "atp", "webfilter": "webfilter", "av": "antivirus", "firewall": "firewall"}


def expected_figures(sim: SimMonth) -> dict:
    """The figures straight from the alarms table: alert records of an inspection engine (not the web
    filter's QUIC/DoT policy blocks), by the record's own time in Japan time."""
    with sim.db.read() as conn:
        rows = conn.execute(select(alarms.c.event).where(alarms.c.device_id == sim.result.device_id)).scalars().all()
    out: dict = {"total": Counter(), "blocked": Counter(), "sev": Counter(), "day": Counter(), "host": Counter(),
                 "cat": Counter(), "site": Counter(), "policy": 0, "unscanned": 0, "stored": len(rows)}
    for ev in rows:
        t = dt.datetime.strptime(ev["timestamp"], "%Y-%m-%dT%H:%M:%S.%f%z").astimezone(JST)
        if (t.year, t.month) != (MONTH.year, MONTH.month):
            continue
        alert = ev.get("alert") or {}
        if ev["event_type"] != "alert" or alert.get("engine") not in ENGINES:
            continue
        if (ev.get("webfilter") or {}).get("where") in ("quic", "dot"):
            out["policy"] += 1
            continue
        if alert["engine"] == "av" and ev["av"]["reason"] != "infected":
            out["unscanned"] += 1
            continue
        fn = ENGINES[alert["engine"]]
        out["total"][fn] += 1
        blocked = alert["action"] == "blocked"
        out["blocked"][fn] += blocked
        out["sev"][(fn, {1: "high", 2: "medium"}.get(alert["severity"], "low"))] += 1
        out["day"][(fn, t.day)] += 1
        host = (ev.get("atp") or ev.get("av") or {}).get("lan_host") or \
            (ev["src_ip"] if ev.get("in_iface") == "lan" else ev["dest_ip"])
        out["host"][host] += 1
        if blocked and fn == "webfilter":
            for c in ev["webfilter"]["categories"]:
                out["cat"][c] += 1
            out["site"][ev["webfilter"]["host"]] += 1
        if blocked and fn == "atp":
            out["cat"]["threat-intel"] += 1
            out["site"][ev["atp"]["seen"]] += 1
        if blocked and fn == "antivirus":
            out["site"]["files.example.com"] += 1
    return out


@pytest.fixture(scope="module")
def report(sim: SimMonth, key):  # type: ignore[no-untyped-def]
    return render_report(sim.db, "C-1001", "2026-11", key=key, now=MONTH.end + dt.timedelta(hours=2))


def test_threat_figures_match_the_stored_alarms(sim: SimMonth, report):  # type: ignore[no-untyped-def]
    exp = expected_figures(sim)
    f = report.data.alarms
    assert exp["stored"] == sim.result.alarms > 0
    for fn, ff in f.functions.items():
        assert ff.total == exp["total"][fn], fn
        assert ff.blocked == exp["blocked"][fn], fn
        assert (ff.high, ff.medium, ff.low) == tuple(exp["sev"][(fn, s)] for s in ("high", "medium", "low")), fn
        assert f.by_day[fn] == [exp["day"][(fn, d)] for d in range(1, MONTH.days + 1)], fn
    assert f.total == sum(exp["total"].values()) and f.policy_blocks == exp["policy"] > 0
    assert f.av_unscanned == exp["unscanned"] > 0
    # functions without data are listed as such, not left out
    assert set(f.functions) == {"ips", "atp", "webfilter", "antivirus", "antispam", "sandbox", "firewall"}
    assert f.functions["antispam"].total == 0 and not f.functions["antispam"].has_data
    assert f.functions["antivirus"].reported  # the box's "av" engine reported in its check-ins
    # hosts: the most involved, with their counts
    top = sorted(exp["host"].items(), key=lambda kv: -kv[1])
    assert [h.total for h in f.hosts] == [n for _, n in top[:len(f.hosts)]]
    assert all(exp["host"][h.ip] == h.total for h in f.hosts) and f.hosts_total == len(exp["host"])
    assert all(sum(h.by_function.values()) == h.total for h in f.hosts)
    assert dict(f.categories) == dict(sorted(exp["cat"].items(), key=lambda kv: (-kv[1], kv[0]))[:10])
    assert dict(f.sites) == dict(sorted(exp["site"].items(), key=lambda kv: (-kv[1], kv[0]))[:10])


def test_operating_record_from_the_stored_checkins(sim: SimMonth, report):  # type: ignore[no-untyped-def]
    rec = report.data.operating
    assert rec["expected"]["seconds"] == MONTH.days * 86400
    down = [o for o in rec["outages"] if o["kind"] == "no_checkin"]
    off = [o for o in rec["outages"] if o["kind"] == "not_protecting"]
    assert len(down) == 1 and len(off) == 1
    (a, b) = sim.plan.outages[0]
    start = dt.datetime.strptime(down[0]["start"], "%Y-%m-%dT%H:%M:%SZ")
    end = dt.datetime.strptime(down[0]["end"], "%Y-%m-%dT%H:%M:%SZ")
    # from the last check-in before the outage to the first one after it
    assert a - dt.timedelta(seconds=1.2 * INTERVAL) <= start <= a and b <= end <= b + dt.timedelta(seconds=1.2 * INTERVAL)
    assert rec["outage_seconds"] == down[0]["seconds"] == round((end - start).total_seconds())
    assert rec["checking_in_seconds"] == rec["expected"]["seconds"] - rec["outage_seconds"]
    assert rec["availability_ppm"] == rec["checking_in_seconds"] * 1_000_000 // rec["expected"]["seconds"]
    # not protecting: the check-ins that said no worker was ready (3 h at a 30 min heartbeat)
    assert 2 * 3600 - 1.2 * INTERVAL <= off[0]["seconds"] <= 3 * 3600 + 1.2 * INTERVAL
    assert rec["protecting_seconds"] == rec["checking_in_seconds"] - rec["not_protecting_seconds"]
    assert sum(d["expected_seconds"] for d in rec["days"]) == rec["expected"]["seconds"]
    assert sum(d["checking_in_seconds"] for d in rec["days"]) == rec["checking_in_seconds"]
    assert rec["checkins"] == report.data.status.checkins > 0
    assert [d["serial"] for d in rec["devices"]] == ["VCR116W-0001"]


def test_mail_port_check_and_updates(sim: SimMonth, report):  # type: ignore[no-untyped-def]
    st = report.data.status
    assert st.mail_uninspected == sim.result.mail_uninspected > 0  # summed over an agent restart
    assert st.portcheck_failed > 0 and st.portcheck_ok > 0
    assert sum(report.data.alarms.updates.applied.values()) > 0
    box = report.data.current_boxes[0]
    assert box.agent_version == "0.1.0" and box.portcheck is not None and box.signatures["ips"]


def test_the_pdf_html_and_record(sim: SimMonth, report, key, tmp_path):  # type: ignore[no-untyped-def]
    pdf, html, record = report
    assert pdf.startswith(b"%PDF-")
    if shutil.which("pdffonts"):  # poppler-utils (scripts/setup.sh): the Japanese font is embedded
        (tmp_path / "r.pdf").write_bytes(pdf)
        fonts = subprocess.run(["pdffonts", str(tmp_path / "r.pdf")], capture_output=True, text=True, check=True).stdout
        cjk = [line for line in fonts.splitlines() if "CJK-JP" in line]
        assert cjk and all(" yes yes " in line for line in cjk), fonts
    assert '<meta name="viewport"' in html and "稼働記録" in html and "Operating record" in html
    for word in ("アンチスパム", "データなし", "サンドボックス"):  # no-data functions are listed
        assert word in html
    v = verify(record, trusted=[key.public])
    assert v.pinned and v.record["contract_id"] == "C-1001" and v.record["month"] == "2026-11"
    assert v.record["availability_percent"] == report.data.operating["availability_percent"]
    assert v.digest in html  # the report names the record it goes with
    assert f'id="mail-uninspected"><strong>{report.data.status.mail_uninspected} 通' in html
    assert 'id="mail-uninspected-none"' not in html and "パスワード付き ZIP" in html
    assert report.names == {"pdf": "report-C-1001-2026-11.pdf", "html": "report-C-1001-2026-11.html",
                            "record": "operating-record-C-1001-2026-11.json"}


def test_service_starting_mid_month(sim: SimMonth, key):  # type: ignore[no-untyped-def]
    files = render_report(sim.db, "C-1002", "2026-11", key=key, now=MONTH.end + dt.timedelta(hours=2), pdf=False)
    rec = files.data.operating
    start = dt.datetime.strptime(rec["expected"]["start"], "%Y-%m-%dT%H:%M:%SZ")
    assert start == sim.late_plan.activated and rec["outages"] == []
    assert rec["availability_percent"] == "100.00"
    assert all(d["expected_seconds"] == 0 for d in rec["days"][:19]) and rec["days"][19]["expected_seconds"] > 0
    f = files.data.alarms
    assert f.total == 0 and files.data.status.mail_uninspected is None
    assert 'id="mail-uninspected-none"' in files.html and "0 通という意味ではありません" in files.html
    assert 'id="mail-uninspected"' not in files.html
    assert "データなし" in files.html and "攻撃や脅威の検知はありませんでした" in files.html
    # before the service started: no record, said so
    before = render_report(sim.db, "C-1002", "2026-10", key=key, now=MONTH.end, pdf=False)
    assert before.data.operating["availability_percent"] is None and before.data.operating["expected"]["seconds"] == 0


def test_unknown_contract_and_bad_month(sim: SimMonth, key):  # type: ignore[no-untyped-def]
    with pytest.raises(LookupError):
        render_report(sim.db, "C-404", "2026-11", key=key, pdf=False)
    with pytest.raises(ValueError):
        render_report(sim.db, "C-1001", "2026-13", key=key, pdf=False)


def test_month_still_running_counts_until_now(sim: SimMonth, key):  # type: ignore[no-untyped-def]
    files = render_report(sim.db, "C-1001", "2026-11", key=key, now=at(5, 12), pdf=False)
    rec = files.data.operating
    assert rec["expected"]["seconds"] == 4 * 86400 + 12 * 3600 and rec["outages"] == []


def test_a_short_month_on_both_databases(db_url: str, key):  # type: ignore[no-untyped-def]
    """The same pipeline on SQLite and PostgreSQL (JSON columns, claims, the alarm id range)."""
    from lab.reportsim import Plan, simulate
    from opscenter.db import Database
    from opscenter.report import store

    db = Database(db_url)
    db.create_tables()
    plan = Plan("C-PG", "VCR116W-PG", MONTH, interval=3 * 3600.0, alarms_per_day=6,
                outages=[(at(3), at(4))], seed=3)
    res = simulate(db, plan)
    files = render_report(db, "C-PG", MONTH, key=key, now=MONTH.end + dt.timedelta(hours=1), pdf=False)
    rec = files.data.operating
    assert [o["kind"] for o in rec["outages"]] == ["no_checkin"] and files.data.status.checkins > 0
    assert files.data.alarms.total + files.data.alarms.policy_blocks <= res.alarms
    assert files.data.status.mail_uninspected == res.mail_uninspected
    assert store.claim(db, "C-PG", MONTH.key) and not store.claim(db, "C-PG", MONTH.key)
    store.save(db, "C-PG", MONTH.key, files)
    assert store.list_reports(db, "C-PG")[0]["status"] == "done"
    assert verify(store.report_file(db, "C-PG", MONTH.key, "record"), trusted=[key.public]).pinned
    db.dispose()


def test_the_panel_shows_the_reports_figures(sim: SimMonth, report, monkeypatch):  # type: ignore[no-untyped-def]
    """One truth: for the simulated month (an outage and a period not protecting), the customer's status
    page shows the same rates, days and outages as the report and its signed record."""
    import html as htmllib
    import re

    from opscenter.panel import accounts
    from opscenter.panel.customer import status as status_page
    from opscenter.report.period import jst_text
    from opscenter.settings import Settings
    from tests.opscenter.panelkit import PASSWORD, logged_in
    from tests.opscenter.helpers import TEST_SETTINGS

    rec = report.data.operating
    assert rec["outage_seconds"] > 0 and rec["not_protecting_seconds"] > 0
    assert rec["availability_percent"] != "100.00"
    settings = Settings.model_validate({**TEST_SETTINGS, "db": sim.url, "operator_login_burst": 1000,
                                        "heartbeat_interval": INTERVAL})
    name = "panel-agrees@c1001.example"
    if accounts.find_customer(sim.db, name) is None:  # the simulated month is shared by the module's tests
        accounts.add_customer(sim.db, "C-1001", name, PASSWORD)
    # the page at the time the report was made
    monkeypatch.setattr(status_page, "utcnow", lambda: MONTH.end + dt.timedelta(hours=2))
    from fastapi.testclient import TestClient

    from opscenter.panel.customer import create_customer_app

    c = TestClient(create_customer_app(settings, sim.db), base_url="https://testserver", follow_redirects=False)
    logged_in(c, "/panel", name)
    for lang in ("ja", "en"):
        page = c.get(f"/panel/?month=2026-11&lang={lang}").text
        share = re.search(r'id="month-share">([^<]*)<', page)
        assert share and share.group(1) == f"{rec['availability_percent']}%", (share and share.group(1), rec)
        assert f"{rec['protecting_percent']}%" in page.split('id="month-protecting"')[1].split("</p>")[0]
        listed = re.findall(r'<li data-seconds="(\d+)">([^<]*)', page.split('id="month-outages"')[1].split("</ul>")[0])
        assert [int(s) for s, _ in listed] == [o["seconds"] for o in rec["outages"]]
        for (_, text), o in zip(listed, rec["outages"]):
            start = dt.datetime.strptime(o["start"], "%Y-%m-%dT%H:%M:%SZ")
            assert jst_text(start) in htmllib.unescape(text)
        # the bar of each day, as the record's days say
        bars = dict(re.findall(r"<title>(\d{4}-\d\d-\d\d): ([\d.]+)%</title>", page))
        assert len(bars) == MONTH.days
        for d in rec["days"]:
            assert float(bars[d["date"]]) == pytest.approx(100 * d["checking_in_seconds"] / d["expected_seconds"], abs=0.06)
        assert float(bars["2026-11-10"]) < 90  # the day of the outage
        # mail not inspected: the report's figure, explained
        mu = report.data.status.mail_uninspected
        assert re.search(rf'id="mail-uninspected">{mu} (通|mails)<', page), page.split('id="mail"')[1][:400]
        assert ("パスワード付き ZIP" if lang == "ja" else "password-protected ZIP") in page
