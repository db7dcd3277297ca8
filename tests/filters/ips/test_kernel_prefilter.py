"""The kernel prefilter (Ips.kernel_filter, Pipeline._prefilter) must never lose an alert.

A simulated kernel runs in front of the pipeline as the box's does (agent/dataplane/prefilter.py):
once a packet's release gives its flow a prefilter, the flow's later packets whose IP packet holds
none of their conntrack direction's patterns are accepted without reaching the pipeline; the
others are queued with ``ct_reply`` and ``ct_established`` as the kernel marks them. The alerts
must be those of a brute-force evaluation (every packet and IP-only rule whose header fits, no
header class, no prefilter) that sees every packet, over ET Open and crafted rules, on UDP and ICMP
flows aimed at the packet rules: also when the worker forgets flows the kernel carries (its flow
timeout), and whatever the order of directions."""
from __future__ import annotations

import random
import socket
from pathlib import Path
from typing import Any

import pytest

from agent.dataplane.worker import pipeline_from_config
from agent.engines import build_engines
from agent.offline import replay as offline
from filters.engine import MAX_KERNEL_PATTERN
from filters.flow import flow_key
from filters.ips.engine import Ips, Thresholds, _minimal_patterns
from filters.packet import parse_ethernet
from filters.pipeline import NO_PREFILTER, Outcome
from lab.bench.capture import Capture
from tests.filters.ips.test_packet_fastpath import HOSTS, PORTS, _icmp, _payload, _port, brute_force

CRAFTED = r'''
alert udp any any -> any 6001 (msg:"pcre only"; pcre:"/AB+C/"; sid:9100001; rev:1;)
alert udp any any -> any 6002 (msg:"dsize only"; dsize:>100; sid:9100002; rev:1;)
alert udp any any -> any 6003 (msg:"negated only"; content:!"zzz"; sid:9100003; rev:1;)
alert udp any any -> any 6004 (msg:"nocase"; content:"MiXeD"; nocase; sid:9100004; rev:1;)
alert udp any any -> any 6004 (msg:"chop"; content:"0123456789abcdef"; fast_pattern:4,6; sid:9100005; rev:1;)
alert udp any any -> any 6004 (msg:"established"; flow:established,to_server; content:"EST"; sid:9100006; rev:1;)
alert udp any any -> any 6004 (msg:"not established"; flow:not_established; content:"NEST"; sid:9100007; rev:1;)
alert udp any 6004 -> any any (msg:"to client"; flow:to_client; content:"BACK"; sid:9100008; rev:1;)
alert udp any any -> any 6004 (msg:"set"; content:"SETBIT"; flowbits:set,kp; sid:9100009; rev:1;)
alert udp any any -> any 6004 (msg:"isset"; content:"USEBIT"; flowbits:isset,kp; sid:9100010; rev:1;)
alert udp any any -> any 6005 (msg:"long"; content:"LONG-PATTERN-123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890-END"; sid:9100011; rev:1;)
alert udp any any -> any 6006 (msg:"count by flow"; content:"CNT"; detection_filter:track by_flow, count 2, seconds 60; sid:9100012; rev:1;)
alert udp any any -> any 6007 (msg:"count by source"; content:"SRC"; threshold:type threshold, track by_src, count 2, seconds 60; sid:9100013; rev:1;)
alert icmp any any -> any any (msg:"echo content"; itype:8; content:"PINGME"; sid:9100014; rev:1;)
alert icmp any any -> any any (msg:"reply content"; itype:0; content:"PONG"; nocase; sid:9100015; rev:1;)
alert udp any any -> any 6008 (msg:"dns-like app"; content:"APPX"; sid:9100016; rev:1;)
'''
CRAFTED_WORDS = [b"AB", b"ABBC", b"zzz", b"mixed", b"MIXED", b"456789", b"0123456789abcdef", b"EST", b"NEST",
                 b"BACK", b"SETBIT", b"USEBIT", b"CNT", b"SRC", b"PINGME", b"pong", b"APPX",
                 b"LONG-PATTERN-123456789012345678901234567890123456789012345678901234567890123456789012345678"
                 b"901234567890123456789012345678901234567890-END"]
CRAFTED_PORTS = [6001, 6002, 6003, 6004, 6005, 6006, 6007, 6008]


