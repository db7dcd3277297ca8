"""What no loaded engine needs stays in the kernel (issue 15): empty TCP ACKs when no engine or
rule needs them, and every allowed connection when the firewall is the only engine.

A real agent on the lab bridge (iptables, NFQUEUE, a worker) with the IPS on a small rule file.
A LAN client downloads from an internet server, which makes the client send many empty ACKs,
then sends an attack the IPS drops. With rules that cannot match an empty ACK, the kernel keeps
them from the worker (the worker sees far fewer packets than the connection has) and the attack
is still detected and blocked; with a rule that could match one, every packet reaches the worker.
With the firewall alone (the shipped policy), no packet of an allowed connection reaches the
worker, while its log rule's alarm (raised by the worker) and its reject alarm (the kernel's) stay.
"""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from lab.agentrun import LabAgent
from lab.demo import connect_result, curl
from lab.netns import Lab
from tests.waiting import wait

pytestmark = pytest.mark.lab

PORT = 8095
ATTACK_SID = 9215001
ATTACK_RULE = (f'drop tcp $HOME_NET any -> $EXTERNAL_NET {PORT} (msg:"VCR TEST attack in the payload"; '
               f'flow:established,to_server; content:"EVIL-PAYLOAD-15"; sid:{ATTACK_SID}; rev:1;)\n')
# flags:A and a window check, no payload keyword: an empty ACK can match it
EMPTY_ACK_RULE = 'alert tcp any any -> any any (msg:"VCR TEST zero window"; flags:A; window:0; sid:9215002; rev:1;)\n'

# Per connection: after a line "go", sends 200 KB in small writes (the client ACKs them), then reads one line and
# answers "got" to it (so the client can tell whether its last line arrived).
SERVER = """
import socket, sys, threading
def serve(c):
    try:
        f = c.makefile("rb")
        if f.readline() != b"go\\n":  # a probe of the port
            raise OSError
        for _ in range(100):
            c.sendall(b"d" * 2048)
        while True:
            line = f.readline()
            if not line:
                break
            c.sendall(b"got\\n")
    except OSError:
        pass
    c.close()
srv = socket.create_server(("0.0.0.0", int(sys.argv[1])))
while True:
    c, _ = srv.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"""

# Connects, reads the 200 KB slowly (each read ACKed on its own), sends a harmless line, then the
# given one; prints its local port, then "answered" or "cut" for the last line.
CLIENT = """
import socket, sys, time
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
print(s.getsockname()[1], flush=True)
s.sendall(b"go\\n")
got = 0
while got < 204800:
    data = s.recv(4096)
    if not data:
        break
    got += len(data)
    time.sleep(0.002)
s.sendall(b"hello\\n")
s.recv(16)
s.sendall(sys.argv[3].encode() + b"\\n")
s.settimeout(4.0)
try:
    print("answered" if s.recv(16) else "cut", flush=True)
except OSError:
    print("cut", flush=True)
s.close()
"""


def fwd_rules(lab: Lab) -> str:
    return lab.exec("utm", ["iptables", "-w", "-S", "VCR-FWD"]).stdout


def empty_ack_skip(lab: Lab) -> bool:
    """Are the empty-ACK skip's lines installed? (An ACK-only flags match; the handshake skip's
    SYN+ACK line, always there, matches SYN,ACK.)"""
    return "--tcp-flags FIN,SYN,RST,ACK ACK -m connmark" in fwd_rules(lab)


def skipped(lab: Lab) -> int:
    """Packets the kernel's empty-ACK rule accepted (iptables counters of VCR-FWD)."""
    out = lab.exec("utm", ["iptables", "-w", "-nvxL", "VCR-FWD"]).stdout
    return sum(int(line.split()[0]) for line in out.splitlines()
               if "u32" in line and "flags:0x17/0x10" in line and "ACCEPT" in line)


