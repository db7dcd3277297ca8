"""The soak's programs inside the lab namespaces (``python -m lab.bench.soak_roles ROLE ...``).

Servers: ``serve-tls`` (HTTPS with any SNI, a self-signed certificate) and ``serve-udp-echo``.
Clients, each running until ``--seconds`` pass or the file ``CONTROL/stop`` appears:

* ``office``: the office's everyday traffic at a steady pace: small web pages over HTTP, HTTPS
  with SNI, DNS look-ups, and a bulk download now and then. Counts per kind go to ``--out`` (JSON).
* ``alarms``: the alarm schedule: one action every ``--every`` seconds, cycling through the kinds
  of ``--kinds``; each action is one connection or one DNS query from a fresh socket, so the EVE
  record it raises can be told apart by its source port. Every action is logged to ``--log`` (JSON
  lines) with its kind, source address and port, time and outcome. While ``CONTROL/pause`` exists,
  the kinds inspected by a worker wait (the orchestrator is about to kill one); the kernel's own
  (firewall, C&C address) go on. ``CONTROL/state.json`` names the newest deny-list entry, IPS
  bundle canary and threat-intel domain the orchestrator has made live.
* ``prober``: connectivity through the bridge every ``--interval`` seconds: a new TCP connection,
  a UDP echo from a new source port, and a round trip on one long-lived TCP connection; one line
  per probe (kind, send time, round trip in ms or -1) to ``--out``.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import socket
import ssl
import struct
import sys
import threading
import time
from pathlib import Path
from typing import Any, Sequence

from filters.app.dns import build_query, parse_dns
from filters.packet import inet_checksum, pseudo_header

PROBE_TIMEOUT = 1.0  # a probe without an answer within this long counts as failed
HELD_PATIENCE = 30.0  # seconds the held connection waits for a late echo before it counts as broken
DNS_WAIT = 3.0  # seconds an alarm action's DNS query waits for its answer
HTTP_TIMEOUT = 5.0

# Alarm kinds and the path that raises their alarm: "kernel" (NFLOG in the daemon: go on while a
# worker restarts) or "worker" (an engine in an NFQUEUE worker).
KERNEL_KINDS = frozenset({"telnet", "smb", "cnc-ip"})
ALARM_KINDS = ("telnet", "ips-dns", "wf-dns", "cnc-ip", "ips-http", "wf-http", "atp-dns", "smb", "wf-sni",
               "deny-latest", "bundle-latest", "ti-latest")


def stopped(control: Path) -> bool:
    return (control / "stop").exists()


def write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def family(ip: str) -> int:
    return socket.AF_INET6 if ":" in ip else socket.AF_INET


def rst_close(s: socket.socket) -> None:
    """Close with RST (SO_LINGER 0): no TIME_WAIT piles up over a long soak."""
    with contextlib.suppress(OSError):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


# ----------------------------------------------------------------------------- servers
def serve_tls(port: int, cert: str, key: str) -> int:
    """HTTPS on every address: any SNI, ``GET`` answered with a small page, then close."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    srv = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    srv.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("::", port))
    srv.listen(256)
    body = b"<html><body>soak tls page</body></html>\n"
    reply = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)

    def handle(conn: socket.socket) -> None:
        try:
            conn.settimeout(10)
            with ctx.wrap_socket(conn, server_side=True) as tls:
                data = b""
                while b"\r\n\r\n" not in data and len(data) < 65536:
                    chunk = tls.recv(4096)
                    if not chunk:
                        return
                    data += chunk
                tls.sendall(reply)
        except (OSError, ssl.SSLError):
            pass
        finally:
            conn.close()

    while True:
        conn, _ = srv.accept()
        threading.Thread(target=handle, args=(conn,), daemon=True).start()


def serve_udp_echo(port: int) -> int:
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.bind(("::", port))
    while True:
        data, peer = s.recvfrom(2048)
        with contextlib.suppress(OSError):
            s.sendto(data, peer)


