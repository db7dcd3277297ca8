"""Simulated office in network namespaces: LAN PCs, LAN switch, the UTM box, the router and internet hosts.

Namespaces are named ``{prefix}-{role}``; every link is a veth pair created directly between two lab
namespaces, so nothing is attached to the host's own network and nothing routes out of the lab.

Address plan (documentation ranges only, RFC 5737 / RFC 3849)::

    office LAN       192.0.2.0/24     2001:db8:1::/64    (pcs -- lansw bridge -- utm lan0|wan0 -- router)
      router         192.0.2.1        2001:db8:1::1      router netns, interface "office"
      UTM management 192.0.2.2        2001:db8:1::2      br0 in the utm netns, set by `vcr-agent bridge up`
      pcN            192.0.2.(10+N)   2001:db8:1::(10+N) pc1 = .11, pc2 = .12 ... (up to pc50)
    segment "srv"    198.51.100.0/24  2001:db8:100::/64  well-behaved internet servers
      router         198.51.100.1     2001:db8:100::1    router netns, bridge "br-srv"
      web            198.51.100.10    2001:db8:100::10
      (suggested)    dns .53, mail .25, ops .80, update .90
    segment "bad"    203.0.113.0/24   2001:db8:203::/64  hostile internet hosts
      router         203.0.113.1      2001:db8:203::1    router netns, bridge "br-bad"
      atk            203.0.113.66     2001:db8:203::66
      (suggested)    c2 .67, malware .68

Every internet host has its own namespace and a veth ("eth0") whose router end is a port of the
segment's bridge inside the router namespace, so each host sees a /24 + /64 with the router at .1/::1.
The IPv6 address defaults to the segment prefix plus the IPv4 host number written as-is
(198.51.100.53 -> 2001:db8:100::53). The router forwards v4 and v6 without NAT and has no default
route: anything outside the plan is unreachable. The utm namespace only has lo, lan0 and wan0 up.
"""

from __future__ import annotations

import argparse
import atexit
import ipaddress
import logging
import os
import re
import shutil
import signal
import socket
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Sequence

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PREFIX_RE = re.compile(r"^[a-z][a-z0-9]{0,11}$")
ROLE_RE = re.compile(r"^[a-z][a-z0-9]{0,9}$")
RESERVED_ROLES = frozenset({"lansw", "utm", "router", "office", "lo"})
MAX_PCS = 50
DEFAULT_EXEC_TIMEOUT = 60.0
STOP_GRACE = 2.0
BRIDGE_NF_SYSCTLS = (
    "net.bridge.bridge-nf-call-iptables",
    "net.bridge.bridge-nf-call-ip6tables",
    "net.bridge.bridge-nf-call-arptables",
)
OFFICE_V4 = ipaddress.IPv4Network("192.0.2.0/24")
OFFICE_V6 = ipaddress.IPv6Network("2001:db8:1::/64")
HTTP_CHUNK = 64 * 1024
HTTP_MAX_BYTES = 16 << 30
ECHO_IDLE_TIMEOUT = 60.0
DEFAULT_PAGE = (
    b"<!doctype html><html><head><title>lab web</title></head>"
    b"<body><h1>It works</h1><p>vcr-agent lab web server</p></body></html>\n"
)


class LabError(RuntimeError):
    """Building or driving the lab failed."""


@dataclass(frozen=True)
class LabHost:
    """A lab machine with addresses (without prefix length)."""

    name: str
    netns: str
    ipv4: str
    ipv6: str


@dataclass(frozen=True)
class Segment:
    """An internet subnet hanging off the router: one bridge in the router netns, one /24 and /64."""

    name: str
    ipv4_net: ipaddress.IPv4Network
    ipv6_net: ipaddress.IPv6Network

    @property
    def bridge(self) -> str:
        return f"br-{self.name}"

    @property
    def router_ipv4(self) -> str:
        return str(self.ipv4_net.network_address + 1)

    @property
    def router_ipv6(self) -> str:
        return str(self.ipv6_net.network_address + 1)


