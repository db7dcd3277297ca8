"""Tests for filters.defrag (IPv4/IPv6 reassembly, overlap policies, bounds) and the pipeline's
handling of fragments (held until their datagram is judged, the verdict applied to all)."""
from __future__ import annotations

import struct

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP, fragment
from scapy.layers.inet6 import IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrFragment, fragment6

from filters.defrag import DefragSettings, Defragmenter
from filters.engine import Action, ConfigError, Engine, Verdict
from filters.flow import FlowTable
from filters.packet import Packet, parse_ip
from filters.pipeline import Outcome, Pipeline, PipelinePolicy

SRC, DST = "192.0.2.1", "198.51.100.2"


def frag4(ident: int, offset: int, more: bool, data: bytes, proto: int = 1) -> Packet:
    """An IPv4 fragment carrying ``data`` at byte ``offset`` (a multiple of 8)."""
    ip = IP(src=SRC, dst=DST, id=ident, proto=proto, flags="MF" if more else 0, frag=offset // 8)
    return parse_ip(bytes(ip / data))


def feed(d: Defragmenter, pkts: list[Packet], now: float = 1.0):
    res = None
    for i, p in enumerate(pkts):
        res = d.add(p, i, now)
    return res


# Novak & Sturges, "Target-Based Fragmentation Reassembly": the pattern Suricata's defrag unit tests
# use (offsets and lengths in bytes; nine originals, then eight overlapping ones, Q last).
PATTERN = [
    ("A", 0, 24), ("B", 32, 16), ("C", 48, 24), ("D", 80, 8), ("E", 104, 16), ("F", 120, 24), ("G", 144, 16),
    ("H", 160, 16), ("I", 176, 8), ("J", 8, 32), ("K", 48, 24), ("L", 72, 24), ("M", 96, 24), ("N", 128, 8),
    ("O", 152, 8), ("P", 160, 8), ("Q", 176, 16),
]
EXPECTED = {
    "bsd": "AAAJJBCCCLLLMMMFFFGGHHIQ",
    "linux": "AAAJJBKKKLLLMMMFFFGGPHQQ",
    "first": "AAAJBBCCCLDLMEEFFFGGHHIQ",
    "last": "AJJJJBKKKLLLMMMFNFGOPHQQ",
    "windows": "AAAJBBCCCLLLMEEFFFGGHHIQ",
    "solaris": "AAAJBBCCCLLLMMMFFFGGHHIQ",
}


@pytest.mark.parametrize("policy", sorted(EXPECTED))
def test_sturges_novak_overlaps_per_policy(policy: str) -> None:
    d = Defragmenter(DefragSettings(policy=policy))
    header = b"\x08\x00\x00\x00\x00\x00\x00\x00"  # ICMP echo header: the datagram's first 8 bytes
    res = None
    for i, (ch, off, length) in enumerate(PATTERN):
        last = ch == "Q"
        data = (ch.encode() * length)
        res = d.add(frag4(1, off + 8, not last, data), i, 1.0)
        if not last:
            assert res.datagram is None and res.failed is None
    head = d.add(frag4(1, 0, True, header), 99, 1.0)  # the ICMP header fragment completes it
    assert head.datagram is not None, policy
    body = head.datagram.raw[20 + 8:]
    got = "".join(chr(body[i]) for i in range(0, len(body), 8))
    assert got == EXPECTED[policy]
    assert len(head.members) == len(PATTERN) + 1 and head.datagram.extra["defrag"] == len(PATTERN) + 1
    assert d.counters["overlaps"] >= 1 and len(d) == 0 and d.held_bytes == 0


def test_in_order_and_reverse_give_the_same_datagram() -> None:
    whole = IP(src=SRC, dst=DST, id=7) / TCP(sport=1, dport=80, flags="PA") / (b"x" * 333)
    frags = [parse_ip(bytes(f)) for f in fragment(whole, fragsize=64)]
    for order in (frags, frags[::-1]):
        d = Defragmenter()
        res = feed(d, order)
        assert res.datagram is not None
        assert res.datagram.raw == bytes(IP(bytes(whole)))  # header rebuilt: length, flags, checksum
        assert (res.datagram.sport, res.datagram.dport) == (1, 80) and not res.datagram.is_fragment


def test_ipv6_with_extension_header_before_the_fragment_header() -> None:
    whole = IPv6(src="2001:db8::1", dst="2001:db8::2") / IPv6ExtHdrDestOpt() / IPv6ExtHdrFragment(id=9) / \
        UDP(sport=5, dport=53) / (b"q" * 3000)
    frags = [parse_ip(bytes(f)) for f in fragment6(whole, 1280)]
    assert len(frags) == 3
    res = feed(Defragmenter(), frags[::-1])
    dg = res.datagram
    assert dg is not None and dg.version == 6 and not dg.is_fragment and dg.ext_headers == (60,)
    assert (dg.sport, dg.dport, dg.payload) == (5, 53, b"q" * 3000) and dg.anomaly is None


def test_bounds_max_frags_memcap_trackers() -> None:
    d = Defragmenter(DefragSettings(max_frags=3))
    res = feed(d, [frag4(1, i * 8, True, b"a" * 8) for i in range(4)])
    assert res.failed == "defrag.max_frags" and len(res.members) == 4 and d.held_bytes == 0
    assert d.add(frag4(1, 64, False, b"z" * 8), 9, 1.0).failed == "defrag.max_frags"  # the datagram stays given up
    d = Defragmenter(DefragSettings(memcap=200))
    res = feed(d, [frag4(2, i * 64, True, b"b" * 64) for i in range(3)])
    assert res.failed == "defrag.memcap" and d.counters["memcap"] == 1 and d.held_bytes == 0
    d = Defragmenter(DefragSettings(max_frags=1000))  # one datagram sent over and over: bounded per tracker
    res = feed(d, [frag4(4, 0, True, b"d" * 1400) for _ in range(300)])
    assert res.failed == "defrag.tracker_memcap" and d.held_bytes == 0
    d = Defragmenter(DefragSettings(max_trackers=2))
    for ident in (1, 2):
        assert d.add(frag4(ident, 0, True, b"c" * 8), ident, 1.0).failed is None
    res = d.add(frag4(3, 0, True, b"c" * 8), 3, 1.0)
    assert res.failed == "defrag.max_trackers" and res.members == [(3, res.members[0][1])]


def test_too_large_and_invalid_length() -> None:
    d = Defragmenter()
    res = d.add(frag4(1, 65528, False, b"x" * 16), 0, 1.0)
    assert res.failed == "ipv4.frag_pkt_too_large" and "ipv4.frag_pkt_too_large" in res.anomalies
    v6 = IPv6(src="2001:db8::1", dst="2001:db8::2") / IPv6ExtHdrFragment(id=1, m=1, offset=0) / (b"x" * 13)
    res = d.add(parse_ip(bytes(v6)), 1, 1.0)
    assert res.failed == "ipv6.frag_invalid_length"


def test_timeout_hands_out_held_fragments() -> None:
    d = Defragmenter(DefragSettings(timeout=5))
    d.add(frag4(1, 0, True, b"a" * 8), "t0", 10.0)
    d.add(frag4(1, 8, True, b"a" * 8), "t1", 11.0)
    assert d.next_deadline() == 15.0 and d.held_packets == 2
    assert d.expire(14.9) == []
    ((failed, members),) = d.expire(15.0)
    assert failed is None and [t for t, _ in members] == ["t0", "t1"] and d.counters["timeouts"] == 1
    assert len(d) == 0 and d.held_bytes == 0


def test_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="policy"):
        DefragSettings(policy="macos")
    with pytest.raises(ConfigError):
        DefragSettings(max_frags=0)