def kernel_accepted(lab: Lab) -> int:
    """Packets the kernel accepted and marked for engines that need none (iptables counters)."""
    out = lab.exec("utm", ["iptables", "-w", "-nvxL", "VCR-FWD"]).stdout
    return sum(int(line.split()[0]) for line in out.splitlines() if "ctstate NEW,ESTABLISHED CONNMARK" in line)


def connection_packets(lab: Lab, port: int) -> int:
    """Both directions' packets of the client's connection from ``port`` (conntrack accounting)."""
    out = lab.exec("utm", ["conntrack", "-L", "-p", "tcp", "--sport", str(port)]).stdout
    return sum(int(f.split("=")[1]) for f in out.split() if f.startswith("packets="))


def run_agent(lab: Lab, tmp_path: Path, rules: str | None) -> LabAgent:
    """The agent with the IPS on ``rules`` (None: the firewall alone), ATP and web filter off."""
    overrides: dict = {"engines.webfilter.enabled": False, "engines.atp.enabled": False, "dataplane.workers": 1}
    if rules is None:
        overrides["engines.ips.enabled"] = False
    else:
        rule_file = tmp_path / "test.rules"
        rule_file.write_text(rules)
        overrides["engines.ips.rule_files"] = [str(rule_file)]
    agent = LabAgent(lab, tmp_path / "agent", overrides=overrides)
    agent.bridge_up()
    try:
        agent.start(timeout=60)
        assert lab.wait_tcp("pc2", lab.hosts["web"].ipv4, PORT, 15)
    except BaseException:
        agent.kill()
        agent.bridge_down()
        raise
    return agent


def download_then_send(lab: Lab, line: str) -> tuple[int, str]:
    web = lab.hosts["web"]
    proc = lab.popen("pc1", [sys.executable, "-c", CLIENT, web.ipv4, str(PORT), line], name="acks-client",
                     stdout=subprocess.PIPE, text=True)
    port = int(proc.stdout.readline().strip())
    answer = proc.stdout.readline().strip()
    proc.wait(30)
    return port, answer


@pytest.fixture(scope="module")
def server(office: Lab) -> Lab:
    office.exec("utm", ["sysctl", "-w", "net.netfilter.nf_conntrack_acct=1"])
    office.popen("web", [sys.executable, "-c", SERVER, str(PORT)], name="acks-server")
    return office


def test_empty_acks_stay_in_the_kernel_and_the_attack_is_still_blocked(server: Lab, tmp_path: Path):
    agent = run_agent(server, tmp_path, ATTACK_RULE)
    try:
        assert empty_ack_skip(server)  # the loaded rule cannot match an empty ACK
        assert agent.status()["queued"] == {"packets": True, "empty_acks": False}
        time.sleep(2 * STATS_WAIT)
        before, kept_before = agent.counter("pipeline", "packets"), skipped(server)
        port, answer = download_then_send(server, "harmless")
        assert answer == "answered"
        total = connection_packets(server, port)
        time.sleep(2 * STATS_WAIT)  # the worker's stats every 2 s, then the status file every 2 s
        seen = agent.counter("pipeline", "packets") - before
        kept = skipped(server) - kept_before
        assert total >= 30, total  # the download's segments and the client's ACKs
        assert kept >= 10, (kept, total)
        print("connection packets", total, "kept in the kernel", kept, "seen by the worker", seen)
        # what the kernel kept never reached the worker, which saw the rest of the connection (and
        # maybe a few packets of the lab's other traffic)
        assert 10 <= seen <= total - kept + OTHER_TRAFFIC, (seen, kept, total)
        # an attack on the same kind of connection is detected and blocked
        _, answer = download_then_send(server, "EVIL-PAYLOAD-15")
        assert answer == "cut"
        assert agent.wait_alarm(lambda r: r.get("alert", {}).get("signature_id") == ATTACK_SID, timeout=15)
    finally:
        agent.kill()
        agent.bridge_down()


