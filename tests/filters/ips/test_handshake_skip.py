"""The handshake skip (issue 15): inline, a connection's SYN passes with ``Release.handshake`` when
no engine needs its SYN+ACK (Engine.needs_handshake), and the kernel then keeps that SYN+ACK from
the workers (agent/dataplane/ruleset.py ``MARK_HS``). It must never lose an alert: a simulated
kernel that keeps those SYN+ACKs gives the alerts of the same pipeline fed every packet, over ET
Open and rules aimed at the SYN+ACK (flags, window, IP-only rules of the reply direction), on
connections where the client speaks first and where the server does."""
from __future__ import annotations

import random
import socket
from pathlib import Path
from typing import Any

import pytest
from scapy.layers.inet import IP, TCP

from agent.dataplane.ruleset import HandshakeSkip
from agent.dataplane.worker import pipeline_from_config
from agent.engines import build_engines
from agent.offline import replay as offline
from filters.flow import FlowTable, flow_key
from filters.ips.netspec import Variables
from filters.ips.packet_match import match_packet_checks
from filters.ips.rule_groups import _SYNACK_FLAGS, classify, could_match_synack
from filters.ips.rule_parser import parse_rule
from filters.packet import parse_ethernet, parse_ip
from filters.stream import TcpState
from lab.bench.capture import Capture, TcpConversation
from tests.filters.ips.test_kernel_prefilter import alerting_pipeline

VARS = Variables.suricata_defaults()


def could(rule: str) -> bool:
    return could_match_synack(classify(0, parse_rule(rule, vars=VARS)))


@pytest.mark.parametrize("rule", [
    'alert tcp $HOME_NET 3389 -> any any (flags:SA; sid:2014385;)',  # ET DOS RDP Syn/Ack Outbound (flowbits aside)
    'alert tcp any any -> any any (window:64240; sid:1;)',
    'alert tcp any any -> any any (tcp.mss:<536; sid:1;)',
    'alert tcp any any -> any any (dsize:0; sid:1;)',
    'alert tcp any any -> any any (flow:to_client; sid:1;)',
    'alert tcp any any -> any any (flags:S+; sid:1;)',
])
def test_rules_that_could_match_a_synack(rule):
    assert could(rule)


@pytest.mark.parametrize("options", [
    "flags:S,12;", "flags:A;", "flags:A,12;", "flags:F+;", "flags:R;", "flags:!S;", "flags:PA;", "dsize:>0;",
    "dsize:10;", "itype:8;", "ip_proto:17;", 'content:"x";',
])
def test_what_cannot_match_a_synack_does_not_match_a_real_one(options):
    """The oracle: the packet checks of a rule judged unable fail on every SYN+ACK the kernel keeps."""
    rule = parse_rule(f"alert tcp any any -> any any ({options} sid:1;)", vars=VARS)
    assert not could_match_synack(classify(0, rule))
    if options.startswith("content"):
        return
    for flags in _SYNACK_FLAGS:
        pkt = parse_ip(bytes(IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=80, dport=1234, flags=flags, window=512,
                                                                      options=[("MSS", 1460)])))
        assert not pkt.payload and not match_packet_checks(rule, pkt)


def test_the_stream_places_the_servers_bytes_by_the_clients_ack():
    """Without the SYN+ACK the client's handshake ACK tells the server's next sequence number: a
    server that sends its second segment first cannot make the first one look like a
    retransmission (as a midstream pickup from whichever segment came first would)."""
    cap = Capture()
    conv = TcpConversation(cap, (socket.inet_aton("192.168.10.10"), 40000), (socket.inet_aton("198.51.100.20"), 25),
                           1.0, 0.01, random.Random(1))
    conv.open()
    conv.send(False, b"220 first segment\r\n")
    conv.send(False, b"250 second segment\r\n")
    frames = [f for _, _, f in cap.frames]
    syn, _synack, ack, first, _ack1, second, _ack2 = frames
    table = FlowTable()
    got = []
    for n, frame in enumerate((syn, ack, second, first)):
        pkt = parse_ethernet(frame, 1.0 + n)
        flow, to_server, _ = table.lookup(pkt)
        got += table.update(flow, pkt, to_server)
    assert flow.state is TcpState.ESTABLISHED and not flow.midstream
    assert b"".join(d for ts, d, _ in got if not ts) == b"220 first segment\r\n250 second segment\r\n"


CRAFTED = r'''
alert tcp any any -> any 80 (msg:"request, established"; flow:established,to_server; content:"GET /evil"; sid:9300001; rev:1;)
alert http any any -> any any (msg:"uri"; http.uri; content:"/evil"; sid:9300002; rev:1;)
alert tcp any 80 -> any any (msg:"response, established"; flow:established,to_client; content:"EVILBODY"; sid:9300003; rev:1;)
alert tcp any any -> any any (msg:"not established"; flow:not_established; content:"GET"; sid:9300004; rev:1;)
alert tcp $HOME_NET 3389 -> any any (msg:"syn-ack of rdp"; flags:SA; sid:9300005; rev:1;)
alert ip 198.51.100.66 any -> $HOME_NET any (msg:"ip-only, listed server"; sid:9300006; rev:1;)
alert tcp any 8080 -> any any (msg:"window"; window:64240; flow:to_client; sid:9300007; rev:1;)
alert tcp any 25 -> any any (msg:"banner"; flow:established,from_server; content:"220 evil"; sid:9300008; rev:1;)
alert tcp any any -> any 25 (msg:"helo"; flow:established,to_server; content:"HELO evil"; sid:9300009; rev:1;)
alert tcp any 25 -> any any (msg:"no flags check"; dsize:0; sid:9300010; rev:1;)
alert tcp any any -> any 80 (msg:"stream size"; stream_size:client,>,30; content:"Host"; sid:9300011; rev:1;)
'''
CLIENTS = [socket.inet_aton(f"192.168.10.{n}") for n in (10, 11, 12)]
SERVERS = [socket.inet_aton(f"198.51.100.{n}") for n in (20, 21, 66)] + [socket.inet_aton("192.168.10.50")]