SEGMENTS = (
    Segment("srv", ipaddress.IPv4Network("198.51.100.0/24"), ipaddress.IPv6Network("2001:db8:100::/64")),
    Segment("bad", ipaddress.IPv4Network("203.0.113.0/24"), ipaddress.IPv6Network("2001:db8:203::/64")),
)
DEFAULT_INTERNET_HOSTS = (("web", "198.51.100.10"), ("atk", "203.0.113.66"))


def _run(argv: Sequence[str], *, check: bool = True, timeout: float = 30.0) -> subprocess.CompletedProcess:
    """Run a lab plumbing command; raise LabError carrying its stderr when check fails."""
    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LabError(f"{' '.join(argv)}: {exc}") from exc
    if check and proc.returncode != 0:
        raise LabError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return _run(["ip", *args], check=check)


def list_netns() -> list[str]:
    """Names of the named network namespaces (`ip netns list`)."""
    proc = _run(["ip", "netns", "list"], check=False)
    return [line.split()[0] for line in proc.stdout.splitlines() if line.strip()]


def _kill_netns_pids(netns: str) -> None:
    """Terminate every process still living in a namespace, then kill what is left."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = [int(p) for p in _run(["ip", "netns", "pids", netns], check=False).stdout.split() if p.isdigit()]
        pids = [p for p in pids if p != os.getpid()]
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + STOP_GRACE
        while time.monotonic() < deadline and any(_pid_alive(p) for p in pids):
            time.sleep(0.05)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            return fh.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return False


def delete_netns(netns: str) -> None:
    """Kill a namespace's processes and delete it; quiet when it is already gone."""
    try:
        _kill_netns_pids(netns)
        proc = _ip("netns", "del", netns, check=False)
        if proc.returncode != 0 and netns in list_netns():
            log.warning("could not delete netns %s: %s", netns, proc.stderr.strip())
    except LabError as exc:
        log.warning("could not delete netns %s: %s", netns, exc)
    # per-namespace files `ip netns exec` bind-mounts over /etc (the UTM's resolv.conf, see labrun)
    shutil.rmtree(Path("/etc/netns") / netns, ignore_errors=True)


def cleanup_stale(prefix: str) -> list[str]:
    """Remove every namespace named `{prefix}-...` (and the processes in it); return their names."""
    if not PREFIX_RE.match(prefix):
        raise ValueError(f"lab prefix must match {PREFIX_RE.pattern}, got {prefix!r}")
    stale = [ns for ns in list_netns() if ns.startswith(f"{prefix}-")]
    for ns in stale:
        log.info("removing lab namespace %s", ns)
        delete_netns(ns)
    return stale


def _sysctl(netns: str, *settings: str) -> None:
    _run(["ip", "netns", "exec", netns, "sysctl", "-q", "-w", *settings])


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _stop_process(proc: subprocess.Popen) -> None:
    """SIGTERM a tracked process group, SIGKILL it after a grace period, and reap it."""
    if proc.poll() is not None:
        return
    own_group = _getpgid(proc.pid) == proc.pid
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            if own_group:
                os.killpg(proc.pid, sig)
            else:
                proc.send_signal(sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=STOP_GRACE)
            return
        except subprocess.TimeoutExpired:
            continue


def _getpgid(pid: int) -> int:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return -1


