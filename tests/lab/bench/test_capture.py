"""lab/bench/capture.py: the synthetic capture's TCP conversations and application payloads."""
from __future__ import annotations

import gzip
import random
import socket
from pathlib import Path

from agent.offline.pcapfile import PcapReader
from filters.app.dns import parse_dns
from filters.app.tls import TlsParser
from filters.packet import parse_linktype
from lab.bench.capture import Capture, TcpConversation, _add_dns, http_response, tls_client_hello


def test_tcp_conversation_is_consistent(tmp_path: Path) -> None:
    cap = Capture()
    client, server = (socket.inet_aton("192.168.10.10"), 40_000), (socket.inet_aton("198.51.100.20"), 80)
    conv = TcpConversation(cap, client, server, 1.0, 0.01, random.Random(1))
    conv.open()
    conv.send(True, b"GET / HTTP/1.1\r\n\r\n")
    conv.send(False, b"x" * 4000)
    conv.close()
    pcap = tmp_path / "t.pcap"
    assert cap.write(pcap)[0] == len(cap.frames)
    with PcapReader(pcap) as reader:
        pkts = [parse_linktype(r.data, r.linktype, r.ts) for r in reader]
    assert [p.anomaly for p in pkts] == [None] * len(pkts)
    data = [p for p in pkts if p.payload]
    assert [len(p.payload) for p in data] == [18, 1460, 1460, 1080]
    # every data segment starts where the previous one of its direction ended, and the peer's
    # acknowledgements never run ahead of what was sent
    sent = {}
    for p in pkts:
        if p.tcp_flags & 0x01:  # FIN: the last ACK acknowledges it too
            break
        if p.payload:
            assert sent.get(p.src_addr, p.seq) == p.seq
            sent[p.src_addr] = p.seq + len(p.payload)
        elif p.tcp_flags == 0x10 and p.dst_addr in sent:
            assert p.ack <= sent[p.dst_addr]
    assert pkts[0].tcp_flags == 0x02 and pkts[1].ack == pkts[0].seq + 1
    assert sum(1 for p in pkts if p.src_addr == server[0] and not p.payload) >= 2  # SYN/ACK, FIN
    assert [p.ts for p in pkts] == sorted(p.ts for p in pkts)


def test_app_payload_builders() -> None:
    rng = random.Random(2)
    hello = tls_client_hello(rng, "www.example.com")
    parsed = TlsParser().feed(True, hello)
    assert len(parsed) == 1 and parsed[0].sni == b"www.example.com"
    resp = http_response(rng, b"<html>" * 100, gzipped=True)
    head, body = resp.split(b"\r\n\r\n", 1)
    assert b"Content-Encoding: gzip" in head and f"Content-Length: {len(body)}".encode() in head
    assert gzip.decompress(body) == b"<html>" * 100


def test_dns_queries_and_their_answers(tmp_path: Path) -> None:
    from collections import Counter

    cap, counts = Capture(), Counter()
    _add_dns(cap, random.Random(3), counts)
    pcap = tmp_path / "dns.pcap"
    cap.write(pcap)
    with PcapReader(pcap) as reader:
        pkts = [parse_linktype(r.data, r.linktype, r.ts) for r in reader]
    assert len(pkts) == 2 * counts["dns queries"] and all(p.anomaly is None for p in pkts)
    msgs = [parse_dns(p.payload, p.dport == 53) for p in pkts if p.dport == 53 or p.sport == 53]
    queries = {m.txid: m for m in msgs if m is not None and m.to_server}
    answers = [m for m in msgs if m is not None and not m.to_server]
    assert len(queries) > counts["dns queries"] * 0.95 and len(answers) == counts["dns queries"]
    for a in answers:
        assert a.questions[0].name == queries[a.txid].questions[0].name and 1 <= len(a.answers) <= 3
        assert all(r.rrtype == 1 and r.ttl == 300 and len(r.data) == 4 for r in a.answers)
