"""Fuzz targets for what comes off the wire: packets, the app-layer parsers (DNS, TLS, HTTP, SMTP) fed
in random segmentations, and the whole pipeline as the offline mode drives it."""
from __future__ import annotations

# The parsers are imported here, at the top: the runner imports this module inside atheris'
# instrumentation, and only modules imported then report coverage. What only one target needs is
# imported on its first use and named in its ``modules`` (the runner imports those instrumented).
import json
import struct
import tempfile
from pathlib import Path
from typing import Any

from filters.app.dns import DnsTcpParser, build_response, normalize_name, nxdomain, parse_dns
from filters.app.http import HttpParser
from filters.app.smtp import SmtpParser, looks_like_smtp
from filters.app.tls import TlsError, TlsParser, looks_like_tls, parse_certificate
from filters.flow import flow_key
from filters.packet import Packet, Side, inet_checksum, parse_ethernet, parse_ip, parse_linktype
from tests.fuzz.harness import ErrorWatch, interleave, pieces, rng_for, split2, target

# -- packets ---------------------------------------------------------------------------------------

# The first input byte picks the link type (pcap's LINKTYPE_*); the rest is the frame.
LINKTYPES = (1, 101, 0, 113, 276, 228, 229, 12, 14, 108, 147)


def check_packet(pkt: object) -> None:
    assert isinstance(pkt, Packet)
    assert pkt.anomaly != "parse.internal_error", "the packet parser hit an internal error"
    assert type(pkt.raw) is bytes and type(pkt.payload) is bytes and type(pkt.tcp_options) is bytes
    assert 0 <= pkt.l4_offset <= len(pkt.raw)
    assert pkt.version in (0, 4, 6)
    assert 0 <= pkt.sport <= 0xFFFF and 0 <= pkt.dport <= 0xFFFF
    pkt.src_ip, pkt.dst_ip  # noqa: B018 - what the EVE records of malformed packets print
    if pkt.anomaly is None and pkt.version:
        assert len(pkt.src_addr) == len(pkt.dst_addr) == (4 if pkt.version == 4 else 16)
        assert pkt.payload in pkt.raw
        flow_key(pkt)


@target("packet", "filters.packet.parse_linktype / parse_ethernet / parse_ip", max_len=2048, ci_runs=15000)
def fuzz_packet(data: bytes) -> None:
    if not data:
        return
    frame = data[1:]
    check_packet(parse_linktype(frame, LINKTYPES[data[0] % len(LINKTYPES)]))
    check_packet(parse_ethernet(frame))
    check_packet(parse_ip(frame))


# -- DNS -------------------------------------------------------------------------------------------

A_RDATA = (1, b"\xc0\x00\x02\x02")
AAAA_RDATA = (28, b"\x20\x01\x0d\xb8" + bytes(11) + b"\x02")


def _check_dns(msg: object) -> None:
    if msg is None:
        return
    for q in msg.questions:  # type: ignore[attr-defined]
        assert isinstance(normalize_name(q.name), str)
    for a in msg.answers:  # type: ignore[attr-defined]
        assert isinstance(normalize_name(a.name), str)


@target("dns", "filters.app.dns.parse_dns / DnsTcpParser.feed / build_response / nxdomain / normalize_name",
        ci_runs=8000)
def fuzz_dns(data: bytes) -> None:
    """One UDP payload; the same bytes as the two directions of a TCP flow (2-byte framing), cut at
    random; and the sinkhole answers the box builds for a query."""
    with ErrorWatch():
        msg = parse_dns(data)
        _check_dns(msg)
        if msg is not None and msg.to_server:
            # What the box sends back for a query it sinkholes: a response that parses as one.
            for answer in (nxdomain(data), build_response(data, answers=[A_RDATA, AAAA_RDATA])):
                reply = parse_dns(answer)
                assert reply is not None and not reply.to_server and reply.txid == msg.txid, answer
                assert not reply.truncated, answer
        rng = rng_for(data)
        client, server = split2(data)
        whole = DnsTcpParser()
        expected = [m for to_server, stream in ((True, client), (False, server)) for m in whole.feed(to_server, stream)]
        cut = DnsTcpParser()
        got = [m for to_server, piece in interleave(rng, client, server) for m in cut.feed(to_server, piece)]
        for m in got:
            _check_dns(m)
        if not whole.failed and not cut.failed:  # the framing is independent of segmentation
            assert sorted(map(repr, got)) == sorted(map(repr, expected))