@pytest.fixture(scope="module")
def engines(et_open_files: list[Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, list[Any]]:
    crafted = tmp_path_factory.mktemp("kprefilter") / "crafted.rules"
    crafted.write_text(CRAFTED)
    cfg = offline.offline_config(None, [], rule_files=[str(f) for f in et_open_files] + [str(crafted)])
    return cfg, build_engines(cfg)


def flows(ips: Ips, seed: int, count: int) -> list[bytes]:
    """Long UDP and ICMP flows aimed at the packet rules (and the crafted ones), both ways, with
    payloads that carry fast patterns now and then (of the flow's rules and of others)."""
    rng = random.Random(seed)
    rules = [i for i in ips.detector.groups["packet"].rules if not i.rule.ip_protos or {1, 17} & i.rule.ip_protos]
    patterns = [i.rule.fast_pattern.pattern for i in rules if i.rule.fast_pattern is not None] + CRAFTED_WORDS
    cap = Capture()
    ts = 0.0
    while len(cap.frames) < count:
        info = rng.choice(rules)
        r = info.rule
        src, dst = rng.choice(HOSTS), rng.choice(HOSTS)
        if src == dst:
            dst = HOSTS[(HOSTS.index(src) + 1) % len(HOSTS)]
        own = r.fast_pattern.pattern if r.fast_pattern is not None else b""

        def data() -> bytes:
            if rng.random() < 0.55:
                return rng.randbytes(rng.randint(0, 40))  # most packets: nothing a rule looks for
            got = _payload(rng, patterns)
            return own + got if own and rng.random() < 0.4 else got

        ts += 0.05
        n_pkts = rng.randint(3, 14)
        proto = 1 if 1 in r.ip_protos or (not r.ip_protos and rng.random() < 0.3) else 17
        if proto == 17:
            sport = _port(rng, r.sport) if rng.random() < 0.7 else rng.choice(PORTS)
            dport = rng.choice(CRAFTED_PORTS) if rng.random() < 0.3 else _port(rng, r.dport)
            for n in range(n_pkts):
                back = n == 1 or (n > 1 and rng.random() < 0.5)
                a, b = ((dst, dport), (src, sport)) if back else ((src, sport), (dst, dport))
                cap.udp(ts + n * 1e-3, a, b, data())
        else:
            for n in range(n_pkts):
                back = n % 2 == 1
                _icmp(cap, ts + n * 1e-3, dst if back else src, src if back else dst, 0 if back else 8, 0, n, data())
    cap.frames.sort()
    return [f for _, _, f in cap.frames]


def _holds(raw: bytes, pats: frozenset[tuple[bytes, bool, int]], icmp_type: int) -> bool:
    """As the kernel's xt_string (over the whole IP packet) and icmp type matches do (the kernel's
    caseless search folds Latin-1 letters too: it holds more, never less)."""
    low = raw.lower()
    return any(((p.lower() in low) if nc else (p in raw)) and t in (-1, icmp_type) for p, nc, t in pats)


class _Conn:
    """A conntrack entry as the simulated kernel keeps it."""

    def __init__(self, src: bytes, sport: int) -> None:
        self.orig = (src, sport)
        self.seen = [False, False]  # original, reply
        self.prefilter: Any = None  # (original patterns, reply patterns)
        self.offloaded = False


def alerting_pipeline(cfg: Any, engines: list[Any], kernel: bool) -> tuple[Any, list[tuple[int, int]], list[int]]:
    """A fresh pipeline (the IPS's thresholds fresh too) whose alerts land in the returned list as
    (counter[0], sid): the caller sets ``counter[0]`` to the frame index before each packet."""
    got: list[tuple[int, int]] = []
    counter = [0]

    def emit(rec: dict[str, Any]) -> None:
        if rec.get("event_type") == "alert":
            got.append((counter[0], rec["alert"]["signature_id"]))

    for e in engines:
        if isinstance(e, Ips):
            e.thresholds = Thresholds()
    return pipeline_from_config(cfg, emit, engines=engines, kernel_offload=kernel), got, counter


def run(cfg: Any, engines: list[Any], frames: list[bytes], *, kernel: bool, forget: float = 0.0,
        seed: int = 0) -> tuple[list[tuple[int, int]], dict[str, int]]:
    """Alerts as (frame index, sid) and what the kernel kept. ``kernel``: inline, behind the
    simulated kernel; ``forget``: the chance that the worker forgets a flow the kernel carries
    before a queued packet of it (its flow timeout passed)."""
    pipe, got, counter = alerting_pipeline(cfg, engines, kernel)
    rng = random.Random(seed)
    conns: dict[Any, _Conn] = {}
    stats = {"kept": 0, "queued": 0, "prefiltered": 0, "forgotten": 0, "stopped": 0}
    for i, frame in enumerate(frames):
        counter[0] = i
        ts = 1000.0 + i * 1e-4
        pkt = parse_ethernet(frame, ts)
        key = flow_key(pkt)
        sport = pkt.sport if pkt.proto in (6, 17) else 0
        conn = conns.get(key)
        if conn is None:
            conn = conns[key] = _Conn(pkt.src_addr, sport)
        reply = (pkt.src_addr, sport) != conn.orig
        pkt.ct_reply = reply
        conn.seen[reply] = True
        if kernel and conn.offloaded:
            continue
        if kernel and conn.prefilter is not None:
            if not _holds(frame[14:], conn.prefilter[reply], pkt.icmp_type if pkt.proto == 1 else -2):
                stats["kept"] += 1
                continue
            pkt.ct_established = all(conn.seen)
            if forget and rng.random() < forget:
                found = pipe.flows.lookup(pkt)
                if found is not None:
                    pipe.flows.remove(found[0])
                    pipe._end_flow(found[0], ts)
                    stats["forgotten"] += 1
        stats["queued"] += 1
        for rel in pipe.process(pkt, i, ts):
            if rel.offload and rel.outcome is Outcome.ACCEPT:
                conn.offloaded = True
            if rel.prefilter is NO_PREFILTER:
                conn.prefilter = None
                stats["stopped"] += 1
            elif rel.prefilter is not None:
                if conn.prefilter is None:
                    stats["prefiltered"] += 1
                conn.prefilter = rel.prefilter
    for rel in pipe.tick(float("inf")):
        pass
    return got, stats


@pytest.mark.parametrize("seed,forget", [(1, 0.0), (2, 0.0), (3, 0.5)])
def test_prefiltered_flows_give_the_alerts_of_a_brute_force_evaluation(engines: tuple[Any, list[Any]], seed: int,
                                                                      forget: float,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    cfg, engs = engines
    ips = next(e for e in engs if isinstance(e, Ips))
    frames = flows(ips, seed, 3000)
    fast, stats = run(cfg, engs, frames, kernel=True, forget=forget, seed=seed)
    brute_force(ips, monkeypatch)
    slow, _ = run(cfg, engs, frames, kernel=False)
    assert sorted(set(fast)) == sorted(set(slow))
    assert fast == slow
    # the prefilter did keep packets from the pipeline, and alerts were raised on queued ones
    assert stats["prefiltered"] > 50 and stats["kept"] > 300, stats
    assert len({sid for _, sid in fast}) > 20
    if forget:
        assert stats["forgotten"] > 20, stats


def _ips_alone(engs: list[Any]) -> Ips:
    return next(e for e in engs if isinstance(e, Ips))


def test_crafted_flows(engines: tuple[Any, list[Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    """Flows of the crafted rules, each kind: which are prefiltered, and the alerts of each."""
    cfg, engs = engines
    home, ext = HOSTS[0], HOSTS[3]
    cap = Capture()
    t = 0.0
    for port in CRAFTED_PORTS:
        t += 1.0
        for n in range(6):
            cap.udp(t + n * 1e-3, (home, 40000 + port), (ext, port), bytes(20))
            cap.udp(t + n * 1e-3 + 5e-4, (ext, port), (home, 40000 + port), bytes(20))
    # port 6004, later: the patterns of each rule, and the flowbit set then used
    t += 1.0
    for n, data in enumerate([bytes(8), b"x" * 8, b"xx mIxEd", b"..456789..", b"0123456789abcdef", b"EST", b"NEST", b"SETBIT",
                              b"zeros", b"USEBIT", b"zz"]):
        cap.udp(t + n * 1e-3, (home, 46004), (ext, 6004), data)
        cap.udp(t + n * 1e-3 + 5e-4, (ext, 6004), (home, 46004), b"BACK" if n == 3 else bytes(4))
    for n in range(4):  # ping with a pattern in the third echo, the reply's caseless content
        _icmp(cap, 5.0 + n * 1e-3, home, ext, 8, 0, n, b"PINGME" if n == 2 else bytes(56))
        _icmp(cap, 5.0 + n * 1e-3 + 1e-4, ext, home, 0, 0, n, b"pOnG" if n == 3 else bytes(56))
    cap.frames.sort()
    frames = [f for _, _, f in cap.frames]
    fast, stats = run(cfg, engs, frames, kernel=True)
    brute_force(_ips_alone(engs), monkeypatch)
    slow, _ = run(cfg, engs, frames, kernel=False)
    assert fast == slow
    sids = {sid for _, sid in fast}
    assert {9100004, 9100005, 9100006, 9100008, 9100009, 9100010, 9100014, 9100015} <= sids, sorted(sids)
    assert 9100007 not in sids
    assert stats["stopped"] >= 1  # the flowbit set on a prefiltered flow sends its packets again


def test_which_flows_are_eligible(engines: tuple[Any, list[Any]]) -> None:
    """A class with a rule without a fast pattern on the payload (pcre, dsize, negated only, a
    count by flow) is not prefiltered; one with fast patterns only is, with the patterns cut to
    xt_string's length and those holding another left out."""
    cfg, engs = engines
    ips = _ips_alone(engs)
    pipe = pipeline_from_config(cfg, lambda rec: None, engines=engs, kernel_offload=True)
    home, ext = HOSTS[0], HOSTS[3]
    got: dict[int, Any] = {}
    for port in CRAFTED_PORTS + [5201]:
        cap = Capture()
        cap.udp(0.0, (home, 41000), (ext, port), bytes(10))
        cap.udp(0.001, (ext, port), (home, 41000), bytes(10))
        cap.udp(0.002, (home, 41000), (ext, port), bytes(10))
        rels = []
        for n, (_, _, frame) in enumerate(sorted(cap.frames)):
            rels += pipe.process(parse_ethernet(frame, 10.0 + port + n * 1e-3), n, 10.0 + port + n * 1e-3)
        got[port] = rels[-1].prefilter
        assert rels[0].prefilter is None  # not before both directions were seen
    assert got[6001] is None and got[6002] is None and got[6003] is None and got[6006] is None
    to_server, to_client = got[6004]
    assert (b"mixed", True, -1) in to_server or (b"MiXeD", True, -1) in to_server
    assert (b"456789", False, -1) in to_server and (b"BACK", False, -1) in to_client
    assert not any(p == b"EST" for p, _, _ in to_client)  # flow:to_server
    long = got[6005][0]
    assert all(len(p) <= MAX_KERNEL_PATTERN for p, _, _ in long)
    assert any(p.startswith(b"LONG-PATTERN-") for p, _, _ in long)
    assert got[5201] is not None and 0 < len(got[5201][0]) < 200  # the bench's flow, ET Open
    assert ips.counters.get("flows.bypassed_unmatchable", 0) >= 0


def test_minimal_patterns() -> None:
    got = _minimal_patterns({(b"abc", False, -1), (b"xxabcxx", False, -1), (b"ABCD", True, -1), (b"abcd", False, -1),
                             (b"ab", True, -1), (b"zzAbz", False, -1), (b"q", False, -1), (b"Q", True, -1)})
    # b"ab" caseless is held by every pattern holding "ab" in any case, caseless "Q" by "q"
    assert got == frozenset({(b"ab", True, -1), (b"Q", True, -1)})
    assert _minimal_patterns({(b"Ab", False, -1), (b"xab", True, -1)}) == frozenset({(b"Ab", False, -1), (b"xab", True, -1)})
    # a pattern for one ICMP type holds none for any type, nor for another type
    assert _minimal_patterns({(b"ab", False, 8), (b"abc", False, -1), (b"abd", False, 0), (b"abe", False, 8)}) == \
        frozenset({(b"ab", False, 8), (b"abc", False, -1), (b"abd", False, 0)})


def test_off_switch(engines: tuple[Any, list[Any]]) -> None:
    cfg, engs = engines
    ips = _ips_alone(engs)
    flow_args = (socket.inet_aton("192.168.10.20"), socket.inet_aton("198.51.100.10"))
    assert flow_args
    ips.kernel_prefilter = False
    try:
        pipe = pipeline_from_config(cfg, lambda rec: None, engines=engs, kernel_offload=True)
        cap = Capture()
        for n in range(3):
            cap.udp(n * 1e-3, (HOSTS[0], 41000), (HOSTS[3], 5201), bytes(10))
            cap.udp(n * 1e-3 + 5e-4, (HOSTS[3], 5201), (HOSTS[0], 41000), bytes(10))
        rels = [r for n, (_, _, f) in enumerate(sorted(cap.frames)) for r in pipe.process(parse_ethernet(f, 1.0 + n), n, 1.0 + n)]
        assert all(r.prefilter is None for r in rels)
    finally:
        ips.kernel_prefilter = True


def test_a_one_way_flow_picked_up_is_prefiltered_again(tmp_path: Path) -> None:
    """A UDP flow the worker forgot while the kernel prefiltered it comes back as established
    (``ct_established``): its first queued packet gives the prefilter again, though the worker has
    seen only that packet's direction (the other's header class comes from the flow)."""
    from scapy.layers.inet import IP, UDP

    from filters.packet import parse_ip

    rules = tmp_path / "one.rules"
    rules.write_text('alert udp any any -> any 6004 (msg:"x"; flow:established,to_server; content:"EST"; sid:1; rev:1;)\n')
    cfg = offline.offline_config(None, [], rule_files=[str(rules)])
    pipe = pipeline_from_config(cfg, lambda rec: None, engines=build_engines(cfg), kernel_offload=True)
    pkt = parse_ip(bytes(IP(src="192.168.10.10", dst="198.51.100.20") / UDP(sport=5000, dport=6004) / b"EST"), 1.0)
    pkt.ct_established = True
    rel = pipe.process(pkt, 0, 1.0)[0]
    assert rel.prefilter is not None and rel.prefilter is not NO_PREFILTER
    assert {p[0] for p in rel.prefilter[0]} == {b"EST"} and rel.prefilter[1] == frozenset()
