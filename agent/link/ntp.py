"""A minimal SNTP client (RFC 4330 / RFC 5905 client mode) and a lab SNTP responder.

``query(server)`` sends one mode-3 request over UDP/123 and returns the clock offset (server minus
local, seconds) and the round-trip delay, as ``ntpdate -q`` would. It is used by the port check
(table 4: UDP 123) and by the clock checks of the operations-center link.

``python -m agent.link.ntp serve [--port 123] [--offset S]`` runs a tiny stratum-2 responder; the lab
uses it as the office's NTP server (``--offset`` makes it serve a wrong time, for tests).
"""
from __future__ import annotations

import argparse
import os
import socket
import struct
import sys
import time
from dataclasses import dataclass
from typing import Callable

NTP_PORT = 123
NTP_EPOCH_OFFSET = 2_208_988_800  # seconds from 1900-01-01 (NTP era 0) to 1970-01-01 (Unix)
ERA = 1 << 32
PACKET = struct.Struct("!BBbbII4sQQQQ")  # li/vn/mode, stratum, poll, precision, root delay, root disp, ref id, 4 timestamps
MODE_CLIENT, MODE_SERVER = 3, 4
LEAP_UNSYNC = 3


class NtpError(OSError):
    """No usable answer: timeout, unreachable server, or a reply the client must not trust."""


@dataclass(frozen=True)
class NtpResult:
    server: str  # the address that answered
    offset: float  # server clock minus local clock, seconds (positive: local clock is behind)
    delay: float  # round-trip delay minus the server's processing time, seconds
    stratum: int
    ref_id: str
    server_time: float  # the server's transmit time, Unix seconds

    def as_dict(self) -> dict[str, object]:
        return {"server": self.server, "offset_s": round(self.offset, 6), "delay_s": round(self.delay, 6),
                "stratum": self.stratum, "ref_id": self.ref_id}


