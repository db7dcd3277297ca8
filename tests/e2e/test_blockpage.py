"""End to end: who reaches the box itself, and the block page server under idle connections
(security issue, item 2).

The box's management address (192.0.2.2 on br0) answers the block page (TCP 80) and pings from the
LAN port only; from the router's side (the router itself, an internet host) nothing new gets in,
while the box's own outbound connections still get their replies. Three hundred half-sent requests
from the LAN do not give the block page server more threads than its cap, the connections over the
cap are closed at once, and the rest are closed when the request timeout is up.
"""
from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import pytest

from agent.dataplane.blockpage import MAX_CONNECTIONS, MAX_PER_CLIENT, REQUEST_TIMEOUT
from lab.agentrun import LabAgent
from lab.netns import Lab
from tests.waiting import wait

pytestmark = pytest.mark.lab

BOX4, BOX6 = "192.0.2.2", "2001:db8:1::2"
EXTRA_SOURCES = [f"192.0.2.{200 + i}" for i in range(10)]  # more LAN clients, as addresses of pc1

CONNECT = r"""
import socket, sys
fam = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
s = socket.socket(fam, socket.SOCK_STREAM); s.settimeout(float(sys.argv[3]))
try:
    s.connect((sys.argv[1], int(sys.argv[2]))); print("open")
except ConnectionRefusedError: print("refused")
except OSError: print("timeout")
"""

# Half-sent requests from several source addresses; prints how long after its own connect each one
# was closed by the box (closes are watched while connecting too, so a slow connect loop on a busy
# machine does not count against the box).
SLOW = r"""
import json, select, socket, sys, time
box, n, hold = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
sources = sys.argv[4:]
conns, opened, closed, t0 = [], {}, {}, time.monotonic()

def poll(timeout):
    live = [s for s in conns if s.fileno() not in closed]
    if not live:
        time.sleep(timeout)
        return
    ready, _, _ = select.select(live, [], [], timeout)
    for s in ready:
        try:
            data = s.recv(4096)
        except OSError:
            data = b""
        if not data:
            closed[s.fileno()] = round(time.monotonic() - opened[s.fileno()], 2)

for i in range(n):
    s = socket.create_connection((box, 80), timeout=5, source_address=(sources[i % len(sources)], 0))
    opened[s.fileno()] = time.monotonic()
    s.sendall(b"GET / HTTP/1.1\r\nHost: phish.example\r\n")
    conns.append(s)
    poll(0)
t1 = time.monotonic()
while len(closed) < n and time.monotonic() - t1 < hold:
    poll(0.2)
print(json.dumps({"n": n, "closed": sorted(closed.values()), "open": n - len(closed),
                  "connect_s": round(max(opened.values()) - t0, 2)}))
"""


def connect(lab: Lab, host: str, ip: str, port: int, timeout: float = 2.0) -> str:
    res = lab.exec(host, [sys.executable, "-c", CONNECT, ip, str(port), str(timeout)], timeout=30)
    return res.stdout.strip()


def ping(lab: Lab, host: str, ip: str) -> bool:
    return lab.exec(host, ["ping", "-c", "1", "-W", "1", ip]).returncode == 0


def threads(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/task").iterdir()))


def test_block_page_from_the_lan_only(office: Lab, agent: LabAgent):
    ops = office.hosts["ops"]
    office.start_tcp_listener("ops", 8443)
    # the LAN side: the block page answers, ping works, other ports are refused at once
    res = office.exec("pc1", ["curl", "-sS", "--max-time", "4", "-w", "\n%{http_code}", f"http://{BOX4}/x",
                               "-H", "Host: phish.example"])
    assert res.stdout.endswith("403") and "ブロックされました" in res.stdout
    assert connect(office, "pc2", BOX4, 80) == "open"
    assert connect(office, "pc1", BOX4, 443) == "refused"
    assert ping(office, "pc1", BOX4) and ping(office, "pc1", BOX6)
    # the router's side: the router itself (on the same link) and an internet host get nothing
    for host in ("router", "web", "atk"):
        assert connect(office, host, BOX4, 80) == "timeout", host
        assert connect(office, host, BOX4, 22) == "timeout", host
        assert connect(office, host, BOX6, 80) == "timeout", host
        assert not ping(office, host, BOX4), host
    # the box's own outbound connections still get their replies (v4 and v6, TCP and ICMP)
    assert connect(office, "utm", ops.ipv4, 8443) == "open"
    assert connect(office, "utm", ops.ipv6, 8443) == "open"
    assert connect(office, "utm", ops.ipv4, 8444) == "refused"  # a reset for the box is a reply too
    assert ping(office, "utm", office.hosts["web"].ipv4) and ping(office, "utm", office.hosts["web"].ipv6)
    # the kernel counted the WAN side's attempts in the box's input policy
    listing = office.exec("utm", ["iptables", "-w", "-L", "VCR-IN", "-v", "-x", "-n"]).stdout
    drop = [l for l in listing.splitlines() if l.split()[2:3] == ["DROP"] and "0.0.0.0/0" in l and "ctstate" not in l]
    assert drop and int(drop[-1].split()[0]) >= 6


@pytest.fixture
def sources(office: Lab):
    for a in EXTRA_SOURCES:
        office.exec("pc1", ["ip", "addr", "add", f"{a}/24", "dev", "eth0"], check=True)
    yield [office.hosts["pc1"].ipv4, *EXTRA_SOURCES]
    for a in EXTRA_SOURCES:
        office.exec("pc1", ["ip", "addr", "del", f"{a}/24", "dev", "eth0"])


def test_idle_half_sent_requests_stay_under_the_cap(office: Lab, agent: LabAgent, sources: list[str]):
    pid = int(agent.status()["pid"])
    baseline = 0
    for _ in range(5):
        baseline = max(baseline, threads(pid))
        time.sleep(0.1)
    n = 300
    result: dict = {}

    def attack() -> None:
        res = office.exec("pc1", [sys.executable, "-c", SLOW, BOX4, str(n), str(REQUEST_TIMEOUT + 10), *sources],
                          timeout=REQUEST_TIMEOUT + 40)
        result.update(json.loads(res.stdout or "{}"), stderr=res.stderr)

    t = threading.Thread(target=attack)
    t0 = time.monotonic()
    t.start()
    peak = 0
    while t.is_alive():
        peak = max(peak, threads(pid))
        time.sleep(0.1)
    t.join()
    assert result.get("n") == n, result
    assert result["open"] == 0  # every connection was closed by the box
    cap = min(MAX_CONNECTIONS, MAX_PER_CLIENT * len(sources))
    closed = result["closed"]
    # over the cap: closed at once; within it: closed when the request timeout is up (both counted
    # from each connection's own connect)
    assert sum(1 for c in closed if c < 2.0) >= n - cap
    late = [c for c in closed if c >= 2.0]
    assert len(late) <= cap and all(REQUEST_TIMEOUT - 1 <= c <= REQUEST_TIMEOUT + 3 for c in late), late
    assert peak - baseline <= cap + 2, (peak, baseline)
    assert time.monotonic() - t0 < REQUEST_TIMEOUT + 20 + result["connect_s"]
    def counters() -> dict:
        return (agent.status() or {}).get("blockpage") or {}

    st = wait(lambda: counters() if counters().get("timed_out") else None, 10, "the block page counters in the status")
    assert st["rejected"] >= n - cap and st["timed_out"] >= 1
    wait(lambda: threads(pid) <= baseline + 1, 10, "the connection threads to end")
    wait(lambda: counters().get("active") == 0, 10, "no open connections")
    assert connect(office, "pc2", BOX4, 80) == "open"  # and it still serves
