"""The settings sheet and notification pages of the customer panel, and the console's sheets and
installation confirmations."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from sqlalchemy import update

from opscenter import notify, sheets
from opscenter.db import installation_confirmations, utcnow
from tests.opscenter.panelkit import logged_in, make_env

FIELD_RE = re.compile(r'data-field="([^"]+)"')


def sheet(ip: str = "192.0.2.2/24", gw: str = "192.0.2.1", name: str = "山田 太郎", addr: str = "東京都千代田区丸の内1-1-1") -> dict:
    return {"install_address": addr, "install_date": "2026-12-01", "management_ip": ip, "gateway": gw,
            "dns": ["198.51.100.53"], "contact": {"name": name, "mail": "yamada@example.co.jp", "phone": "03-1234-5678"}}


def form(tok: str, **over: str) -> dict:
    d = {"csrf": tok, "install_address": "大阪府大阪市北区梅田1-1-1 5F", "install_date": "2026-12-10",
         "management_ip": "10.1.2.3/24", "gateway": "10.1.2.1", "dns": "10.1.2.1, 1.1.1.1", "management_ipv6": "",
         "gateway_ipv6": "", "contact_name": "佐藤 花子", "contact_mail": "sato@example.co.jp",
         "contact_phone": "06-1234-5678"}
    d.update(over)
    return d


@pytest.fixture
def env(tmp_path: Path):
    e = make_env(tmp_path)
    sheets.set_sheet(e.db, "C-AAA", "SER-AAA", sheet())
    sheets.set_sheet(e.db, "C-BBB", "SER-BBB", sheet(ip="10.66.66.5/24", gw="10.66.66.1", name="BBB person"))
    e.customer("C-AAA", "alice@a.example")
    e.customer("C-BBB", "bob@b.example")
    e.operator("op", "operator")
    yield e
    e.device.__exit__(None, None, None)


def _alice(e):
    c = e.panel()
    return c, logged_in(c, "/panel", "alice@a.example")


def test_save_valid_sheet_is_stored_and_shown(env):
    c, tok = _alice(env)
    r = c.get("/panel/sheet")  # the contract's only sheet
    assert r.status_code == 200 and "SER-AAA" in r.text and "192.0.2.2/24" in r.text
    r = c.post("/panel/sheet/SER-AAA", data=form(tok))
    assert r.status_code == 303 and r.headers["location"] == "/panel/sheet/SER-AAA?done=saved"
    row = sheets.get_sheet(env.db, "SER-AAA")
    assert row["sheet"]["management_ip"] == "10.1.2.3/24" and row["sheet"]["dns"] == ["10.1.2.1", "1.1.1.1"]
    assert row["sheet"]["contact"]["name"] == "佐藤 花子" and row["updated_by"] == "customer:alice@a.example"
    r = c.get("/panel/sheet/SER-AAA?done=saved")
    assert "10.1.2.3/24" in r.text and "大阪府大阪市北区梅田1-1-1 5F" in r.text and "佐藤 花子" in r.text
    assert "readonly" not in r.text
    # the optional IPv6 pair
    r = c.post("/panel/sheet/SER-AAA", data=form(tok, management_ipv6="2001:db8:1::2/64", gateway_ipv6="2001:db8:1::1"))
    assert r.status_code == 303
    assert sheets.get_sheet(env.db, "SER-AAA")["sheet"]["gateway_ipv6"] == "2001:db8:1::1"


def test_invalid_sheet_shows_field_errors_and_stores_nothing(env):
    c, tok = _alice(env)
    before = sheets.get_sheet(env.db, "SER-AAA")
    r = c.post("/panel/sheet/SER-AAA", data=form(tok, management_ip="10.1.2.3", gateway="10.9.9.1", dns="1.1.1.1, nope",
                                                 contact_mail="not-a-mail", install_date="2026-13-40",
                                                 management_ipv6="2001:db8::2/64"))
    assert r.status_code == 400
    fields = set(FIELD_RE.findall(r.text))
    assert {"management_ip", "dns", "contact_mail", "install_date", "gateway_ipv6"} <= fields
    assert "プレフィックス長を付けてください" in r.text and "give the prefix length too" in r.text  # ja with en
    assert "メールアドレスとして正しくありません: not-a-mail" in r.text
    assert 'value="not-a-mail"' in r.text  # the entered values stay in the form
    assert sheets.get_sheet(env.db, "SER-AAA") == before
    r = c.post("/panel/sheet/SER-AAA?lang=en", data=form(tok, gateway="10.9.9.1"))
    assert r.status_code == 400 and "is not inside the subnet" in r.text and "サブネット" not in r.text
    assert FIELD_RE.findall(r.text) == ["gateway"]
    assert sheets.get_sheet(env.db, "SER-AAA") == before


def test_csrf_missing_is_refused(env):
    c, tok = _alice(env)
    before = sheets.get_sheet(env.db, "SER-AAA")
    data = form(tok)
    del data["csrf"]
    assert c.post("/panel/sheet/SER-AAA", data=data).status_code == 403
    assert c.post("/panel/sheet/SER-AAA", data={**data, "csrf": "wrong"}).status_code == 403
    assert c.post("/panel/notifications", data={"window": "5", "offline": "15", "recipients": "x@example.com"}).status_code == 403
    assert sheets.get_sheet(env.db, "SER-AAA") == before
    assert notify.get_prefs(env.db, "C-AAA", env.settings)["default"]


def test_another_contracts_sheet_is_out_of_reach(env):
    c, tok = _alice(env)
    before = sheets.get_sheet(env.db, "SER-BBB")
    for path in ("/panel/sheet/SER-BBB", "/panel/sheet/SER-NONE"):
        r = c.get(path)
        assert r.status_code == 404 and "BBB person" not in r.text and "10.66.66" not in r.text
        assert c.post(path, data=form(tok)).status_code == 404
    # a serial smuggled into the form of the own sheet changes only the own sheet
    r = c.post("/panel/sheet/SER-AAA", data=form(tok, serial="SER-BBB", contract="C-BBB", contract_id="C-BBB"))
    assert r.status_code == 303
    assert sheets.get_sheet(env.db, "SER-BBB") == before
    assert sheets.get_sheet(env.db, "SER-AAA")["contract_id"] == "C-AAA"
    assert sheets.get_sheet(env.db, "SER-NONE") is None
    for path in ("/panel/sheet", "/panel/sheet/SER-AAA", "/panel/notifications"):
        body = c.get(path).text
        assert "SER-BBB" not in body and "C-BBB" not in body and "BBB person" not in body


def test_activated_box_locks_the_network_fields(env):
    env.box("C-AAA", "SER-AAA")  # the box with this serial is activated
    c, tok = _alice(env)
    before = sheets.get_sheet(env.db, "SER-AAA")["sheet"]
    r = c.get("/panel/sheet/SER-AAA")
    assert 'id="sheet-locked"' in r.text and 'name="management_ip" value="192.0.2.2/24"' in r.text
    assert re.search(r'name="management_ip"[^>]*readonly', r.text)
    assert not re.search(r'name="contact_name"[^>]*readonly', r.text)
    r = c.post("/panel/sheet/SER-AAA", data=form(tok, contact_name="鈴木 一郎"))
    assert r.status_code == 303
    after = sheets.get_sheet(env.db, "SER-AAA")["sheet"]
    assert after["contact"]["name"] == "鈴木 一郎"
    assert {k: v for k, v in after.items() if k != "contact"} == {k: v for k, v in before.items() if k != "contact"}
    # a bad contact is still refused by field
    r = c.post("/panel/sheet/SER-AAA", data=form(tok, contact_phone="12"))
    assert r.status_code == 400 and FIELD_RE.findall(r.text) == ["contact_phone"]


def test_notification_prefs_round_trip(env):
    c, tok = _alice(env)
    r = c.get("/panel/notifications")
    assert r.status_code == 200 and "yamada@example.co.jp" in r.text  # default recipient: the sheet's contact
    r = c.post("/panel/notifications", data={"csrf": tok, "enabled": "on", "kinds": ["severe", "online"], "window": "5",
                                             "offline": "30", "recipients": "it@a.example\nboss@a.example, it@a.example"})
    assert r.status_code == 303 and r.headers["location"] == "/panel/notifications?done=saved"
    p = notify.get_prefs(env.db, "C-AAA", env.settings)
    assert (p["enabled"], p["kinds"], p["window_s"], p["offline_after_s"], p["recipients"]) == \
        (True, ["severe", "online"], 300, 1800, ["it@a.example", "boss@a.example"])
    r = c.get("/panel/notifications")
    assert 'value="5"' in r.text and 'value="30"' in r.text and "boss@a.example" in r.text
    assert re.search(r'value="offline"(?! checked)', r.text) and 'value="severe" checked' in r.text
    # invalid: field errors, nothing changed
    r = c.post("/panel/notifications", data={"csrf": tok, "kinds": ["severe", "bogus"], "window": "0", "offline": "x",
                                             "recipients": "ok@a.example\nnot a mail"})
    assert r.status_code == 400
    assert set(FIELD_RE.findall(r.text)) == {"kinds", "window", "offline", "recipients"}
    assert "メールアドレスとして正しくありません: not" in r.text
    assert notify.get_prefs(env.db, "C-AAA", env.settings) == p
    # switched off; the other contract untouched
    assert c.post("/panel/notifications", data={"csrf": tok, "window": "10", "offline": "15", "recipients": ""}).status_code == 303
    p = notify.get_prefs(env.db, "C-AAA", env.settings)
    assert (p["enabled"], p["kinds"], p["recipients"]) == (False, [], [])
    assert notify.get_prefs(env.db, "C-BBB", env.settings)["default"]


def test_console_sheets_and_confirmations(env):
    env.box("C-AAA", "SER-AAA")
    env.box("C-BBB", "SER-BBB")
    with env.db.write() as conn:
        n = conn.execute(update(installation_confirmations).where(installation_confirmations.c.serial == "SER-BBB")
                         .values(status="confirmed", confirmed_at=utcnow())).rowcount
    assert n == 1
    o = env.console()
    tok = logged_in(o, "/console", "op")
    r = o.get("/console/sheets")
    assert r.status_code == 200 and "SER-AAA" in r.text and "SER-BBB" in r.text
    r = o.get("/console/sheets/SER-BBB")
    assert r.status_code == 200 and "BBB person" in r.text and 'id="sheet-locked"' in r.text
    # a new sheet for a new box: the activation code is shown once
    r = o.get("/console/sheets?contract=C-BBB&serial=SER-NEW")
    assert r.status_code == 303 and r.headers["location"] == "/console/sheets/SER-NEW?contract=C-BBB"
    r = o.get("/console/sheets/SER-NEW?contract=C-BBB")
    assert r.status_code == 200 and "C-BBB" in r.text
    r = o.post("/console/sheets/SER-NEW?contract=C-BBB", data=form(tok, management_ip="bad"))
    assert r.status_code == 400 and "management_ip" in FIELD_RE.findall(r.text)
    assert sheets.get_sheet(env.db, "SER-NEW") is None
    r = o.post("/console/sheets/SER-NEW?contract=C-BBB", data=form(tok))
    assert r.status_code == 200 and 'id="activation-code"' in r.text
    row = sheets.get_sheet(env.db, "SER-NEW")
    assert row["contract_id"] == "C-BBB" and row["updated_by"] == "op"
    # the contract of an existing sheet is the stored one, whatever the URL says
    r = o.post("/console/sheets/SER-NEW?contract=C-AAA", data=form(tok, contact_name="変更"))
    assert r.status_code == 303 and sheets.get_sheet(env.db, "SER-NEW")["contract_id"] == "C-BBB"
    # confirmations: not confirmed first
    r = o.get("/console/confirmations")
    assert r.status_code == 200
    order = [s for s in re.findall(r"/console/sheets/(SER-[A-Z]+)", r.text)]
    assert order == ["SER-AAA", "SER-NEW", "SER-BBB"], order
    assert "conf-confirmed" in r.text and "conf-pending" in r.text and "conf-not_installed" in r.text


def test_console_pages_are_for_operators_only(env):
    o = env.console()
    for path in ("/console/sheets", "/console/sheets/SER-AAA", "/console/confirmations"):
        r = o.get(path)
        assert r.status_code == 303 and r.headers["location"].startswith("/console/login")
    # a customer's session is no console session
    c, tok = _alice(env)
    o.cookies.update({k: v for k, v in c.cookies.items()})
    assert o.get("/console/confirmations").status_code == 303
    assert o.post("/console/sheets/SER-AAA", data=form(tok)).status_code in (303, 403)
    assert sheets.get_sheet(env.db, "SER-AAA")["sheet"]["management_ip"] == "192.0.2.2/24"
    # the customer panel has no console pages
    assert c.get("/panel/confirmations").status_code == 404
    assert c.get("/panel/sheets").status_code == 404


def test_sheet_index_none_one_or_several(env):
    c, _tok = _alice(env)
    sheets.set_sheet(env.db, "C-AAA", "SER-AAA2", sheet(addr="第二拠点"))
    r = c.get("/panel/sheet")
    assert r.status_code == 200 and 'id="sheets"' in r.text and "SER-AAA2" in r.text and "第二拠点" in r.text
    assert "SER-BBB" not in r.text
    sheets.delete_sheet(env.db, "SER-AAA")
    sheets.delete_sheet(env.db, "SER-AAA2")
    r = c.get("/panel/sheet")
    assert r.status_code == 200 and 'id="no-sheet"' in r.text
