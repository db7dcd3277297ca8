"""The benches' programs inside the lab namespaces: load generators, clients and servers, each a role of
``python -m lab.bench.load ROLE ...`` that prints its result as one JSON line.

Data path (lab/bench/dataplane.py): ``http-load`` (new HTTP connections per second, epoll),
``serve-close`` (a pre-fork HTTP server, used when nginx is not available), ``tcp-rr``
(request/response round trips on one connection) and ``udp-flows`` (one UDP packet per distinct
flow, for the flow-table memory figure). Web filter (lab/bench/filter.py): ``dns-server`` (lab.dns
with its records from a file), ``dns-client`` (sequential queries, one new source port each) and
``https-load`` (new TLS connections one at a time).
"""
from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import select
import signal
import socket
import ssl
import struct
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

from filters.app.dns import build_query, parse_dns
from lab.bench.report import percentile

HTTP_RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n"
)
DNS_TIMEOUT = 1.0  # seconds a dns-client query waits for its answer


# ----------------------------------------------------------------------------- data path
_CONNECTING, _SENT, _READING = range(3)


class HttpLoad:
    """Keeps ``concurrency`` one-request HTTP connections in flight with epoll; counts completed responses."""

    def __init__(self, ip: str, port: int, concurrency: int) -> None:
        self.addr = (ip, port)
        self.concurrency = concurrency
        self.request = f"GET / HTTP/1.1\r\nHost: {ip}\r\nConnection: close\r\n\r\n".encode()
        self.ep = select.epoll()
        self.conns: dict[int, list[Any]] = {}  # fd -> [socket, state]
        self.done = 0
        self.errors = 0

    def _open(self) -> None:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        s.connect_ex(self.addr)
        self.conns[s.fileno()] = [s, _CONNECTING]
        self.ep.register(s.fileno(), select.EPOLLOUT)

    def _next(self, fd: int, ok: bool) -> None:
        """Close a finished (RST, no TIME_WAIT) or failed connection, count it and open the next one."""
        s, _ = self.conns.pop(fd)
        self.ep.unregister(fd)
        with contextlib.suppress(OSError):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
        if ok:
            self.done += 1
        else:
            self.errors += 1
        self._open()

    def _event(self, fd: int, ev: int) -> None:
        s, state = self.conns[fd]
        if state == _CONNECTING:
            try:
                if ev & (select.EPOLLERR | select.EPOLLHUP):
                    raise OSError("connect failed")
                s.send(self.request)
            except OSError:
                self._next(fd, False)
                return
            self.conns[fd][1] = _SENT
            self.ep.modify(fd, select.EPOLLIN)
            return
        try:
            data = s.recv(65536)
        except OSError:
            self._next(fd, False)
            return
        if data:
            self.conns[fd][1] = _READING
        else:
            self._next(fd, state == _READING)

    def run(self, seconds: float) -> dict[str, float]:
        start = time.monotonic()
        for _ in range(self.concurrency):
            self._open()
        end = start + seconds
        while time.monotonic() < end:
            for fd, ev in self.ep.poll(0.1):
                self._event(fd, ev)
        return {"done": self.done, "errors": self.errors, "elapsed": time.monotonic() - start}


def serve_close(port: int, procs: int) -> int:
    """Pre-fork HTTP server: every process accepts on its own SO_REUSEPORT socket, answers and closes."""
    children = []
    for _ in range(max(1, procs)):
        pid = os.fork()
        if pid == 0:
            try:
                _serve_close_loop(port)
            finally:
                os._exit(0)
        children.append(pid)
    signal.signal(signal.SIGTERM, lambda *_: [os.kill(c, signal.SIGTERM) for c in children])
    for pid in children:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
    return 0


def _serve_close_loop(port: int) -> None:
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    srv.bind(("0.0.0.0", port))
    srv.listen(4096)
    while True:
        conn, _ = srv.accept()
        try:
            conn.settimeout(5)
            if conn.recv(4096):
                conn.sendall(HTTP_RESPONSE)
        except OSError:
            pass
        finally:
            conn.close()