class Lab:
    """The simulated office; build with up() or a with-block, tear down with down()."""

    lan_port: str = "lan0"
    wan_port: str = "wan0"

    def __init__(self, prefix: str = "vcr", *, lan_pcs: int = 2, log_dir: Path | None = None) -> None:
        if not PREFIX_RE.match(prefix):
            raise ValueError(f"lab prefix must match {PREFIX_RE.pattern}, got {prefix!r}")
        if not 1 <= lan_pcs <= MAX_PCS:
            raise ValueError(f"lan_pcs must be 1..{MAX_PCS}, got {lan_pcs}")
        self.prefix = prefix
        self.lan_pcs = lan_pcs
        self.log_dir = Path(log_dir) if log_dir is not None else None
        self.utm_netns = f"{prefix}-utm"
        self.hosts: dict[str, LabHost] = {}
        self._segment_of: dict[str, Segment] = {}
        self._procs: list[tuple[str, subprocess.Popen]] = []
        self._lock = threading.Lock()
        self._is_up = False
        self._workdir: Path | None = None
        self._prev_sigterm: Any = None
        self._sigterm_installed = False
        self._plan_hosts()

    # ----------------------------------------------------------------- plan
    def _plan_hosts(self) -> None:
        for n in range(1, self.lan_pcs + 1):
            self._add_host(f"pc{n}", str(OFFICE_V4.network_address + 10 + n), f"2001:db8:1::{10 + n}")
        self._add_host("router", "192.0.2.1", "2001:db8:1::1")
        self._add_host("utm", "192.0.2.2", "2001:db8:1::2")
        for role, ipv4 in DEFAULT_INTERNET_HOSTS:
            self.add_internet_host(role, ipv4)

    def _add_host(self, role: str, ipv4: str, ipv6: str) -> LabHost:
        host = LabHost(name=role, netns=f"{self.prefix}-{role}", ipv4=ipv4, ipv6=ipv6)
        self.hosts[role] = host
        return host

    def add_internet_host(self, role: str, ipv4: str, ipv6: str | None = None) -> LabHost:
        """Plan (or, when the lab is up, build at once) an internet host in the segment holding ipv4."""
        if not ROLE_RE.match(role) or role in RESERVED_ROLES or re.fullmatch(r"pc\d+", role):
            raise ValueError(f"bad internet host role {role!r} (must match {ROLE_RE.pattern}, not reserved)")
        if role in self.hosts:
            raise ValueError(f"lab already has a host named {role!r}")
        addr4 = ipaddress.IPv4Address(ipv4)
        segment = next((s for s in SEGMENTS if addr4 in s.ipv4_net), None)
        if segment is None:
            raise ValueError(f"{ipv4} is in no internet segment: {[str(s.ipv4_net) for s in SEGMENTS]}")
        host_no = int(addr4) - int(segment.ipv4_net.network_address)
        if host_no in (0, 1, 255) or any(h.ipv4 == ipv4 for h in self.hosts.values()):
            raise ValueError(f"{ipv4} is reserved or already used")
        addr6 = ipaddress.IPv6Address(ipv6 or f"{segment.ipv6_net.network_address}{host_no}")
        if addr6 not in segment.ipv6_net:
            raise ValueError(f"{addr6} is not in {segment.ipv6_net}")
        host = self._add_host(role, str(addr4), str(addr6))
        self._segment_of[role] = segment
        if self._is_up:
            self._build_internet_host(host)
        return host

    def netns(self, role: str) -> str:
        """Namespace name of a lab role (any host, plus 'lansw')."""
        if role in self.hosts:
            return self.hosts[role].netns
        if role == "lansw":
            return f"{self.prefix}-lansw"
        raise KeyError(f"no lab host {role!r}; known: {sorted([*self.hosts, 'lansw'])}")

    def _roles(self) -> list[str]:
        pcs = [r for r in self.hosts if r.startswith("pc")]
        return [*pcs, "lansw", "utm", "router", *self._segment_of]

    # ---------------------------------------------------------------- build
    def up(self) -> None:
        """Build the whole lab, removing a stale lab with the same prefix first."""
        removed = cleanup_stale(self.prefix)
        if removed:
            log.info("removed stale lab namespaces: %s", ", ".join(removed))
        self._install_cleanup_hooks()
        try:
            self._workdir = Path(tempfile.mkdtemp(prefix=f"{self.prefix}-lab-"))
            if self.log_dir is not None:
                self.log_dir.mkdir(parents=True, exist_ok=True)
            for role in self._roles():
                self._add_netns(role)
            self._build_office()
            self._build_router()
            for role in self._segment_of:
                self._build_internet_host(self.hosts[role])
        except BaseException:
            self.down()
            raise
        self._is_up = True
        log.info("lab %s is up: %s", self.prefix, ", ".join(self._roles()))

    def _add_netns(self, role: str) -> None:
        ns = self.netns(role)
        _ip("netns", "add", ns)
        _sysctl(ns, "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0")
        _ip("-n", ns, "link", "set", "lo", "up")
        if role in ("lansw", "router"):
            _sysctl(ns, *(f"{key}=0" for key in BRIDGE_NF_SYSCTLS))

    def _veth(self, role_a: str, if_a: str, role_b: str, if_b: str) -> None:
        ns_a, ns_b = self.netns(role_a), self.netns(role_b)
        _ip("-n", ns_a, "link", "add", if_a, "type", "veth", "peer", "name", if_b, "netns", ns_b)
        _ip("-n", ns_a, "link", "set", if_a, "up")
        _ip("-n", ns_b, "link", "set", if_b, "up")

    def _bridge(self, role: str, name: str, ports: Sequence[str]) -> None:
        ns = self.netns(role)
        _ip("-n", ns, "link", "add", name, "type", "bridge", "stp_state", "0", "forward_delay", "0",
            "mcast_snooping", "0")
        for port in ports:
            _ip("-n", ns, "link", "set", port, "master", name)
        _ip("-n", ns, "link", "set", name, "up")

    def _address(self, role: str, dev: str, ipv4: str, ipv6: str, *, v4len: int = 24, v6len: int = 64) -> None:
        ns = self.netns(role)
        _ip("-n", ns, "addr", "add", f"{ipv4}/{v4len}", "dev", dev)
        _ip("-n", ns, "-6", "addr", "add", f"{ipv6}/{v6len}", "dev", dev, "nodad")

    def _default_route(self, role: str, dev: str, gw4: str, gw6: str) -> None:
        ns = self.netns(role)
        _ip("-n", ns, "route", "add", "default", "via", gw4, "dev", dev)
        _ip("-n", ns, "-6", "route", "add", "default", "via", gw6, "dev", dev)

    def _build_office(self) -> None:
        pcs = [r for r in self.hosts if r.startswith("pc")]
        for role in pcs:
            self._veth(role, "eth0", "lansw", role)
        self._veth("utm", self.lan_port, "lansw", "utm")
        self._veth("utm", self.wan_port, "router", "office")
        self._bridge("lansw", "br0", [*pcs, "utm"])
        router = self.hosts["router"]
        for role in pcs:
            host = self.hosts[role]
            self._address(role, "eth0", host.ipv4, host.ipv6)
            self._default_route(role, "eth0", router.ipv4, router.ipv6)

    def _build_router(self) -> None:
        ns = self.netns("router")
        _sysctl(ns, "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1")
        router = self.hosts["router"]
        self._address("router", "office", router.ipv4, router.ipv6)
        for segment in SEGMENTS:
            self._bridge("router", segment.bridge, [])
            self._address("router", segment.bridge, segment.router_ipv4, segment.router_ipv6,
                          v4len=segment.ipv4_net.prefixlen, v6len=segment.ipv6_net.prefixlen)

    def _build_internet_host(self, host: LabHost) -> None:
        segment = self._segment_of[host.name]
        if host.netns not in list_netns():
            self._add_netns(host.name)
        self._veth(host.name, "eth0", "router", host.name)
        _ip("-n", self.netns("router"), "link", "set", host.name, "master", segment.bridge)
        self._address(host.name, "eth0", host.ipv4, host.ipv6,
                      v4len=segment.ipv4_net.prefixlen, v6len=segment.ipv6_net.prefixlen)
        self._default_route(host.name, "eth0", segment.router_ipv4, segment.router_ipv6)

    def bridge_bare(self, *, netfilter: bool = False) -> None:
        """Make the UTM a plain bridge br0 = lan0 + wan0: no address, no rules (benchmark baseline)."""
        self.unbridge_bare()
        _sysctl(self.utm_netns, *(f"{key}={int(netfilter)}" for key in BRIDGE_NF_SYSCTLS))
        self._bridge("utm", "br0", [self.lan_port, self.wan_port])

    def unbridge_bare(self) -> None:
        """Remove br0 from the UTM (lan0/wan0 stay up, unbridged) and restore br_netfilter defaults."""
        ns = self.utm_netns
        _ip("-n", ns, "link", "del", "br0", check=False)
        for port in (self.lan_port, self.wan_port, "lo"):
            _ip("-n", ns, "link", "set", port, "up")
        _sysctl(ns, *(f"{key}=1" for key in BRIDGE_NF_SYSCTLS))

    # ------------------------------------------------------------ processes
    def exec(self, host: str, argv: list[str], **kw: Any) -> subprocess.CompletedProcess:
        """Run argv in a host's namespace (text, captured output, 60 s timeout unless overridden)."""
        kw.setdefault("text", True)
        if "stdout" not in kw and "stderr" not in kw:
            kw.setdefault("capture_output", True)
        kw.setdefault("timeout", DEFAULT_EXEC_TIMEOUT)
        kw.setdefault("check", False)
        return subprocess.run(["ip", "netns", "exec", self.netns(host), *argv], **kw)

    def popen(self, host: str, argv: list[str], *, name: str | None = None, **kw: Any) -> subprocess.Popen:
        """Start argv in the background in a host's namespace; down() stops it. Output goes to a log file."""
        if self._workdir is None:
            raise LabError("lab is not up")
        label = re.sub(r"[^A-Za-z0-9_.-]", "_", name or Path(argv[0]).name)
        logfile = None
        if "stdout" not in kw:
            logfile = self._log_path(host, label).open("ab")
            kw["stdout"] = logfile
            kw.setdefault("stderr", subprocess.STDOUT)
        kw.setdefault("stdin", subprocess.DEVNULL)
        kw["start_new_session"] = True
        try:
            proc = subprocess.Popen(["ip", "netns", "exec", self.netns(host), *argv], **kw)
        finally:
            if logfile is not None:
                logfile.close()
        with self._lock:
            self._procs.append((label, proc))
        log.debug("started %s in %s (pid %d)", argv, host, proc.pid)
        return proc

    def _log_path(self, host: str, label: str) -> Path:
        base = self.log_dir if self.log_dir is not None else self._workdir
        if base is None:
            raise LabError("lab is not up")
        return base / f"{host}-{label}.log"

    def log_tail(self, host: str, name: str, lines: int = 20) -> str:
        """Last lines of a background process's log (for error messages)."""
        try:
            text = self._log_path(host, name).read_text(errors="replace")
        except (OSError, LabError):
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _python_argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "lab.netns", *args]

    def start_http_server(self, host: str, port: int = 80, *, body: bytes | None = None) -> None:
        """Serve a small page, /bytes/<n> and POST sinks on every v4+v6 address of host; wait until up."""
        args = ["serve-http", "--port", str(port)]
        if body is not None:
            if self._workdir is None:
                raise LabError("lab is not up")
            body_file = self._workdir / f"{host}-http-{port}.body"
            body_file.write_bytes(body)
            args += ["--body-file", str(body_file)]
        self._start_server(host, port, f"http-{port}", args)

    def start_tcp_listener(self, host: str, port: int) -> None:
        """Accept-and-echo TCP listener on every v4+v6 address of host; wait until up."""
        self._start_server(host, port, f"echo-{port}", ["serve-echo", "--port", str(port)])

    def _start_server(self, host: str, port: int, name: str, args: list[str]) -> None:
        proc = self.popen(host, self._python_argv(*args), name=name, env=_child_env())
        if not self._probe(host, ["127.0.0.1", "::1"], port, timeout=15.0, proc=proc):
            tail = self.log_tail(host, name)
            _stop_process(proc)
            raise LabError(f"{name} in {host} did not start listening on port {port}:\n{tail}")

    def wait_tcp(self, host: str, ip: str, port: int, timeout: float) -> bool:
        """Return True as soon as `host` can open a TCP connection to ip:port, False after timeout."""
        return self._probe(host, [ip], port, timeout=timeout)

    def _probe(self, host: str, ips: list[str], port: int, *, timeout: float,
               proc: subprocess.Popen | None = None) -> bool:
        deadline = time.monotonic() + timeout
        argv = self._python_argv("probe-tcp", "--port", str(port), *ips)
        while True:
            remaining = deadline - time.monotonic()
            step = min(max(remaining, 0.0), 2.0)
            result = self.exec(host, [*argv, "--timeout", f"{step:.2f}"], env=_child_env(), timeout=step + 30)
            if result.returncode == 0:
                return True
            if remaining <= step or (proc is not None and proc.poll() is not None):
                return False

    # ------------------------------------------------------------- teardown
    def down(self) -> None:
        """Stop every tracked process and remove every namespace of this lab; safe to call again."""
        with self._lock:
            procs, self._procs = self._procs, []
        for label, proc in procs:
            try:
                _stop_process(proc)
            except Exception:  # noqa: BLE001 - teardown must go on
                log.exception("could not stop %s (pid %d)", label, proc.pid)
        try:
            cleanup_stale(self.prefix)
        except Exception:  # noqa: BLE001
            log.exception("could not remove namespaces of lab %s", self.prefix)
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
        self._is_up = False
        self._remove_cleanup_hooks()

    def detach(self) -> None:
        """Leave the lab (and its processes and logs) running after this process exits.

        Turns off the atexit/SIGTERM teardown; `cleanup_stale(prefix)` or a later down() removes it.
        """
        self._remove_cleanup_hooks()
        with self._lock:
            self._procs = []
        self._workdir = None

    def _install_cleanup_hooks(self) -> None:
        atexit.register(self.down)
        if threading.current_thread() is not threading.main_thread() or self._sigterm_installed:
            return
        self._prev_sigterm = signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGTERM, self._on_sigterm)
        self._sigterm_installed = True

    def _remove_cleanup_hooks(self) -> None:
        atexit.unregister(self.down)
        if not self._sigterm_installed or threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGTERM) == self._on_sigterm:
            signal.signal(signal.SIGTERM, self._prev_sigterm)
        self._sigterm_installed = False

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        prev = self._prev_sigterm
        log.warning("SIGTERM: tearing down lab %s", self.prefix)
        self.down()
        if callable(prev):
            prev(signum, frame)
        elif prev != signal.SIG_IGN:
            raise SystemExit(128 + signum)

    def __enter__(self) -> Lab:
        try:
            self.up()
        except BaseException:
            self.down()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()


