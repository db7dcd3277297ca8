"""``python -m lab screenshots-report``: what a customer sees of the monthly report and of the block pages,
as PNGs in docs/screenshots/.

- ``report-page-N.png``: each page of the PDF report (pdftoppm, poppler-utils);
- ``report-html-desktop.png``, ``report-html-phone.png``: the HTML report in headless Chromium;
- ``blockpage-KIND-desktop.png`` and ``-phone.png``: the block pages (phishing, C&C, a policy category,
  the deny list, antivirus, sandbox) at 1280 and 390 pixels wide.

The report is made from a simulated month (lab/reportsim.py) in a throwaway center database. Needs
poppler-utils, chromium and fonts-noto-cjk (scripts/setup.sh).
"""
from __future__ import annotations

import argparse
import datetime as dt
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

DESKTOP = (1280, 900)
PHONE = (390, 844)
MONTH = "2026-11"


def chromium_shot(chromium: str, url: str, out: Path, size: tuple[int, int]) -> None:
    """One screenshot with headless Chromium (a fresh profile each time)."""
    with tempfile.TemporaryDirectory(prefix="vcr-chromium-") as profile:
        cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--hide-scrollbars", f"--user-data-dir={profile}", f"--screenshot={out}",
               f"--window-size={size[0]},{size[1]}", url]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    if not out.is_file():
        raise RuntimeError(f"chromium wrote no {out}")


def simulated_report(work: Path) -> tuple[Path, Path, int]:
    """A month of a simulated office, rendered: (pdf path, html path, html height estimate)."""
    from lab.reportsim import Plan, simulate
    from opscenter.db import Database
    from opscenter.report.period import Month
    from opscenter.report.render import render_report
    from opscenter.report.signing import SigningKey, ensure_key

    m = Month.parse(MONTH)
    db = Database(f"sqlite:///{work / 'center.db'}")
    db.create_tables()
    day = lambda d, h=0, mi=0: m.start + dt.timedelta(days=d - 1, hours=h, minutes=mi)  # noqa: E731
    plan = Plan("C-1001", "VCR116W-000123", m, interval=1800.0, outages=[(day(10, 3), day(10, 5, 40))],
                unprotected=[(day(16, 1), day(16, 2))], portcheck_failed=[(day(21, 9), day(21, 15))],
                restart_at=day(13), alarms_per_day=40, lan_hosts=24, seed=11)
    simulate(db, plan)
    key_path, _, _ = ensure_key(work / "keys")
    files = render_report(db, "C-1001", m, key=SigningKey.load(key_path), now=m.end + dt.timedelta(hours=2))
    pdf, html = work / files.names["pdf"], work / files.names["html"]
    pdf.write_bytes(files.pdf)
    html.write_text(files.html, encoding="utf-8")
    db.dispose()
    return pdf, html, 6600


def block_pages(work: Path) -> dict[str, Path]:
    from filters.webfilter import page

    pages = {
        "phishing": page.render("login-mybank.example.xyz/signin", ["phishing"], "category", box="vcr-office-1"),
        "cnc": page.render("update-check.example.net/gate.php", ["malware"], "threat", threat="emotet",
                           box="vcr-office-1"),
        "policy-games": page.render("play.example-games.jp/", ["games"], "category", box="vcr-office-1"),
        "denylist": page.render("blocked.example.com/", [], "deny list", box="vcr-office-1"),
        "antivirus": page.render_file("antivirus", "http://files.example.com/invoice-2026-11.exe",
                                      threat="Win.Trojan.Agent-1234", filename="invoice-2026-11.exe",
                                      box="vcr-office-1"),
        "sandbox": page.render_file("sandbox", "http://docs.example.net/order.docm", threat="悪意のあるマクロ / malicious macro",
                                    filename="order.docm", box="vcr-office-1"),
    }
    out = {}
    for name, text in pages.items():
        p = work / f"blockpage-{name}.html"
        p.write_text(text, encoding="utf-8")
        out[name] = p
    return out


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for tool in ("pdftoppm", args.chromium):
        if shutil.which(tool) is None:
            print(f"screenshots-report: {tool} is not installed (scripts/setup.sh installs poppler-utils and "
                  "chromium)", file=sys.stderr)
            return 2
    with tempfile.TemporaryDirectory(prefix="vcr-shots-") as tmp:
        work = Path(tmp)
        print("screenshots-report: simulating a month and rendering its report", file=sys.stderr)
        pdf, html, height = simulated_report(work)
        for old in out.glob("report-page-*.png"):
            old.unlink()
        subprocess.run(["pdftoppm", "-r", "80", "-png", str(pdf), str(out / "report-page")], check=True)
        written = sorted(out.glob("report-page-*.png"))
        for i, p in enumerate(written, 1):  # report-page-1.png, not report-page-01.png
            p.rename(out / f"report-page-{i}.png")
        written = sorted(out.glob("report-page-*.png"))
        chromium_shot(args.chromium, html.as_uri(), out / "report-html-desktop.png", (DESKTOP[0], height))
        chromium_shot(args.chromium, html.as_uri(), out / "report-html-phone.png", PHONE)
        written += [out / "report-html-desktop.png", out / "report-html-phone.png"]
        for name, p in block_pages(work).items():
            for label, size in (("desktop", DESKTOP), ("phone", PHONE)):
                target = out / f"blockpage-{name}-{label}.png"
                chromium_shot(args.chromium, p.as_uri(), target, size)
                written.append(target)
    for p in written:
        print(p)
    return 0
