"""The firewall judges only new connections (false "default deny wan_to_lan" alarms under load).

Under load (the office bench, firewall only, 10-15 pages/s) ordinary replies of internet servers
to LAN clients came out as "VCR firewall: default deny wan_to_lan" alarms and drops, from two
places: the kernel (a server's late segment after conntrack had forgotten the connection, 10 s
after a reset: nf_conntrack_tcp_loose calls it NEW, in the server's direction, and the policy
judged it as a connection from the internet) and the worker (a server's segment that conntrack
found out of window, INVALID, reached the queue more than ``offload_grace`` after the flow was
passed; the pipeline decided it afresh as a new flow whose client was the server). These tests
cause both for real, on one live connection, without load: the machine's speed plays no part.
"""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from lab.agentrun import LabAgent
from lab.netns import Lab

pytestmark = pytest.mark.lab

FIREWALL_ONLY = {"engines.ips.enabled": False, "engines.webfilter.enabled": False}
WAN_IN = "VCR firewall: default deny wan_to_lan"

# One TCP connection kept open: prints its local port, then per line read from stdin one check:
# "echo" sends and waits for the echo, "read" (a server that pushes) drops what is buffered and
# waits for fresh data; "ok", or "cut" when nothing comes back within 5 s.
CLIENT = """
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
print(s.getsockname()[1], flush=True)
for line in sys.stdin:
    try:
        if line.strip() == "echo":
            s.settimeout(5.0)
            s.sendall(b"ping")
            ok = s.recv(16) == b"ping"
        else:
            s.setblocking(False)
            try:
                while s.recv(65536):
                    pass
            except BlockingIOError:
                pass
            s.settimeout(5.0)
            ok = bool(s.recv(16))
        print("ok" if ok else "cut", flush=True)
    except OSError:
        print("cut", flush=True)
"""

# A server that sends a few bytes to each client every 0.3 s (a push channel, a slow download).
PUSH_SERVER = """
import socket, sys, threading, time
def push(c):
    try:
        while True:
            c.sendall(b"tick")
            time.sleep(0.3)
    except OSError:
        c.close()
srv = socket.create_server(("0.0.0.0", int(sys.argv[1])))
while True:
    c, _ = srv.accept()
    threading.Thread(target=push, args=(c,), daemon=True).start()
"""
PUSH_PORT = 8090

# A TCP segment as the server's stack would never send it now: a late reply on the connection.
LATE_SEGMENT = """
import sys
from scapy.all import IP, TCP, conf, send
conf.verb = 0
src, sport, dst, dport, seq, flags = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
send(IP(src=src, dst=dst) / TCP(sport=sport, dport=dport, flags=flags, seq=seq, ack=12345) / (b"" if "R" in flags else b"late reply"))
"""