def to_ntp(t: float) -> int:
    """Unix seconds -> 64-bit NTP timestamp (32.32 fixed point; wraps at the era boundary, 2036)."""
    secs = int(t // 1) + NTP_EPOCH_OFFSET
    frac = int((t % 1) * ERA) & 0xFFFFFFFF
    return ((secs % ERA) << 32) | frac


def from_ntp(ts: int, *, pivot: float | None = None) -> float:
    """64-bit NTP timestamp -> Unix seconds, choosing the era closest to ``pivot`` (default: now).

    RFC 4330 §3: seconds with the top bit clear are taken to be in era 1 (after 2036-02-07).
    Choosing the era nearest the local clock does the same and stays right for any clock within 68 years.
    """
    secs, frac = ts >> 32, ts & 0xFFFFFFFF
    pivot = time.time() if pivot is None else pivot
    base = secs - NTP_EPOCH_OFFSET + frac / ERA
    era = round((pivot - base) / ERA)
    return base + era * ERA


def build_request(transmit: float) -> bytes:
    """A client (mode 3, version 4) request whose transmit timestamp is ``transmit``."""
    return PACKET.pack((0 << 6) | (4 << 3) | MODE_CLIENT, 0, 0, 0, 0, 0, b"\0\0\0\0", 0, 0, 0, to_ntp(transmit))


def parse_reply(data: bytes, *, sent: int, t1: float, t4: float, server: str = "") -> NtpResult:
    """Check and decode a server reply to the request sent at ``t1`` (NTP form ``sent``), received at ``t4``.

    Raises NtpError for a short packet, a wrong mode, an unsynchronized or kiss-o'-death server, or
    an origin timestamp that is not ours (a spoofed or stale reply).
    """
    if len(data) < PACKET.size:
        raise NtpError(f"short NTP reply ({len(data)} bytes)")
    first, stratum, _poll, _prec, _rdelay, _rdisp, ref, ref_ts, origin, recv, xmit = PACKET.unpack_from(data)
    leap, mode = first >> 6, first & 7
    if mode != MODE_SERVER:
        raise NtpError(f"not a server reply (mode {mode})")
    if origin != sent:
        raise NtpError("origin timestamp does not match the request (stale or spoofed reply)")
    if stratum == 0:
        raise NtpError(f"kiss-o'-death from server: {ref.decode('ascii', 'replace').strip(chr(0))}")
    if leap == LEAP_UNSYNC or stratum > 15:
        raise NtpError("server clock is not synchronized")
    if xmit == 0:
        raise NtpError("reply without a transmit timestamp")
    t2, t3 = from_ntp(recv, pivot=t1), from_ntp(xmit, pivot=t1)
    offset = ((t2 - t1) + (t3 - t4)) / 2
    delay = (t4 - t1) - (t3 - t2)
    ref_id = ref.decode("ascii", "replace").strip("\0") if stratum == 1 else socket.inet_ntoa(ref)
    return NtpResult(server=server, offset=offset, delay=max(0.0, delay), stratum=stratum, ref_id=ref_id, server_time=t3)


def query(server: str, *, port: int = NTP_PORT, timeout: float = 3.0,
          clock: Callable[[], float] = time.time) -> NtpResult:
    """One SNTP exchange with ``server`` (name or address). Raises NtpError on failure."""
    try:
        infos = socket.getaddrinfo(server, port, type=socket.SOCK_DGRAM)
    except socket.gaierror as exc:
        raise NtpError(f"cannot resolve {server}: {exc}") from None
    family, _, _, _, addr = infos[0]
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        # A random fraction in the transmit timestamp makes the origin check hard to spoof.
        t1 = clock()
        sent_ts = (to_ntp(t1) & ~0xFFFF) | int.from_bytes(os.urandom(2), "big")
        request = bytearray(build_request(t1))
        struct.pack_into("!Q", request, 40, sent_ts)
        deadline = time.monotonic() + timeout
        try:
            sock.connect(addr)
            sock.send(bytes(request))
            while True:
                sock.settimeout(max(0.01, deadline - time.monotonic()))
                data = sock.recv(512)
                t4 = clock()
                try:
                    return parse_reply(data, sent=sent_ts, t1=t1, t4=t4, server=addr[0])
                except NtpError as exc:
                    if "origin" not in str(exc) or time.monotonic() >= deadline:
                        raise
                    # a late answer to an earlier request: keep waiting for ours
        except socket.timeout:
            raise NtpError(f"no NTP answer from {server} within {timeout:g} s") from None
        except OSError as exc:
            if isinstance(exc, NtpError):
                raise
            raise NtpError(f"NTP query to {server} failed: {exc.strerror or exc}") from None


# ---------------------------------------------------------------------------------- lab responder
def make_reply(request: bytes, *, now: float, offset: float = 0.0) -> bytes | None:
    """A stratum-2 server reply to a client request, telling time ``now + offset``; None for non-requests."""
    if len(request) < PACKET.size:
        return None
    first = request[0]
    if first & 7 != MODE_CLIENT:
        return None
    version = (first >> 3) & 7 or 4
    xmit = struct.unpack_from("!Q", request, 40)[0]
    t = to_ntp(now + offset)
    return PACKET.pack((0 << 6) | (version << 3) | MODE_SERVER, 2, 4, -20, 0, 0,
                       socket.inet_aton("198.51.100.123"), t, xmit, t, to_ntp(time.time() + offset))


def serve(port: int = NTP_PORT, offset: float = 0.0) -> None:
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind(("::", port))
    while True:
        data, peer = sock.recvfrom(512)
        reply = make_reply(data, now=time.time(), offset=offset)
        if reply:
            sock.sendto(reply, peer)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m agent.link.ntp", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="run the lab SNTP responder")
    s.add_argument("--port", type=int, default=NTP_PORT)
    s.add_argument("--offset", type=float, default=0.0, help="seconds added to the served time")
    q = sub.add_parser("query", help="ask a server once; print offset and delay")
    q.add_argument("server")
    q.add_argument("--port", type=int, default=NTP_PORT)
    args = p.parse_args(argv)
    if args.cmd == "serve":
        serve(args.port, args.offset)
        return 0
    try:
        r = query(args.server, port=args.port)
    except NtpError as exc:
        print(f"NTP: {exc}", file=sys.stderr)
        return 1
    print(f"server {r.server} stratum {r.stratum} offset {r.offset:+.6f} s delay {r.delay:.6f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
