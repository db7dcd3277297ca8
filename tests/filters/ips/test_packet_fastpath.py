"""The packet group's fast path (Ips._packet_candidates: header classes, prefilter hits dropped by
a remembered fit, static exclusions such as ``ip_proto``, no evaluation when nothing is left) and
the IP-only rules kept per addresses (Ips._iponly) must give the alerts of a brute-force
evaluation of every packet and IP-only rule whose header fits the packet.

ET Open and crafted rules, over random and crafted UDP, ICMP and TCP packets whose payloads carry
the fast patterns of packet rules (so that prefilter hits are many and mostly of rules that do
not fit): both runs must raise the same alerts on the same packets."""
from __future__ import annotations

import random
import socket
import struct
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from agent.dataplane.worker import pipeline_from_config
from agent.engines import build_engines
from agent.offline import replay as offline
from filters.ips.engine import Ips, Thresholds
from filters.ips.netspec import Variables
from filters.ips.packet_match import header_matches
from filters.ips.reach import Reach
from filters.ips.rule_groups import Detector, RuleInfo
from filters.ips.rule_parser import parse_rule
from filters.packet import parse_ethernet
from lab.bench.capture import TCP_ACK, TCP_FIN, TCP_PSH, TCP_SYN, Capture, TcpConversation

CRAFTED = r'''
alert ip any any -> any any (msg:"ip_proto 41 (never on UDP/ICMP/TCP)"; ip_proto:41; sid:9000001; rev:1;)
alert ip any any -> any any (msg:"ip_proto udp"; ip_proto:17; dsize:>30; sid:9000002; rev:1;)
alert ip any any -> any any (msg:"ip_proto not tcp"; ip_proto:!6; content:"XQZ"; sid:9000003; rev:1;)
alert ip any any -> any any (msg:"itype on any protocol"; itype:8; sid:9000004; rev:1;)
alert udp any any -> any any (msg:"icmp field on udp (never)"; icode:0; content:"XQZ"; sid:9000005; rev:1;)
alert ip any any -> any any (msg:"flags on any protocol"; flags:S; sid:9000006; rev:1;)
alert ip any any -> any any (msg:"tcp window on any protocol"; window:64240; content:"XQZ"; sid:9000007; rev:1;)
alert ip any any -> any any (msg:"sameip"; sameip; sid:9000008; rev:1;)
alert udp any any -> any any (msg:"udp to_server"; flow:to_server; content:"XQZ"; sid:9000009; rev:1;)
alert udp any any -> any any (msg:"udp to_client"; flow:to_client; content:"XQZ"; sid:9000010; rev:1;)
alert icmp any any -> any any (msg:"icmp reply content"; itype:0; content:"XQZ"; sid:9000011; rev:1;)
alert udp any 1024: -> any !5000:5010 (msg:"high source, outside a range"; content:"XQZ"; sid:9000012; rev:1;)
alert udp any any <> any 53 (msg:"either way, port 53"; content:"XQZ"; sid:9000013; rev:1;)
alert tcp any any -> any [80,8080] (msg:"tcp packet rule"; content:"XQZ"; dsize:>3; sid:9000014; rev:1;)
alert ip any any -> any any (msg:"ip_proto icmp content"; ip_proto:1; content:"XQZ"; sid:9000015; rev:1;)
alert udp any any -> any 5005 (msg:"range port, no content"; dsize:>0; sid:9000016; rev:1;)
alert udp $HOME_NET any -> $EXTERNAL_NET any (msg:"home to external"; content:"XQZ"; sid:9000017; rev:1;)
alert icmp any any -> any any (msg:"icmp_seq on udp and icmp"; icmp_seq:3; sid:9000018; rev:1;)
pass udp any any -> any 7777 (msg:"pass"; content:"PASSME"; sid:9000019; rev:1;)
alert udp any any -> any 7777 (msg:"silenced by the pass"; content:"PASSME"; sid:9000020; rev:1;)
'''

HOSTS = [socket.inet_aton(a) for a in ("192.168.10.20", "192.168.10.21", "10.1.2.3", "198.51.100.10",
                                       "203.0.113.7", "8.8.8.8")]
PORTS = [53, 69, 80, 123, 137, 161, 443, 1900, 5005, 5201, 5353, 7777, 8080, 27015, 40000, 50000, 65535]
WORDS = [b"XQZ", b"PASSME", bytes(8), b"\x00\x00\x04"]


