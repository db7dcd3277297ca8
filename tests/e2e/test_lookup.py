"""End to end: the web filter asks the real operations center about names its lists lack (issue 4 §4),
and activation installs the center's signed-update root (issue 6 §1), over real HTTPS in the lab."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agent.link.center import load_state
from lab.netns import Lab
from lab.agentrun import CENTER_NAME, LabAgent, center_overrides, serve_lab_dns, start_lab_center, utm_resolv_conf

pytestmark = pytest.mark.lab
testing = pytest.importorskip("lab.center", reason="LOOKUP E2E SKIPPED: the reference center (opscenter/) is missing")

FRESH_PHISH = "fresh-phish.example"  # only the center's (newer) lists have it
PLAIN_NEW = "plain-new.example"  # nobody has it: uncategorised, allowed


@pytest.fixture(scope="module")
def center(office: Lab, tmp_path_factory: pytest.TempPathFactory):
    from opscenter.tufrepo import TufRepo

    work = tmp_path_factory.mktemp("center")
    cats = work / "categories"
    (cats / "phishing").mkdir(parents=True)
    (cats / "phishing" / "domains").write_text(f"{FRESH_PHISH}\n")
    (cats / "news").mkdir()
    (cats / "news" / "domains").write_text("daily-news.example\n")
    repo = work / "tuf"
    TufRepo(repo, work / "tuf-keys").init()
    serve_lab_dns(office, {FRESH_PHISH: "web", PLAIN_NEW: "web"})
    c = start_lab_center(office, work, heartbeat_interval=2,
                         settings={"checkin_rate": 0, "alarm_rate": 0, "categories": str(cats), "tuf_repo": str(repo)})
    c.repo = repo
    yield c
    c.close()


@pytest.fixture
def agent(office: Lab, center: Any, tmp_path: Path):
    state = tmp_path / "lib" / "center.json"
    overrides = {
        **center_overrides(center, tmp_path, url=f"https://{CENTER_NAME}"),
        "bridge.resolv_conf": str(utm_resolv_conf(office)),
        "updates.trusted_root": str(tmp_path / "lib" / "tuf" / "root.json"),
        "engines.ips.enabled": False,
        "engines.webfilter.lookup": {"enabled": True, "url": f"https://{CENTER_NAME}/api/v1/category",
                                     "ca_file": str(center.ca), "auth_file": str(state), "timeout": 1.0},
    }
    a = LabAgent(office, tmp_path, overrides=overrides)
    with a.running(activate=(center, "C-LOOKUP", "VCR116W-LOOKUP1")):
        yield a


def dig(lab: Lab, name: str) -> str:
    return lab.exec("pc1", ["dig", "@198.51.100.53", "+short", "+tries=1", "+time=3", name]).stdout.strip()


def test_activation_installs_the_signed_update_root(agent: LabAgent, center: Any, tmp_path: Path):
    state = load_state(tmp_path / "lib" / "center.json")
    assert state is not None and state["tuf_root_installed"] is True
    installed = json.loads((tmp_path / "lib" / "tuf" / "root.json").read_text())
    published = json.loads((center.repo / "metadata" / "root.json").read_text())
    assert installed == published and installed["signed"]["_type"] == "root"


def test_unknown_names_are_asked_of_the_center_and_cached(office: Lab, agent: LabAgent):
    web = office.hosts["web"]
    assert dig(office, PLAIN_NEW) == web.ipv4  # uncategorised at the center too: allowed
    assert dig(office, FRESH_PHISH) == "192.0.2.2"  # the center says phishing: sinkholed
    rec = agent.wait_alarm(lambda r: r.get("webfilter", {}).get("host") == FRESH_PHISH)
    assert rec is not None and rec["webfilter"]["matched"] == "center lookup"
    assert rec["webfilter"]["categories"] == ["phishing"] and rec["alert"]["action"] == "blocked"
    before = agent.wait_counter("webfilter", "lookup.answers", 2)
    assert before == 2
    for _ in range(3):  # answered from the cache: no more questions to the center
        assert dig(office, FRESH_PHISH) == "192.0.2.2"
        assert dig(office, PLAIN_NEW) == web.ipv4
    assert agent.counter("webfilter", "lookup.requests") == 2
    assert agent.counter("webfilter", "lookup.errors") == 0
