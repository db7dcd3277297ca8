"""Injected packets: mirrored addresses and sequence numbers, valid checksums (checked by scapy)."""
from __future__ import annotations

from scapy.layers.dns import DNS, DNSQR
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6

from agent.dataplane.inject import build
from filters.engine import Inject, InjectKind
from filters.packet import Side, parse_ip


def _valid(raw: bytes) -> IP | IPv6:
    """scapy's view of a packet, after checking its checksums by recomputing them."""
    layer = IP(raw) if raw[0] >> 4 == 4 else IPv6(raw)
    again = layer.copy()
    for part in (again.getlayer(IP), again.getlayer(TCP), again.getlayer(UDP)):
        if part is not None:
            del part.chksum
    rebuilt = type(layer)(bytes(again))
    for a, b in ((layer.getlayer(IP), rebuilt.getlayer(IP)), (layer.getlayer(TCP), rebuilt.getlayer(TCP)), (layer.getlayer(UDP), rebuilt.getlayer(UDP))):
        if a is not None:
            assert a.chksum == b.chksum
    return layer


def test_dns_sinkhole_answer_goes_back_to_the_client():
    q = IP(src="192.0.2.11", dst="198.51.100.53") / UDP(sport=40000, dport=53) / DNS(id=0x1234, rd=1, qd=DNSQR(qname="evil.example"))
    pkt = parse_ip(bytes(q), 1.0, Side.LAN)
    (raw,) = build(pkt, Inject(InjectKind.DNS_ANSWER, {"answers": [(1, bytes([192, 0, 2, 2]))], "ttl": 30}))
    r = _valid(raw)
    assert (r[IP].src, r[IP].dst, r[UDP].sport, r[UDP].dport) == ("198.51.100.53", "192.0.2.11", 53, 40000)
    assert r[DNS].id == 0x1234 and r[DNS].qr == 1 and r[DNS].an[0].rdata == "192.0.2.2" and r[DNS].an[0].ttl == 30
    (nx,) = build(pkt, Inject(InjectKind.DNS_ANSWER, {"rcode": 3}))
    assert _valid(nx)[DNS].rcode == 3


def test_block_page_and_reset_for_http_over_ipv6():
    req = b"GET / HTTP/1.1\r\nHost: evil.example\r\n\r\n"
    p = IPv6(src="2001:db8:1::11", dst="2001:db8:100::10") / TCP(sport=40001, dport=80, flags="PA", seq=1000, ack=5000) / req
    pkt = parse_ip(bytes(p), 1.0, Side.LAN)
    out = build(pkt, Inject(InjectKind.HTTP_BLOCK_PAGE, {"html": "<p>ブロックされました / blocked</p>" * 100}))
    page, rst = [_valid(r) for r in out[:-1]], _valid(out[-1])
    body = b"".join(bytes(r[TCP].payload) for r in page)
    assert body.startswith(b"HTTP/1.1 403 Forbidden") and "ブロック".encode() in body
    assert page[0][TCP].seq == 5000 and page[0][TCP].ack == 1000 + len(req)
    assert all(page[i + 1][TCP].seq == page[i][TCP].seq + len(page[i][TCP].payload) for i in range(len(page) - 1))
    assert "F" in str(page[-1][TCP].flags) and all(r[IPv6].dst == "2001:db8:1::11" for r in page)
    assert rst[IPv6].dst == "2001:db8:100::10" and "R" in str(rst[TCP].flags) and rst[TCP].seq == 1000


def test_resets_to_both_sides():
    p = IP(src="192.0.2.11", dst="198.51.100.10") / TCP(sport=40002, dport=443, flags="PA", seq=7, ack=9) / (b"\x16\x03\x01" + b"x" * 50)
    pkt = parse_ip(bytes(p), 1.0, Side.LAN)
    to_client, to_server = [_valid(r) for r in build(pkt, Inject(InjectKind.TCP_RESET, {"sender": True, "receiver": True}))]
    assert to_client[IP].dst == "192.0.2.11" and to_client[TCP].seq == 9
    assert to_server[IP].dst == "198.51.100.10" and to_server[TCP].seq == 7
    assert build(pkt, Inject(InjectKind.TCP_RESET, {"sender": False, "receiver": True}))[0][16:20] == bytes([198, 51, 100, 10])


def test_antivirus_block_page_replaces_the_start_of_a_response():
    """``replace``: the judged packet is the server's (the response); the page goes to the client at
    its sequence number, the server is reset."""
    resp = b"HTTP/1.1 200 OK\r\nContent-Length: 68\r\n\r\n" + b"X" * 68
    p = IP(src="198.51.100.10", dst="192.0.2.11") / TCP(sport=80, dport=40001, flags="PA", seq=5000, ack=1000) / resp
    pkt = parse_ip(bytes(p), 1.0, Side.WAN)
    raws = build(pkt, Inject(InjectKind.HTTP_BLOCK_PAGE, {"html": "<p>virus</p>", "replace": True}))
    pkts = [_valid(r) for r in raws]
    page, reset = pkts[:-1], pkts[-1]
    assert all((x[IP].src, x[IP].dst, x[TCP].sport, x[TCP].dport) == ("198.51.100.10", "192.0.2.11", 80, 40001) for x in page)
    assert page[0][TCP].seq == 5000 and page[0][TCP].ack == 1000 and bytes(page[0][TCP].payload).startswith(b"HTTP/1.1 ")
    assert b"<p>virus</p>" in b"".join(bytes(x[TCP].payload) for x in page) and page[-1][TCP].flags.F
    assert (reset[IP].src, reset[IP].dst, reset[TCP].dport) == ("192.0.2.11", "198.51.100.10", 80)
    assert reset[TCP].flags.R and reset[TCP].seq == 1000 and reset[TCP].ack == 5000 + len(resp)