# ----------------------------------------------------------------------------- small clients
def dns_query(server: str, name: str, timeout: float = 1.0) -> tuple[int, str]:
    """One A query from a fresh socket: (source port, answer) where the answer is the first A
    record, "NXDOMAIN"/"rcode N", or "timeout"."""
    s = socket.socket(family(server), socket.SOCK_DGRAM)
    try:
        s.bind(("", 0))
        sport = s.getsockname()[1]
        s.connect((server, 53))
        s.settimeout(timeout)
        qid = random.randrange(1, 0xFFFF)
        s.send(build_query(name, txid=qid))
        try:
            while True:
                msg = parse_dns(s.recv(2048), False)
                if msg is not None and msg.txid == qid:
                    break
        except OSError:
            return sport, "timeout"
    finally:
        s.close()
    if msg.rcode == 3:
        return sport, "NXDOMAIN"
    if msg.rcode:
        return sport, f"rcode {msg.rcode}"
    got = [socket.inet_ntoa(a.data) for a in msg.answers if a.rrtype == 1 and len(a.data) == 4]
    return sport, got[0] if got else "no A record"


def tcp_attempt(ip: str, port: int, timeout: float) -> tuple[int, str]:
    """One TCP connection attempt: (source port, "open" | "refused" | "timeout")."""
    s = socket.socket(family(ip), socket.SOCK_STREAM)
    try:
        s.bind(("", 0))
        sport = s.getsockname()[1]
        s.settimeout(timeout)
        try:
            s.connect((ip, port))
            return sport, "open"
        except ConnectionRefusedError:
            return sport, "refused"
        except OSError:
            return sport, "timeout"
    finally:
        rst_close(s)


def syn_segment(src: str, dst: str, sport: int, dport: int, seq: int) -> bytes:
    """A TCP SYN (no options, window 64240) from ``src`` to ``dst``, its checksum over the IPv4 pseudo-header."""
    hdr = struct.pack("!HHIIBBHHH", sport, dport, seq, 0, 5 << 4, 0x02, 64240, 0, 0)
    pseudo = pseudo_header(socket.inet_aton(src), socket.inet_aton(dst), socket.IPPROTO_TCP, len(hdr))
    return hdr[:16] + struct.pack("!H", inet_checksum(pseudo + hdr)) + hdr[18:]


def syn_probe(src: str, ip: str, port: int, timeout: float) -> tuple[int, str]:
    """Exactly one TCP SYN (a raw socket: no retransmission, whatever the load) from a random source
    port, then watch for the answer: (source port, "open" | "refused" | "timeout")."""
    sport = random.randrange(40000, 60000)
    seq = random.randrange(1, 1 << 32)
    hdr = syn_segment(src, ip, sport, port, seq)
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP) as s:
        s.sendto(hdr, (ip, 0))
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            s.settimeout(left)
            try:
                pkt, (peer, _) = s.recvfrom(65535)
            except OSError:
                break
            ihl = (pkt[0] & 0x0F) * 4
            if peer != ip or len(pkt) < ihl + 14:
                continue
            psrc, pdst = struct.unpack("!HH", pkt[ihl:ihl + 4])
            if (psrc, pdst) == (port, sport):
                return sport, "refused" if pkt[ihl + 13] & 0x04 else "open"
    return sport, "timeout"


