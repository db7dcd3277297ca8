"""Tests for agent.offline.pcapfile: classic pcap and pcapng reading, truncation, bad headers, peer pcaps."""
from __future__ import annotations

import dataclasses
import io
import json
import re
import struct
from decimal import Decimal
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.utils import PcapNgWriter, PcapWriter, wrpcap

from agent.offline.pcapfile import MAX_RECORD, PcapError, PcapReader, PcapRecord, open_packets
from filters.packet import Packet, Side
from tests.shared_data import SharedData

FRAMES = [
    bytes(Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=1000, dport=80, flags="S")),
    bytes(Ether() / IP(src="10.0.0.2", dst="10.0.0.1") / TCP(sport=80, dport=1000, flags="SA")),
    bytes(Ether() / IPv6(src="2001:db8::1", dst="2001:db8::2") / UDP(sport=53, dport=5353) / b"answer"),
]
RAW_IP = bytes(IP(src="192.0.2.1", dst="192.0.2.2") / UDP(sport=1, dport=2) / b"raw")


def read_all(path: Path | io.BytesIO) -> tuple[list[PcapRecord], PcapReader]:
    with PcapReader(path) as reader:
        return list(reader), reader


# -- hand-built files ----------------------------------------------------------------------------


def classic(records: list[tuple[int, int, bytes]], e: str = "<", nano: bool = False, network: int = 1) -> bytes:
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    out = struct.pack(e + "IHHiIII", magic, 2, 4, 0, 0, 65535, network)
    for sec, frac, data in records:
        out += struct.pack(e + "IIII", sec, frac, len(data), len(data)) + data
    return out


def pad4(b: bytes) -> bytes:
    return b + bytes(-len(b) % 4)


def block(e: str, btype: int, body: bytes) -> bytes:
    body = pad4(body)
    return struct.pack(e + "II", btype, len(body) + 12) + body + struct.pack(e + "I", len(body) + 12)


def options(e: str, *opts: tuple[int, bytes]) -> bytes:
    out = b"".join(struct.pack(e + "HH", code, len(v)) + pad4(v) for code, v in opts)
    return out + struct.pack(e + "HH", 0, 0) if opts else b""


def shb(e: str, major: int = 1) -> bytes:
    return block(e, 0x0A0D0D0A, struct.pack(e + "IHHq", 0x1A2B3C4D, major, 0, -1) + options(e, (4, b"test")))


def idb(e: str, linktype: int, snaplen: int = 0, *opts: tuple[int, bytes]) -> bytes:
    return block(e, 1, struct.pack(e + "HHI", linktype, 0, snaplen) + options(e, (2, b"eth0"), *opts))


def epb(e: str, if_id: int, units: int, data: bytes, orig: int | None = None, cap: int | None = None) -> bytes:
    cap = len(data) if cap is None else cap
    hdr = struct.pack(e + "IIIII", if_id, units >> 32, units & 0xFFFFFFFF, cap, len(data) if orig is None else orig)
    return block(e, 6, hdr + pad4(data) + options(e, (1, b"a comment")))


def spb(e: str, data: bytes, orig: int | None = None) -> bytes:
    return block(e, 3, struct.pack(e + "I", len(data) if orig is None else orig) + data)


def pb(e: str, if_id: int, units: int, data: bytes) -> bytes:
    return block(e, 2, struct.pack(e + "HHIIII", if_id, 0, units >> 32, units & 0xFFFFFFFF, len(data), len(data)) + data)


# -- classic pcap --------------------------------------------------------------------------------


def test_scapy_pcap_little_endian(tmp_path: Path) -> None:
    path = tmp_path / "le.pcap"
    pkts = [Ether(f) for f in FRAMES]
    for i, p in enumerate(pkts):
        p.time = Decimal("1700000000.25") + i
    wrpcap(str(path), pkts)
    recs, reader = read_all(path)
    assert reader.format == "pcap" and reader.linktype == 1 and not reader.truncated
    assert [r.data for r in recs] == FRAMES
    assert [r.ts for r in recs] == [1700000000.25 + i for i in range(3)]
    assert all(r.linktype == 1 and r.orig_len == len(r.data) for r in recs)