def _port(rng: random.Random, spec: Any) -> int:
    if spec.any or rng.random() < 0.3:
        return rng.choice(PORTS) if rng.random() < 0.7 else rng.randint(1, 65535)
    lo, hi = rng.choice(spec.ranges)
    return rng.randint(lo, hi)


def _payload(rng: random.Random, patterns: list[bytes]) -> bytes:
    parts = []
    for _ in range(rng.randint(0, 4)):
        kind = rng.random()
        if kind < 0.5:
            parts.append(rng.choice(patterns))
        elif kind < 0.75:
            parts.append(rng.choice(WORDS))
        else:
            parts.append(rng.randbytes(rng.randint(1, 24)))
    return b"".join(parts)[:1400]


def _icmp(cap: Capture, ts: float, src: bytes, dst: bytes, itype: int, code: int, seq: int, data: bytes) -> None:
    cap.add(ts, src, dst, socket.IPPROTO_ICMP, struct.pack("!BBHHH", itype, code, 0, 77, seq) + data, 2)


def packets(infos: list[RuleInfo], seed: int, count: int) -> list[bytes]:
    """Flows aimed at the packet rules: each picks a rule, takes a protocol, ports and a payload
    that could fit it (or not), and sends a few packets each way."""
    rng = random.Random(seed)
    packet_rules = [i for i in infos if i.group == "packet"]
    iponly = [i for i in infos if i.group == "iponly" and not i.rule.src.any]
    patterns = [i.rule.fast_pattern.pattern for i in packet_rules if i.rule.fast_pattern is not None]
    cap = Capture()
    ts = 0.0
    while len(cap.frames) < count:
        info = rng.choice(packet_rules)
        r = info.rule
        proto = rng.choice(sorted(r.ip_protos)) if r.ip_protos and rng.random() < 0.8 else rng.choice((1, 6, 17))
        if proto not in (1, 6, 17):
            proto = 17
        src, dst = rng.choice(HOSTS), rng.choice(HOSTS)
        if rng.random() < 0.1:  # a host of an IP-only rule (ET's reputation lists), either side
            spec = rng.choice(iponly[:50]).rule.src
            if spec.v4:
                lo, hi = rng.choice(spec.v4[:3])
                src = (lo if rng.random() < 0.5 else rng.randint(lo, hi)).to_bytes(4, "big")
                if rng.random() < 0.5:
                    src, dst = dst, src
        if rng.random() < 0.05:
            dst = src
        sport, dport = _port(rng, r.sport), _port(rng, r.dport)
        if rng.random() < 0.3:
            sport, dport = dport, sport
        own = r.fast_pattern.pattern if r.fast_pattern is not None else b""

        def data() -> bytes:
            got = _payload(rng, patterns)
            return own + got if own and rng.random() < 0.6 else got

        ts += 0.01
        if proto == 17:
            for n in range(rng.randint(1, 6)):
                back = n % 2 == 1 and rng.random() < 0.7
                cap.udp(ts + n * 1e-3, (dst, dport) if back else (src, sport), (src, sport) if back else (dst, dport),
                        data())
        elif proto == 1:
            for n in range(rng.randint(1, 4)):
                itype = rng.choice((8, 0, 3, 11, 13, 8))
                _icmp(cap, ts + n * 1e-3, src, dst, itype, rng.choice((0, 0, 1, 3)), rng.randint(0, 5), data())
                if itype == 8 and rng.random() < 0.8:
                    _icmp(cap, ts + n * 1e-3 + 1e-4, dst, src, 0, 0, n, data())
        else:
            conv = TcpConversation(cap, (src, sport), (dst, dport), ts, 1e-4, rng)
            if rng.random() < 0.8:
                conv.open()
                for n in range(rng.randint(1, 3)):
                    payload = data()
                    if payload:
                        conv.send(n % 2 == 0, payload)
                conv.close()
            else:  # no handshake: a TCP flow without a session (its packets are inspected one by one)
                for n in range(rng.randint(1, 3)):
                    conv.segment(n % 2 == 0, rng.choice((TCP_ACK | TCP_PSH, TCP_ACK, TCP_SYN, TCP_FIN | TCP_ACK)), data())
    cap.frames.sort()
    return [f for _, _, f in cap.frames]


