"""The synthetic office capture of the offline IPS benchmark, and the packet builders it is made with.

``write_capture`` writes a classic pcap of Ethernet/IPv4 frames, the same for a given seed: HTTP/1.1
browsing (browser-like requests, HTML pages, some gzip), DNS queries and answers, TLS flows (a
browser-like ClientHello, ciphertext) and TCP bulk of random bytes. ``Capture`` and
``TcpConversation`` (consistent sequence numbers, checksums filled in) also build the packets of
tests that run captures through the pipeline.
"""
from __future__ import annotations

import gzip
import itertools
import math
import random
import socket
import struct
from collections import Counter
from pathlib import Path
from typing import Sequence

from filters.app.dns import TYPE_A, build_query, build_response
from filters.packet import inet_checksum, pseudo_header

CAPTURE_SEED = 1160
CAPTURE_EPOCH = 1_716_166_800  # 2024-05-20 01:00 UTC
CAPTURE_SECONDS = 60.0
CAPTURE_HTTP_FLOWS = 400
CAPTURE_DNS_QUERIES = 300
CAPTURE_TLS_FLOWS = 100
HTTP_BODY_RANGE = (1_000, 200_000)  # uncompressed page sizes, log-uniform
HTTP_GZIP_SHARE = 0.25
BULK_PORTS = (873, 9000, 3260, 5201)
BULK_BYTES = 2_500_000
DNS_SERVER = "198.51.100.53"
DNS_TTL = 300
MSS = 1460
SEGMENT_GAP = 12e-6  # seconds between frames of a flow (about 1 Gbit/s)
TCP_FIN, TCP_SYN, TCP_PSH, TCP_ACK = 0x01, 0x02, 0x08, 0x10
_IPV4 = struct.Struct("!BBHHHBBH4s4s")
_TCP = struct.Struct("!HHIIBBHHH")
_UDP = struct.Struct("!HHHH")
_PCAP_FILE = struct.Struct("<IHHiIII")
_PCAP_RECORD = struct.Struct("<IIII")


def _mac(addr: bytes) -> bytes:
    return b"\x02\x00" + addr  # locally administered, derived from the IPv4 address