@pytest.mark.parametrize("endianness", ["<", ">"])
@pytest.mark.parametrize("nano", [False, True])
def test_scapy_pcap_byte_orders_and_resolution(tmp_path: Path, endianness: str, nano: bool) -> None:
    path = tmp_path / "x.pcap"
    writer = PcapWriter(str(path), linktype=101, endianness=endianness, nano=nano, sync=True)
    pkt = IP(RAW_IP)
    pkt.time = Decimal("1234.123456789")
    writer.write(pkt)
    writer.close()
    (rec,), reader = read_all(path)
    assert (rec.data, rec.linktype, reader.linktype) == (RAW_IP, 101, 101)
    assert rec.ts == pytest.approx(1234.123456789 if nano else 1234.123457, abs=1e-9)  # scapy rounds to us


def test_nanosecond_fraction_exact() -> None:
    recs, _ = read_all(io.BytesIO(classic([(5, 999_999_999, RAW_IP)], e=">", nano=True, network=101)))
    assert recs[0].ts == 5 + 999_999_999 / 1e9


def test_linktype_upper_bits_are_fcs_flags() -> None:
    recs, reader = read_all(io.BytesIO(classic([(0, 0, FRAMES[0])], network=1 | 0x14000000)))
    assert reader.linktype == 1 and recs[0].linktype == 1


def test_classic_every_cut() -> None:
    data = classic([(1, 0, FRAMES[0]), (2, 0, FRAMES[1]), (3, 0, FRAMES[2])])
    boundaries = [24]
    for f in FRAMES:
        boundaries.append(boundaries[-1] + 16 + len(f))
    for cut in range(len(data) + 1):
        if cut < 24:
            with pytest.raises(PcapError, match="offset"):
                read_all(io.BytesIO(data[:cut]))
            continue
        recs, reader = read_all(io.BytesIO(data[:cut]))
        complete = sum(1 for b in boundaries[1:] if b <= cut)
        assert len(recs) == complete and [r.data for r in recs] == FRAMES[:complete]
        assert reader.truncated == (cut not in boundaries), cut


def test_classic_bad_headers() -> None:
    with pytest.raises(PcapError, match="offset 0: not a pcap"):
        PcapReader(io.BytesIO(b"GIF89a" + bytes(40)))
    with pytest.raises(PcapError):
        PcapReader(io.BytesIO(b""))
    bad_version = bytearray(classic([]))
    bad_version[4] = 9
    with pytest.raises(PcapError, match="version"):
        PcapReader(io.BytesIO(bytes(bad_version)))
    assert issubclass(PcapError, ValueError)


def test_classic_oversized_record_is_skipped_and_counted() -> None:
    """A record longer than the reader's limit is skipped whole; the records after it are read."""
    big = bytes(MAX_RECORD + 1)
    data = classic([(1, 0, FRAMES[0]), (2, 0, big), (3, 0, FRAMES[1])])
    recs, reader = read_all(io.BytesIO(data))
    assert [r.data for r in recs] == [FRAMES[0], FRAMES[1]] and not reader.truncated
    assert reader.anomalies == {"pcap.record_too_large": 1}
    (offset, code, detail), = reader.take_problems()
    assert offset == 24 + 16 + len(FRAMES[0]) and code == "pcap.record_too_large" and str(MAX_RECORD + 1) in detail
    assert reader.take_problems() == []
    # a length past the end of the file: nothing after it to read, the file is truncated
    huge = classic([]) + struct.pack("<IIII", 0, 0, MAX_RECORD + 1, 10)
    recs, reader = read_all(io.BytesIO(huge))
    assert recs == [] and reader.truncated and reader.anomalies == {"pcap.record_too_large": 1}


# -- pcapng --------------------------------------------------------------------------------------


def test_scapy_pcapng(tmp_path: Path) -> None:
    path = tmp_path / "s.pcapng"
    writer = PcapNgWriter(str(path))
    for i, f in enumerate(FRAMES):
        p = Ether(f)
        p.time = Decimal(100 + i) + Decimal("0.5")
        writer.write(p)
    writer.close()
    recs, reader = read_all(path)
    assert reader.format == "pcapng" and not reader.truncated
    assert [r.data for r in recs] == FRAMES and [r.ts for r in recs] == [100.5, 101.5, 102.5]
    assert {r.linktype for r in recs} == {1}