def http_get(ip: str, port: int, path: str, host: str, *, tls_name: str | None = None,
             timeout: float = HTTP_TIMEOUT, sink: bool = False) -> tuple[int, str, int]:
    """One ``GET`` on a new connection: (source port, status code or the error, body bytes).
    ``tls_name``: over TLS with that SNI (certificate not checked). ``sink``: count the body without keeping it."""
    s = socket.socket(family(ip), socket.SOCK_STREAM)
    s.bind(("", 0))
    sport = s.getsockname()[1]
    s.settimeout(timeout)
    conn: Any = s
    try:
        try:
            s.connect((ip, port))
        except ConnectionRefusedError:
            return sport, "connect-refused", 0
        except OSError:
            return sport, "connect-timeout", 0  # the request was never sent
        if tls_name is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            conn = ctx.wrap_socket(s, server_hostname=tls_name)
        conn.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: vcr-soak\r\nConnection: close\r\n\r\n".encode())
        head = b""
        size = 0
        while True:
            chunk = conn.recv(65536)
            if not chunk:
                break
            if sink and b"\r\n\r\n" in head:
                size += len(chunk)
            else:
                head += chunk
        if not head.startswith(b"HTTP/1."):
            return sport, "no response" if not head else "bad response", 0
        code = head.split(b" ", 2)[1].decode("ascii", "replace")
        body = head.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in head else b""
        return sport, code, size + len(body)
    except ConnectionResetError:
        return sport, "reset", 0
    except ssl.SSLError as exc:
        return sport, "reset" if "EOF" in str(exc) or "RESET" in str(exc).upper() else f"tls: {exc.reason}", 0
    except OSError as exc:
        return sport, "timeout" if isinstance(exc, (TimeoutError, socket.timeout)) else f"error: {exc.strerror or exc}", 0
    finally:
        with contextlib.suppress(OSError):
            conn.close()


