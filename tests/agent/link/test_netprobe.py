"""ARP and DHCP on one port (agent/link/netprobe.py) against real peers in two network namespaces: a "router"
with an address and dnsmasq as DHCP server, and the box's port."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

pytestmark = pytest.mark.lab
REPO = Path(__file__).resolve().parents[3]


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=30)


@pytest.fixture
def pair(lab_prefix: str, tmp_path: Path) -> Iterator[tuple[str, str]]:
    box, router = f"{lab_prefix}npb", f"{lab_prefix}npr"
    sh("ip", "netns", "add", box)
    sh("ip", "netns", "add", router)
    proc = None
    try:
        sh("ip", "link", "add", "p0", "netns", box, "type", "veth", "peer", "name", "office", "netns", router)
        sh("ip", "-n", box, "link", "set", "p0", "up")
        sh("ip", "-n", router, "link", "set", "office", "up")
        sh("ip", "-n", router, "addr", "add", "192.0.2.1/24", "dev", "office")
        if shutil.which("dnsmasq"):
            proc = subprocess.Popen(
                ["ip", "netns", "exec", router, "dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--port=0",
                 "--interface=office", "--bind-interfaces", "--dhcp-range=192.0.2.200,192.0.2.210,255.255.255.0,10m",
                 "--dhcp-option=3,192.0.2.1", "--dhcp-option=6,198.51.100.53", "--user=root", "--pid-file=",
                 f"--dhcp-leasefile={tmp_path / 'leases'}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(0.5)
        yield box, router
    finally:
        if proc:
            proc.terminate()
            proc.wait(5)
        subprocess.run(["ip", "netns", "del", box], capture_output=True)
        subprocess.run(["ip", "netns", "del", router], capture_output=True)


def in_box(box: str, code: str) -> str:
    r = subprocess.run(["ip", "netns", "exec", box, sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=60, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def test_arp_finds_the_gateway_only_where_it_is(pair: tuple[str, str]):
    box, _ = pair
    out = in_box(box, "from agent.link.netprobe import arp_probe as a\n"
                      "print(bool(a('p0', '192.0.2.1', '192.0.2.2')), a('p0', '192.0.2.99', '192.0.2.2', timeout=0.6))")
    assert out == "True None"


def test_dhcp_lease_and_release(pair: tuple[str, str]):
    if shutil.which("dnsmasq") is None:
        pytest.skip("DHCP TEST SKIPPED: dnsmasq is missing (scripts/setup.sh installs dnsmasq-base)")
    box, _ = pair
    out = in_box(box, "from agent.link.netprobe import dhcp_lease, dhcp_release\n"
                      "l = dhcp_lease('p0')\n"
                      "print(l.address, l.router, ','.join(l.dns), l.server_id, l.lease_s)\n"
                      "dhcp_release(l)")
    addr, router, dns, server, lease_s = out.split()
    assert addr.startswith("192.0.2.2") and addr.endswith("/24")
    assert (router, dns, server, lease_s) == ("192.0.2.1", "198.51.100.53", "192.0.2.1", "600")


def test_no_dhcp_server_means_no_lease(pair: tuple[str, str]):
    box, router = pair
    sh("ip", "-n", router, "link", "set", "office", "down")
    assert in_box(box, "from agent.link.netprobe import dhcp_lease\nprint(dhcp_lease('p0', timeout=1.5))") == "None"