# -- TLS -------------------------------------------------------------------------------------------


@target("tls", "filters.app.tls.TlsParser.feed / looks_like_tls / parse_certificate", ci_runs=6000)
def fuzz_tls(data: bytes) -> None:
    client, server = split2(data)
    looks_like_tls(client)
    looks_like_tls(server)
    rng = rng_for(data)
    with ErrorWatch():
        parser = TlsParser()
        for to_server, piece in interleave(rng, client, server):
            for hello in parser.feed(to_server, piece):
                assert hello.to_server == to_server
        assert "tls.parser_error" not in parser.anomalies, parser.anomalies
        # The certificate decoder on its own: the server stream as one DER certificate.
        try:
            parse_certificate(server or client)
        except TlsError:
            pass


# -- HTTP ------------------------------------------------------------------------------------------


def _tx_view(parser: HttpParser) -> list[tuple[object, ...]]:
    return [
        (tx.method, tx.uri_raw, tx.uri, tx.protocol, tx.request_headers, tx.host, tx.request_body,
         tx.request_done, tx.request_body_truncated)
        for tx in parser.transactions
    ]


@target("http", "filters.app.http.HttpParser.feed / gap / close (both directions, random segmentation)",
        max_len=8192, ci_runs=1000)
def fuzz_http(data: bytes) -> None:
    """Request and response streams interleaved in random pieces, sometimes with a gap; and the
    request stream alone, whole and cut, which must give the same transactions."""
    client, server = split2(data)
    rng = rng_for(data)
    small = rng.random() < 0.5  # small limits reach the limit paths with short inputs
    limits = dict(request_body_limit=64, response_body_limit=64, max_header_line=256, max_headers=16,
                  max_transactions=4, max_decompressed=4096) if small else {}
    with ErrorWatch():
        parser = HttpParser(decompress_layers=rng.choice([0, 1, 2]), **limits)
        gap_at = rng.randrange(8) if rng.random() < 0.2 else -1
        for i, (to_server, piece) in enumerate(interleave(rng, client, server)):
            if i == gap_at:
                parser.gap(to_server, rng.choice([1, 100, 1 << 20]))
            parser.feed(to_server, piece)
        parser.close()
        assert not parser.counters.get("http.parser_error"), parser.counters
        if gap_at < 0 and not small:
            whole = HttpParser()
            whole.feed(True, client)
            cut = HttpParser()
            for piece in pieces(rng, client):
                cut.feed(True, piece)
            assert _tx_view(cut) == _tx_view(whole), "request parsing depends on the segmentation"


# -- SMTP ------------------------------------------------------------------------------------------


@target("smtp", "filters.app.smtp.SmtpParser.feed / looks_like_smtp (both directions, random segmentation)",
        ci_runs=4000)
def fuzz_smtp(data: bytes) -> None:
    client, server = split2(data)
    looks_like_smtp(client, True)
    looks_like_smtp(server, None)
    rng = rng_for(data)
    with ErrorWatch():
        parser = SmtpParser(max_message=rng.choice([64, 1 << 20]))
        for to_server, piece in interleave(rng, client, server):
            parser.feed(to_server, piece)
        assert "smtp.parser_error" not in parser.anomalies, parser.anomalies


# -- the pipeline ----------------------------------------------------------------------------------
#
# Driven as the offline mode (agent/offline/replay.py) drives it: every packet through
# ``Pipeline.process``, engine I/O answered at once, ``tick`` at the end. The engines are the real
# ones with every engine on: firewall, threat protection (a feed), IPS (rules on every buffer
# kind), the web filter (a category folder and center look-ups) and the probe (held flows).