@pytest.mark.parametrize("e", ["<", ">"])
def test_pcapng_blocks(e: str) -> None:
    data = (
        shb(e)
        + idb(e, 1)  # interface 0: Ethernet, microseconds
        + idb(e, 101, 0, (9, b"\x09"), (14, struct.pack(e + "q", 1000)))  # 1: raw IP, ns, +1000 s
        + idb(e, 228, 8, (9, b"\x94"))  # 2: IPv4, 2^-20 s, snaplen 8
        + block(e, 5, struct.pack(e + "III", 0, 0, 0))  # interface statistics: skipped
        + block(e, 0x0BAD, b"unknown block body")  # unknown: skipped
        + epb(e, 0, 1_500_000, FRAMES[0])
        + epb(e, 1, 2_000_000_123, RAW_IP, orig=9000)
        + epb(e, 2, 3 << 20, RAW_IP)
        + spb(e, FRAMES[1])  # simple packet block: interface 0, no timestamp
        + pb(e, 1, 7_000_000_000, RAW_IP)  # obsolete packet block
    )
    recs, reader = read_all(io.BytesIO(data))
    assert not reader.truncated
    assert [(r.linktype, r.data) for r in recs] == [(1, FRAMES[0]), (101, RAW_IP), (228, RAW_IP), (1, FRAMES[1]), (101, RAW_IP)]
    assert [r.ts for r in recs] == [1.5, 1002.000000123, 3.0, 0.0, 1007.0]
    assert recs[1].orig_len == 9000


def test_spb_limited_by_snaplen() -> None:
    data = shb("<") + idb("<", 101, 12) + spb("<", RAW_IP)
    (rec,), _ = read_all(io.BytesIO(data))
    assert rec.data == RAW_IP[:12] and rec.orig_len == len(RAW_IP)


def test_pcapng_multiple_sections_switch_byte_order() -> None:
    data = shb("<") + idb("<", 1) + epb("<", 0, 1, FRAMES[0]) + shb(">") + idb(">", 101) + epb(">", 0, 2, RAW_IP)
    recs, _ = read_all(io.BytesIO(data))
    assert [(r.linktype, r.data) for r in recs] == [(1, FRAMES[0]), (101, RAW_IP)]
    recs, reader = read_all(io.BytesIO(data + epb(">", 1, 3, RAW_IP)))  # a new section forgets earlier interfaces
    assert len(recs) == 2 and reader.anomalies == {"pcap.unknown_interface": 1}


def test_pcapng_every_cut() -> None:
    data = shb(">") + idb(">", 1) + epb(">", 0, 1, FRAMES[0]) + epb(">", 0, 2, FRAMES[2])
    first = len(shb(">"))
    ends = [first + len(idb(">", 1))]
    ends.append(ends[0] + len(epb(">", 0, 1, FRAMES[0])))
    ends.append(ends[1] + len(epb(">", 0, 2, FRAMES[2])))
    for cut in range(len(data) + 1):
        if cut < first:
            with pytest.raises(PcapError):
                read_all(io.BytesIO(data[:cut]))
            continue
        recs, reader = read_all(io.BytesIO(data[:cut]))
        assert len(recs) == sum(1 for b in ends[1:] if b <= cut)
        assert reader.truncated == (cut not in [first, *ends]), cut


@pytest.mark.parametrize(
    ("bad", "code", "match"),
    [
        (struct.pack("<II", 6, 10), "pcap.bad_block_length", "bad block length 10"),  # shorter than a block header
        (struct.pack("<II", 6, 30), "pcap.bad_block_length", "bad block length 30"),  # not a multiple of 4
        (struct.pack("<II", 6, 64 * 1024 * 1024), "pcap.bad_block_length", "bad block length"),
        (struct.pack("<II", 6, 4096) + bytes(24), "pcap.bad_block_length", "past the end"),  # longer than the file
        (block("<", 6, bytes(24))[:-4] + struct.pack("<I", 40), "pcap.bad_block_trailer", "trailing length"),
        (epb("<", 4, 0, RAW_IP), "pcap.unknown_interface", "interface 4"),
        (epb("<", 0, 0, RAW_IP, cap=500), "pcap.bad_packet_block", "captured length 500"),
        (block("<", 6, bytes(8)), "pcap.bad_packet_block", "too short"),
    ],
)
def test_pcapng_bad_blocks_are_skipped(bad: bytes, code: str, match: str) -> None:
    """A block that cannot be read is skipped (its length, or the next block whose leading and
    trailing lengths agree), counted and listed; the packets before and after it are read."""
    head = shb("<") + idb("<", 1) + epb("<", 0, 1, FRAMES[0])
    tail = epb("<", 0, 2, FRAMES[1])
    recs, reader = read_all(io.BytesIO(head + bad + tail))
    assert [r.data for r in recs] == [FRAMES[0], FRAMES[1]] and not reader.truncated
    assert reader.anomalies == {code: 1}
    ((offset, got, detail),) = reader.problems
    assert got == code and re.search(match, detail) and offset == len(head)