def test_a_rule_that_can_match_an_empty_ack_gets_them_all(server: Lab, tmp_path: Path):
    agent = run_agent(server, tmp_path, ATTACK_RULE + EMPTY_ACK_RULE)
    try:
        assert not empty_ack_skip(server)
        assert agent.status()["queued"] == {"packets": True, "empty_acks": True}
        time.sleep(2 * STATS_WAIT)
        before = agent.counter("pipeline", "packets")
        port, answer = download_then_send(server, "harmless")
        assert answer == "answered"
        total = connection_packets(server, port)
        assert total >= 30, total
        # every packet of the connection reaches the worker (the lab's other traffic may add some)
        # but its SYN+ACK, which the handshake skip keeps (the rule cannot match a SYN+ACK)
        assert agent.wait_counter("pipeline", "packets", before + total - 1, timeout=15) - before >= total - 1
    finally:
        agent.kill()
        agent.bridge_down()


def test_firewall_alone_keeps_allowed_connections_in_the_kernel(server: Lab, tmp_path: Path):
    web = server.hosts["web"]
    agent = run_agent(server, tmp_path, None)
    try:
        assert agent.status()["queued"] == {"packets": False, "empty_acks": False}
        time.sleep(2 * STATS_WAIT)
        before, accepted_before = agent.counter("pipeline", "packets"), kernel_accepted(server)
        for _ in range(5):
            assert curl(server, "pc1", f"http://{web.ipv4}/")[0]
        assert download_then_send(server, "harmless")[1] == "answered"
        time.sleep(2 * STATS_WAIT)
        # the connections' first packets were accepted in the kernel; none of them reached the
        # worker (it may see a few packets conntrack does not track: IPv6 neighbour discovery)
        assert kernel_accepted(server) - accepted_before >= 6
        assert agent.counter("pipeline", "packets") - before <= OTHER_TRAFFIC
        # the shipped policy: "log outbound RDP" (allow and alarm: the worker's firewall raises it)
        assert connect_result(server, "pc1", web.ipv4, 3389) == "open"
        rec = agent.wait_alarm(lambda r: r.get("alert", {}).get("signature") == "VCR firewall: log outbound RDP",
                               timeout=15)
        assert rec is not None and rec["dest_port"] == 3389
        assert agent.wait_counter("pipeline", "packets", before + 1, timeout=10) > before
        # "block outbound telnet" (reject): the kernel's, with its NFLOG alarm
        assert connect_result(server, "pc1", web.ipv4, 23) == "refused"
        rec = agent.wait_alarm(lambda r: r.get("alert", {}).get("signature") == "VCR firewall: block outbound telnet",
                               timeout=15)
        assert rec is not None and rec["alert"]["reason"] == "kernel"
    finally:
        agent.kill()
        agent.bridge_down()


def test_a_reload_installs_what_the_new_rules_need(server: Lab, tmp_path: Path):
    """A reload queues everything while the new workers build their rules, then the daemon
    installs what they need: a rule that can match an empty ACK takes the skip away, its removal
    brings it back."""
    agent = run_agent(server, tmp_path, ATTACK_RULE)
    rule_file = tmp_path / "test.rules"
    try:
        assert empty_ack_skip(server)
        for rules, skip in ((ATTACK_RULE + EMPTY_ACK_RULE, False), (ATTACK_RULE, True)):
            rule_file.write_text(rules)
            before = (agent.status() or {}).get("reloads", {}).get("workers_reloaded", 0)
            assert agent.cli("reload").returncode == 0
            wait(lambda: (agent.status() or {}).get("reloads", {}).get("workers_reloaded", 0) > before, 60,
                 "the worker reloaded", 0.2)
            wait(lambda: empty_ack_skip(server) == skip, 15, f"the empty-ACK skip {'back' if skip else 'gone'}", 0.2)
            wait(lambda: (agent.status() or {}).get("queued", {}).get("empty_acks") is not skip, 10, "the status")
    finally:
        agent.kill()
        agent.bridge_down()


STATS_WAIT = 2.5
OTHER_TRAFFIC = 4  # packets the worker may see besides the connection's (the probe's last ones, IPv6 ND)