# -- the pipeline ---------------------------------------------------------------------------------


class _Marker(Engine):
    """Drops the packets whose payload holds b"EVIL" (flow-wide), records what it saw."""

    name = "marker"

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[Packet] = []

    def on_packet(self, pkt, flow):
        if flow is None:
            return None
        self.seen.append(pkt)
        if b"EVIL" in pkt.payload:
            return [Verdict(Action.DROP, self.name, rule_id=1, signature="evil")]
        return None

    def needs_more(self, flow) -> bool:
        return True


def fragments(payload: bytes, size: int = 16, ident: int = 1) -> list[Packet]:
    whole = IP(src=SRC, dst=DST, id=ident) / UDP(sport=1000, dport=2000) / payload
    return [parse_ip(bytes(f), ts=1.0) for f in fragment(whole, fragsize=size)]


def test_fragments_are_held_and_share_the_datagram_verdict() -> None:
    eng = _Marker()
    pipe = Pipeline([eng], FlowTable())
    frags = fragments(b"...EVIL..." + b"." * 40)
    outs = []
    for i, f in enumerate(frags):
        got = pipe.process(f, i)
        if i < len(frags) - 1:
            assert got == [] and pipe.held_packets == i + 1  # not verdicted yet
        outs += got
    assert sorted(r.token for r in outs) == list(range(len(frags)))
    assert {r.outcome for r in outs} == {Outcome.DROP}
    assert len(eng.seen) == 1 and not eng.seen[0].is_fragment  # judged once, whole
    assert pipe.held_packets == 0 and pipe.stats()["defrag"]["reassembled"] == 1