@pytest.fixture(scope="module")
def engines(et_open_files: list[Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, list[Any]]:
    crafted = tmp_path_factory.mktemp("hskip") / "crafted.rules"
    crafted.write_text(CRAFTED)
    cfg = offline.offline_config(None, [], rule_files=[str(f) for f in et_open_files] + [str(crafted)])
    return cfg, build_engines(cfg)


def connections(seed: int, count: int) -> list[bytes]:
    """HTTP-like (client first) and SMTP-like (server first) connections, some out of order on
    the server's side, to ports and servers with and without rules on the SYN+ACK."""
    rng = random.Random(seed)
    cap = Capture()
    for n in range(count):
        port = rng.choice((80, 80, 25, 3389, 8080, 443))
        conv = TcpConversation(cap, (rng.choice(CLIENTS), 30000 + n), (rng.choice(SERVERS), port),
                               rng.uniform(0, 20), rng.uniform(0.001, 0.02), rng)
        conv.open()
        evil = rng.random() < 0.5
        if port == 25:
            conv.send(False, b"220 evil.example ESMTP\r\n" if evil else b"220 mail.example ESMTP\r\n")
            conv.send(True, b"HELO evil\r\n" if evil else b"HELO pc\r\n")
            conv.send(False, b"250 ok\r\n")
        else:
            path = "/evil" if evil else "/index.html"
            conv.send(True, f"GET {path} HTTP/1.1\r\nHost: s{n}.example\r\nAccept: */*\r\n\r\n".encode())
            body = b"EVILBODY" * rng.randint(1, 400) if evil else b"hello" * rng.randint(1, 400)
            conv.send(False, b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        conv.close()
    cap.frames.sort()
    return [f for _, _, f in cap.frames]


def run(cfg: Any, engines: list[Any], frames: list[bytes], *, skip: bool) -> tuple[list[tuple[int, int]], dict[str, int]]:
    """Alerts as (frame index, sid), inline; ``skip``: the simulated kernel keeps the SYN+ACK
    (without payload) of a connection whose SYN passed with the handshake skip."""
    pipe, got, counter = alerting_pipeline(cfg, engines, True)
    kernel = HandshakeSkip()
    offloaded: set[Any] = set()
    stats = {"marked": 0, "kept": 0}
    for i, frame in enumerate(frames):
        counter[0] = i
        pkt = parse_ethernet(frame, 1000.0 + i * 1e-4)
        key = flow_key(pkt)
        if key in offloaded or not kernel.queued(pkt):
            continue
        for rel in pipe.process(pkt, i, pkt.ts):
            if rel.offload:
                offloaded.add(key)
            if rel.handshake:
                stats["marked"] += 1
                if skip:
                    kernel.mark(pkt)
    stats["kept"] = kernel.kept
    for _ in pipe.tick(float("inf")):
        pass
    return got, stats


@pytest.mark.parametrize("seed", [1, 2])
def test_the_handshake_skip_loses_no_alert(engines: tuple[Any, list[Any]], seed: int) -> None:
    cfg, engs = engines
    frames = connections(seed, 300)
    fast, stats = run(cfg, engs, frames, skip=True)
    slow, _ = run(cfg, engs, frames, skip=False)
    assert fast == slow
    sids = {sid for _, sid in fast}
    assert {9300001, 9300002, 9300003, 9300005, 9300006, 9300007, 9300008, 9300009, 9300010, 9300011} <= sids
    assert 9300004 not in sids  # the request is established either way
    # most connections had their SYN+ACK kept; those to 3389, 8080 (window) and 25 (dsize:0), and
    # those from the listed server, did not
    assert stats["kept"] == stats["marked"] and stats["marked"] > 100, stats


def test_which_connections_need_their_synack(engines: tuple[Any, list[Any]]) -> None:
    cfg, engs = engines
    pipe = pipeline_from_config(cfg, lambda rec: None, engines=engs, kernel_offload=True)
    offline_pipe = pipeline_from_config(cfg, lambda rec: None, engines=engs, kernel_offload=False)

    def syn(server: str, port: int, p: Any = pipe) -> bool:
        pkt = parse_ip(bytes(IP(src="192.168.10.10", dst=server) / TCP(sport=40000 + port, dport=port, flags="S")), 1.0)
        return p.process(pkt, 0, 1.0)[0].handshake

    assert syn("198.51.100.20", 80) and syn("198.51.100.20", 443)
    assert syn("198.51.100.20", 3389)  # flags:SA from $HOME_NET 3389: this server is outside
    assert not syn("192.168.10.50", 3389)  # ... this one is in
    assert not syn("198.51.100.20", 8080)  # window:64240 to_client
    assert not syn("198.51.100.66", 80)  # an IP-only rule for the reply direction
    assert not syn("198.51.100.20", 80, offline_pipe)  # offline: every packet is read anyway
    assert pipe.counters["flows.handshake_skipped"] == 3
