"""Classic pcap files written directly (Ethernet/IPv4/TCP, checksums zero: fast, no scapy) and a
replay through ``vcr-agent pcap`` under tracemalloc, for the memory-bound tests."""
from __future__ import annotations

import io
import struct
import tracemalloc
from pathlib import Path
from typing import Any

from agent.offline import replay as offline

PCAP_HEADER = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
CLIENT, SERVER = bytes([192, 168, 1, 10]), bytes([198, 51, 100, 7])


def ip_tcp(src: bytes, dst: bytes, sport: int, dport: int, seq: int, ack: int, flags: int, data: bytes) -> bytes:
    """One Ethernet frame: IPv4 ``src`` -> ``dst``, TCP with ``flags`` carrying ``data``."""
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, 65535, 0, 0) + data
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0x4000, 64, 6, 0, src, dst)
    return b"\x00\x11\x22\x33\x44\x55\x66\x77\x88\x99\xaa\xbb\x08\x00" + ip + tcp


def record(n: int, frame: bytes) -> bytes:
    """The pcap record of the ``n``-th frame (a millisecond apart)."""
    return struct.pack("<IIII", 1_700_000_000 + n // 1000, n % 1000, len(frame), len(frame)) + frame


def replay_traced(pcap: Path, cfg: Any) -> tuple[dict[str, Any], str, int]:
    """``vcr-agent pcap`` on ``pcap``: its result, its eve.json lines, and the peak of traced memory
    (bytes above what was traced before)."""
    out = io.StringIO()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        result = offline.run_pcap(offline.OfflineOptions(pcap=pcap), cfg, out=out)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    return result, out.getvalue(), peak
