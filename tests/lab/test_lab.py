"""End-to-end checks of the namespace lab: reachability through the bare bridge, isolation, teardown."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from lab.netns import Lab, cleanup_stale, list_netns

pytestmark = pytest.mark.lab

WEB4 = "198.51.100.10"
WEB6 = "2001:db8:100::10"


def lab_namespaces(prefix: str) -> list[str]:
    return [ns for ns in list_netns() if ns.startswith(f"{prefix}-")]


@pytest.fixture(scope="module")
def lab(lab_prefix: str) -> Iterator[Lab]:
    office = Lab(f"{lab_prefix}la")
    with office:
        office.bridge_bare()
        office.start_http_server("web")
        yield office
    assert lab_namespaces(office.prefix) == []


def curl(lab: Lab, host: str, url: str) -> subprocess.CompletedProcess:
    return lab.exec(host, ["curl", "-sS", "-m", "10", "-o", "/dev/null", "-w", "%{http_code} %{size_download}", url])


def test_topology_namespaces(lab: Lab) -> None:
    expected = {f"{lab.prefix}-{r}" for r in ("pc1", "pc2", "lansw", "utm", "router", "web", "atk")}
    assert set(lab_namespaces(lab.prefix)) == expected
    assert lab.utm_netns == f"{lab.prefix}-utm"
    assert lab.hosts["pc1"].ipv4 == "192.0.2.11" and lab.hosts["pc2"].ipv6 == "2001:db8:1::12"
    links = lab.exec("utm", ["ip", "-o", "link", "show"]).stdout
    assert f"{lab.lan_port}@" in links and f"{lab.wan_port}@" in links
    addrs = lab.exec("utm", ["ip", "-o", "addr", "show", "scope", "global"]).stdout
    assert addrs == "", "the lab must not give the UTM any address"


@pytest.mark.parametrize("pc", ["pc1", "pc2"])
@pytest.mark.parametrize("dst", [WEB4, WEB6])
def test_ping_through_bridge(lab: Lab, pc: str, dst: str) -> None:
    result = lab.exec(pc, ["ping", "-c", "2", "-i", "0.2", "-W", "2", dst])
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("url", [f"http://{WEB4}/", f"http://[{WEB6}]/"])
def test_http_page(lab: Lab, url: str) -> None:
    result = lab.exec("pc1", ["curl", "-sS", "-m", "10", url])
    assert result.returncode == 0, result.stderr
    assert "It works" in result.stdout


@pytest.mark.parametrize("url", [f"http://{WEB4}/bytes/1000000", f"http://[{WEB6}]/bytes/123457"])
def test_http_bytes(lab: Lab, url: str) -> None:
    result = curl(lab, "pc2", url)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"200 {url.rsplit('/', 1)[1]}"


def test_traffic_goes_through_the_utm(lab: Lab) -> None:
    lab.unbridge_bare()
    try:
        cut = lab.exec("pc1", ["ping", "-c", "1", "-W", "1", WEB4])
        assert cut.returncode != 0, "pc1 reached the web host without the UTM bridge"
    finally:
        lab.bridge_bare()
    assert lab.exec("pc1", ["ping", "-c", "1", "-W", "2", WEB4]).returncode == 0


def test_utm_management_address_works(lab: Lab) -> None:
    """What `vcr-agent bridge up` will do: br0 gets 192.0.2.2 and the router as gateway."""
    utm = lab.hosts["utm"]
    for argv in (["ip", "addr", "add", f"{utm.ipv4}/24", "dev", "br0"],
                 ["ip", "-6", "addr", "add", f"{utm.ipv6}/64", "dev", "br0", "nodad"],
                 ["ip", "route", "add", "default", "via", "192.0.2.1"],
                 ["ip", "-6", "route", "add", "default", "via", "2001:db8:1::1"]):
        assert lab.exec("utm", argv).returncode == 0
    try:
        assert lab.exec("utm", ["ping", "-c", "1", "-W", "2", WEB4]).returncode == 0
        assert lab.exec("utm", ["ping", "-c", "1", "-W", "2", WEB6]).returncode == 0
        assert lab.exec("pc1", ["ping", "-c", "1", "-W", "2", utm.ipv4]).returncode == 0
    finally:
        lab.bridge_bare()


def test_no_route_out_of_the_lab(lab: Lab) -> None:
    route = lab.exec("router", ["ip", "route", "get", "8.8.8.8"])
    assert route.returncode != 0 and "unreachable" in route.stderr.lower()
    route6 = lab.exec("router", ["ip", "-6", "route", "get", "2001:4860:4860::8888"])
    assert route6.returncode != 0
    ping = lab.exec("pc1", ["ping", "-c", "1", "-W", "1", "8.8.8.8"])
    assert ping.returncode != 0
    assert "Unreachable" in ping.stdout, ping.stdout
    for role in ("web", "atk"):
        assert lab.exec(role, ["ping", "-c", "1", "-W", "1", "8.8.8.8"]).returncode != 0


def test_tcp_listener_and_wait(lab: Lab) -> None:
    lab.start_tcp_listener("atk", 4444)
    atk = lab.hosts["atk"]
    assert lab.wait_tcp("pc1", atk.ipv4, 4444, timeout=5)
    assert lab.wait_tcp("pc1", atk.ipv6, 4444, timeout=5)
    assert not lab.wait_tcp("pc1", atk.ipv4, 4445, timeout=0.5)
    code = (
        "import socket,sys\n"
        "s = socket.create_connection((sys.argv[1], 4444), timeout=5)\n"
        "s.sendall(b'hello lab'); print(s.recv(100).decode())\n"
    )
    for ip in (atk.ipv4, atk.ipv6):
        echo = lab.exec("pc2", [sys.executable, "-c", code, ip])
        assert echo.stdout.strip() == "hello lab", echo.stderr


def test_add_internet_host_later(lab: Lab) -> None:
    dns = lab.add_internet_host("dns", "198.51.100.53")
    assert dns.ipv6 == "2001:db8:100::53"
    lab.start_http_server("dns", 8080, body=b"custom page\n")
    result = lab.exec("pc1", ["curl", "-sS", "-m", "5", f"http://[{dns.ipv6}]:8080/"])
    assert result.stdout == "custom page\n"
    with pytest.raises(ValueError):
        lab.add_internet_host("dns2", "198.51.100.53")
    with pytest.raises(ValueError):
        lab.add_internet_host("outside", "8.8.8.8")


def test_down_kills_processes_and_is_idempotent(lab_prefix: str) -> None:
    prefix = f"{lab_prefix}lb"
    small = Lab(prefix, lan_pcs=1)
    small.up()
    sleeper = small.popen("pc1", ["sleep", "300"])
    assert sleeper.poll() is None
    small.down()
    assert sleeper.poll() is not None
    assert lab_namespaces(prefix) == []
    small.down()


def test_detach_leaves_lab_for_cleanup_stale(lab_prefix: str) -> None:
    prefix = f"{lab_prefix}ld"
    small = Lab(prefix, lan_pcs=1)
    try:
        small.up()
        small.bridge_bare()
        small.start_tcp_listener("web", 7)
        small.detach()
        assert small.wait_tcp("pc1", small.hosts["web"].ipv4, 7, timeout=5)
    finally:
        removed = cleanup_stale(prefix)
    assert f"{prefix}-web" in removed and lab_namespaces(prefix) == []


def test_context_manager_cleans_up_on_interrupt(lab_prefix: str) -> None:
    prefix = f"{lab_prefix}lc"
    with pytest.raises(KeyboardInterrupt):
        with Lab(prefix, lan_pcs=1) as small:
            small.popen("web", ["sleep", "300"])
            raise KeyboardInterrupt
    assert lab_namespaces(prefix) == []


def test_up_replaces_stale_lab_and_cleanup_stale(lab_prefix: str) -> None:
    prefix = f"{lab_prefix}ls"
    subprocess.run(["ip", "netns", "add", f"{prefix}-pc1"], check=True)
    subprocess.run(["ip", "netns", "add", f"{prefix}x-keep"], check=True)
    try:
        with Lab(prefix, lan_pcs=1) as small:
            assert small.exec("pc1", ["ip", "-o", "addr", "show", "eth0"]).returncode == 0
        assert cleanup_stale(prefix) == []
        subprocess.run(["ip", "netns", "add", f"{prefix}-old"], check=True)
        assert cleanup_stale(prefix) == [f"{prefix}-old"]
        assert f"{prefix}x-keep" in list_netns()
    finally:
        subprocess.run(["ip", "netns", "del", f"{prefix}x-keep"], check=False)


def test_bench_kernel_floor_marks_connections_in_the_kernel_and_undoes_itself(lab: Lab, tmp_path) -> None:
    """The bench's kernel floor: br_netfilter + conntrack + the agent's jump and fast-path compare, no agent."""
    from pathlib import Path

    from lab.bench.dataplane import KERNEL_CHAIN, Bench, agent_setups

    dump = lambda: "".join(lab.exec("utm", [t, "-S"]).stdout for t in ("iptables", "ip6tables"))  # noqa: E731
    acct = lab.exec("utm", ["sysctl", "-n", "net.netfilter.nf_conntrack_acct"]).stdout
    before = dump()
    bench = Bench(lab, 1, 1.0, tmp_path, [s for s in agent_setups(Path("/nonexistent")) if s.mode == "fw"])
    try:
        with bench.kernel_floor():
            assert f"-A FORWARD -i br0 -o br0 -j {KERNEL_CHAIN}" in dump()
            assert lab.exec("utm", ["sysctl", "-n", "net.netfilter.nf_conntrack_acct"]).stdout.strip() == "1"
            assert curl(lab, "pc1", f"http://{WEB4}/bytes/200000").stdout == "200 200000"
            assert curl(lab, "pc2", f"http://[{WEB6}]/bytes/1000").stdout == "200 1000"
            # both connections went through conntrack and carry the fast path's accept mark
            entries = lab.exec("utm", ["conntrack", "-L", "-f", "ipv4", "-p", "tcp", "--dport", "80"]).stdout
            entries6 = lab.exec("utm", ["conntrack", "-L", "-f", "ipv6", "-p", "tcp", "--dport", "80"]).stdout
            assert "mark=268435456" in entries and "mark=268435456" in entries6
            fast = lab.exec("utm", ["iptables", "-L", KERNEL_CHAIN, "-v", "-x", "-n"]).stdout.splitlines()[2]
            assert int(fast.split()[0]) > 10  # the rest of the download took the connmark compare
        assert dump() == before
        assert lab.exec("utm", ["sysctl", "-n", "net.netfilter.nf_conntrack_acct"]).stdout == acct
    finally:
        lab.bridge_bare()
    assert lab.exec("pc1", ["ping", "-c", "1", "-W", "2", WEB4]).returncode == 0
