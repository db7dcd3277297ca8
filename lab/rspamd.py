"""A private rspamd for the tests and the lab, with its own redis (Bayes, fuzzy hashes) and its own
DNS blocklist server (rbldnsd), all under one folder with their own ports and pidfiles: never the
system services, and no query leaves the machine.

- redis-server on 127.0.0.1:<port>, no persistence (``--save ""``);
- rbldnsd on 127.0.0.1:<port>/udp, serving ``zen.spamhaus.org`` from a local zone file: rspamd's
  resolver is pointed at it, so the stock Spamhaus rule of rspamd asks the lab zone (listed codes
  127.0.0.2.., and the 127.255.255.x error answers Spamhaus gives to open resolvers and over-quota
  users) and every other name gets REFUSED (no internet lookups, no map downloads);
- rspamd (Debian 3.4) with the stock configuration of /etc/rspamd and a private
  ``$LOCAL_CONFDIR``: the box's own files (config/antispam/rspamd: greylisting and rate limits off,
  redis, a fuzzy_check rule on the local fuzzy storage) with private ports, and the lab's resolver;
  one scanner worker (``/checkv2``), the controller (``/learnspam``, ``/learnham``, ``/fuzzyadd``)
  and the fuzzy storage.

``with PrivateRspamd(folder, listed={"203.0.113.7": "127.0.0.2"}) as r:`` ... ``r.url``,
``r.controller_url``; ``r.stop_rspamd()`` stops rspamd alone (redis and rbldnsd stay) to test an
rspamd outage.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Mapping

from lab.daemon import stop_group, wait_up

ROOT = Path(__file__).resolve().parent.parent
ZONE = "zen.spamhaus.org"
TOOLS = {"rspamd": "rspamd", "redis-server": "redis-server", "rbldnsd": "rbldnsd"}


def missing() -> str | None:
    """Why a private rspamd cannot run here, or None."""
    for tool, pkg in TOOLS.items():
        if _which(tool) is None:
            return f"`{tool}` is not installed (apt-get install {pkg})"
    if not Path("/etc/rspamd/common.conf").exists():
        return "/etc/rspamd is missing (apt-get install rspamd)"
    return None


def _which(tool: str) -> str | None:
    found = shutil.which(tool)
    if found:
        return found
    for d in ("/usr/sbin", "/usr/bin", "/sbin"):
        if Path(d, tool).exists():
            return str(Path(d, tool))
    return None


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


TOP = """\
# vcr-agent lab: a private rspamd (stock /etc/rspamd rules, private local config, ports and data)
.include "$CONFDIR/common.conf"

options {{
    pidfile = "$RUNDIR/rspamd.pid";
    .include "$CONFDIR/options.inc"
    .include(try=true; priority=1,duplicate=merge) "$LOCAL_CONFDIR/local.d/options.inc"
}}

logging {{
    type = "file";
    filename = "$LOGDIR/rspamd.log";
    level = "{log_level}";
}}

worker "normal" {{
    bind_socket = "127.0.0.1:{normal}";
    bind_socket = "{normal_socket} mode=0666";
    mime = true;
    count = 1;
}}

worker "controller" {{
    bind_socket = "127.0.0.1:{controller}";
    count = 1;
    secure_ip = "127.0.0.1";
    password = "{password}";
    enable_password = "{password}";
}}

worker "fuzzy" {{
    bind_socket = "127.0.0.1:{fuzzy}";
    count = 1;
    backend = "redis";
    servers = "127.0.0.1:{redis}";
    expire = 90d;
    allow_update = ["127.0.0.1"];
    sync = 1s;  # as config/antispam/rspamd/local.d/worker-fuzzy.inc
}}
"""

# The box's configuration (config/antispam/rspamd), its ports swapped for the private ones.
BOX_CONF = ROOT / "config" / "antispam" / "rspamd"
BOX_PORTS = {"127.0.0.1:6379": "redis", "127.0.0.1:11335": "fuzzy"}
BOX_FILES = ("local.d/greylist.conf", "local.d/ratelimit.conf", "local.d/redis.conf", "override.d/fuzzy_check.conf",
             "local.d/headers_group.conf")

# What only the lab needs.
LAB = {
    "local.d/options.inc": """\