def test_pcapng_bad_interface_block_keeps_numbering() -> None:
    data = shb("<") + block("<", 1, bytes(4)) + idb("<", 101) + epb("<", 1, 0, RAW_IP) + epb("<", 0, 0, RAW_IP)
    recs, reader = read_all(io.BytesIO(data))
    assert [(r.linktype, r.data) for r in recs] == [(101, RAW_IP), (-1, RAW_IP)]
    assert reader.anomalies == {"pcap.bad_interface_block": 1}


def test_pcapng_garbage_tail_is_reported() -> None:
    data = shb("<") + idb("<", 1) + epb("<", 0, 1, FRAMES[0]) + struct.pack("<II", 6, 13) + b"\x01" * 64
    recs, reader = read_all(io.BytesIO(data))
    assert [r.data for r in recs] == [FRAMES[0]] and reader.truncated
    assert reader.anomalies == {"pcap.bad_block_length": 1, "pcap.unreadable_tail": 1}


def test_pcapng_bad_section_header() -> None:
    good = shb("<")
    with pytest.raises(PcapError, match="byte-order magic"):
        PcapReader(io.BytesIO(good[:8] + b"\x00\x11\x22\x33" + good[12:]))
    with pytest.raises(PcapError, match="pcapng version 2"):
        PcapReader(io.BytesIO(shb("<", major=2)))
    with pytest.raises(PcapError, match="section header block length"):
        PcapReader(io.BytesIO(good[:4] + struct.pack("<I", 12) + good[8:]))


# -- API -----------------------------------------------------------------------------------------


def test_record_is_frozen_and_slotted() -> None:
    rec = PcapRecord(1.0, 1, b"x", 1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        rec.ts = 2.0  # type: ignore[misc]
    assert not hasattr(rec, "__dict__")


def test_context_manager_closes_file(tmp_path: Path) -> None:
    path = tmp_path / "c.pcap"
    path.write_bytes(classic([(1, 0, FRAMES[0])]))
    with PcapReader(path) as reader:
        assert len(list(reader)) == 1
    assert reader._file.closed
    (tmp_path / "bad.pcap").write_bytes(b"nonsense")
    with pytest.raises(PcapError, match="bad.pcap"):
        PcapReader(tmp_path / "bad.pcap")


def test_open_packets(tmp_path: Path) -> None:
    path = tmp_path / "p.pcapng"
    path.write_bytes(shb("<") + idb("<", 1) + idb("<", 101) + epb("<", 0, 2_000_000, FRAMES[2]) + epb("<", 1, 3_000_000, RAW_IP))
    pkts = list(open_packets(path, side=Side.WAN))
    assert all(isinstance(p, Packet) for p in pkts)
    assert [(p.ts, p.version, p.proto, p.side, p.anomaly) for p in pkts] == [(2.0, 6, 17, Side.WAN, None), (3.0, 4, 17, Side.WAN, None)]
    assert pkts[0].payload == b"answer" and pkts[1].payload == b"raw"


# -- the suricata-verify peer pcaps --------------------------------------------------------------


def test_all_peer_pcaps_read(shared_data: SharedData) -> None:
    peer = shared_data.path("peer", "suricata-verify")
    manifest_path = peer / "manifest.json"
    infos = {}
    if manifest_path.is_file():
        infos = {t["name"]: t.get("pcap_info", {}) for t in json.loads(manifest_path.read_text())["tests"]}
    problems = []
    checked = 0
    for path in sorted({*shared_data.glob("peer/suricata-verify", "**/*.pcap"), *peer.rglob("*.pcapng")}):
        try:
            with PcapReader(path) as reader:
                recs = list(reader)
            pkts = list(open_packets(path))
        except Exception as exc:  # collect them all for one readable failure
            problems.append(f"{path}: {exc!r}")
            continue
        if reader.truncated:
            problems.append(f"{path}: truncated")
        bad = sorted({p.anomaly for p in pkts if p.anomaly})
        if bad:
            problems.append(f"{path}: anomalies {bad}")
        info = infos.get(str(path.parent.relative_to(peer)))
        if info:
            checked += 1
            got = {
                "packets": len(recs),
                "ipv4": sum(p.version == 4 for p in pkts),
                "ipv6": sum(p.version == 6 for p in pkts),
                "ip_fragments": sum(p.is_fragment for p in pkts),
            }
            want = {"packets": info["packets"], "ipv4": info["l3"].get("ipv4", 0), "ipv6": info["l3"].get("ipv6", 0), "ip_fragments": info["ip_fragments"]}
            if got != want:
                problems.append(f"{path}: got {got}, manifest says {want}")
    assert not problems, "\n".join(problems)
    assert checked or not infos
