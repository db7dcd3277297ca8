"""The control panel and console in a browser: a headless Chromium driven by Selenium (Debian's
chromium and chromedriver; nothing is downloaded), demo data for a real center, and the screenshots of
every page (``python -m lab screenshots`` -> docs/screenshots/).

    from lab.center import start_center
    from lab.panel_demo import browser, seed

    center = start_center(workdir)
    demo = seed(center)            # two contracts, boxes, check-ins, alarms, requests, accounts
    with browser() as b:           # a WebDriver; b.get(center.panel_url) ...
        ...
"""
from __future__ import annotations

import base64
import contextlib
import datetime as dt
import logging
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any, Iterator

log = logging.getLogger("lab")

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CUSTOMER_PASSWORD = "demo-password-2026"
OPERATOR_PASSWORD = "operator-password-2026"
SIZES = {"desktop": (1280, 900, False), "phone": (390, 844, True)}


def browser_missing() -> str | None:
    """Why no browser test can run here, or None."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not Path(path).exists():
            return f"{path} is missing (apt-get install chromium chromium-driver; scripts/setup.sh does)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (the test extra)"
    return None


@contextlib.contextmanager
def browser(width: int = 1280, height: int = 900) -> Iterator[Any]:
    """A headless Chromium (root-safe flags, a fresh profile, the lab CA's certificates accepted)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="vcr-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                f"--user-data-dir={profile}", f"--window-size={width},{height}", "--lang=ja-JP",
                "--hide-scrollbars", "--ignore-certificate-errors"):
        opts.add_argument(arg)
    opts.accept_insecure_certs = True  # the lab center's own CA
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def set_viewport(driver: Any, size: str) -> None:
    w, h, mobile = SIZES[size]
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": w, "height": h, "deviceScaleFactor": 1, "mobile": mobile})


def full_page_png(driver: Any, path: Path) -> None:
    """The whole page (not only the viewport) as a PNG."""
    metrics = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})
    size = metrics.get("cssContentSize") or metrics["contentSize"]
    w = driver.execute_script("return document.documentElement.clientWidth")
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True,
        "clip": {"x": 0, "y": 0, "width": w, "height": min(int(size["height"]) + 1, 6000), "scale": 1}})
    path.write_bytes(base64.b64decode(shot["data"]))


def login(driver: Any, base: str, name: str, password: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(f"{base}/login")
    driver.find_element(By.ID, "name").send_keys(name)
    driver.find_element(By.ID, "password").send_keys(password)
    driver.find_element(By.ID, "login-submit").click()
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, 20).until(lambda d: "/login" not in d.current_url)  # the next page is there


# demo data ---------------------------------------------------------------------------------------

def _events(now: dt.datetime) -> list[dict[str, Any]]:
    ts = now.strftime("%Y-%m-%dT%H:%M:%S.000000+0000")
    return [
        {"timestamp": ts, "event_type": "alert", "src_ip": "192.168.10.23", "src_port": 51234, "dest_ip": "203.0.113.66",
         "dest_port": 443, "proto": "TCP", "in_iface": "lan",
         "alert": {"action": "blocked", "gid": 1, "signature_id": 9400004, "rev": 1, "engine": "atp", "severity": 1,
                   "signature": "VCR ATP: TLS connection to a listed C&C domain (QakBot)",
                   "category": "A Network Trojan was detected"},
         "atp": {"lan_host": "192.168.10.23", "indicator": "update-check.bad.example", "indicator_type": "domain",
                 "threat": "QakBot", "source": "threatfox", "where": "tls_sni", "seen": "update-check.bad.example"}},
        {"timestamp": ts, "event_type": "alert", "src_ip": "192.168.10.41", "src_port": 50000, "dest_ip": "198.51.100.20",
         "dest_port": 443, "proto": "TCP", "in_iface": "lan",
         "alert": {"action": "blocked", "signature_id": 9300001, "engine": "webfilter", "severity": 2,
                   "signature": "VCR webfilter: blocked category phishing", "category": "Web filter"},
         "webfilter": {"host": "login-microsoft.phish.example", "categories": ["phishing"], "reason": "category"}},
        {"timestamp": ts, "event_type": "alert", "src_ip": "203.0.113.200", "src_port": 44321, "dest_ip": "192.168.10.5",
         "dest_port": 3389, "proto": "TCP", "in_iface": "wan",
         "alert": {"action": "blocked", "signature_id": 9000000, "engine": "firewall", "severity": 2,
                   "signature": "VCR firewall: default deny wan_to_lan", "category": "Firewall policy"}},
        {"timestamp": ts, "event_type": "alert", "src_ip": "198.51.100.77", "src_port": 33000, "dest_ip": "192.168.10.8",
         "dest_port": 80, "proto": "TCP", "in_iface": "wan", "direction": "to_server",
         "alert": {"action": "blocked", "signature_id": 2024897, "severity": 1, "engine": "ips",
                   "signature": "ET EXPLOIT Apache Struts RCE attempt", "category": "Attempted Administrator Privilege Gain"}},
        {"timestamp": ts, "event_type": "gap", "dropped": 4, "by_severity": {"3": 4}},
    ]


