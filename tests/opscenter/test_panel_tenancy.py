"""Tenant isolation: a customer sees only their own contract. Two contracts with a box, alarms, change
and replacement requests each; every route of the customer panel is requested by customer A with the
ids of contract B's rows (and A's own), and nothing of B comes back or changes."""
from __future__ import annotations

from pathlib import Path

import pytest

from opscenter import notify, sheets
from opscenter.panel import store
from tests.opscenter.panelkit import app_routes, atp_event, logged_in, make_env

B_MARKERS = ("C-BBB", "SER-BBB", "bbb-secret-c2.example", "BBB change summary", "BBB symptom", "10.66.66.66")


@pytest.fixture
def two(tmp_path: Path):
    e = make_env(tmp_path)
    e.box("C-AAA", "SER-AAA")
    e.box("C-BBB", "SER-BBB")
    ids = {}
    for c, host, pc in (("C-AAA", "aaa-c2.example", "192.168.1.10"), ("C-BBB", "bbb-secret-c2.example", "10.66.66.66")):
        ids[c] = {"alarm": e.alarm(c, atp_event(pc=pc, host=host))}
        tag = c[-3:]
        ids[c]["change"] = store.create_change(e.db, c, category="other", summary=f"{tag} change summary", detail="",
                                               by="x", per_month=4, business_days=5)["id"]
        ids[c]["replacement"] = store.create_replacement(e.db, c, symptom=f"{tag} symptom", contact="", by="x")["id"]
        ids[c]["serial"] = f"SER-{tag}"
    for c, ip in (("C-AAA", "192.168.1"), ("C-BBB", "10.66.66")):
        sheets.set_sheet(e.db, c, f"SER-{c[-3:]}", {
            "install_address": f"{c[-3:]} address", "install_date": "2026-12-01", "management_ip": f"{ip}.2/24",
            "gateway": f"{ip}.1", "dns": [f"{ip}.1"], "contact": {"name": f"{c[-3:]} person",
                                                              "mail": f"it@{c[-3:].lower()}.example",
                                                              "phone": "03-1234-5678"}})
    e.customer("C-AAA", "alice@a.example")
    e.customer("C-BBB", "bob@b.example")
    yield e, ids
    e.device.__exit__(None, None, None)


def _fill(path: str, ids: dict[str, int]) -> str:
    return (path.replace("{alarm_id}", str(ids["alarm"])).replace("{request_id}", str(ids["change"]))
            .replace("{account_id}", "1").replace("{action}", "disable")
            .replace("{serial}", ids["serial"]))


def test_every_customer_route_keeps_to_its_contract(two):
    e, ids = two
    c = e.panel()
    tok = logged_in(c, "/panel", "alice@a.example")
    routes = app_routes("customer")
    assert {("GET", "/panel/alarms/{alarm_id}"), ("GET", "/panel/changes/{request_id}"),
            ("POST", "/panel/changes/{request_id}/cancel"), ("GET", "/panel/sheet/{serial}"),
            ("POST", "/panel/sheet/{serial}"), ("POST", "/panel/notifications")} <= set(routes)
    before = (store.change(e.db, ids["C-BBB"]["change"], None), store.replacement(e.db, ids["C-BBB"]["replacement"], None),
              sheets.get_sheet(e.db, "SER-BBB"), notify.get_prefs(e.db, "C-BBB", e.settings))
    seen_own = False
    for method, path in routes:
        if path.endswith(("/login", "/logout", "/login/totp")):
            continue
        for target in ("C-BBB", "C-AAA"):
            url = _fill(path, ids[target])
            for query in ("", "?month=2026-01", "?page=1&lang=en"):
                if method == "GET":
                    r = c.get(url + query)
                else:
                    r = c.post(url + query, data={"csrf": tok, "category": "other", "summary": "A's own",
                                                  "symptom": "A's", "code": "000000"})
                body = r.text.replace(url, "<the requested path>")  # echoed in the language links: no disclosure
                for marker in B_MARKERS:
                    assert marker not in body, (method, url + query, marker)
                if "{" in path and target == "C-BBB":
                    assert r.status_code == 404, (method, url, r.status_code)
                if method == "GET" and target == "C-AAA" and r.status_code == 200 and "aaa-c2.example" in body:
                    seen_own = True
    assert seen_own  # the checks did look at real pages
    after = (store.change(e.db, ids["C-BBB"]["change"], None), store.replacement(e.db, ids["C-BBB"]["replacement"], None),
             sheets.get_sheet(e.db, "SER-BBB"), notify.get_prefs(e.db, "C-BBB", e.settings))
    assert before == after  # nothing of B changed
    # guessing ids around B's
    for n in range(1, 12):
        for path in ("/panel/alarms/", "/panel/changes/"):
            r = c.get(f"{path}{n}")
            assert r.status_code in (200, 404)
            assert not any(m in r.text for m in B_MARKERS), (path, n)


def test_b_sees_b_and_not_a(two):
    e, ids = two
    c = e.panel()
    logged_in(c, "/panel", "bob@b.example")
    assert "bbb-secret-c2.example" in c.get(f"/panel/alarms/{ids['C-BBB']['alarm']}").text
    assert c.get(f"/panel/alarms/{ids['C-AAA']['alarm']}").status_code == 404
    assert "aaa-c2.example" not in c.get("/panel/alarms").text
    assert "AAA change summary" not in c.get("/panel/changes").text


def test_operators_see_every_contract(two):
    e, ids = two
    e.operator("opo", "operator")
    o = e.console()
    logged_in(o, "/console", "opo")
    q = o.get("/console/alarms").text
    assert "aaa-c2.example" in q or "C-AAA" in q
    assert "C-BBB" in q
    assert "BBB change summary" in o.get("/console/changes").text