# ------------------------------------------------------------------ servers run inside namespaces
class _DualStack:
    """Mixin: listen on :: with IPV6_V6ONLY off, so one socket takes every v4 and v6 address."""

    address_family = socket.AF_INET6
    allow_reuse_address = True
    daemon_threads = True

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # type: ignore[attr-defined]
        socketserver.TCPServer.server_bind(self)  # type: ignore[arg-type]
        self.server_name = "lab"
        self.server_port = self.server_address[1]  # type: ignore[attr-defined]


class LabHTTPServer(_DualStack, ThreadingHTTPServer):
    """Threaded dual-stack HTTP server with a configurable front page."""

    request_queue_size = 128

    def __init__(self, port: int, page: bytes) -> None:
        self.page = page
        super().__init__(("::", port), LabHTTPHandler)


class LabHTTPHandler(BaseHTTPRequestHandler):
    """GET / -> page, GET /bytes/<n> -> n bytes, POST anything -> count of bytes received."""

    protocol_version = "HTTP/1.1"
    server: LabHTTPServer

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        self._answer(send_body=True)

    def do_HEAD(self) -> None:  # noqa: N802
        self._answer(send_body=False)

    def _answer(self, *, send_body: bool) -> None:
        path = self.path.split("?", 1)[0]
        match = re.fullmatch(r"/bytes/(\d{1,12})", path)
        if path in ("/", "/index.html"):
            self._send(200, "text/html; charset=utf-8", self.server.page, send_body)
        elif match and int(match.group(1)) <= HTTP_MAX_BYTES:
            self._send_bytes(int(match.group(1)), send_body)
        else:
            self._send(404, "text/plain", b"not found\n", send_body)

    def _send(self, code: int, ctype: str, body: bytes, send_body: bool) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def _send_bytes(self, size: int, send_body: bool) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(size))
        self.end_headers()
        chunk = bytes(range(256)) * (HTTP_CHUNK // 256)
        left = size if send_body else 0
        while left > 0:
            n = min(left, len(chunk))
            self.wfile.write(chunk[:n])
            left -= n

    def do_POST(self) -> None:  # noqa: N802
        try:
            left = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            left = -1
        if not 0 <= left <= HTTP_MAX_BYTES:
            self._send(411, "text/plain", b"need a sane Content-Length\n", True)
            return
        got = 0
        while got < left:
            data = self.rfile.read(min(HTTP_CHUNK, left - got))
            if not data:
                break
            got += len(data)
        self._send(200, "text/plain", f"received {got}\n".encode(), True)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - signature from http.server
        log.info("%s %s", self.address_string(), format % args)


class EchoHandler(socketserver.StreamRequestHandler):
    """Echo whatever the client sends until it closes or idles out."""

    timeout = ECHO_IDLE_TIMEOUT

    def handle(self) -> None:
        try:
            while data := self.connection.recv(HTTP_CHUNK):
                self.connection.sendall(data)
        except OSError:
            pass


class LabEchoServer(_DualStack, socketserver.ThreadingTCPServer):
    """Threaded dual-stack accept-and-echo TCP server."""

    request_queue_size = 128

    def __init__(self, port: int) -> None:
        super().__init__(("::", port), EchoHandler)


def probe_tcp(ips: Sequence[str], port: int, timeout: float) -> bool:
    """True when every ip:port accepted a TCP connection before the timeout."""
    deadline = time.monotonic() + timeout
    pending = list(ips)
    while pending:
        try:
            with socket.create_connection((pending[0], port), timeout=max(0.05, min(1.0, timeout))):
                pending.pop(0)
                continue
        except OSError:
            pass
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def _serve_forever(server: socketserver.BaseServer) -> int:
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown, daemon=True).start())
    with server:
        server.serve_forever(poll_interval=0.2)
    return 0