# ----------------------------------------------------------------------------- office traffic
class Office:
    """Everyday traffic from one PC at a fixed pace; counts per kind (ok, failed, the failures seen)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.counts: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()

    def note(self, kind: str, ok: bool, detail: str, ms: float, size: int = 0) -> None:
        with self.lock:
            c = self.counts.setdefault(kind, {"ok": 0, "failed": 0, "bytes": 0, "ms_max": 0.0, "failures": {}})
            if ok:
                c["ok"] += 1
                c["bytes"] += size
                c["ms_max"] = max(c["ms_max"], round(ms, 1))
            else:
                c["failed"] += 1
                c["failures"][detail] = c["failures"].get(detail, 0) + 1
                c.setdefault("failed_at", []).append(round(time.time(), 1))

    def step(self, kind: str) -> None:
        a = self.args
        t0 = time.perf_counter()
        if kind == "http":
            _, code, size = http_get(a.web, 80, "/", a.name)
            ok, detail = code == "200", code
        elif kind == "https":
            _, code, size = http_get(a.web, 443, "/", a.name, tls_name=a.name)
            ok, detail = code == "200", code
        else:
            _, answer = dns_query(a.dns, random.choice(a.names), timeout=2.0)
            ok, detail, size = answer == a.web, answer, 0
        self.note(kind, ok, detail, (time.perf_counter() - t0) * 1e3, size)

    def bulk_loop(self, end: float) -> None:
        a = self.args
        while time.monotonic() < end and not stopped(a.control):
            t0 = time.perf_counter()
            _, code, size = http_get(a.web, 80, f"/bytes/{a.bulk_bytes}", a.name, timeout=60, sink=True)
            self.note("bulk", code == "200" and size == a.bulk_bytes, code if code != "200" else f"short {size}",
                      (time.perf_counter() - t0) * 1e3, size)
            wait_until(time.monotonic() + a.bulk_every, end, a.control)

    def run(self) -> dict[str, Any]:
        a = self.args
        end = time.monotonic() + a.seconds
        threading.Thread(target=self.bulk_loop, args=(end,), daemon=True).start()
        cycle = ["http", "dns", "https", "http", "dns"]
        i = 0
        nxt = time.monotonic()
        last_write = 0.0
        while time.monotonic() < end and not stopped(a.control):
            self.step(cycle[i % len(cycle)])
            i += 1
            nxt += a.every
            wait_until(nxt, end, a.control)
            if time.monotonic() - last_write > 5:
                with self.lock:
                    write_json(a.out, self.counts)
                last_write = time.monotonic()
        with self.lock:
            write_json(a.out, self.counts)
        return self.counts


def wait_until(t: float, end: float, control: Path) -> None:
    while True:
        now = time.monotonic()
        if now >= t or now >= end or stopped(control):
            return
        time.sleep(min(0.2, t - now))


# ----------------------------------------------------------------------------- alarm schedule
class Alarms:
    """The alarm actions, one every ``every`` seconds, cycling through ``kinds``."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.a = args
        self.seq = 0
        self.run_id = args.run_id

    def state(self) -> dict[str, Any]:
        try:
            return json.loads((self.a.control / "state.json").read_text())
        except (OSError, ValueError):
            return {}

    def paused(self) -> bool:
        return (self.a.control / "pause").exists()

    def act(self, kind: str, st: dict[str, Any]) -> dict[str, Any] | None:
        """Do one action of ``kind``; its log record, or None when it cannot be done now."""
        a = self.a
        tag = f"{self.run_id}x{self.seq}"
        rec: dict[str, Any] = {"kind": kind, "seq": self.seq, "src_ip": a.src}
        if kind == "telnet":
            rec["sport"], rec["result"] = tcp_attempt(a.web, 23, 2.0)
            rec["as_expected"] = rec["result"] == "refused"
        elif kind in ("smb", "cnc-ip"):  # dropped in the kernel: one SYN, one alarm
            dst, port = (a.web, 445) if kind == "smb" else (a.cnc_ip, a.cnc_port)
            rec["sport"], rec["result"] = syn_probe(a.src, dst, port, 1.0)
            rec["as_expected"] = rec["result"] == "timeout"
        elif kind == "ips-dns":
            rec["name"] = f"{tag}.malware.example"
            rec["sport"], rec["result"] = dns_query(a.dns, rec["name"], DNS_WAIT)
            rec["as_expected"] = True  # an alert-only rule: any answer (or none) will do
        elif kind in ("wf-dns", "atp-dns", "deny-latest", "ti-latest"):
            base = {"wf-dns": a.phish, "atp-dns": a.cnc_domain, "deny-latest": st.get("deny"), "ti-latest": st.get("ti")}[kind]
            if not base:
                return None
            rec["name"] = f"{tag}.{base}"
            rec["sport"], rec["result"] = dns_query(a.dns, rec["name"], DNS_WAIT)
            # the sinkhole answer (or none: a late one is still no real answer); NXDOMAIN is the real server's
            rec["as_expected"] = rec["result"] in (a.box, "timeout")
        elif kind in ("ips-http", "bundle-latest"):
            prefix = "/soak-canary/" if kind == "ips-http" else st.get("canary")
            if not prefix:
                return None
            rec["path"] = f"{prefix}{tag}"
            rec["sport"], rec["result"], _ = http_get(a.web, 80, rec["path"], a.web)
            rec["as_expected"] = rec["result"] in ("404", "reset", "timeout")
        elif kind == "wf-http":
            rec["host"] = f"{tag}.{a.phish}"
            rec["sport"], rec["result"], _ = http_get(a.web, 80, "/login", rec["host"])
            rec["as_expected"] = rec["result"] == "403"
        elif kind == "wf-sni":
            rec["host"] = f"{tag}.{a.phish}"
            rec["sport"], rec["result"], _ = http_get(a.web, 443, "/", rec["host"], tls_name=rec["host"])
            rec["as_expected"] = rec["result"] == "reset"
        elif kind == "inbound":
            rec["path"] = f"/cgi-bin/../../../../etc/passwd?soak={tag}"
            rec["sport"], rec["result"], _ = http_get(a.target, 80, rec["path"], a.target, timeout=3.0)
            rec["as_expected"] = rec["result"] != "200"
        else:
            raise ValueError(f"unknown alarm kind {kind!r}")
        if str(rec.get("result", "")).startswith("connect-"):
            rec["delivered"] = False  # the connection never opened: nothing was sent that could raise the alarm
            rec["as_expected"] = None
        if kind in ("deny-latest", "ti-latest"):
            rec["base"] = st.get("deny" if kind == "deny-latest" else "ti")
        if kind == "bundle-latest":
            rec["sid"] = st.get("canary_sid")
        return rec

    def run(self) -> int:
        a = self.a
        kinds = a.kinds.split(",")
        end = time.monotonic() + a.seconds
        nxt = time.monotonic() + a.offset
        i = 0
        with open(a.log, "a", encoding="utf-8") as log:
            while True:
                wait_until(nxt, end, a.control)
                if time.monotonic() >= end or stopped(a.control):
                    break
                kind = kinds[i % len(kinds)]
                i += 1
                nxt += a.every
                if kind not in KERNEL_KINDS and self.paused():
                    log.write(json.dumps({"kind": kind, "skipped": "paused", "t": time.time()}) + "\n")
                    log.flush()
                    continue
                t0 = time.time()
                rec = self.act(kind, self.state())
                if rec is None:
                    continue
                self.seq += 1
                rec["t"] = round(t0, 3)
                rec["ms"] = round((time.time() - t0) * 1e3, 1)
                log.write(json.dumps(rec) + "\n")
                log.flush()
        return 0