PIPE_RULES = r"""
alert http any any -> any any (msg:"uri"; http.uri; content:"/admin"; sid:1;)
alert http any any -> any any (msg:"ua"; http.user_agent; content:"curl"; nocase; sid:2;)
drop http any any -> any any (msg:"body"; flow:to_server; http.request_body; content:"EVIL"; sid:3;)
alert http any any -> any any (msg:"resp"; http.stat_code; content:"500"; sid:4;)
alert http any any -> any any (msg:"file"; file.data; content:"MZ"; startswith; sid:5;)
alert http any any -> any any (msg:"hdr"; http.header; content:"X-Evil|3a|"; pcre:"/x-evil:\s*\d+/i"; sid:6;)
alert tls any any -> any any (msg:"sni"; tls.sni; content:"evil"; sid:7;)
alert tls any any -> any any (msg:"ja3"; ja3.string; content:"771,"; startswith; sid:8;)
alert tls any any -> any any (msg:"cert"; tls.cert_subject; content:"CN="; sid:9;)
alert dns any any -> any any (msg:"dns"; dns.query; content:"evil"; nocase; sid:10;)
alert tcp any any -> any 21 (msg:"ftp"; flow:established,to_server; content:"PASS "; depth:5; sid:11;)
alert tcp any any -> any any (msg:"stream"; flow:established; content:"|de ad be ef|"; byte_test:1,>,0x10,0,relative; sid:12;)
alert tcp any any -> any any (msg:"bits set"; content:"LOGIN"; flowbits:set,login; flowbits:noalert; sid:13;)
alert tcp any any -> any any (msg:"bits isset"; content:"OK"; flowbits:isset,login; sid:14;)
alert ip any any -> any any (msg:"ttl"; ttl:1; sid:15;)
alert tcp any any -> any any (msg:"b64"; content:"data="; base64_decode:relative; base64_data; content:"evil"; sid:16;)
alert udp any any -> any 53 (msg:"udp"; content:"|01 00 00 01|"; offset:2; depth:4; sid:17;)
alert http any any -> any any (msg:"threshold"; http.method; content:"POST"; threshold:type limit,track by_src,count 1,seconds 60; sid:18;)
drop tcp any any -> any 25 (msg:"smtp"; flow:to_server; content:"MAIL FROM|3a|<evil"; nocase; sid:19;)
"""

# (proto, server port) by the low 4 bits of the selector byte.
SERVICES = ((6, 80), (6, 443), (6, 25), (6, 53), (17, 53), (6, 21), (6, 23), (6, 8080),
            (17, 443), (6, 853), (6, 5555), (17, 123), (6, 8000), (6, 587), (1, 0), (47, 0))
LAN4, WAN4 = bytes([192, 0, 2, 10]), bytes([198, 51, 100, 7])
LAN6, WAN6 = bytes.fromhex("20010db8000100000000000000000010"), bytes.fromhex("20010db8ffff00000000000000000007")
PKT_SEP = b"\n=====pkt=====\n"

_pipe: dict[str, Any] = {}


def _pipe_setup() -> dict[str, Any]:
    """Config and engines, built once per process (rule compilation takes a moment)."""
    if _pipe:
        return _pipe
    from agent.config import parse_config
    from agent.engines import build_engines

    root = Path(tempfile.mkdtemp(prefix="vcr-fuzz-pipeline-"))
    (root / "rules.rules").write_text(PIPE_RULES)
    (root / "feed.txt").write_text("198.51.100.66\nevil-cc.example\nhttp://198.51.100.7/malware.exe\n"
                                   "2001:db8:ffff::66\n198.51.100.7:4444\n")
    for cat, names in {"malware": "evil.example\n198.51.100.99\n", "phishing": "phish.example\n",
                       "doh": "dns.example\n"}.items():
        (root / "webcat" / cat).mkdir(parents=True)
        (root / "webcat" / cat / "domains").write_text(names)
    (root / "webcat" / "malware" / "urls").write_text("download.example/bad\n")
    (root / "token.json").write_text('{"token": "t"}')
    (root / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n")  # never used: no I/O
    cfg = parse_config({
        "settings_sheet": {"management_ip": "192.0.2.2/24", "gateway": "192.0.2.1",
                           "management_ipv6": "2001:db8:1::2/64"},
        "home_net": ["192.0.2.0/24", "2001:db8:1::/64"],
        "dataplane": {"hold": {"max_packets_per_flow": 8, "max_bytes": 1 << 16},
                      "flows": {"max_flows": 1000, "stream_depth": 4096}},
        "app_layer": {"http": {"request_body_limit": 512, "response_body_limit": 512}},
        "engines": {
            "firewall": {"enabled": True, "rules": [
                {"name": "telnet", "from": "lan", "to": "wan", "service": "tcp/23", "action": "reject"},
                {"name": "ntp", "from": "lan", "to": "wan", "service": "udp/123", "action": "log"}]},
            "atp": {"enabled": True, "feeds": [str(root / "feed.txt")], "allow_documentation_addresses": True},
            "ips": {"enabled": True, "rule_files": [str(root / "rules.rules")]},
            "webfilter": {"enabled": True, "database": str(root / "webcat"), "deny": ["deny.example"],
                          "lookup": {"enabled": True, "url": "https://127.0.0.1:9/category",
                                     "auth_file": str(root / "token.json"), "ca_file": str(root / "ca.pem")}},
            "probe": {"enabled": True, "ports": [8080], "url": "http://127.0.0.1:9/verdict"},
        },
    })
    engines = build_engines(cfg)
    assert {e.name for e in engines} == {"firewall", "atp", "ips", "webfilter", "probe"}
    _pipe.update(cfg=cfg, engines=engines, root=root)
    return _pipe


def _ip(v6: bool, src: bytes, dst: bytes, proto: int, l4: bytes, *, ttl: int = 64, ident: int = 0,
        frag: int = 0, mf: bool = False) -> bytes:
    if v6:
        return struct.pack("!IHBB", 6 << 28, len(l4), proto, ttl) + src + dst + l4
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), ident, (0x2000 if mf else 0) | (frag >> 3),
                      ttl, proto, 0, src, dst)
    return hdr[:10] + struct.pack("!H", inet_checksum(hdr)) + hdr[12:] + l4


