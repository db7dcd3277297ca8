"""End to end: threat protection (C&C) on the lab bridge with real feeds, a real DNS server and a C&C host."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from lab.demo import connect_result, curl
from lab.netns import Lab
from lab.agentrun import LabAgent, serve_lab_dns

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]
CNC_V4 = "203.0.113.99"
CNC_DOMAIN = "update.evil-c2.example"
FEED_DIR = "/tmp"  # replaced per test: see feeds()
FEODO = """\
first_seen_utc,dst_ip,dst_port,c2_status,last_online,malware
2026-11-20 08:00:00,203.0.113.99,4443,online,2026-11-25,QakBot
"""


@pytest.fixture(scope="module")
def cnc_office(office: Lab) -> Lab:
    office.add_internet_host("cnc", CNC_V4)
    serve_lab_dns(office, {CNC_DOMAIN: "cnc", "www.example.org": "web"}, center=False)
    office.start_tcp_listener("cnc", 4443)
    office.start_tcp_listener("cnc", 443)
    office.start_http_server("cnc", 80)
    return office


def atp_agent(office: Lab, tmp_path: Path, feeds: dict[str, str], **atp: Any) -> LabAgent:
    feed_dir = tmp_path / "threatintel"
    feed_dir.mkdir(exist_ok=True)
    for name, text in feeds.items():
        (feed_dir / name).write_text(text)
    section = {"enabled": True, "feeds": [str(feed_dir)], "allow_documentation_addresses": True, **atp}
    agent = LabAgent(office, tmp_path / "agent", overrides={"engines.atp": section, "engines.ips.enabled": False})
    agent.bridge_up()
    agent.start()
    return agent


@pytest.fixture
def running(cnc_office: Lab, tmp_path: Path):
    agents: list[LabAgent] = []

    def start(feeds: dict[str, str], **atp: Any) -> LabAgent:
        a = atp_agent(cnc_office, tmp_path, feeds, **atp)
        agents.append(a)
        return a

    yield start
    for a in agents:
        a.kill()
        a.bridge_down()


def set_counters(lab: Lab, name: str) -> dict[str, int]:
    """ipset per-entry packet counters: {entry: packets}."""
    out = lab.exec("utm", ["ipset", "list", name]).stdout
    counters = {}
    for line in out.splitlines():
        parts = line.split()
        if "packets" in parts:
            counters[parts[0]] = int(parts[parts.index("packets") + 1])
    return counters


def test_connection_to_a_cnc_is_dropped_in_the_kernel_and_names_host_and_threat(cnc_office: Lab, running):
    agent = running({"feodo.csv": FEODO})
    assert connect_result(cnc_office, "pc1", CNC_V4, 4443) == "timeout"
    counters = set_counters(cnc_office, "vcr-ti4")
    assert counters.get(CNC_V4, 0) > 0, counters  # dropped by the kernel set, not by Python
    rec = agent.wait_alarm(lambda r: r.get("atp", {}).get("where") == "kernel")
    assert rec is not None
    assert rec["atp"]["lan_host"] == cnc_office.hosts["pc1"].ipv4
    assert rec["atp"]["indicator"] == f"{CNC_V4}:4443" and rec["atp"]["threat"] == "QakBot"
    assert rec["alert"]["action"] == "blocked" and rec["alert"]["severity"] == 1
    assert curl(cnc_office, "pc1", f"http://{cnc_office.hosts['web'].ipv4}/")[0]  # everything else flows


def test_cnc_domain_gets_the_sinkhole_at_dns_and_is_blocked_at_http(cnc_office: Lab, running):
    agent = running({"domains.txt": "evil-c2.example\n"})
    res = cnc_office.exec("pc1", ["dig", "@198.51.100.53", "+short", "+tries=1", "+time=2", CNC_DOMAIN])
    assert res.stdout.strip() == "192.0.2.2"  # the box's own address, not the C&C
    rec = agent.wait_alarm(lambda r: r.get("atp", {}).get("where") == "dns")
    assert rec is not None and rec["atp"]["indicator"] == "evil-c2.example" and rec["atp"]["seen"] == CNC_DOMAIN
    assert rec["atp"]["lan_host"] == cnc_office.hosts["pc1"].ipv4
    # The PC already knows the address (hard-coded C&C): caught at the HTTP Host.
    res = cnc_office.exec("pc1", ["curl", "-sS", "--max-time", "4", "-w", "\n%{http_code}", "--resolve",
                                  f"{CNC_DOMAIN}:80:{CNC_V4}", f"http://{CNC_DOMAIN}/gate.php"])
    assert res.stdout.endswith("403") and "ブロックされました" in res.stdout
    assert agent.wait_alarm(lambda r: r.get("atp", {}).get("where") == "http_host") is not None
    # HTTPS to it is reset at the SNI.
    res = cnc_office.exec("pc1", ["curl", "-sS", "--max-time", "4", "--resolve", f"{CNC_DOMAIN}:443:{CNC_V4}",
                                  f"https://{CNC_DOMAIN}/"])
    assert res.returncode in (35, 56) and "reset" in res.stderr.lower()
    assert agent.wait_alarm(lambda r: r.get("atp", {}).get("where") == "tls_sni", timeout=8) is not None


def wait_reloaded(agent: LabAgent, count: int) -> None:
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        st = agent.status() or {}
        if st.get("reloads", {}).get("workers_reloaded", 0) >= count:
            return
        time.sleep(0.2)
    raise AssertionError(f"workers did not reload: {agent.status()}")


def test_feed_update_takes_effect_without_a_restart(cnc_office: Lab, running, tmp_path: Path):
    agent = running({"domains.txt": "evil-c2.example\n"})
    pid = agent.proc.pid if agent.proc else None
    assert connect_result(cnc_office, "pc1", CNC_V4, 4443) == "open"
    # The signature sync drops a new feed in the folder and asks for a reload.
    (tmp_path / "threatintel" / "feodo.csv").write_text(FEODO)
    assert agent.cli("reload").returncode == 0
    wait_reloaded(agent, agent.status()["reloads"]["workers_reloaded"] + len(agent.status()["workers"]))
    assert connect_result(cnc_office, "pc1", CNC_V4, 4443) == "timeout"
    assert agent.proc is not None and agent.proc.pid == pid and agent.proc.poll() is None  # same process
    assert agent.status()["threat_sets"]["entries"]["vcr-ti4"] == 1
    # And removed again: reachable (a listing is never stuck).
    (tmp_path / "threatintel" / "feodo.csv").unlink()
    before = agent.status()["reloads"]["workers_reloaded"]
    assert agent.cli("reload").returncode == 0
    wait_reloaded(agent, before + len(agent.status()["workers"]))
    assert connect_result(cnc_office, "pc1", CNC_V4, 4443) == "open"
    assert not [s for s in cnc_office.exec("utm", ["ipset", "list", "-n"]).stdout.split() if s.endswith("-new")]
