"""Layer-2 probes for ``vcr-agent setup``: which port faces the router, and a temporary DHCP address.

Both work on one port at a time with AF_PACKET sockets (root), before the ports are in the bridge:

- :func:`arp_probe` asks "who has GATEWAY" out of one port; the port on which the gateway answers is
  the one cabled to the router (the WAN port); the LAN port only reaches the office's PCs.
- :func:`dhcp_lease` is a minimal DHCP client (RFC 2131: DISCOVER, OFFER, REQUEST, ACK, and RELEASE
  afterwards) used only to reach the operations center once, to fetch the settings sheet before the
  box has its fixed address. In a typical office the router serves DHCP, so an offer also tells the
  router's side. Frames are built by hand (Ethernet, IPv4, UDP with checksum 0, BOOTP) so nothing
  depends on the port having an address.
"""
from __future__ import annotations

import ipaddress
import os
import random
import select
import socket
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path

from filters.packet import inet_checksum

ETH_P_IP = 0x0800
ETH_P_ARP = 0x0806
BROADCAST_MAC = b"\xff" * 6
DHCP_MAGIC = b"\x63\x82\x53\x63"
DISCOVER, OFFER, REQUEST, DECLINE, ACK, NAK, RELEASE = 1, 2, 3, 4, 5, 6, 7


class ProbeError(OSError):
    """A probe could not run (no such port, not root)."""


def port_mac(ifname: str) -> bytes:
    try:
        text = Path(f"/sys/class/net/{ifname}/address").read_text().strip()
    except OSError as exc:
        raise ProbeError(f"ポート {ifname} がありません / no port {ifname}: {exc.strerror}") from None
    return bytes.fromhex(text.replace(":", ""))


def _mac_text(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


def _packet_socket(ifname: str, proto: int) -> socket.socket:
    try:
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(proto))
        s.bind((ifname, proto))
    except OSError as exc:
        raise ProbeError(f"{ifname}: {exc.strerror or exc} (root で実行してください / run as root)") from None
    s.setblocking(False)
    return s


def _send(s: socket.socket, frame: bytes) -> bool:
    """Send one frame; False when the port cannot send (no cable: ENOBUFS, ENETDOWN)."""
    try:
        s.send(frame)
        return True
    except OSError:
        return False


def _recv_until(s: socket.socket, deadline: float, accept) -> object | None:  # type: ignore[no-untyped-def]
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        r, _, _ = select.select([s], [], [], left)
        if not r:
            return None
        try:
            frame, addr = s.recvfrom(4096)
        except BlockingIOError:
            continue
        if addr[2] == socket.PACKET_OUTGOING:
            continue
        got = accept(frame)
        if got is not None:
            return got


# ----------------------------------------------------------------------------------------- ARP
def arp_probe(ifname: str, target_ip: str, sender_ip: str = "0.0.0.0", *, timeout: float = 1.0,
              tries: int = 3) -> str | None:
    """Ask who has ``target_ip`` out of ``ifname``; the answering MAC, or None."""
    mac = port_mac(ifname)
    tip = socket.inet_aton(target_ip)
    sip = socket.inet_aton(sender_ip)
    arp = struct.pack("!HHBBH6s4s6s4s", 1, ETH_P_IP, 6, 4, 1, mac, sip, b"\x00" * 6, tip)
    frame = BROADCAST_MAC + mac + struct.pack("!H", ETH_P_ARP) + arp
    s = _packet_socket(ifname, ETH_P_ARP)

    def accept(f: bytes) -> str | None:
        if len(f) < 42 or f[12:14] != b"\x08\x06":
            return None
        op = struct.unpack("!H", f[20:22])[0]
        if op == 2 and f[28:32] == tip:
            return _mac_text(f[22:28])
        return None

    try:
        for _ in range(tries):
            if not _send(s, frame):
                time.sleep(timeout / tries)
                continue
            got = _recv_until(s, time.monotonic() + timeout / tries, accept)
            if got:
                return str(got)
        return None
    finally:
        s.close()


def bring_up(ifname: str) -> None:
    import subprocess

    subprocess.run(["ip", "link", "set", ifname, "up"], capture_output=True, timeout=10)


def in_bridge(ifname: str) -> str | None:
    """The bridge ``ifname`` is a port of, or None."""
    p = Path(f"/sys/class/net/{ifname}/master")
    return os.path.basename(os.readlink(p)) if p.is_symlink() else None


# ---------------------------------------------------------------------------------------- DHCP
@dataclass
class Lease:
    port: str
    address: str  # with prefix, e.g. 192.0.2.200/24
    router: str | None
    dns: list[str] = field(default_factory=list)
    server_id: str = ""
    server_mac: bytes = b""
    lease_s: int = 0
    xid: int = 0
    mac: bytes = b""


def _udp_frame(src_mac: bytes, dst_mac: bytes, src_ip: str, dst_ip: str, payload: bytes) -> bytes:
    udp = struct.pack("!HHHH", 68, 67, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0x10, 20 + len(udp), random.getrandbits(16), 0, 64, 17, 0,
                     socket.inet_aton(src_ip), socket.inet_aton(dst_ip))
    ip = ip[:10] + struct.pack("!H", inet_checksum(ip)) + ip[12:]
    return dst_mac + src_mac + struct.pack("!H", ETH_P_IP) + ip + udp