hs_cache_dir = "{hs_cache}";
dns {{
    nameserver = ["127.0.0.1:{dns}"];
    timeout = 1s;
    retransmits = 2;
}}
""",
    "local.d/classifier-bayes.conf": "min_learns = {min_learns};\n",
    # The lab resolver answers no internet name: a check whose verdict is "the sender's domain does not
    # resolve" would fire on every message there (on a box it asks the office's DNS).
    "local.d/hfilter.conf": "from_enabled = false;\n",
}


def zone_text(listed: Mapping[str, str]) -> str:
    """An rbldnsd ip4set zone: ``ip-or-cidr :127.0.0.x:text`` per entry."""
    lines = [f"# vcr-agent lab zone ({ZONE}), made by lab/rspamd.py"]
    for ip, code in listed.items():
        lines.append(f"{ip} :{code}:listed in the lab zone ({code})")
    return "\n".join(lines) + "\n"


class PrivateRspamd:
    """rspamd + redis + rbldnsd under ``folder``. ``listed``: address (or CIDR) -> the A record the
    lab ``zen.spamhaus.org`` answers for it (127.0.0.2 SBL, 127.0.0.4 XBL, 127.255.255.254 open-
    resolver error...). ``min_learns``: Bayes answers once it learnt that many of each class."""

    password = "vcr-lab"

    def __init__(self, folder: Path, listed: Mapping[str, str] | None = None, *, min_learns: int = 200,
                 log_level: str = "notice", hs_cache: Path | None = None) -> None:
        self.base = Path(folder)
        self.listed = dict(listed or {})
        self.min_learns = min_learns
        self.log_level = log_level
        # rspamd compiles its regular expressions (hyperscan) at start, a minute of CPU: the compiled
        # databases are kept across private instances (they depend on the rules only)
        self.hs_cache = Path(hs_cache) if hs_cache else Path(tempfile.gettempdir()) / "vcr-rspamd-hs-cache"
        self.ports: dict[str, int] = {}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    # -- addresses ------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.ports['normal']}"

    @property
    def socket(self) -> str:
        """The scanner worker's unix socket too: reachable from a lab namespace (the box's agent in
        ``utm``), where 127.0.0.1 is another loopback."""
        return str(self.base / "run" / "normal.sock")

    @property
    def controller_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['controller']}"

    @property
    def dns(self) -> tuple[str, int]:
        return ("127.0.0.1", self.ports["dns"])

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self, wait: float = 90.0) -> "PrivateRspamd":
        for sub in ("conf/local.d", "conf/override.d", "db", "run", "log", "redis", "rbl"):
            (self.base / sub).mkdir(parents=True, exist_ok=True)
        self.ports = {"redis": free_port(), "dns": free_port(socket.SOCK_DGRAM), "normal": free_port(),
                      "controller": free_port(), "fuzzy": free_port(socket.SOCK_DGRAM)}
        try:
            self._start_redis()
            self._start_rbldnsd()
            self.start_rspamd(wait)
        except BaseException:
            self.stop()
            raise
        return self

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        out = open(self.base / "log" / f"{name}.out", "wb")
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        out.close()
        self.procs[name] = proc
        return proc

    def _start_redis(self) -> None:
        port = self.ports["redis"]
        self._spawn("redis", [_which("redis-server") or "redis-server", "--port", str(port), "--bind", "127.0.0.1",
                              "--dir", str(self.base / "redis"), "--save", "", "--appendonly", "no",
                              "--pidfile", str(self.base / "run" / "redis.pid"), "--daemonize", "no",
                              "--protected-mode", "yes", "--logfile", ""])
        self._wait("redis", lambda: _tcp_ok(port, b"PING\r\n", b"+PONG"), 20)

    def write_zone(self, listed: Mapping[str, str] | None = None) -> None:
        """(Re)write the lab zone; rbldnsd reloads it on SIGHUP (``reload_zone``)."""
        if listed is not None:
            self.listed = dict(listed)
        (self.base / "rbl" / "zen.zone").write_text(zone_text(self.listed))

    def reload_zone(self) -> None:
        proc = self.procs.get("rbldnsd")
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGHUP)
            time.sleep(0.3)

    def _start_rbldnsd(self) -> None:
        self.write_zone()
        port = self.ports["dns"]
        argv = [_which("rbldnsd") or "rbldnsd", "-n", "-b", f"127.0.0.1/{port}", "-w", str(self.base / "rbl"),
                "-p", str(self.base / "run" / "rbldnsd.pid"), "-t", "60", "-c", "0"]
        if os.geteuid() == 0:
            argv += ["-u", "nobody"]  # rbldnsd refuses root; it reads its zone folder before it drops to nobody
        argv.append(f"{ZONE}:ip4set:zen.zone")
        self._spawn("rbldnsd", argv)
        self._wait("rbldnsd", lambda: dns_query(ZONE_TEST_NAME, port) is not None, 20)

    def start_rspamd(self, wait: float = 90.0) -> None:
        conf = self.base / "conf"
        self.hs_cache.mkdir(parents=True, exist_ok=True)
        values = {**self.ports, "normal_socket": self.socket, "password": self.password, "min_learns": self.min_learns,
                  "log_level": self.log_level, "hs_cache": self.hs_cache}
        (conf / "rspamd.conf").write_text(TOP.format(**values))
        for name in BOX_FILES:
            if not (BOX_CONF / name).exists():  # the tuned weights before the first --tune-weights
                (conf / name).unlink(missing_ok=True)
                continue
            text = (BOX_CONF / name).read_text()
            for addr, port in BOX_PORTS.items():
                text = text.replace(addr, f"127.0.0.1:{self.ports[port]}")
            (conf / name).write_text(text)
        for name, text in LAB.items():
            (conf / name).write_text(text.format(**values))
        argv = [_which("rspamd") or "rspamd", "-f", "-c", str(conf / "rspamd.conf"),
                f"--var=LOCAL_CONFDIR={conf}", f"--var=DBDIR={self.base / 'db'}",
                f"--var=RUNDIR={self.base / 'run'}", f"--var=LOGDIR={self.base / 'log'}"]
        if os.geteuid() == 0:
            argv.append("-i")  # the workers keep root in the lab: the private folder may not be theirs
        self._spawn("rspamd", argv)
        self._wait("rspamd", self.ping, wait)

    def _wait(self, name: str, ok, wait: float) -> None:
        proc = self.procs[name]
        if wait_up(proc, ok, wait):
            return
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited: {self.log(name)[-3000:]}")
        raise RuntimeError(f"{name} did not answer in {wait:.0f} s: {self.log(name)[-3000:]}")

    def log(self, name: str) -> str:
        text = ""
        for path in (self.base / "log" / f"{name}.out", self.base / "log" / f"{name}.log"):
            if path.exists():
                text += path.read_text(errors="replace")
        return text

    def ping(self) -> bool:
        try:
            for url in (self.url, self.controller_url):
                with urllib.request.urlopen(url + "/ping", timeout=1) as r:
                    if b"pong" not in r.read():
                        return False
            return True
        except OSError:
            return False

    def pids(self) -> dict[str, int]:
        return {name: p.pid for name, p in self.procs.items() if p.poll() is None}

    def rspamd_pids(self) -> list[int]:
        """The rspamd main process and its workers (for memory figures)."""
        main = self.procs.get("rspamd")
        if main is None or main.poll() is not None:
            return []
        out = [main.pid]
        try:
            kids = subprocess.run(["pgrep", "-P", str(main.pid)], capture_output=True, text=True).stdout.split()
            out += [int(k) for k in kids]
        except OSError:
            pass
        return out

    def _stop(self, name: str) -> None:
        stop_group(self.procs.pop(name, None), grace=15)

    def stop_rspamd(self) -> None:
        self._stop("rspamd")

    def stop(self) -> None:
        for name in ("rspamd", "rbldnsd", "redis"):
            self._stop(name)

    def __enter__(self) -> "PrivateRspamd":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


ZONE_TEST_NAME = "2.0.0.127." + ZONE  # rbldnsd answers the zone's own test entry only if listed; any answer will do


def _tcp_ok(port: int, send: bytes, expect: bytes) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(send)
            return s.recv(64).startswith(expect)
    except OSError:
        return False


def dns_query(name: str, port: int, host: str = "127.0.0.1", timeout: float = 1.0) -> tuple[int, list[str]] | None:
    """A real A query over UDP: (rcode, addresses), or None when nothing answered."""
    import struct

    qid = int.from_bytes(os.urandom(2), "big")
    q = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    q += b"".join(bytes([len(p)]) + p.encode() for p in name.rstrip(".").split(".")) + b"\0"
    q += struct.pack("!HH", 1, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        try:
            s.sendto(q, (host, port))
            data = s.recv(4096)
        except OSError:
            return None
    rid, flags, qd, an = struct.unpack("!HHHH", data[:8])
    if rid != qid:
        return None
    pos = 12
    for _ in range(qd):
        pos = _skip_name(data, pos) + 4
    addrs = []
    for _ in range(an):
        pos = _skip_name(data, pos)
        rtype, _cls, _ttl, rdlen = struct.unpack("!HHIH", data[pos:pos + 10])
        pos += 10
        if rtype == 1 and rdlen == 4:
            addrs.append(socket.inet_ntoa(data[pos:pos + 4]))
        pos += rdlen
    return flags & 0xF, addrs


def _skip_name(data: bytes, pos: int) -> int:
    while True:
        n = data[pos]
        if n == 0:
            return pos + 1
        if n & 0xC0 == 0xC0:
            return pos + 2
        pos += n + 1