def test_timed_out_fragments_are_dropped_inline_and_the_deadline_is_known() -> None:
    emitted: list[dict] = []
    pipe = Pipeline([_Marker()], FlowTable(), emit=emitted.append)
    frags = fragments(b"x" * 64)[:-1]
    for i, f in enumerate(frags):
        assert pipe.process(f, i, now=100.0) == []
    assert pipe.next_deadline() == 160.0
    assert pipe.tick(159.0) == []
    outs = pipe.tick(160.0)
    assert sorted(r.token for r in outs) == list(range(len(frags))) and {r.outcome for r in outs} == {Outcome.DROP}
    assert [r["anomaly"]["event"] for r in emitted if r["event_type"] == "anomaly"] == ["defrag.timeout"]
    passing = Pipeline([_Marker()], FlowTable(), PipelinePolicy(defrag_timeout=Action.PASS))
    for i, f in enumerate(frags):
        passing.process(f, i, now=100.0)
    assert {r.outcome for r in passing.tick(200.0)} == {Outcome.ACCEPT}


def test_ids_mode_never_drops_fragments_of_a_dropped_datagram() -> None:
    pipe = Pipeline([_Marker()], FlowTable(), PipelinePolicy(ips=False))
    outs = []
    for i, f in enumerate(fragments(b"EVIL" + b"." * 60)):
        outs += pipe.process(f, i)
    assert {r.outcome for r in outs} == {Outcome.ACCEPT} and len(outs) == 5


def test_anomaly_eve_records_are_rate_limited() -> None:
    emitted: list[dict] = []
    pipe = Pipeline([], FlowTable(), PipelinePolicy(anomaly_eve_per_second=3), emit=emitted.append)
    bad = parse_ip(bytes(IP(src=SRC, dst=DST) / TCP(dataofs=2)), ts=5.0)
    for i in range(10):
        pipe.process(bad, i)
    assert len([r for r in emitted if r["event_type"] == "anomaly"]) == 3
    assert pipe.counters["anomaly.tcp.bad_offset"] == 10 and pipe.counters["anomaly_eve_suppressed"] == 7
    rec = next(r for r in emitted if r["event_type"] == "anomaly")
    assert rec["anomaly"] == {"type": "decode", "event": "tcp.bad_offset"} and "src_port" not in rec


def test_icmp_datagram_of_many_fragments() -> None:
    whole = IP(src=SRC, dst=DST, id=44) / ICMP() / (b"p" * 1000)
    pipe = Pipeline([_Marker()], FlowTable())
    outs = []
    for i, f in enumerate(fragment(whole, fragsize=104)):
        outs += pipe.process(parse_ip(bytes(f)), i)
    assert len(outs) == 10 and {r.outcome for r in outs} == {Outcome.ACCEPT}
    assert struct.unpack("!H", bytes(IP(bytes(whole)))[2:4])[0] == 1028