class Connection:
    def __init__(self, lab: Lab, host: str, ip: str, port: int) -> None:
        self.proc = lab.popen(host, [sys.executable, "-c", CLIENT, ip, str(port)], name=f"conn-{port}",
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline().strip()
        assert line.isdigit(), f"the client did not connect: {line!r}"
        self.port = int(line)

    def echo(self, check: str = "echo") -> str:
        self.proc.stdin.write(check + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


def wan_in_alarms(agent: LabAgent, src: str) -> list[dict]:
    return [r for r in agent.alarms() if r.get("event_type") in ("alert", "drop") and r.get("src_ip") == src
            and WAN_IN in (r.get("alert", {}).get("signature"), r.get("drop", {}).get("signature"))]


def late_segment(lab: Lab, src: str, sport: int, dst: str, dport: int, seq: int, flags: str = "PA") -> None:
    res = lab.exec("web", [sys.executable, "-c", LATE_SEGMENT, src, str(sport), dst, str(dport), str(seq), flags])
    assert res.returncode == 0, res.stderr


def inbound_control(lab: Lab, agent: LabAgent, port: int) -> None:
    """A real connection attempt from the internet after the late segment: its alarm proves the
    alarms of everything before it have been written (NFLOG alarms are written in order)."""
    atk, pc1 = lab.hosts["atk"], lab.hosts["pc1"]
    assert not lab.wait_tcp("atk", pc1.ipv4, port, 1.0)
    assert agent.wait_alarm(lambda r: r.get("src_ip") == atk.ipv4 and r.get("dest_port") == port
                            and r.get("alert", {}).get("signature") == WAN_IN, timeout=30)


@pytest.mark.parametrize("agent", [FIREWALL_ONLY], indirect=True)
def test_server_segment_after_conntrack_forgot_the_connection(office: Lab, agent: LabAgent):
    """The kernel forgot a LAN client's connection (what conntrack does 10 s after a reset, or
    when its table is flushed); the server's next segment is no new inbound connection: no alarm.
    The connection goes on as soon as the client sends."""
    web, pc1 = office.hosts["web"], office.hosts["pc1"]
    conn = Connection(office, "pc1", web.ipv4, 8081)
    try:
        assert conn.echo() == "ok"
        gone = office.exec("utm", ["conntrack", "-D", "-p", "tcp", "--orig-src", pc1.ipv4, "--sport", str(conn.port)])
        assert gone.returncode == 0, gone.stderr
        late_segment(office, web.ipv4, 8081, pc1.ipv4, conn.port, 7)
        inbound_control(office, agent, 22)
        assert wan_in_alarms(agent, web.ipv4) == []
        assert conn.echo() == "ok"  # the client's next segment brings the connection back
        assert conn.echo() == "ok"
    finally:
        conn.close()


@pytest.mark.parametrize("agent", [FIREWALL_ONLY], indirect=True)
def test_invalid_server_segment_long_after_the_pass(office: Lab, agent: LabAgent):
    """A server's reset that conntrack finds out of window (INVALID: it has no connection mark, so
    it reaches the worker; late resets of aborted connections are common under load) well after
    the worker passed the flow: it belongs to that connection and is not judged as a new flow
    from the internet, and the connection is not cut."""
    web, pc1 = office.hosts["web"], office.hosts["pc1"]
    conn = Connection(office, "pc1", web.ipv4, 8082)
    try:
        assert conn.echo() == "ok"
        time.sleep(3.0)  # past the pipeline's offload_grace (2 s): only a longer wait on a slow machine
        before = agent.counter("pipeline", "packets")
        # a reset with a sequence number half the sequence space away: out of window for conntrack
        # (the LAN host ignores it, as it would not match its window either)
        late_segment(office, web.ipv4, 8082, pc1.ipv4, conn.port, 0x7FFF0000, "R")
        assert agent.wait_counter("pipeline", "packets", before + 1, timeout=30) > before
        inbound_control(office, agent, 445)
        assert wan_in_alarms(agent, web.ipv4) == []
        assert conn.echo() == "ok"
    finally:
        conn.close()


@pytest.mark.parametrize("agent", [FIREWALL_ONLY], indirect=True)
def test_connection_that_passed_while_the_queue_was_bypassed(office: Lab, agent: LabAgent):
    """A LAN client's connection that started while no worker took the queue (fail-open: the agent
    restarting, or a full queue under load) has no verdict in the kernel; when a worker is back,
    the first packet of it that the worker sees may be the server's. That is no new connection
    from the internet: before the fix it raised "default deny wan_to_lan" and its drop was saved
    to the connection's mark, which cut the LAN client's connection."""
    web = office.hosts["web"]
    office.popen("web", [sys.executable, "-c", PUSH_SERVER, str(PUSH_PORT)], name="push")
    assert office.wait_tcp("pc2", web.ipv4, PUSH_PORT, 15)
    agent.kill()  # the queue is bypassed, as when it is full
    conn = Connection(office, "pc1", web.ipv4, PUSH_PORT)
    try:
        assert conn.echo("read") == "ok"
        agent.start(timeout=120)
        # the server pushes every 0.3 s, the client only acknowledges: the worker's first packet
        # of the connection is most likely the server's
        for _ in range(3):
            assert conn.echo("read") == "ok"
        inbound_control(office, agent, 3389)
        assert wan_in_alarms(agent, web.ipv4) == []
    finally:
        conn.close()


def test_direction_of_a_connection_seen_from_the_middle_comes_from_conntrack(office: Lab, tmp_path: Path):
    """The same connection, with the IPS on: when the worker's first packet of it is the server's,
    the flow still has the LAN PC as its client (conntrack's direction, not the first sender), so
    a rule for what servers send (flow:to_client) matches the pushed data, and the server is not
    taken for the client."""
    rules = tmp_path / "push.rules"
    rules.write_text('alert tcp $EXTERNAL_NET any -> $HOME_NET any (msg:"VCR TEST push to client"; flow:to_client; '
                     'content:"tick"; sid:9209990; rev:1;)\n')
    web = office.hosts["web"]
    office.popen("web", [sys.executable, "-c", PUSH_SERVER, str(PUSH_PORT + 1)], name="push2")
    a = LabAgent(office, tmp_path / "agent", overrides={"engines.webfilter.enabled": False,
                                                         "engines.ips.rule_files": [str(rules)]})
    a.bridge_up()
    conn = None
    try:
        assert office.wait_tcp("pc2", web.ipv4, PUSH_PORT + 1, 15)
        # no agent yet: the queue is bypassed (fail-open), as when it is full under load
        conn = Connection(office, "pc1", web.ipv4, PUSH_PORT + 1)
        assert conn.echo("read") == "ok"
        a.start(timeout=120)
        for _ in range(3):
            assert conn.echo("read") == "ok"
        rec = a.wait_alarm(lambda r: r.get("alert", {}).get("signature_id") == 9209990, timeout=30)
        assert rec is not None, "the server's data was not seen as going to the client"
        assert (rec["src_ip"], rec["dest_ip"], rec["dest_port"]) == (web.ipv4, office.hosts["pc1"].ipv4, conn.port)
        assert wan_in_alarms(a, web.ipv4) == []
    finally:
        if conn is not None:
            conn.close()
        a.kill()
        a.bridge_down()