def _tcp(sport: int, dport: int, seq: int, ack: int, flags: int, payload: bytes = b"", opts: bytes = b"") -> bytes:
    opts += bytes(-len(opts) % 4)
    return struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, (5 + len(opts) // 4) << 4,
                       flags, 65535, 0, 0) + opts + payload


def _udp(sport: int, dport: int, payload: bytes) -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


SYN, FIN, RST, PSH, ACK = 0x02, 0x01, 0x04, 0x08, 0x10
SYN_OPTS = bytes.fromhex("020405b4") + bytes.fromhex("01030307") + bytes.fromhex("0402")


def _conversation(sel: int, client: bytes, server: bytes, rng: Any) -> list[tuple[bytes, bool]]:
    """(L3 packet, from the client) for one flow carrying the two streams, with TCP's usual trouble:
    reordering, retransmissions with other bytes, losses, fragments, a missing handshake, an end."""
    proto, port = SERVICES[sel & 0x0F]
    v6 = bool(sel & 0x10)
    lan, wan = (LAN6, WAN6) if v6 else (LAN4, WAN4)
    c_addr, s_addr = (wan, lan) if sel & 0x20 else (lan, wan)
    cport = 1024 + rng.randrange(60000)
    out: list[tuple[bytes, bool]] = []

    def send(from_client: bool, l4: bytes, **kw: Any) -> None:
        src, dst = (c_addr, s_addr) if from_client else (s_addr, c_addr)
        out.append((_ip(v6, src, dst, proto, l4, **kw), from_client))

    if proto == 17:
        for to_server, piece in interleave(rng, client, server):
            send(to_server, _udp(cport, port, piece) if to_server else _udp(port, cport, piece))
        return out
    if proto != 6:
        for to_server, piece in interleave(rng, client, server):
            send(to_server, piece)
        return out
    isn = {True: rng.getrandbits(32), False: rng.getrandbits(32)}
    nxt = {True: isn[True] + 1, False: isn[False] + 1}

    def seg(from_client: bool, flags: int, payload: bytes = b"", seq: int | None = None, opts: bytes = b"") -> bytes:
        s = nxt[from_client] if seq is None else seq
        ports = (cport, port) if from_client else (port, cport)
        return _tcp(*ports, s, nxt[not from_client], flags, payload, opts)

    if not sel & 0x80:  # the handshake (else the flow is picked up midstream)
        send(True, seg(True, SYN, seq=isn[True], opts=SYN_OPTS))
        send(False, seg(False, SYN | ACK, seq=isn[False], opts=SYN_OPTS))
        send(True, seg(True, ACK))
    late: list[tuple[bool, bytes]] = []
    for to_server, piece in interleave(rng, client, server):
        roll = rng.random()
        l4 = seg(to_server, PSH | ACK, piece)
        nxt[to_server] += len(piece)
        if roll < 0.05:
            continue  # lost
        if roll < 0.12:
            late.append((to_server, l4))  # arrives after the next segment
            continue
        if roll < 0.17:  # a retransmission with other bytes: the first copy wins
            send(to_server, seg(to_server, PSH | ACK, bytes(b ^ 0x20 for b in piece), seq=nxt[to_server] - len(piece)))
        if roll < 0.20 and not v6 and len(l4) > 16:  # IPv4 fragments
            cut = 8 * rng.randint(1, max(1, (len(l4) - 1) // 8))
            ident = rng.getrandbits(16)
            send(to_server, l4[:cut], ident=ident, mf=True)
            send(to_server, l4[cut:], ident=ident, frag=cut)
        elif roll < 0.22:
            send(to_server, seg(to_server, PSH | ACK, piece, seq=nxt[to_server] + rng.getrandbits(31)))  # bogus seq
        else:
            send(to_server, l4)
        while late and rng.random() < 0.7:
            d, l4 = late.pop(0)
            send(d, l4)
    for d, l4 in late:
        send(d, l4)
    end = rng.randrange(4)
    if end == 0:
        send(True, seg(True, FIN | ACK))
        send(False, seg(False, FIN | ACK))
        nxt[True] += 1
        nxt[False] += 1
        send(True, seg(True, ACK))
    elif end == 1:
        send(rng.random() < 0.5, seg(True, RST))
    return out


def _fake_io(req: Any, rng: Any) -> tuple[Any, str | None]:
    """What the performer (agent/dataplane/performers.py) could answer, without I/O: a result of the
    type it returns (category_lookup: a dict it validated; http_get: the body text), or an error."""
    if rng.randrange(4) == 0:
        return None, "fuzz: no I/O here"
    if req.kind == "category_lookup":
        return {"categories": rng.choice([[], ["malware"], ["news", "phishing"], ["doh"]]),
                "ttl": rng.choice([1, 600])}, None
    return rng.choice(["allow", "block", "", "garbage", " allow\n"]), None


@target("pipeline", "filters.pipeline.Pipeline.process / take_io / io_done / tick with every engine on "
        "(packets of one flow from two streams, or raw packets)", max_len=4096, ci_runs=300,
        modules=("agent.config", "agent.dataplane.worker", "agent.engines", "filters.pipeline", "filters.registry"))
def fuzz_pipeline(data: bytes) -> None:
    from agent.dataplane.worker import pipeline_from_config
    from filters.pipeline import Release

    setup = _pipe_setup()
    rng = rng_for(data)
    sel, body = (data[0], data[1:]) if data else (0, b"")
    if sel & 0x40:  # raw mode: the body is L3 packets
        packets = [(p, rng.random() < 0.5) for p in body.split(PKT_SEP)]
    else:
        packets = _conversation(sel, *split2(body), rng)

    def emit(rec: dict[str, Any]) -> None:
        json.dumps(rec, ensure_ascii=False, separators=(",", ":"))  # as the offline mode writes EVE

    with ErrorWatch():
        pipeline = pipeline_from_config(setup["cfg"], emit, engines=setup["engines"], ips=bool(sel & 1))
        released: list[Release] = []
        now = 1_700_000_000.0
        for token, (raw, from_client) in enumerate(packets):
            now += rng.choice([0.0, 0.001, 0.5, 3.0]) if rng.random() < 0.3 else 0.0001
            pkt = parse_ip(raw, now, Side.LAN if from_client else Side.WAN)
            released += pipeline.process(pkt, token, now)
            for hold_id, req in pipeline.take_io():
                if rng.random() < 0.85:
                    result, error = _fake_io(req, rng)
                    released += pipeline.io_done(hold_id, result, error, now)
            if rng.random() < 0.1:
                released += pipeline.tick(now)
        released += pipeline.tick(float("inf"))
        for hold_id, req in pipeline.take_io():  # results after the holds timed out
            pipeline.io_done(hold_id, *_fake_io(req, rng))
        tokens = sorted(r.token for r in released)
        assert tokens == list(range(len(packets))), f"packets not released exactly once: {tokens}"
        errors = {k: v for k, v in pipeline.counters.items() if k.startswith("errors.")}
        if pipeline.app is not None:
            errors.update({k: v for k, v in pipeline.app.counters.items() if k.startswith("errors.")})
        assert not errors, errors
