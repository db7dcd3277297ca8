"""The seed corpus: small valid (and a few odd) inputs per target, so fuzzing starts deep in the parsers.

``python -m tests.fuzz seeds`` writes them to ``tests/fuzz/corpus/<target>/seed-*`` (committed).
Files named ``crash-*`` there are regression inputs of fixed bugs: never generated, never removed.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import struct
import tarfile
import zlib
from pathlib import Path

from tests.fuzz.harness import CORPUS, SEP

SAMPLES = Path(__file__).resolve().parents[1] / "filters" / "threatintel_samples"
ROOT = Path(__file__).resolve().parents[2]

# -- packets ---------------------------------------------------------------------------------------


def packet_seeds() -> dict[str, bytes]:
    from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption, fragment
    from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6, IPv6ExtHdrFragment, IPv6ExtHdrHopByHop, IPv6ExtHdrRouting
    from scapy.layers.l2 import CookedLinux, CookedLinuxV2, Dot1AD, Dot1Q, Ether

    from tests.fuzz.targets_wire import LINKTYPES

    opts = [("MSS", 1460), ("NOP", None), ("WScale", 7), ("SAckOK", b""), ("Timestamp", (1, 2))]
    tcp4 = IP(src="192.0.2.10", dst="198.51.100.7") / TCP(sport=40000, dport=80, flags="PA", options=opts) / b"GET / HTTP/1.1\r\n\r\n"
    udp4 = IP(src="192.0.2.10", dst="198.51.100.7", options=IPOption(b"\x01\x01\x01\x00")) / UDP(sport=5353, dport=53) / b"query"
    icmp4 = IP(src="192.0.2.10", dst="198.51.100.7") / ICMP() / b"ping"
    frag4 = fragment(IP(src="192.0.2.10", dst="198.51.100.7") / UDP() / (b"x" * 100), fragsize=48)[1]
    tcp6 = IPv6(src="2001:db8:1::10", dst="2001:db8:ffff::7") / TCP(sport=40000, dport=443, flags="S", options=opts)
    ext6 = IPv6(dst="2001:db8::1") / IPv6ExtHdrHopByHop() / IPv6ExtHdrRouting(addresses=["2001:db8::2"]) / UDP() / b"u"
    frag6 = IPv6(dst="2001:db8::1") / IPv6ExtHdrFragment(offset=0, m=1, id=7) / UDP() / b"frag"
    icmp6 = IPv6(dst="2001:db8::1") / ICMPv6EchoRequest(data=b"abc")

    def lt(linktype: int) -> bytes:
        return bytes([LINKTYPES.index(linktype)])

    return {
        "eth-tcp4": lt(1) + bytes(Ether() / tcp4),
        "eth-vlan-udp4-opts": lt(1) + bytes(Ether() / Dot1Q(vlan=5) / udp4),
        "eth-qinq-ipv6-ext": lt(1) + bytes(Ether(type=0x88A8) / Dot1AD(vlan=1) / Dot1Q(vlan=2) / ext6),
        "sll-icmp4": lt(113) + bytes(CookedLinux() / icmp4),
        "sll2-tcp6": lt(276) + bytes(CookedLinuxV2(proto=0x86DD) / tcp6),
        "null-tcp4": lt(0) + b"\x02\x00\x00\x00" + bytes(tcp4),
        "raw-frag4": lt(101) + bytes(frag4),
        "raw6-frag6": lt(229) + bytes(frag6),
        "raw4-icmp6-mismatch": lt(228) + bytes(icmp6),
    }


# -- DNS -------------------------------------------------------------------------------------------


def _qname(name: str) -> bytes:
    return b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"


def dns_query(name: str, qtype: int = 1, txid: int = 0x1234) -> bytes:
    return struct.pack("!HHHHHH", txid, 0x0100, 1, 0, 0, 0) + _qname(name) + struct.pack("!HH", qtype, 1)


def dns_response(name: str, txid: int = 0x1234) -> bytes:
    q = _qname(name) + struct.pack("!HH", 1, 1)
    cname = struct.pack("!HHHIH", 0xC00C, 5, 1, 60, 6) + b"\x03cdn\xc0\x0c"
    a = struct.pack("!HHHIH", 0xC000 | (12 + len(q)), 1, 1, 60, 4) + bytes([198, 51, 100, 9])
    aaaa = struct.pack("!HHHIH", 0xC00C, 28, 1, 60, 16) + bytes(15) + b"\x01"
    return struct.pack("!HHHHHH", txid, 0x8180, 1, 3, 0, 0) + q + cname + a + aaaa


def _tcp_framed(*msgs: bytes) -> bytes:
    return b"".join(struct.pack("!H", len(m)) + m for m in msgs)


def dns_seeds() -> dict[str, bytes]:
    loop = struct.pack("!HHHHHH", 1, 0x0100, 1, 0, 0, 0) + b"\xc0\x0c" + struct.pack("!HH", 1, 1)
    return {
        "query-a": dns_query("evil.example"),
        "query-aaaa-idn": dns_query("xn--bcher-kva.example", 28),
        "query-utf8": dns_query("b\u00fccher.example".encode().decode("latin-1")),
        "response": dns_response("www.example"),
        "pointer-loop": loop,
        "tcp-pair": _tcp_framed(dns_query("a.example"), dns_query("b.example", 28)) + SEP
        + _tcp_framed(dns_response("a.example")),
    }


# -- TLS -------------------------------------------------------------------------------------------


def _ext(etype: int, body: bytes) -> bytes:
    return struct.pack("!HH", etype, len(body)) + body


def _vec(n: int, body: bytes) -> bytes:
    return len(body).to_bytes(n, "big") + body


def client_hello(sni: bytes = b"www.example.com", tls13: bool = True) -> bytes:
    exts = _ext(0, _vec(2, b"\x00" + _vec(2, sni)))
    exts += _ext(16, _vec(2, _vec(1, b"h2") + _vec(1, b"http/1.1")))
    exts += _ext(10, _vec(2, b"\x00\x1d\x00\x17\x0a\x0a"))
    exts += _ext(11, _vec(1, b"\x00"))
    if tls13:
        exts += _ext(43, _vec(1, b"\x03\x04\x03\x03"))
    body = b"\x03\x03" + bytes(32) + _vec(1, b"") + _vec(2, b"\x13\x01\xc0\x2f\x1a\x1a") + _vec(1, b"\x00") + _vec(2, exts)
    return b"\x01" + _vec(3, body)


def server_hello(tls13: bool) -> bytes:
    exts = _ext(43, b"\x03\x04") if tls13 else b""
    body = b"\x03\x03" + bytes(32) + _vec(1, b"") + b"\xc0\x2f\x00" + _vec(2, exts)
    return b"\x02" + _vec(3, body)


def self_signed_der() -> bytes:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.derive_private_key(1234567, ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "JP"), x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Fuzz"),
                      x509.NameAttribute(NameOID.COMMON_NAME, "www.example.com")])
    when = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(0x0A1B2C).not_valid_before(when).not_valid_after(when + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("www.example.com"), x509.DNSName("example.com")]), False)
            .sign(key, hashes.SHA256()))
    from cryptography.hazmat.primitives.serialization import Encoding

    return cert.public_bytes(Encoding.DER)


def _record(ctype: int, body: bytes) -> bytes:
    return struct.pack("!BHH", ctype, 0x0303, len(body)) + body


def tls_seeds() -> dict[str, bytes]:
    der = self_signed_der()
    cert_msg = b"\x0b" + _vec(3, _vec(3, _vec(3, der)))
    done = b"\x0e\x00\x00\x00"
    ch = client_hello()
    return {
        "tls13": _record(22, ch) + SEP + _record(22, server_hello(True)) + _record(20, b"\x01") + _record(23, b"x" * 20),
        "tls12-cert": _record(22, client_hello(b"shop.example", False)) + SEP
        + _record(22, server_hello(False) + cert_msg + done) + _record(20, b"\x01"),
        "split-handshake": _record(22, ch[:40]) + _record(22, ch[40:]) + SEP + _record(22, server_hello(False))
        + _record(22, cert_msg),
        "cert-only": SEP + der,
    }


# -- HTTP ------------------------------------------------------------------------------------------


def http_seeds() -> dict[str, bytes]:
    body = b"<html>" + b"hello " * 40 + b"</html>"
    gz = gzip.compress(body, mtime=0)
    deflate = zlib.compress(body)[2:-4]
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in (gz[:30], gz[30:])) + b"0\r\nX-Trailer: 1\r\n\r\n"
    return {
        "get": b"GET /index.html?q=1&r=%41 HTTP/1.1\r\nHost: www.example.com:8080\r\nUser-Agent: curl/8\r\n"
        b"Accept: */*\r\nCookie: a=b\r\n\r\n" + SEP
        + b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: %d\r\n\r\n" % len(body) + body,
        "post-chunked-gzip": b"POST /upload HTTP/1.1\r\nHost: up.example\r\nTransfer-Encoding: chunked\r\n"
        b"Content-Type: application/octet-stream\r\n\r\n5\r\nMZ\x90\x00\x03\r\n0\r\n\r\n" + SEP
        + b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\nContent-Encoding: gzip\r\n\r\n" + chunked,
        "pipelined-deflate": b"GET /a HTTP/1.1\r\nHost: a\r\n\r\nHEAD /b HTTP/1.1\r\nHost: a\r\n\r\n"
        b"GET /c HTTP/1.0\r\n\r\n" + SEP
        + b"HTTP/1.1 200 OK\r\nContent-Encoding: deflate\r\nContent-Length: %d\r\n\r\n" % len(deflate) + deflate
        + b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\nHTTP/1.0 200 OK\r\n\r\nclose-delimited",
        "continue-connect": b"PUT /x HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc"
        b"CONNECT host:443 HTTP/1.1\r\n\r\n\x16\x03\x01" + SEP
        + b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 Established\r\n\r\n\x16\x03\x03",
        "odd": b"GET /../a/./b//c%2e%2E/%u0041 HTTP/1.1\nHost: X.Example.\nFolded: a\n  b\n"
        b"Content-Length: 2\nContent-Length: 3\n\nabcGET\r\n\r\nget /0.9\r\n" + SEP
        + b"HTTP/1.1 200\r\nContent-Encoding: gzip, deflate\r\nContent-Length: 5\r\n\r\nxxxxx\r\nHTTP/1.1 abc\r\n\r\n",
        "upgrade-101": b"GET /ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n" + SEP
        + b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x05hello",
    }


# -- SMTP ------------------------------------------------------------------------------------------


def smtp_seeds() -> dict[str, bytes]:
    return {
        "session": b"EHLO client.example\r\nMAIL FROM:<a@example.com> SIZE=100\r\nRCPT TO:<b@example.org>\r\n"
        b"RCPT TO:c@example.org\r\nDATA\r\nSubject: hi\r\n\r\nbody\r\n..dot\r\n.\r\nQUIT\r\n" + SEP
        + b"220 mx.example ESMTP\r\n250-mx.example\r\n250-PIPELINING\r\n250 CHUNKING\r\n250 ok\r\n250 ok\r\n"
        b"550 no\r\n354 go ahead\r\n250 queued\r\n221 bye\r\n",
        "bdat-auth": b"EHLO x\r\nAUTH LOGIN\r\ndXNlcg==\r\ncGFzcw==\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n"
        b"BDAT 5\r\nhelloBDAT 3 LAST\r\nabcRSET\r\n" + SEP
        + b"220 mx\r\n250 ok\r\n334 VXNlcm5hbWU6\r\n334 UGFzc3dvcmQ6\r\n235 ok\r\n250 ok\r\n250 ok\r\n250 ok\r\n250 ok\r\n250 ok\r\n",
        "starttls": b"EHLO x\r\nSTARTTLS\r\n\x16\x03\x01\x00\x05hello" + SEP + b"220 mx\r\n250 STARTTLS\r\n220 go\r\n",
    }


# -- pipeline --------------------------------------------------------------------------------------


def pipeline_seeds() -> dict[str, bytes]:
    from scapy.layers.inet import IP, TCP, UDP

    from tests.fuzz.targets_wire import PKT_SEP

    http = http_seeds()
    tls = tls_seeds()
    smtp = smtp_seeds()
    raw = PKT_SEP.join(bytes(p) for p in (
        IP(src="192.0.2.10", dst="198.51.100.7") / TCP(sport=1234, dport=80, flags="S"),
        IP(src="198.51.100.7", dst="192.0.2.10") / TCP(sport=80, dport=1234, flags="SA"),
        IP(src="192.0.2.10", dst="198.51.100.7") / TCP(sport=1234, dport=80, flags="PA") / b"GET /admin HTTP/1.1\r\n\r\n",
        IP(src="192.0.2.10", dst="198.51.100.66") / UDP(sport=99, dport=53) / dns_query("evil-cc.example"),
        IP(src="192.0.2.10", dst="198.51.100.7", ttl=1) / TCP(sport=1, dport=2, flags="R"),
    ))
    return {
        "http": b"\x00" + http["get"],
        "http-v6-midstream": bytes([0x90]) + http["post-chunked-gzip"],
        "http-blocked-host": b"\x00" + b"GET /bad HTTP/1.1\r\nHost: download.example\r\n\r\n" + SEP,
        "http-evil-body": b"\x01" + b"POST /admin HTTP/1.1\r\nHost: evil.example\r\nContent-Length: 4\r\n\r\nEVIL" + SEP,
        "tls": b"\x01" + tls["tls12-cert"],
        "tls-evil-sni": b"\x01" + _record(22, client_hello(b"evil.example")) + SEP,
        "smtp": b"\x02" + smtp["session"],
        "dns-tcp": b"\x03" + dns_seeds()["tcp-pair"],
        "dns-udp": b"\x04" + dns_query("phish.example") + SEP + dns_response("phish.example"),
        "dns-udp-lookup": b"\x04" + dns_query("unknown-name.example"),
        "ftp": b"\x05" + b"USER a\r\nPASS secret\r\n" + SEP + b"220 ftp\r\n331 pw\r\n230 ok\r\n",
        "telnet": b"\x06" + b"login" + SEP,
        "probe": b"\x07" + b"GET / HTTP/1.1\r\n\r\n" + SEP + b"HTTP/1.1 200 OK\r\n\r\n",
        "quic": b"\x08" + b"\xc0\x00\x00\x00\x01" + bytes(30),
        "wan-inbound": bytes([0x20 | 10]) + b"hello",
        "icmp": bytes([14]) + b"\x08\x00\x00\x00\x00\x01\x00\x01" + SEP + b"\x00\x00\x00\x00\x00\x01\x00\x01",
        "raw": b"\x40" + raw,
    }


# -- capture files ---------------------------------------------------------------------------------


def _pad4(b: bytes) -> bytes:
    return b + bytes(-len(b) % 4)


def _block(e: str, btype: int, body: bytes) -> bytes:
    body = _pad4(body)
    return struct.pack(e + "II", btype, len(body) + 12) + body + struct.pack(e + "I", len(body) + 12)


def _options(e: str, *opts: tuple[int, bytes]) -> bytes:
    out = b"".join(struct.pack(e + "HH", code, len(v)) + _pad4(v) for code, v in opts)
    return out + struct.pack(e + "HH", 0, 0) if opts else b""


def pcap_seeds() -> dict[str, bytes]:
    from scapy.layers.inet import IP, TCP, UDP
    from scapy.layers.l2 import Ether

    frames = [bytes(Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=1000, dport=80, flags="S")),
              bytes(Ether() / IP(src="10.0.0.2", dst="10.0.0.1") / UDP(sport=53, dport=5353) / b"answer")]
    raw_ip = bytes(IP(src="192.0.2.1", dst="192.0.2.2") / UDP(sport=1, dport=2) / b"raw")

    def classic(e: str, nano: bool, network: int, data: list[bytes]) -> bytes:
        out = struct.pack(e + "IHHiIII", 0xA1B23C4D if nano else 0xA1B2C3D4, 2, 4, 0, 0, 65535, network)
        for i, d in enumerate(data):
            out += struct.pack(e + "IIII", 1700000000 + i, 500, len(d), len(d)) + d
        return out

    def shb(e: str) -> bytes:
        return _block(e, 0x0A0D0D0A, struct.pack(e + "IHHq", 0x1A2B3C4D, 1, 0, -1))

    def idb(e: str, linktype: int, *opts: tuple[int, bytes]) -> bytes:
        return _block(e, 1, struct.pack(e + "HHI", linktype, 0, 0) + _options(e, *opts))

    def epb(e: str, if_id: int, ts: int, data: bytes) -> bytes:
        return _block(e, 6, struct.pack(e + "IIIII", if_id, ts >> 32, ts & 0xFFFFFFFF, len(data), len(data)) + data)

    ng_le = shb("<") + idb("<", 1, (9, b"\x09"), (14, struct.pack("<q", 10))) + epb("<", 0, 1_700_000_000_000_000_000, frames[0])
    ng_le += idb("<", 101) + epb("<", 1, 5, raw_ip) + _block("<", 3, struct.pack("<I", len(frames[1])) + frames[1])
    ng_le += _block("<", 2, struct.pack("<HHIIII", 0, 0, 0, 7, len(frames[1]), len(frames[1])) + frames[1])
    ng_le += _block("<", 0x0BAD, b"unknown block")
    ng_be = shb(">") + idb(">", 1, (9, b"\x86")) + epb(">", 0, 123456, frames[1]) + shb(">") + idb(">", 101) + epb(">", 0, 1, raw_ip)
    return {
        "pcap-le-us": classic("<", False, 1, frames),
        "pcap-be-ns-raw": classic(">", True, 101, [raw_ip]),
        "pcap-truncated": classic("<", False, 1, frames)[:-10],
        "pcapng-le": ng_le,
        "pcapng-be-two-sections": ng_be,
    }


# -- rules -----------------------------------------------------------------------------------------

RULES = r"""# keyword coverage
alert tcp $HOME_NET any -> $EXTERNAL_NET [80,8080:8090,!81] (msg:"content mods"; flow:established,to_server; content:"GET"; depth:3; offset:0; nocase; content:"/x"; distance:1; within:20; fast_pattern; isdataat:2,relative; dsize:>10; classtype:web-application-attack; sid:1000001; rev:2; metadata:created_at 2026_01_01, confidence High; reference:url,example.com;)
alert http any any -> any any (msg:"http buffers"; http.method; content:"POST"; http.uri; content:"/login"; startswith; http.header; content:"User-Agent|3a 20|"; http.request_body; content:"pass="; pcre:"/pass=[^&]{8,}/P"; urilen:>5; sid:1000002;)
alert http any any -> any any (msg:"legacy"; uricontent:"/cgi-bin/"; content:"Host|3a|"; http_header; content:"curl"; http_user_agent; nocase; http.stat_code; content:"200"; sid:1000003;)
alert tcp any any -> any any (msg:"bytes"; content:"|00 01|"; byte_test:2,>,100,0,relative,big; byte_jump:2,0,relative,little,multiplier 2,post_offset -1; byte_extract:1,0,len,relative; content:"x"; within:len; sid:1000004;)
alert tls any any -> any any (msg:"tls"; tls.sni; content:"example"; endswith; ja3.hash; content:"e7d705a3286e19ea42f587b344ee6865"; sid:1000005;)
alert dns any any -> any 53 (msg:"dns"; dns.query; content:"evil"; nocase; bsize:<64; sid:1000006;)
alert tcp any any -> any any (msg:"flowbits"; flowbits:set,a.b; flowbits:noalert; flowint:cnt,+,1; xbits:set,x,track ip_src,expire 60; sid:1000007;)
alert tcp any any -> any any (msg:"thresh"; flags:S,12; threshold:type both,track by_dst,count 5,seconds 60; detection_filter:track by_src,count 3,seconds 10; sid:1000008;)
alert ip any any -> any any (msg:"ip"; ip_proto:!6; ttl:<3; ipopts:rr; fragbits:M+; sameip; sid:1000009;)
alert tcp any any -> any any (msg:"b64"; content:"b64="; base64_decode:bytes 20,offset 0,relative; base64_data; content:"evil"; sid:1000010;)
alert tcp-stream any any -> any any (msg:"stream"; stream_size:client,>,100; app-layer-protocol:!http; content:"|00|"; pcre:"/^\x00{2}/Rsmi"; sid:1000011;)
alert http any any -> any any (msg:"file"; file.data; content:"MZ"; startswith; tag:session,10,packets; noalert; priority:1; gid:1; sid:1000012;)
drop udp [10.0.0.0/8,!10.1.0.0/16] 1024: <> $DNS_SERVERS 53 (msg:"bidir"; content:"|01|"; sid:1000013;)
reject tcp any any -> any 23 (msg:"reject"; target:src_ip; sid:1000014;)
pass http any any -> any any (msg:"pass"; http.host; content:"ok.example"; sid:1000015;)
alert tcp any any -> any any (msg:"multi \
line"; content:"a"; sid:1000016;)
# alert tcp any any -> any any (msg:"commented"; sid:1000017;)
config classification: web-application-attack,Web Application Attack,1
"""


def rules_seeds() -> dict[str, bytes]:
    out = {"keywords": RULES.encode()}
    local = ROOT / "config" / "rules" / "local.rules"
    out["local"] = local.read_bytes()
    for i, line in enumerate(RULES.splitlines()):
        if line.startswith(("alert", "drop", "reject", "pass")) and line.endswith(";)"):
            out[f"rule-{i:02d}"] = line.encode()
    return out


# -- threat intel ----------------------------------------------------------------------------------


def threatintel_seeds() -> dict[str, bytes]:
    from tests.fuzz.targets_files import FEED_FORMATS

    out: dict[str, bytes] = {}
    for folder in sorted(p for p in SAMPLES.iterdir() if p.is_dir()):
        for f in sorted(folder.iterdir()):
            data = f.read_bytes()
            for fmt in (folder.name, None):
                out[f"{folder.name}-{f.stem}-{'named' if fmt else 'detected'}"] = bytes([FEED_FORMATS.index(fmt)]) + data[:3000]
    out["plain-doc-addresses"] = bytes([0x80 | FEED_FORMATS.index("plain")]) + (
        b"198.51.100.66\n203.0.113.0/24\n2001:db8::1\n[2001:db8::2]:443\nhttp://198.51.100.7:8080/x.exe\n"
        b"0.0.0.0 evil.example\nxn--bcher-kva.example\n")
    return out


# -- web filter lists ------------------------------------------------------------------------------


def webcat_seeds() -> dict[str, bytes]:
    return {
        "ut1": b"evil.example\nwww.Phish.Example.\n# comment\n0.0.0.0 hosts.example\n0.0.0.0glued.example\n198.51.100.9\n"
        b"0x7f.1\n[2001:db8::1]\nb\xc3\xbccher.example\n*.wild.example\nbad name\n" + SEP
        + b"download.example/bad\nhttp://www.example.com/ads/\nexample.org/a/../b?x=1\n[2001:db8::1]:8080/p\n"
        b"host:99999/x\n%41.example/%2e%2e/\n",
        "crlf": b"a.example\r\nb.example\r\n\r\n" + SEP + b"c.example/path\r\n",
        "domains-only": b"\n".join(b"site%d.example" % i for i in range(20)),
    }


# -- bundle manifests ------------------------------------------------------------------------------


def manifest_seeds() -> dict[str, bytes]:
    rules = b"alert ip any any -> any any (sid:1;)\n"
    good = {"kind": "ips", "version": "1", "rule_count": 1,
            "files": [{"path": "rules/a.rules", "size": len(rules), "sha256": hashlib.sha256(rules).hexdigest()}]}
    manifest = json.dumps(good).encode()

    def tar(members: dict[str, bytes]) -> bytes:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as t:
            for name, content in members.items():
                info = tarfile.TarInfo(name)
                info.size = len(content)
                t.addfile(info, io.BytesIO(content))
        return buf.getvalue().rstrip(b"\0")  # the zero padding and end blocks: readers stop at EOF too

    plain_tar = tar({"manifest.json": manifest, "rules/a.rules": rules})
    return {
        "manifest-good": b"\x00" + manifest,
        "manifest-extra-file": b"\x00" + json.dumps({**good, "files": good["files"] + [{"path": "x", "size": 1}]}).encode(),
        "manifest-odd-types": b"\x00" + json.dumps({"kind": "ips", "version": 1, "rule_count": "2", "files": {}}).encode(),
        "targz-good": b"\x01" + gzip.compress(plain_tar, mtime=0),
        "tar-good": b"\x02" + plain_tar,
        "tar-traversal": b"\x02" + tar({"../evil": b"x", "manifest.json": manifest}),
    }


SEEDS = {
    "packet": packet_seeds,
    "dns": dns_seeds,
    "tls": tls_seeds,
    "http": http_seeds,
    "smtp": smtp_seeds,
    "pipeline": pipeline_seeds,
    "pcap": pcap_seeds,
    "rules": rules_seeds,
    "threatintel": threatintel_seeds,
    "webcat": webcat_seeds,
    "manifest": manifest_seeds,
}


def write_seeds() -> None:
    """Rewrite every ``seed-*`` file (``crash-*`` regression inputs stay)."""
    for name, build in SEEDS.items():
        folder = CORPUS / name
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("seed-*"):
            old.unlink()
        seeds = build()
        for key, data in seeds.items():
            (folder / f"seed-{key}").write_bytes(data)
        print(f"{name}: {len(seeds)} seeds, {sum(map(len, seeds.values()))} bytes")