def _hold_lab(args: argparse.Namespace) -> int:
    lab = Lab(args.prefix, lan_pcs=args.pcs, log_dir=args.log_dir)
    with lab:
        if args.bare:
            lab.bridge_bare()
        lab.start_http_server("web")
        for host in lab.hosts.values():
            print(f"{host.name:8} {host.netns:16} {host.ipv4:16} {host.ipv6}")
        print("lab is up; Ctrl-C tears it down", flush=True)
        try:
            signal.pause()
        except KeyboardInterrupt:
            pass
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lab.netns", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("up", help="build the lab and hold it until Ctrl-C")
    p.add_argument("--prefix", default="vcr")
    p.add_argument("--pcs", type=int, default=2)
    p.add_argument("--log-dir", type=Path)
    p.add_argument("--bare", action="store_true", help="bridge the UTM ports with a plain br0")
    p = sub.add_parser("cleanup", help="remove namespaces named PREFIX-*")
    p.add_argument("prefix")
    p = sub.add_parser("serve-http", help="(inside a namespace) run the lab HTTP server")
    p.add_argument("--port", type=int, default=80)
    p.add_argument("--body-file", type=Path)
    p = sub.add_parser("serve-echo", help="(inside a namespace) run the TCP echo listener")
    p.add_argument("--port", type=int, required=True)
    p = sub.add_parser("probe-tcp", help="exit 0 when every IP accepts a TCP connection on PORT")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--timeout", type=float, default=5.0)
    p.add_argument("ips", nargs="+")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: `python -m lab.netns {up,cleanup,serve-http,serve-echo,probe-tcp}`."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.cmd == "up":
        return _hold_lab(args)
    if args.cmd == "cleanup":
        removed = cleanup_stale(args.prefix)
        print("\n".join(removed) if removed else f"no namespace named {args.prefix}-*")
        return 0
    if args.cmd == "serve-http":
        page = args.body_file.read_bytes() if args.body_file else DEFAULT_PAGE
        return _serve_forever(LabHTTPServer(args.port, page))
    if args.cmd == "serve-echo":
        return _serve_forever(LabEchoServer(args.port))
    return 0 if probe_tcp(args.ips, args.port, args.timeout) else 1


if __name__ == "__main__":
    sys.exit(main())