class Capture:
    """Ethernet/IPv4 frames being built with their timestamps; written sorted by time as classic pcap."""

    def __init__(self) -> None:
        self.frames: list[tuple[float, int, bytes]] = []
        self._ids = itertools.count(1)

    def add(self, ts: float, src: bytes, dst: bytes, proto: int, segment: bytes, csum_at: int) -> None:
        """One IPv4 packet carrying ``segment`` (a TCP/UDP header + data whose checksum field is at
        ``csum_at`` and still zero); fills in both checksums."""
        csum = inet_checksum(pseudo_header(src, dst, proto, len(segment)) + segment) or 0xFFFF
        segment = segment[:csum_at] + struct.pack("!H", csum) + segment[csum_at + 2:]
        hdr = bytearray(_IPV4.pack(0x45, 0, 20 + len(segment), next(self._ids) & 0xFFFF, 0x4000, 64, proto, 0, src, dst))
        hdr[10:12] = struct.pack("!H", inet_checksum(bytes(hdr)))
        self.frames.append((ts, len(self.frames), _mac(dst) + _mac(src) + b"\x08\x00" + bytes(hdr) + segment))

    def udp(self, ts: float, src: tuple[bytes, int], dst: tuple[bytes, int], data: bytes) -> None:
        self.add(ts, src[0], dst[0], socket.IPPROTO_UDP, _UDP.pack(src[1], dst[1], 8 + len(data), 0) + data, 6)

    def write(self, path: Path) -> tuple[int, int]:
        """Write the frames as pcap (Ethernet, microseconds); (frames, bytes of frames)."""
        self.frames.sort()
        total = 0
        with open(path, "wb") as fh:
            fh.write(_PCAP_FILE.pack(0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
            for ts, _, frame in self.frames:
                sec = int(ts)
                fh.write(_PCAP_RECORD.pack(CAPTURE_EPOCH + sec, int((ts - sec) * 1e6), len(frame), len(frame)))
                fh.write(frame)
                total += len(frame)
        return len(self.frames), total


class TcpConversation:
    """One TCP connection in a Capture: handshake, data in MSS segments acknowledged every second
    segment, FIN close. Sequence and acknowledgement numbers stay consistent."""

    def __init__(self, cap: Capture, client: tuple[bytes, int], server: tuple[bytes, int], ts: float,
                 rtt: float, rng: random.Random) -> None:
        self.cap = cap
        self.ends = {True: client, False: server}
        self.seq = {True: rng.getrandbits(32), False: rng.getrandbits(32)}
        self.ts = ts
        self.rtt = rtt

    def segment(self, from_client: bool, flags: int, data: bytes = b"") -> None:
        (src, sport), (dst, dport) = self.ends[from_client], self.ends[not from_client]
        ack = self.seq[not from_client] if flags & TCP_ACK else 0
        hdr = _TCP.pack(sport, dport, self.seq[from_client], ack, 5 << 4, flags, 64240, 0, 0)
        self.cap.add(self.ts, src, dst, socket.IPPROTO_TCP, hdr + data, 16)
        used = len(data) + (1 if flags & (TCP_SYN | TCP_FIN) else 0)
        self.seq[from_client] = (self.seq[from_client] + used) & 0xFFFFFFFF
        self.ts += SEGMENT_GAP

    def open(self) -> None:
        self.segment(True, TCP_SYN)
        self.ts += self.rtt / 2
        self.segment(False, TCP_SYN | TCP_ACK)
        self.ts += self.rtt / 2
        self.segment(True, TCP_ACK)

    def send(self, from_client: bool, data: bytes) -> None:
        for n, off in enumerate(range(0, len(data), MSS)):
            last = off + MSS >= len(data)
            self.segment(from_client, TCP_ACK | (TCP_PSH if last else 0), data[off:off + MSS])
            if n % 2 or last:
                self.segment(not from_client, TCP_ACK)
        self.ts += self.rtt / 2

    def close(self) -> None:
        self.segment(True, TCP_FIN | TCP_ACK)
        self.ts += self.rtt / 2
        self.segment(False, TCP_FIN | TCP_ACK)
        self.ts += self.rtt / 2
        self.segment(True, TCP_ACK)


_WORDS = ("the office network update product news service support contact company report customer order "
          "price delivery account login search results page archive download manual release security notice "
          "meeting schedule project team market sales data cloud mobile device printer storage backup "
          "お知らせ 製品情報 会社概要 お問い合わせ 採用情報 サポート 新着 東京 大阪 営業部").split()


_HTML_HEAD = ('<!DOCTYPE html>\n<html lang="ja">\n<head>\n<meta charset="utf-8">\n<title>{title}</title>\n'
              '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
              '<link rel="stylesheet" href="/static/css/site.{n:08x}.css">\n'
              '<script src="/static/js/app.{n:08x}.js" defer></script>\n</head>\n<body>\n<header class="site-header">'
              '<nav><ul><li><a href="/">Home</a></li><li><a href="/news/">News</a></li>'
              '<li><a href="/products/">Products</a></li></ul></nav></header>\n<main>\n')


_USER_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36 Edg/124.0.0.0",
)


_SITES = ("www.example.com", "news.example.net", "shop.example.org", "intranet.example.co.jp", "cdn.example.com",
          "docs.example.net", "support.example.org", "blog.example.com")


def _paragraphs(rng: random.Random, count: int) -> list[str]:
    """HTML fragments to assemble pages from."""
    def words(k: int) -> str:
        return " ".join(rng.choices(_WORDS, k=k))

    out = []
    for n in range(count):
        out.append(f'<article class="item item-{n % 17}" id="a{n}">\n<h2>{words(rng.randint(3, 8))}</h2>\n'
                   f'<p>{words(rng.randint(30, 90))}</p>\n<p><a href="/{rng.choice(_WORDS)}/{n}.html">'
                   f'{words(3)}</a> &middot; <time datetime="2024-05-{n % 28 + 1:02d}">{n % 28 + 1}日</time></p>\n'
                   "</article>\n")
    return out


def html_page(rng: random.Random, pool: Sequence[str], size: int) -> bytes:
    """An HTML page of about ``size`` bytes (at least the head and tail)."""
    parts = [_HTML_HEAD.format(title=" ".join(rng.choices(_WORDS, k=4)), n=rng.getrandbits(32))]
    total = len(parts[0])
    while total < size:
        parts.append(rng.choice(pool))
        total += len(parts[-1])
    parts.append("</main>\n<footer>&copy; 2024 Example Co., Ltd.</footer>\n</body>\n</html>\n")
    return "".join(parts).encode()


def http_request(rng: random.Random, host: str, path: str) -> bytes:
    cookie = f"session={rng.getrandbits(128):032x}; lang=ja"
    return (f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {rng.choice(_USER_AGENTS)}\r\n"
            "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8\r\n"
            "Accept-Language: ja,en-US;q=0.7,en;q=0.3\r\nAccept-Encoding: gzip, deflate\r\n"
            f"Referer: http://{host}/\r\nCookie: {cookie}\r\nConnection: keep-alive\r\n"
            "Upgrade-Insecure-Requests: 1\r\n\r\n").encode()


def http_response(rng: random.Random, body: bytes, gzipped: bool) -> bytes:
    if gzipped:
        body = gzip.compress(body, 6, mtime=0)
    extra = "Content-Encoding: gzip\r\nVary: Accept-Encoding\r\n" if gzipped else ""
    return (f"HTTP/1.1 200 OK\r\nDate: Mon, 20 May 2024 01:{rng.randint(0, 59):02d}:00 GMT\r\nServer: nginx/1.24.0\r\n"
            f"Content-Type: text/html; charset=utf-8\r\nContent-Length: {len(body)}\r\n{extra}"
            f'Cache-Control: max-age=600\r\nETag: "{rng.getrandbits(64):016x}"\r\nConnection: keep-alive\r\n\r\n'
            ).encode() + body


def _http_path(rng: random.Random, n: int) -> str:
    return rng.choice((
        "/", f"/news/2024/05/article-{n}.html", f"/products/{rng.choice(_WORDS[:40])}-{n}",
        f"/search?q={rng.choice(_WORDS[:40])}+{rng.choice(_WORDS[:40])}&page={n % 9 + 1}", f"/docs/manual/ch{n % 20}.html",
    ))


def _add_http(cap: Capture, rng: random.Random, counts: Counter[str]) -> None:
    pool = _paragraphs(rng, 400)
    lo, hi = HTTP_BODY_RANGE
    for n in range(CAPTURE_HTTP_FLOWS):
        host = rng.choice(_SITES)
        conv = TcpConversation(cap, (_client(n), 40_000 + n), (_server(n), 80), rng.uniform(0, CAPTURE_SECONDS),
                               rng.uniform(0.005, 0.05), rng)
        conv.open()
        for _ in range(rng.choice((1, 1, 1, 2, 3))):
            body = html_page(rng, pool, int(math.exp(rng.uniform(math.log(lo), math.log(hi)))))
            gzipped = rng.random() < HTTP_GZIP_SHARE
            conv.send(True, http_request(rng, host, _http_path(rng, n)))
            conv.send(False, http_response(rng, body, gzipped))
            conv.ts += rng.uniform(0.01, 0.3)
            counts["http transactions"] += 1
            counts["gzip responses"] += gzipped
            counts["http body bytes (before gzip)"] += len(body)
        conv.close()
        counts["http flows"] += 1


def _add_dns(cap: Capture, rng: random.Random, counts: Counter[str]) -> None:
    resolver = (socket.inet_aton(DNS_SERVER), 53)
    for n in range(CAPTURE_DNS_QUERIES):
        name = rng.choice((rng.choice(_SITES), f"{rng.choice(_WORDS[:40])}{n}.example.com", "time.example.net"))
        client, ts, txid = (_client(n), 30_000 + n), rng.uniform(0, CAPTURE_SECONDS), rng.getrandbits(16)
        query = build_query(name.encode(), txid=txid)  # raw UTF-8 labels for the Japanese words, as some clients send
        cap.udp(ts, client, resolver, query)
        answers = [(TYPE_A, _server(rng.randrange(1000))) for _ in range(rng.randint(1, 3))]
        cap.udp(ts + rng.uniform(0.001, 0.03), resolver, client, build_response(query, answers=answers, ttl=DNS_TTL))
        counts["dns queries"] += 1


def _vec(width: int, data: bytes) -> bytes:
    return len(data).to_bytes(width, "big") + data


def _ext(kind: int, body: bytes) -> bytes:
    return struct.pack("!H", kind) + _vec(2, body)


def tls_record(ctype: int, payload: bytes) -> bytes:
    return struct.pack("!BHH", ctype, 0x0303, len(payload)) + payload


def tls_handshake(kind: int, body: bytes) -> bytes:
    return bytes([kind]) + _vec(3, body)


def tls_client_hello(rng: random.Random, sni: str) -> bytes:
    """A ClientHello record as a current browser sends it (TLS 1.2/1.3, SNI, ALPN, key share)."""
    ciphers = (0x1301, 0x1302, 0x1303, 0xC02B, 0xC02F, 0xC02C, 0xC030, 0xCCA9, 0xCCA8, 0xC013, 0xC014, 0x009C,
               0x009D, 0x002F, 0x0035)
    exts = b"".join((
        _ext(0, _vec(2, b"\0" + _vec(2, sni.encode()))), _ext(23, b""), _ext(0xFF01, b"\0"),
        _ext(10, _vec(2, struct.pack("!HHH", 29, 23, 24))), _ext(11, _vec(1, b"\0")), _ext(35, b""),
        _ext(16, _vec(2, _vec(1, b"h2") + _vec(1, b"http/1.1"))), _ext(5, b"\x01\0\0\0\0"),
        _ext(13, _vec(2, struct.pack("!8H", 0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601))),
        _ext(51, _vec(2, struct.pack("!H", 29) + _vec(2, rng.randbytes(32)))),
        _ext(43, _vec(1, struct.pack("!HH", 0x0304, 0x0303))), _ext(45, _vec(1, b"\x01")),
    ))
    body = (struct.pack("!H", 0x0303) + rng.randbytes(32) + _vec(1, rng.randbytes(32))
            + _vec(2, b"".join(struct.pack("!H", c) for c in ciphers)) + _vec(1, b"\0") + _vec(2, exts))
    return tls_record(22, tls_handshake(1, body))


def tls_server_hello(rng: random.Random) -> bytes:
    """ServerHello (TLS 1.2, ECDHE-RSA-AES128-GCM) and ServerHelloDone records."""
    exts = _ext(0xFF01, b"\0") + _ext(23, b"")
    body = struct.pack("!H", 0x0303) + rng.randbytes(32) + _vec(1, rng.randbytes(32)) + struct.pack("!HB", 0xC02F, 0)
    return tls_record(22, tls_handshake(2, body + _vec(2, exts))) + tls_record(22, tls_handshake(14, b""))


def _tls_data(rng: random.Random, size: int) -> bytes:
    """Application data records (random bytes: ciphertext) carrying ``size`` bytes."""
    return b"".join(tls_record(23, rng.randbytes(min(16_384, size - off))) for off in range(0, size, 16_384))


def _add_tls(cap: Capture, rng: random.Random, counts: Counter[str]) -> None:
    for n in range(CAPTURE_TLS_FLOWS):
        conv = TcpConversation(cap, (_client(n), 50_000 + n), (_server(n + 7), 443),
                               rng.uniform(0, CAPTURE_SECONDS), rng.uniform(0.005, 0.05), rng)
        conv.open()
        conv.send(True, tls_client_hello(rng, rng.choice(_SITES)))
        conv.send(False, tls_server_hello(rng))
        finished = tls_record(20, b"\x01") + tls_record(22, rng.randbytes(40))
        conv.send(True, tls_record(22, tls_handshake(16, _vec(1, rng.randbytes(32)))) + finished)
        conv.send(False, finished)
        conv.send(True, _tls_data(rng, rng.randint(300, 900)))
        size = rng.randint(2_000, 60_000)
        conv.send(False, _tls_data(rng, size))
        conv.close()
        counts["tls flows"] += 1
        counts["tls application bytes"] += size


def _add_bulk(cap: Capture, rng: random.Random, counts: Counter[str]) -> None:
    for n, port in enumerate(BULK_PORTS):
        conv = TcpConversation(cap, (_client(n + 3), 60_000 + n), (_server(n + 11), port),
                               rng.uniform(0, CAPTURE_SECONDS), 0.002, rng)
        conv.open()
        conv.send(True, rng.randbytes(BULK_BYTES))
        conv.close()
        counts["tcp bulk flows"] += 1
        counts["tcp bulk bytes"] += BULK_BYTES


def _client(n: int) -> bytes:
    return socket.inet_aton(f"192.168.10.{10 + n % 50}")  # Suricata's default HOME_NET


def _server(n: int) -> bytes:
    return socket.inet_aton(f"198.51.100.{20 + n % 200}")


def write_capture(path: Path, seed: int = CAPTURE_SEED) -> dict[str, int]:
    """A synthetic office capture: HTTP/1.1 browsing (some gzip), DNS, TLS and TCP bulk; what it holds."""
    rng = random.Random(seed)
    cap = Capture()
    counts: Counter[str] = Counter()
    for add in (_add_http, _add_dns, _add_tls, _add_bulk):
        add(cap, rng, counts)
    counts["packets"], counts["bytes"] = cap.write(path)
    return dict(counts)
