"""The block pages on a phone, in a real browser (headless Chromium, a 390 px wide mobile viewport): every
kind (dangerous category, C&C, policy category, deny list, antivirus, sandbox) fits the screen without
sideways scrolling, also with a long unbroken address, keeps its text off the screen's edges, and uses
a readable text size. (filters/webfilter/page.py; the wording per kind is tested in
tests/filters/webfilter/test_page.py.)"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest

from filters.webfilter import page
from lab.panel_demo import browser, browser_missing, set_viewport
from tests.shared_data import in_ci

LONG = "very-long-subdomain-" * 6 + "example.com/" + "path-segment/" * 10 + "?q=" + "x" * 120

PAGES = {
    "danger-phishing": lambda: page.render(f"login-bank.{LONG}", ["phishing"], "category", box="vcr-office"),
    "threat-cnc": lambda: page.render(f"c2.{LONG}", ["malware"], "threat", threat="emotet", box="vcr-office"),
    "policy-games": lambda: page.render(f"play.{LONG}", ["games"], "category", box="vcr-office"),
    "deny": lambda: page.render(f"blocked.{LONG}", [], "deny list", box="vcr-office"),
    "antivirus": lambda: page.render_file("antivirus", f"http://files.{LONG}", threat="Win.Test.EICAR_HDB-1",
                                          filename="setup-" + "x" * 80 + ".exe", box="vcr-office"),
    "sandbox": lambda: page.render_file("sandbox", f"http://docs.{LONG}", filename="invoice.docm", box="vcr-office"),
}


@pytest.fixture(scope="module")
def driver() -> Iterator[Any]:
    reason = browser_missing()
    if reason is not None:
        (pytest.fail if in_ci() else pytest.skip)(f"BROWSER TEST {'FAILED' if in_ci() else 'SKIPPED'}: {reason}")
    with browser() as d:
        set_viewport(d, "phone")
        yield d


@pytest.mark.parametrize("kind", sorted(PAGES))
def test_block_page_is_readable_on_a_phone(driver: Any, kind: str, tmp_path: Path):
    f = tmp_path / f"{kind}.html"
    f.write_text(PAGES[kind](), encoding="utf-8")
    driver.get(f.as_uri())
    m = driver.execute_script("""
        const d = document.documentElement, h1 = document.querySelector('h1');
        const texts = [...document.querySelectorAll('main p, main li, main h1, main h2')];
        const r = texts.map(e => e.getBoundingClientRect());
        return {width: window.innerWidth, scroll: d.scrollWidth,
                left: Math.min(...r.map(x => x.left)), right: Math.max(...r.map(x => x.right)),
                font: Math.min(...texts.filter(e => !e.classList.contains('en') && !e.classList.contains('b'))
                                       .map(e => parseFloat(getComputedStyle(e).fontSize))),
                h1: h1.getBoundingClientRect().bottom, h1font: parseFloat(getComputedStyle(h1).fontSize)};
    """)
    assert m["width"] == 390, m
    assert m["scroll"] <= m["width"], m  # no sideways scrolling, even with a long address
    assert m["left"] >= 8 and m["right"] <= m["width"] - 8, m  # text off the edges
    assert m["font"] >= 14 and m["h1font"] >= 16, m  # the Japanese text and advice readable without zooming
    assert m["h1"] < 844, m  # the heading (what happened) is on the first screen