def tcp_rr(ip: str, port: int, count: int, size: int) -> list[float]:
    """Round-trip times (ms) of ``count`` ``size``-byte messages echoed on one TCP connection."""
    msg = b"x" * size
    out = []
    with socket.create_connection((ip, port), timeout=10) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(count):
            t0 = time.perf_counter_ns()
            s.sendall(msg)
            got = 0
            while got < size:
                chunk = s.recv(size - got)
                if not chunk:
                    raise ConnectionError("echo server closed the connection")
                got += len(chunk)
            out.append((time.perf_counter_ns() - t0) / 1e6)
    return out


def udp_flows(dst: str, dport: int, sources: Sequence[str], ports: int, base_port: int, rate: float) -> dict[str, float]:
    """Send one UDP packet per (source address, source port): distinct flows, paced at ``rate`` pkt/s."""
    payload = b"python -m lab bench flow"
    daddr = socket.inet_aton(dst)
    saddrs = [socket.inet_aton(a) for a in sources]
    sent, start = 0, time.monotonic()
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW) as s:
        for sport, saddr in itertools.product(range(base_port, base_port + ports), saddrs):
            udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
            hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, socket.IPPROTO_UDP, 0, saddr, daddr)
            s.sendto(hdr + udp, (dst, 0))
            sent += 1
            if sent % 200 == 0:
                ahead = sent / rate - (time.monotonic() - start)
                if ahead > 0:
                    time.sleep(ahead)
    return {"sent": sent, "seconds": time.monotonic() - start}


# ----------------------------------------------------------------------------- web filter
def answer_problem(reply: bytes, qid: int, expect: str) -> str:
    """"" when ``reply`` answers query ``qid`` with the A record ``expect``, else what is wrong."""
    msg = parse_dns(reply, False)
    if msg is None or msg.txid != qid:
        return "not the answer"
    if msg.rcode != 0:
        return f"rcode {msg.rcode}"
    got = [socket.inet_ntoa(a.data) for a in msg.answers if a.rrtype == 1 and len(a.data) == 4]
    if not got:
        return "no A record"
    return "" if got == [expect] else f"answered {got[0]}"


def dns_client(server: str, port: int, names: Sequence[str], first_port: int, expect: str,
               timeout: float = DNS_TIMEOUT) -> dict[str, Any]:
    """One query per name, one at a time, each from a new source port (a new flow, as stub resolvers
    do); round trips in ms of the correct answers, and the rest counted by problem."""
    rtts: list[float] = []
    problems: Counter[str] = Counter()
    sport = first_port
    for i, name in enumerate(names):
        qid = (i * 7919 + 1) & 0xFFFF
        query = build_query(name, txid=qid)
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            while True:
                try:
                    s.bind(("0.0.0.0", sport))
                    break
                except OSError:
                    sport += 1
                    if sport > 65535:
                        raise
            sport += 1
            s.connect((server, port))
            s.settimeout(timeout)
            t0 = time.perf_counter()
            s.send(query)
            try:
                reply = s.recv(2048)
            except (TimeoutError, socket.timeout):
                problems["timeout"] += 1
                continue
            ms = (time.perf_counter() - t0) * 1e3
        finally:
            s.close()
        problem = answer_problem(reply, qid, expect)
        if problem:
            problems[problem] += 1
        else:
            rtts.append(ms)
    return {"rtt_ms": rtts, "problems": dict(problems), "last_port": sport - 1}


def serve_dns(port: int, records: Path) -> None:
    """lab.dns answering every ``name=ipv4,ipv6`` line of ``records`` (too many for its command line)."""
    from lab import dns as labdns
    for line in records.read_text(encoding="utf-8").splitlines():
        name, _, addrs = line.strip().partition("=")
        if name:
            v4, _, v6 = addrs.partition(",")
            labdns.RECORDS[name.lower()] = (v4, v6)
    sys.argv = [sys.argv[0], str(port)]
    labdns.main()