def brute_force(ips: Ips, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every packet rule whose header fits the packet, in evaluation order: no header class, no
    prefilter, no exclusion (the rules are evaluated in full, static checks included); every
    IP-only rule whose header fits (no address index, no cache)."""
    infos = sorted(ips.detector.groups["packet"].rules, key=lambda i: i.order)
    iponly = sorted(ips.detector.groups["iponly"].rules, key=lambda i: i.order)

    def candidates(st: Any, flow: Any, pkt: Any, to_server: bool) -> list[RuleInfo]:
        return [i for i in infos if header_matches(i.rule, flow.proto, pkt.src_addr, pkt.sport, pkt.dst_addr,
                                                   pkt.dport, pkt.has_ports)]

    def iponly_rules(proto: int, src: bytes, dst: bytes) -> tuple[RuleInfo, ...]:
        return tuple(i for i in iponly if header_matches(i.rule, proto, src, 0, dst, 0, False))

    monkeypatch.setattr(ips, "_packet_candidates", candidates)
    monkeypatch.setattr(ips, "_iponly", iponly_rules)


def alerts(cfg: Any, engines: list[Any], frames: list[bytes]) -> list[tuple[int, int, str]]:
    got: list[tuple[int, int, str]] = []
    counter = [0]

    def emit(rec: dict[str, Any]) -> None:
        if rec.get("event_type") == "alert":
            got.append((counter[0], rec["alert"]["signature_id"], rec["alert"].get("action", "")))

    for e in engines:
        if isinstance(e, Ips):
            e.thresholds = Thresholds()  # the two runs start alike (thresholds count by packet time)
    pipe = pipeline_from_config(cfg, emit, engines=engines)
    for i, frame in enumerate(frames):
        counter[0] = i
        ts = 1000.0 + i * 1e-4
        pipe.process(parse_ethernet(frame, ts), i, ts)
    return got


@pytest.fixture(scope="module")
def engines(et_open_files: list[Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, list[Any]]:
    crafted = tmp_path_factory.mktemp("fastpath") / "crafted.rules"
    crafted.write_text(CRAFTED)
    cfg = offline.offline_config(None, [], rule_files=[str(f) for f in et_open_files] + [str(crafted)])
    return cfg, build_engines(cfg)


@pytest.mark.parametrize("seed", [1, 2])
def test_fast_path_gives_the_alerts_of_a_brute_force_evaluation(engines: tuple[Any, list[Any]], seed: int,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    cfg, engs = engines
    ips = next(e for e in engs if isinstance(e, Ips))
    frames = packets(ips.detector.infos, seed, 1500)
    fast = alerts(cfg, engs, frames)
    brute_force(ips, monkeypatch)
    slow = alerts(cfg, engs, frames)
    assert fast == slow
    sids = {sid for _, sid, _ in fast}
    assert len(fast) > 100 and len(sids & set(range(9000000, 9000100))) >= 8, sorted(sids)
    assert sids & {i.rule.sid for i in ips.detector.groups["iponly"].rules}  # IP-only rules fired too


def test_crafted_packets_give_the_alerts_of_a_brute_force_evaluation(engines: tuple[Any, list[Any]],
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    cfg, engs = engines
    ips = next(e for e in engs if isinstance(e, Ips))
    home, ext = HOSTS[0], HOSTS[3]
    cap = Capture()
    for n in range(3):  # a long UDP flow, zeros then iperf3-like data, both ways
        cap.udp(n * 1e-3, (home, 40000), (ext, 5201), bytes(36))
        cap.udp(n * 1e-3 + 5e-4, (ext, 5201), (home, 40000), b"XQZ" + bytes(33))
    cap.udp(0.1, (home, 40001), (ext, 5005), b"XQZ")  # range port, the to_server and home-to-external rules
    cap.udp(0.2, (home, 40002), (ext, 7777), b"PASSME XQZ")  # the pass silences the packet
    cap.udp(0.3, (home, 1900), (home, 1900), b"XQZ")  # sameip
    cap.udp(0.4, (ext, 53), (home, 33333), b"XQZ")  # a DNS-like answer first: port 53 either way
    for n in range(4):  # ping: zeros, then a content in the reply
        _icmp(cap, 0.5 + n * 1e-3, home, ext, 8, 0, n, bytes(56))
        _icmp(cap, 0.5 + n * 1e-3 + 1e-4, ext, home, 0, 0, n, b"XQZ" + bytes(53) if n % 2 else bytes(56))
    _icmp(cap, 0.6, ext, home, 8, 0, 3, bytes(8))  # GPL SCAN superscan echo (dsize 8, zeros)
    conv = TcpConversation(cap, (home, 41000), (ext, 8080), 0.7, 1e-4, random.Random(3))
    conv.open()
    conv.send(True, b"XQZ " + bytes(20))
    conv.close()
    cap.frames.sort()
    frames = [f for _, _, f in cap.frames]
    fast = alerts(cfg, engs, frames)
    brute_force(ips, monkeypatch)
    slow = alerts(cfg, engs, frames)
    assert fast == slow
    sids = {sid for _, sid, _ in fast}
    assert {9000002, 9000003, 9000004, 9000008, 9000009, 9000010, 9000011, 9000013, 9000014, 9000015, 9000016,
            9000017, 2100474} <= sids, sorted(sids)
    assert not {9000001, 9000005, 9000020} & sids


REACH_RULES = r'''
alert tcp any any -> any 80 (content:"a"; sid:1;)
alert tcp any 1024:2000 -> any !443 (content:"b"; sid:2;)
alert udp any any -> any [53,5353] (content:"c"; dsize:>1; sid:3;)
alert udp any 40000:40010 -> any any (content:"d"; dsize:>1; sid:4;)
alert tcp any any -> any 8080 (flowbits:isset,x; content:"e"; sid:5;)
alert tcp any any -> any 9000 (flowbits:set,x; flowbits:noalert; content:"f"; sid:6;)
alert udp $HOME_NET any -> $EXTERNAL_NET 5000: (content:"h"; dsize:>1; sid:8;)
'''


@pytest.mark.parametrize("rule_set", ["crafted", "et-open"])
def test_reach_answers_by_port_class_as_worked_out(engines: tuple[Any, list[Any]], rule_set: str) -> None:
    """Reach.could_apply keeps its answers for new flows by protocol, addresses and port classes:
    each must be what Reach.judge works out for the flow itself; so must the IP-only rules' answer
    (Ips._iponly, kept by protocol and addresses) be Detector.could_apply's."""
    ips = None
    if rule_set == "crafted":
        reach = Reach(Detector([parse_rule(line, vars=Variables.suricata_defaults())
                                for line in REACH_RULES.strip().splitlines()]))
    else:
        ips = next(e for e in engines[1] if isinstance(e, Ips))
        reach = ips._reach
    rules = [i.rule for i in reach.detector.infos]
    rules += [i.rule for i in reach.detector.infos if i.group == "iponly"][:50] * 20  # their addresses often
    ports = [80, 443, 1500, 53, 5353, 40005, 8080, 9000, 5000, 6000, 4999]
    rng = random.Random(5)
    answers = set()
    for _ in range(3000):
        r = rng.choice(rules)
        proto = rng.choice((1, 6, 17, 17, 6, 47))
        pick = (lambda spec: rng.choice(ports) if rng.random() < 0.5 else _port(rng, spec))
        client = rng.choice(HOSTS)
        if not r.src.any and r.src.v4 and rng.random() < 0.5:  # an address of the rule's (reputation lists...)
            lo, hi = rng.choice(r.src.v4[:3])  # the first few: addresses met again with other servers
            client = (lo if rng.random() < 0.5 else rng.randint(lo, hi)).to_bytes(4, "big")
        flow = SimpleNamespace(proto=proto, client_addr=client, server_addr=rng.choice(HOSTS),
                               client_port=pick(r.sport) if proto in (6, 17) else 0,
                               server_port=pick(r.dport) if proto in (6, 17) else 0)
        for group in ("packet", "stream"):
            got = reach.could_apply(group, flow)
            assert got == reach.judge(group, flow), (group, flow)
            answers.add((group, got))
        if ips is not None:  # the IP-only rules, by Ips._iponly's cache, and as worked out
            got = bool(ips._iponly(proto, flow.client_addr, flow.server_addr)
                       or ips._iponly(proto, flow.server_addr, flow.client_addr))
            assert got == _iponly_fits(ips.detector, flow), flow
            answers.add(("iponly", got))
    assert {("stream", True), ("stream", False)} <= answers
    assert ips is None or {("iponly", True), ("iponly", False)} <= answers


def _iponly_fits(detector, flow) -> bool:
    """Does some IP-only rule's header fit the flow in either direction? Worked out over every
    IP-only rule (the engine's answer comes from its address index and a cache)."""
    c, cp, srv, sp = flow.client_addr, flow.client_port, flow.server_addr, flow.server_port
    has_ports = flow.proto in (6, 17)
    return any(header_matches(i.rule, flow.proto, c, cp, srv, sp, has_ports)
               or header_matches(i.rule, flow.proto, srv, sp, c, cp, has_ports)
               for i in detector.groups["iponly"].rules)