# ----------------------------------------------------------------------------- prober
class Prober:
    """Connectivity through the bridge every ``interval`` s (asyncio: a slow probe never delays the next)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.a = args
        self.lines: list[str] = []

    def record(self, kind: str, t: float, rtt: float | None) -> None:
        self.lines.append(f"{kind} {t:.3f} {-1 if rtt is None else round(rtt * 1e3, 2)}")

    async def tcp_probe(self, t: float) -> None:
        loop = asyncio.get_running_loop()
        s = socket.socket(family(self.a.web), socket.SOCK_STREAM)
        s.setblocking(False)
        t0 = time.perf_counter()
        try:
            await asyncio.wait_for(loop.sock_connect(s, (self.a.web, self.a.tcp_port)), PROBE_TIMEOUT)
            self.record("tcp", t, time.perf_counter() - t0)
        except (OSError, asyncio.TimeoutError):
            self.record("tcp", t, None)
        finally:
            rst_close(s)

    async def udp_probe(self, t: float, seq: int) -> None:
        loop = asyncio.get_running_loop()
        s = socket.socket(family(self.a.web), socket.SOCK_DGRAM)
        s.setblocking(False)
        t0 = time.perf_counter()
        try:
            s.connect((self.a.web, self.a.udp_port))
            payload = f"probe {seq}".encode()
            s.send(payload)
            deadline = t0 + PROBE_TIMEOUT
            while True:
                data = await asyncio.wait_for(loop.sock_recv(s, 256), max(0.001, deadline - time.perf_counter()))
                if data == payload:
                    break
            self.record("udp", t, time.perf_counter() - t0)
        except (OSError, asyncio.TimeoutError):
            self.record("udp", t, None)
        finally:
            s.close()

    async def held(self, end: float) -> None:
        """One long-lived connection, a 4-byte round trip every interval. It carries far less than the
        inspection depth, so with stream rules loaded its packets keep going through its worker: it feels
        a busy worker (late echoes: failed probes) and would break on a lost verdict or state (broken)."""
        loop = asyncio.get_running_loop()
        s: socket.socket | None = None
        nxt = time.monotonic()
        while time.monotonic() < end and not stopped(self.a.control):
            t = time.time()
            late = False
            try:
                if s is None:
                    s = socket.socket(family(self.a.web), socket.SOCK_STREAM)
                    s.setblocking(False)
                    await asyncio.wait_for(loop.sock_connect(s, (self.a.web, self.a.echo_port)), PROBE_TIMEOUT)
                    self.lines.append(f"held-open {t:.3f} 0")
                t0 = time.perf_counter()
                await loop.sock_sendall(s, b"ping")
                got = b""
                while len(got) < 4:
                    try:
                        chunk = await asyncio.wait_for(loop.sock_recv(s, 16), PROBE_TIMEOUT if not late else HELD_PATIENCE)
                    except asyncio.TimeoutError:
                        if late:
                            raise
                        late = True  # slow is not broken: a failed probe, and wait on for this echo
                        self.record("held", t, None)
                        continue
                    if not chunk:
                        raise ConnectionError("closed")
                    got += chunk
                if not late:
                    self.record("held", t, time.perf_counter() - t0)
            except (OSError, asyncio.TimeoutError, ConnectionError):
                if not late:
                    self.record("held", t, None)
                if s is not None:
                    s.close()
                s = None
                self.lines.append(f"held-broken {t:.3f} 0")
            nxt = time.monotonic() if late else nxt + self.a.interval
            await asyncio.sleep(max(0.0, nxt - time.monotonic()))
        if s is not None:
            s.close()

    async def main(self) -> None:
        a = self.a
        end = time.monotonic() + a.seconds
        held = asyncio.create_task(self.held(end))
        tasks: set[asyncio.Task[None]] = set()
        seq = 0
        nxt = time.monotonic()
        with open(a.out, "a", encoding="utf-8") as out:
            while time.monotonic() < end and not stopped(a.control):
                t = time.time()
                for coro in (self.tcp_probe(t), self.udp_probe(t, seq)):
                    task = asyncio.create_task(coro)
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                seq += 1
                if len(self.lines) > 200:
                    out.write("\n".join(self.lines) + "\n")
                    out.flush()
                    self.lines.clear()
                nxt += a.interval
                await asyncio.sleep(max(0.0, nxt - time.monotonic()))
            await asyncio.gather(held, *tasks, return_exceptions=True)
            if self.lines:
                out.write("\n".join(self.lines) + "\n")


# ----------------------------------------------------------------------------- entry point
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m lab.bench.soak_roles", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="role", required=True)
    s = sub.add_parser("serve-tls")
    s.add_argument("--port", type=int, default=443)
    s.add_argument("--cert", required=True)
    s.add_argument("--key", required=True)
    s = sub.add_parser("serve-udp-echo")
    s.add_argument("--port", type=int, required=True)

    def client(name: str) -> argparse.ArgumentParser:
        c = sub.add_parser(name)
        c.add_argument("--control", type=Path, required=True)
        c.add_argument("--seconds", type=float, required=True)
        c.add_argument("--web", required=True)
        return c

    c = client("office")
    c.add_argument("--dns", required=True)
    c.add_argument("--name", required=True, help="the web server's name (Host, SNI)")
    c.add_argument("--names", nargs="+", required=True, help="names the DNS look-ups ask for (answer: --web)")
    c.add_argument("--every", type=float, default=0.25)
    c.add_argument("--bulk-bytes", type=int, default=20_000_000)
    c.add_argument("--bulk-every", type=float, default=20.0)
    c.add_argument("--out", type=Path, required=True)
    c = client("alarms")
    c.add_argument("--kinds", required=True)
    c.add_argument("--every", type=float, required=True)
    c.add_argument("--offset", type=float, default=0.0)
    c.add_argument("--src", required=True, help="this PC's address (logged with each action)")
    c.add_argument("--dns", default="")
    c.add_argument("--box", default="192.0.2.2", help="the sinkhole answer")
    c.add_argument("--phish", default="")
    c.add_argument("--cnc-ip", default="")
    c.add_argument("--cnc-port", type=int, default=0)
    c.add_argument("--cnc-domain", default="")
    c.add_argument("--target", default="", help="the office's published web server (inbound attacks)")
    c.add_argument("--run-id", default="s")
    c.add_argument("--log", type=Path, required=True)
    c = client("prober")
    c.add_argument("--interval", type=float, default=0.1)
    c.add_argument("--tcp-port", type=int, required=True)
    c.add_argument("--udp-port", type=int, required=True)
    c.add_argument("--echo-port", type=int, required=True)
    c.add_argument("--out", type=Path, required=True)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.role == "serve-tls":
        return serve_tls(args.port, args.cert, args.key)
    if args.role == "serve-udp-echo":
        return serve_udp_echo(args.port)
    if args.role == "office":
        Office(args).run()
        return 0
    if args.role == "alarms":
        return Alarms(args).run()
    asyncio.run(Prober(args).main())
    return 0


if __name__ == "__main__":
    sys.exit(main())