def _checkin_body(ok: bool = True) -> dict[str, Any]:
    today = dt.date.today()
    ver = f"{today:%Y.%m.%d}.1"
    old = f"{today - dt.timedelta(days=9):%Y.%m.%d}.1"
    return {
        "agent_version": "0.1.0", "config_revision": 3,
        "signatures": {"ips": ver if ok else old, "threatintel": ver, "webcat": ver},
        "health": {"cpu_percent": 4.0 if ok else 71.0, "memory_percent": 38.0, "disk_percent": 21.0,
                   "load": [0.2, 0.2, 0.1], "uptime_s": 864000},
        "spool": {"pending": 0, "dropped": 0},
        "portcheck": {"checked_at": dt.datetime.utcnow().strftime("%Y-%m-%dT%H:%M:%SZ"), "ok": ok,
                      "results": [] if ok else [{"feature": "webfilter", "proto": "tcp", "port": 6060, "ok": False}]},
    }


def seed(center: Any) -> dict[str, Any]:
    """Demo data on a running center (through its device API where a box would act, directly in the
    database for the month's history): contract C-1001 with an online box, a month with a short outage,
    alarms of each engine, change requests and a customer account; C-1002 with a box that went
    offline, a failing port check and a replacement request."""
    from sqlalchemy import update

    from opscenter.db import checkin_spans, contracts, device_events, devices
    from opscenter.panel import accounts, availability, bizdays, store

    s = center.session()
    out: dict[str, Any] = {"customers": {}, "boxes": {}}
    now = dt.datetime.utcnow().replace(microsecond=0)
    for contract, serial, ok in (("C-1001", "VCR116W-0001", True), ("C-1002", "VCR116W-0002", False)):
        code = center.issue_code(contract, serial)
        r = s.post(f"{center.url}/api/v1/activate", timeout=10, json={
            "serial": serial, "activation_code": code, "agent_version": "0.1.0", "hostname": serial.lower()})
        r.raise_for_status()
        box = r.json()
        out["boxes"][contract] = box
        h = {"Authorization": f"Bearer {box['token']}"}
        s.post(f"{center.url}/api/v1/checkin", json=_checkin_body(ok), headers=h, timeout=10).raise_for_status()
        if contract == "C-1001":
            # its mail engine reports encrypted mail it could not inspect: 0 at the first check-in, then 7
            for n in (0, 7):
                body = _checkin_body(ok)
                body["engines"] = {"mail": {"counters": {"mail.uninspected": n}}}
                s.post(f"{center.url}/api/v1/checkin", json=body, headers=h, timeout=10).raise_for_status()
            batch = [{"event_id": str(uuid.uuid4()), "severity": e.get("alert", {}).get("severity", 3), "event": e}
                     for e in _events(now)]
            s.post(f"{center.url}/api/v1/alarms", json={"events": batch}, headers=h, timeout=10).raise_for_status()
        name = "soumu@sample-shoji.example" if contract == "C-1001" else "it@kobayashi-kogyo.example"
        accounts.add_customer(center.db, contract, name, CUSTOMER_PASSWORD,
                              display_name="総務部 山田" if contract == "C-1001" else "小林工業 IT 担当", created_by="lab")
        out["customers"][contract] = name
    # history: the service started 40 days ago; C-1001 was offline for 5 hours this month, C-1002 is
    # offline since 2 hours
    month = bizdays.month_of(now)
    start, _ = availability.month_bounds(month)
    began = now - dt.timedelta(days=40)
    with center.db.write() as conn:
        conn.execute(update(contracts).values(term_start=began, term_end=began + dt.timedelta(days=730)))
        conn.execute(update(devices).values(activated_at=began))
        d1 = out["boxes"]["C-1001"]["device_id"]
        d2 = out["boxes"]["C-1002"]["device_id"]
        gap = max(start + dt.timedelta(hours=30), min(now - dt.timedelta(hours=12), start + dt.timedelta(days=3)))
        if gap + dt.timedelta(hours=5) < now:
            conn.execute(device_events.insert().values(device_id=d1, kind="offline", at=gap + dt.timedelta(minutes=3),
                                                       detail={"last_checkin": gap.strftime("%Y-%m-%dT%H:%M:%SZ")}))
            conn.execute(device_events.insert().values(device_id=d1, kind="online", at=gap + dt.timedelta(hours=5),
                                                       detail={}))
        conn.execute(update(devices).where(devices.c.device_id == d2).values(
            last_checkin_at=now - dt.timedelta(hours=2)))
        # the check-in spans the operating record (panel, report, signed record) is computed from
        ivl = float(center.settings.heartbeat_interval)
        conn.execute(checkin_spans.delete().where(checkin_spans.c.device_id.in_((d1, d2))))
        spans = [(d1, began, gap), (d1, gap + dt.timedelta(hours=5), now)] if gap + dt.timedelta(hours=5) < now \
            else [(d1, began, now)]
        spans.append((d2, began, now - dt.timedelta(hours=2)))
        for dev, a, b in spans:
            conn.execute(checkin_spans.insert().values(device_id=dev, first_at=a, last_at=b, interval=ivl, protecting=1,
                                                       checkins=max(1, int((b - a).total_seconds() // ivl))))
    done = store.create_change(center.db, "C-1001", category="web_allow", summary="www.partner-example.co.jp を許可してほしい",
                               detail="取引先の受発注サイトがブロックされます。", by=out["customers"]["C-1001"],
                               per_month=0, business_days=5, now=now - dt.timedelta(days=3))
    store.set_change_status(center.db, done["id"], "done", "許可リストに追加しました。", "tanaka")
    out["change"] = store.create_change(center.db, "C-1001", category="firewall", summary="複合機の保守用に TCP 9100 を許可",
                                        detail="保守会社から依頼がありました。", by=out["customers"]["C-1001"],
                                        per_month=0, business_days=5, now=now)["id"]
    out["replacement"] = store.create_replacement(center.db, "C-1002", symptom="朝から電源ランプが消えていて通信できない",
                                                  contact="小林 03-1234-5678", by=out["customers"]["C-1002"])["id"]
    # settings sheets: the running box's (activated: network fields locked) and a second box not shipped yet
    from opscenter import notify, sheets

    for serial, ip, addr in (("VCR116W-0001", "192.168.10", "東京都千代田区丸の内1-1-1 サンプルビル 3F"),
                             ("VCR116W-0003", "192.168.20", "神奈川県横浜市西区みなとみらい2-2-2 倉庫棟 1F")):
        sheets.set_sheet(center.db, "C-1001", serial, {
            "install_address": addr, "install_date": (now + dt.timedelta(days=10)).date().isoformat(),
            "management_ip": f"{ip}.2/24", "gateway": f"{ip}.1", "dns": [f"{ip}.1", "8.8.8.8"],
            "contact": {"name": "山田 太郎", "mail": "yamada@sample-shoji.example", "phone": "03-1234-5678"}},
            operator="tanaka")
    notify.set_prefs(center.db, "C-1001", center.settings,
                     kinds=["severe", "offline"], window_s=600, offline_after_s=900,
                     recipients=["soumu@sample-shoji.example", "it-vendor@partner.example"])
    out["operator"] = center.operator_auth
    with contextlib.suppress(Exception):
        center.add_operator("tanaka", "operator", OPERATOR_PASSWORD)
    with contextlib.suppress(Exception):
        center.add_operator("suzuki", "admin", OPERATOR_PASSWORD)
    out["admin"] = ("suzuki", OPERATOR_PASSWORD)
    out["sandbox_file"] = _seed_sandbox(center, s, out["boxes"]["C-1001"]["token"])
    rows = store.contract_alarms(center.db, "C-1001", limit=50)
    out["atp_alarm"] = next(r["id"] for r in rows if (r["event"].get("alert") or {}).get("engine") == "atp")
    return out


def _seed_sandbox(center: Any, s: Any, token: str) -> str:
    """Files the box submitted to the sandbox (harmless test files, lab/sandbox_samples.py), analysed by
    the center's own worker: a marked executable (malicious), a plain one (clean), a PDF with JavaScript
    (suspicious). Returns the malicious file's SHA-256."""
    import hashlib
    import time

    from lab.sandbox_samples import pe
    from opscenter.sandbox import queue

    files = [("請求書_2026年11月.exe", pe(salt=b"demo-bad"), "192.168.10.23"),
             ("setup_printer.exe", pe(marker=False, salt=b"demo-ok"), "192.168.10.31"),
             ("見積書.pdf", b"%PDF-1.7\n1 0 obj << /OpenAction 2 0 R >>\n2 0 obj << /S /JavaScript /JS (app.alert(1)) >>\n",
              "192.168.10.23")]
    hashes = []
    for name, data, pc in files:
        h = hashlib.sha256(data).hexdigest()
        hashes.append(h)
        s.post(f"{center.url}/api/v1/sandbox/files", params={"sha256": h, "name": name, "lan_host": pc},
               data=data, headers={"Authorization": f"Bearer {token}", "Content-Type": "application/octet-stream"},
               timeout=10).raise_for_status()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # the center's worker judges them
        if all(v["verdict"] != "pending" for v in queue.verdicts(center.db, hashes).values()):
            break
        time.sleep(0.2)
    return hashes[0]


def stored_report(center: Any, key_path: Path) -> None:
    """Last month's report of C-1001, made and stored as the schedule would (the reports page lists it)."""
    from opscenter.report import store
    from opscenter.report.period import Month
    from opscenter.report.render import render_report
    from opscenter.report.signing import SigningKey

    month = Month.of(dt.datetime.utcnow()).previous().key
    files = render_report(center.db, "C-1001", month, key=SigningKey.load(key_path), settings=center.settings)
    store.save(center.db, "C-1001", month, files)


# screenshots ---------------------------------------------------------------------------------------

CUSTOMER_PAGES = ["login", "status", "alarms", "alarm", "changes", "change", "replacement", "sheet",
                  "notifications", "reports", "account"]
CONSOLE_PAGES = ["login", "fleet", "alarms", "alarm", "sandbox", "sandbox-file", "changes", "change", "replacements",
                 "replacement", "sheets", "sheet", "confirmations", "customers", "account"]


def take_screenshots(out: Path, only: list[str] | None = None) -> list[Path]:
    """Every page of the panel and the console, in Japanese and English, desktop and phone widths.
    ``only``: just these pages (``customer-sheet``, ``console-confirmations``, ...); the other
    screenshots in ``out`` stay."""
    from lab.center import start_center

    out.mkdir(parents=True, exist_ok=True)
    # only this command's own files (customer-*, console-*): the report's and block pages' screenshots
    # in the same folder are made by `python -m lab screenshots-report`
    for old in [*out.glob("customer-*.png"), *out.glob("console-*.png")]:
        if not only or any(old.name.startswith(f"{o}-") for o in only):
            old.unlink()
    made: list[Path] = []
    from opscenter.report.signing import ensure_key

    with tempfile.TemporaryDirectory(prefix="vcr-shots-") as wd:
        key_path, _, _ = ensure_key(Path(wd) / "keys")
        center = start_center(Path(wd) / "center", settings={"checkin_rate": 0, "alarm_rate": 0, "activate_rate": 0,
                                                             "operator_login_burst": 1000, "report_key": str(key_path),
                                                             "report_schedule": False})
        try:
            demo = seed(center)
            stored_report(center, key_path)
            pages = {
                "customer": (center.url + "/panel", demo["customers"]["C-1001"], CUSTOMER_PASSWORD, {
                    "status": "/", "alarms": "/alarms", "alarm": f"/alarms/{demo['atp_alarm']}", "changes": "/changes",
                    "change": f"/changes/{demo['change']}", "replacement": "/replacement",
                    "sheet": "/sheet/VCR116W-0003", "notifications": "/notifications", "reports": "/reports",
                    "account": "/account"}),
                "console": (center.operator_url + "/console", demo["operator"][0], demo["operator"][1], {
                    "fleet": "/", "alarms": "/alarms", "alarm": f"/alarms/{demo['atp_alarm']}",
                    "sandbox": "/sandbox", "sandbox-file": f"/sandbox/{demo['sandbox_file']}", "changes": "/changes",
                    "change": f"/changes/{demo['change']}", "replacements": "/replacements",
                    "replacement": f"/replacements/{demo['replacement']}", "sheets": "/sheets",
                    "sheet": "/sheets/VCR116W-0001", "confirmations": "/confirmations", "customers": "/customers",
                    "account": "/account"}),
            }
            with browser() as driver:
                for app, (base, name, password, paths) in pages.items():
                    for lang in ("ja", "en"):
                        for size in SIZES:
                            set_viewport(driver, size)
                            driver.delete_all_cookies()
                            driver.get(f"{base}/login?lang={lang}")
                            if not only or f"{app}-login" in only:
                                made.append(out / f"{app}-login-{lang}-{size}.png")
                                full_page_png(driver, made[-1])
                            login(driver, base, name, password)
                            for page, path in paths.items():
                                if only and f"{app}-{page}" not in only:
                                    continue
                                driver.get(base + path)
                                made.append(out / f"{app}-{page}-{lang}-{size}.png")
                                full_page_png(driver, made[-1])
        finally:
            center.close()
    return made