def _bootp(op_type: int, xid: int, mac: bytes, *, ciaddr: str = "0.0.0.0", options: list[tuple[int, bytes]]) -> bytes:
    head = struct.pack("!BBBBIHH4s4s4s4s16s64s128s", 1, 1, 6, 0, xid, 0, 0x8000, socket.inet_aton(ciaddr),
                       b"\x00" * 4, b"\x00" * 4, b"\x00" * 4, mac + b"\x00" * 10, b"", b"")
    opts = bytes([53, 1, op_type])
    for code, value in options:
        opts += bytes([code, len(value)]) + value
    opts += bytes([55, 4, 1, 3, 6, 51]) + b"\xff"
    return head + DHCP_MAGIC + opts


def _parse_reply(frame: bytes, xid: int) -> tuple[int, dict[int, bytes], str, bytes] | None:
    """(message type, options, yiaddr, server MAC) of a DHCP reply for ``xid``, else None."""
    if len(frame) < 14 + 20 + 8 + 240 or frame[12:14] != b"\x08\x00":
        return None
    ihl = (frame[14] & 0x0F) * 4
    if frame[14 + 9] != 17:
        return None
    udp = 14 + ihl
    if struct.unpack("!H", frame[udp + 2:udp + 4])[0] != 68:
        return None
    b = frame[udp + 8:]
    if len(b) < 240 or b[0] != 2 or struct.unpack("!I", b[4:8])[0] != xid or b[236:240] != DHCP_MAGIC:
        return None
    opts: dict[int, bytes] = {}
    i = 240
    while i < len(b):
        code = b[i]
        if code == 255:
            break
        if code == 0:
            i += 1
            continue
        if i + 1 >= len(b):
            break
        n = b[i + 1]
        opts[code] = b[i + 2:i + 2 + n]
        i += 2 + n
    if 53 not in opts:
        return None
    return opts[53][0], opts, socket.inet_ntoa(b[16:20]), frame[6:12]


def dhcp_lease(ifname: str, *, timeout: float = 4.0) -> Lease | None:
    """DISCOVER, OFFER, REQUEST, ACK on ``ifname``; the lease, or None when no server answers."""
    mac = port_mac(ifname)
    xid = random.getrandbits(32)
    s = _packet_socket(ifname, ETH_P_IP)
    try:
        def wanted(kind: tuple[int, ...]):  # type: ignore[no-untyped-def]
            return lambda f: (lambda r: r if r and r[0] in kind else None)(_parse_reply(f, xid))

        deadline = time.monotonic() + timeout
        offer = None
        while offer is None and time.monotonic() < deadline:
            if not _send(s, _udp_frame(mac, BROADCAST_MAC, "0.0.0.0", "255.255.255.255",
                                       _bootp(DISCOVER, xid, mac, options=[]))):
                time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
                continue
            offer = _recv_until(s, min(deadline, time.monotonic() + 1.0), wanted((OFFER,)))
        if offer is None:
            return None
        _t, opts, yiaddr, _smac = offer  # type: ignore[misc]
        server = opts.get(54, b"")
        if not _send(s, _udp_frame(mac, BROADCAST_MAC, "0.0.0.0", "255.255.255.255", _bootp(
                REQUEST, xid, mac, options=[(50, socket.inet_aton(yiaddr)), (54, server)]))):
            return None
        ack = _recv_until(s, time.monotonic() + max(1.0, deadline - time.monotonic()), wanted((ACK, NAK)))
        if ack is None or ack[0] != ACK:  # type: ignore[index]
            return None
        _t, opts, yiaddr, smac = ack  # type: ignore[misc]
        mask = socket.inet_ntoa(opts.get(1, b"\xff\xff\xff\x00")[:4])
        prefix = ipaddress.IPv4Network(f"0.0.0.0/{mask}").prefixlen
        router = socket.inet_ntoa(opts[3][:4]) if len(opts.get(3, b"")) >= 4 else None
        dns = [socket.inet_ntoa(opts[6][i:i + 4]) for i in range(0, len(opts.get(6, b"")) - 3, 4)]
        lease_s = struct.unpack("!I", opts[51][:4])[0] if len(opts.get(51, b"")) >= 4 else 0
        return Lease(ifname, f"{yiaddr}/{prefix}", router, dns, socket.inet_ntoa(server[:4]) if len(server) >= 4 else "",
                     smac, lease_s, xid, mac)
    finally:
        s.close()


def dhcp_release(lease: Lease) -> None:
    """Give the address back (best effort; the lease also just runs out)."""
    if not lease.server_id:
        return
    try:
        s = _packet_socket(lease.port, ETH_P_IP)
    except ProbeError:
        return
    try:
        ip = lease.address.split("/")[0]
        s.send(_udp_frame(lease.mac, lease.server_mac or BROADCAST_MAC, ip, lease.server_id, _bootp(
            RELEASE, random.getrandbits(32), lease.mac, ciaddr=ip,
            options=[(54, socket.inet_aton(lease.server_id))])))
    except OSError:
        pass
    finally:
        s.close()
