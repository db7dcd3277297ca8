"""End to end: the web filter on the lab bridge with the real UT1 lists, a real DNS server and web server."""
from __future__ import annotations

from pathlib import Path

import pytest

from lab.demo import phishing_example
from lab.netns import Lab
from lab.agentrun import LabAgent, serve_lab_dns
from tests import shared_data as shared

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]
ALLOWED = "www.example.org"


def phishing_name() -> str:
    """A real entry of the UT1 phishing list (blocked by the shipped default), as the demo uses
    (lab.agentrun points the lab's agent at the same shared data)."""
    shared.require("data", "ut1", "phishing", "domains")
    name = phishing_example()
    assert name is not None, "no usable entry in the UT1 phishing list"
    return name


@pytest.fixture(scope="module")
def dns_office(office: Lab):
    serve_lab_dns(office, {ALLOWED: "web", phishing_name(): "web"}, center=False)
    office.start_tcp_listener("web", 443)
    return office


def dig(lab: Lab, name: str, rrtype: str = "A") -> str:
    res = lab.exec("pc1", ["dig", "@198.51.100.53", "+short", "+tries=1", "+time=2", name, rrtype])
    return res.stdout.strip()


def curl(lab: Lab, url: str, *extra: str) -> tuple[int, str, str]:
    res = lab.exec("pc1", ["curl", "-sS", "--max-time", "4", "-w", "\n%{http_code}", *extra, url])
    return res.returncode, res.stdout, res.stderr


def test_dns_answers_and_sinkhole(dns_office: Lab, agent: LabAgent):
    web = dns_office.hosts["web"]
    assert dig(dns_office, ALLOWED) == web.ipv4  # a real answer passes
    bad = phishing_name()
    assert dig(dns_office, bad) == "192.0.2.2"  # answered by the box: its block page
    assert dig(dns_office, bad, "AAAA") == "2001:db8:1::2"
    rec = agent.wait_alarm(lambda r: r.get("webfilter", {}).get("host") == bad and r["webfilter"]["where"] == "dns")
    assert rec is not None and rec["alert"]["signature"].startswith("VCR webfilter: blocked category ")
    assert "phishing" in rec["webfilter"]["categories"]
    assert rec["src_ip"] == dns_office.hosts["pc1"].ipv4
    # the sinkhole address serves the block page, naming the category
    code, body, _ = curl(dns_office, "http://192.0.2.2/login", "-H", f"Host: {bad}")
    assert body.endswith("403") and "ブロックされました" in body and "フィッシング" in body and bad in body
    assert "NXDOMAIN" in dns_office.exec("pc1", ["dig", "@198.51.100.53", "+tries=1", "use-application-dns.net"]).stdout


def test_http_gets_the_block_page_and_https_is_reset(dns_office: Lab, agent: LabAgent):
    web = dns_office.hosts["web"]
    bad = phishing_name()
    code, body, _ = curl(dns_office, f"http://{ALLOWED}/", "--resolve", f"{ALLOWED}:80:{web.ipv4}")
    assert code == 0 and body.endswith("200")  # allowed sites work
    code, body, _ = curl(dns_office, f"http://{bad}/account/verify", "--resolve", f"{bad}:80:{web.ipv4}")
    assert body.endswith("403") and "このサイトへのアクセスはブロックされました" in body and "Access to this site has been blocked" in body
    rec = agent.wait_alarm(lambda r: r.get("webfilter", {}).get("where") == "http")
    assert rec is not None and rec["webfilter"]["url"] == f"http://{bad}/account/verify" and rec["alert"]["action"] == "blocked"
    code, _, err = curl(dns_office, f"https://{bad}/", "--resolve", f"{bad}:443:{web.ipv4}")
    assert code in (35, 56) and "reset" in err.lower()
    assert agent.wait_alarm(lambda r: r.get("webfilter", {}).get("where") == "tls_sni") is not None


@pytest.mark.parametrize("agent", [{"engines.webfilter.allow": [phishing_name() if shared.find("data", "ut1", "phishing", "domains") else "x.example"]}], indirect=True)
def test_allow_list_overrides_the_category(dns_office: Lab, agent: LabAgent):
    web = dns_office.hosts["web"]
    bad = phishing_name()
    assert dig(dns_office, bad) == web.ipv4
    code, body, _ = curl(dns_office, f"http://{bad}/", "--resolve", f"{bad}:80:{web.ipv4}")
    assert code == 0 and body.endswith("200")