def https_load(ip: str, port: int, name: str, seconds: float) -> dict[str, Any]:
    """New TLS connections (SNI ``name``, no session resumption) one at a time for ``seconds``: each
    the handshake, ``GET /`` and the response, then an RST close; counts and connection times."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    request = f"GET / HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n".encode()
    done = errors = 0
    times: list[float] = []
    versions: Counter[str] = Counter()
    problems: Counter[str] = Counter()
    start = time.monotonic()
    end = start + seconds
    while time.monotonic() < end:
        t0 = time.perf_counter()
        try:
            with socket.create_connection((ip, port), timeout=5) as raw, \
                    ctx.wrap_socket(raw, server_hostname=name) as tls:
                tls.sendall(request)
                data = b""
                while chunk := tls.recv(4096):
                    data += chunk
                versions[tls.version() or "?"] += 1
                with contextlib.suppress(OSError):
                    tls.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except (OSError, ssl.SSLError) as exc:
            errors += 1
            problems[type(exc).__name__] += 1
            continue
        if data.startswith(b"HTTP/1.1 200"):
            done += 1
            times.append((time.perf_counter() - t0) * 1e3)
        else:
            errors += 1
            problems["bad response"] += 1
    return {"done": done, "errors": errors, "elapsed": time.monotonic() - start,
            "conn_ms_p50": percentile(times, 50) if times else None, "versions": dict(versions),
            "problems": dict(problems)}


# ----------------------------------------------------------------------------- entry point
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lab.bench.load", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="role", required=True)
    p = sub.add_parser("http-load", help="new HTTP connections per second")
    p.add_argument("--ip", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--concurrency", type=int, required=True)
    p = sub.add_parser("serve-close", help="pre-fork HTTP server that closes after each response")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--procs", type=int, default=2)
    p = sub.add_parser("tcp-rr", help="request/response round trips on one TCP connection")
    p.add_argument("--ip", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--size", type=int, required=True)
    p = sub.add_parser("udp-flows", help="one UDP packet per distinct flow (raw socket)")
    p.add_argument("--dst", required=True)
    p.add_argument("--dport", type=int, required=True)
    p.add_argument("--first", type=int, required=True, help="the flows come from 192.0.2.FIRST-LAST")
    p.add_argument("--last", type=int, required=True)
    p.add_argument("--ports", type=int, required=True)
    p.add_argument("--base-port", type=int, required=True)
    p.add_argument("--rate", type=float, required=True)
    p = sub.add_parser("dns-server", help="lab.dns with its records from a file")
    p.add_argument("--port", type=int, default=53)
    p.add_argument("--records", type=Path, required=True)
    p = sub.add_parser("dns-client", help="sequential DNS queries, one new source port each")
    p.add_argument("--server", required=True)
    p.add_argument("--port", type=int, default=53)
    p.add_argument("--names", type=Path, required=True)
    p.add_argument("--first-port", type=int, required=True)
    p.add_argument("--expect", required=True)
    p.add_argument("--warmup", type=int, default=0)
    p = sub.add_parser("https-load", help="new TLS connections one at a time")
    p.add_argument("--ip", required=True)
    p.add_argument("--port", type=int, default=443)
    p.add_argument("--name", required=True)
    p.add_argument("--seconds", type=float, default=5.0)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m lab.bench.load ROLE ...`` inside a lab namespace."""
    args = _parser().parse_args(argv)
    if args.role == "http-load":
        print(json.dumps(HttpLoad(args.ip, args.port, args.concurrency).run(args.seconds)))
    elif args.role == "serve-close":
        return serve_close(args.port, args.procs)
    elif args.role == "tcp-rr":
        print(json.dumps({"rtt_ms": tcp_rr(args.ip, args.port, args.count, args.size)}))
    elif args.role == "udp-flows":
        sources = [f"192.0.2.{h}" for h in range(args.first, args.last + 1)]
        print(json.dumps(udp_flows(args.dst, args.dport, sources, args.ports, args.base_port, args.rate)))
    elif args.role == "dns-server":
        serve_dns(args.port, args.records)
    elif args.role == "dns-client":
        names = [n for n in args.names.read_text(encoding="utf-8").split() if n]
        warm, timed = names[:args.warmup], names[args.warmup:]
        first = dns_client(args.server, args.port, warm, args.first_port, args.expect)
        print(json.dumps(dns_client(args.server, args.port, timed, first["last_port"] + 1, args.expect)))
    else:
        print(json.dumps(https_load(args.ip, args.port, args.name, args.seconds)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
