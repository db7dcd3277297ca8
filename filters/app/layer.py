"""Application-layer detection and parsing per flow: picks HTTP/HTTP2/TLS/DNS/SMTP and yields their
events (and the files of complete HTTP bodies) as ``(Hook, event)`` pairs.

HTTP/2 (clear text) comes two ways, as in Suricata: a client that starts with the connection
preface (prior knowledge), or an HTTP/1 request with ``Upgrade: h2c`` answered by 101 Switching
Protocols, after which the HTTP/1 request is stream 1 of the HTTP/2 parser. Both give the same
``HttpEvent``s as HTTP/1 (on the same hooks); the flow's protocol is "http2"."""
from __future__ import annotations

import enum
import logging
import re
from dataclasses import dataclass
from typing import Any

# The parsers are imported here, not on a flow's first use: the daemon imports this module before
# it forks its workers, so no worker stalls on an import (compiling the module, when there is no
# bytecode cache) in the middle of its first HTTP or DNS flow.
from filters.app.dns import DnsTcpParser, parse_dns
from filters.app.files import http_files
from filters.app.http import HttpParser
from filters.app.http2 import PREFACE, Http2Parser, preface_state
from filters.app.smtp import SmtpParser, looks_like_smtp
from filters.app.tls import TlsParser, looks_like_tls
from filters.engine import Hook
from filters.packet import PROTO_TCP, PROTO_UDP

log = logging.getLogger(__name__)

DETECT_LIMIT = 4096  # bytes per direction looked at before giving up on detection
EOF_TS, EOF_TC = 1, 2  # AppState.eof: the client's, the server's FIN was handed on
HTTP_REQUEST_RE = re.compile(rb"^[A-Za-z][A-Za-z_-]{1,15}[ \t]+\S")
HTTP_METHODS = frozenset(
    b"GET POST HEAD PUT DELETE OPTIONS CONNECT TRACE PATCH PROPFIND PROPPATCH MKCOL COPY MOVE LOCK UNLOCK "
    b"SEARCH REPORT CHECKOUT MERGE NOTIFY SUBSCRIBE UNSUBSCRIBE M-SEARCH".split()
)
SMTP_PORTS = frozenset({25, 587, 2525})
_DONE_STAGES = frozenset({"request_done", "response_done"})
DNS_PORT = 53


class AppProto(enum.Enum):
    UNKNOWN = "unknown"  # not decided yet
    HTTP = "http"
    HTTP2 = "http2"
    TLS = "tls"
    DNS = "dns"
    SMTP = "smtp"
    FAILED = "failed"  # decided: none of ours


# both give HttpEvents; a tuple: ``in`` compares members by identity first, where a set would hash
# them (Enum.__hash__ is Python code)
_HTTP_PROTOS = (AppProto.HTTP, AppProto.HTTP2)


def file_stream_depth(file_depth: int) -> int:
    """The stream depth a download of ``file_depth`` bytes needs: the body plus room for the
    response headers, chunk framing and the other responses of the connection before it."""
    return file_depth + file_depth // 8 + (64 << 10) if file_depth else 0


@dataclass(frozen=True, slots=True)
class AppSettings:
    http_request_body_limit: int = 100 * 1024
    http_response_body_limit: int = 100 * 1024
    http_decompress_layers: int = 2
    file_depth: int = 0  # the file engines' depth (Engine.file_depth): downloads followed this far past the body limit
    enabled: frozenset[AppProto] = frozenset({AppProto.HTTP, AppProto.HTTP2, AppProto.TLS, AppProto.DNS, AppProto.SMTP})


@dataclass(slots=True, eq=False)
class AppState:
    """A worker holds one per flow that carried data (100,000 and more), most of them never
    detected: plain slots, no container until one is needed (a list or dict per direction cost
    four times the state itself)."""

    proto: AppProto = AppProto.UNKNOWN
    parser: Any = None
    # per direction: bytes seen before detection, and the stream offset expected next
    seen_ts: int = 0
    seen_tc: int = 0
    next_ts: int = 0
    next_tc: int = 0
    early: tuple[tuple[bool, bytes], ...] = ()  # bytes before detection (other side), at most 16 entries
    changed_from: AppProto | None = None  # the protocol before a protocol change (CONNECT, STARTTLS)
    held: int = 0  # bytes this flow's parser held at the last count (AppLayer.held_total)
    cut: bool = False  # parsing was stopped by the worker's memcap (AppLayer.cut)
    eof: int = 0  # the sides whose FIN was handed on: EOF_TS, EOF_TC


def _looks_http(to_server: bool, data: bytes) -> bool:
    if not to_server:
        return data[:5].upper() == b"HTTP/"
    if not HTTP_REQUEST_RE.match(data[:32]):
        return False
    method = data.split(None, 1)[0].upper()
    return method in HTTP_METHODS


def flow_app_proto(flow: Any) -> str | None:
    """The app-layer protocol name of a flow ("http", "unknown", "failed"...), None before any data."""
    st = flow.app_state
    # the member's value attribute itself: ``.value`` is a property, and engines ask this per packet
    return st.proto._value_ if st is not None else None


class AppLayer:
    """Owns the per-flow app-layer state (in ``flow.app_state``)."""

    def __init__(self, settings: AppSettings = AppSettings(), *, files: bool = True) -> None:
        self.settings = settings
        self.files = files  # make FILE events (the pipeline turns this off when no engine takes them)
        self.counters: dict[str, int] = {}
        self.held_total = 0  # bytes held by all flows' parsers (see held_bytes of each parser)
        self.held_peak = 0
        self._holders: dict[int, Any] = {}  # flow_id -> flow, for the flows whose parsers hold bytes

    def state(self, flow: Any) -> AppState:
        st = flow.app_state
        if st is None:
            st = flow.app_state = AppState()
        return st

    def on_chunk(self, flow: Any, to_server: bool, data: bytes, offset: int) -> list[tuple[Hook, Any]]:
        st = self.state(flow)
        if st.proto is AppProto.FAILED or st.cut or not data:
            return []
        self._release(st)
        if to_server:
            expected, st.next_ts = st.next_ts, offset + len(data)
        else:
            expected, st.next_tc = st.next_tc, offset + len(data)
        if offset > expected and flow.proto == PROTO_TCP:
            self._count("app.gaps")
            self.on_gap(flow, to_server, offset - expected)
        if st.proto is AppProto.UNKNOWN:
            if flow.midstream and to_server and not st.seen_tc and _looks_http(False, data):
                flow.reverse()  # picked up midstream with the server's packet first
                st.next_ts, st.next_tc = st.next_tc, st.next_ts
                to_server = False
                self._count("app.reversed")
            if not self._detect(flow, st, to_server, data):
                return []
            early, st.early = st.early, ()
            out: list[tuple[Hook, Any]] = []
            for ts, d in early:
                out += self._feed(flow, st, ts, d)
            return out + self._feed(flow, st, to_server, data)
        return self._feed(flow, st, to_server, data)

    def on_gap(self, flow: Any, to_server: bool, length: int) -> None:
        st = flow.app_state
        if st is not None and st.proto in _HTTP_PROTOS and hasattr(st.parser, "gap"):
            st.parser.gap(to_server, length)

    def on_eof(self, flow: Any, to_server: bool) -> list[tuple[Hook, Any]]:
        """One side of a TCP flow closed (its FIN, all its bytes before it delivered): once per side."""
        st = flow.app_state
        side = EOF_TS if to_server else EOF_TC
        if st is None or st.eof & side or st.proto is AppProto.FAILED or st.cut:
            return []
        st.eof |= side
        eof = getattr(st.parser, "eof", None)
        if eof is None:
            return []
        return self._wrap(flow, st.proto, eof(to_server))

    def on_close(self, flow: Any) -> list[tuple[Hook, Any]]:
        st = flow.app_state
        if st is None:
            return []
        self._uncount(flow, st)  # what the parser holds goes with the flow (after these last events)
        if st.parser is None or not hasattr(st.parser, "close"):
            return []
        return self._wrap(flow, st.proto, st.parser.close())

    def finished(self, flow: Any) -> bool:
        """Has the app layer nothing more to do with ``flow``'s bytes: its protocol is none of ours
        (or its parsing was cut), for good, and it holds nothing? ``on_chunk`` then gives no event
        and ``inspected`` does nothing, and the pipeline skips both on each of its packets."""
        st = flow.app_state
        return (st is not None and (st.proto is AppProto.FAILED or st.cut) and st.parser is None
                and not st.early and not st.held)

    # -- memory ------------------------------------------------------------------------------
    def inspected(self, flow: Any) -> None:
        """The events of the last ``on_chunk`` went through the engines: release what only they
        needed (decoded bodies of complete messages) and count what the flow's parser holds."""
        st = flow.app_state
        if st is None:
            return
        self._release(st)
        self._account(flow, st)

    @staticmethod
    def _release(st: AppState) -> None:
        release = getattr(st.parser, "release", None)
        if release is not None:
            release()

    def _account(self, flow: Any, st: AppState) -> None:
        held_bytes = getattr(st.parser, "held_bytes", None)
        n = held_bytes() if held_bytes is not None else 0
        if st.early:
            n += sum(len(d) for _, d in st.early)
        if n == st.held:
            return
        self.held_total += n - st.held
        st.held = n
        if self.held_total > self.held_peak:
            self.held_peak = self.held_total
        if n:
            self._holders[flow.flow_id] = flow
        else:
            self._holders.pop(flow.flow_id, None)

    def _uncount(self, flow: Any, st: AppState) -> None:
        self.held_total -= st.held
        st.held = 0
        self._holders.pop(flow.flow_id, None)

    def cut_largest(self, target: int) -> list[tuple[Any, int]]:
        """Over the worker's memcap: stop parsing the flows that hold the most until all parsers
        together hold at most ``target`` bytes. Returns the (flow, bytes it held) cut."""
        out: list[tuple[Any, int]] = []
        if self.held_total <= target:
            return out
        for flow in sorted(self._holders.values(), key=lambda f: -f.app_state.held):
            if self.held_total <= target:
                break
            out.append((flow, self.cut(flow)))
        return out

    def cut(self, flow: Any) -> int:
        """Stop app-layer parsing of ``flow`` for good and drop its parser state; returns the bytes
        it held. The flow's packets and stream still go to the engines (no app-layer events)."""
        st = self.state(flow)
        held = st.held
        self._uncount(flow, st)
        st.cut, st.parser, st.early = True, None, ()
        self._count("app.memcap_cut")
        return held

    # -- detection -------------------------------------------------------------------------
    def _detect(self, flow: Any, st: AppState, to_server: bool, data: bytes) -> bool:
        proto = self._guess(flow, to_server, data)
        if to_server and flow.proto == PROTO_TCP and proto in (None, AppProto.FAILED):
            # the HTTP/2 preface, also when it comes in several segments
            head = b"".join(d for ts, d in st.early if ts) + data if st.early else data
            h2 = preface_state(head[:len(PREFACE)])
            if h2:
                proto = AppProto.HTTP2
            elif h2 is None and proto is AppProto.FAILED:
                proto = None
        if proto is None:
            if to_server:
                st.seen_ts += len(data)
            else:
                st.seen_tc += len(data)
            if len(st.early) < 16:
                st.early += ((to_server, data[:DETECT_LIMIT]),)
            if st.seen_ts >= DETECT_LIMIT or st.seen_tc >= DETECT_LIMIT or (st.seen_ts and st.seen_tc > 0 and len(st.early) >= 4):
                st.proto = AppProto.FAILED
                st.early = ()
                self._count("app.failed")
            return False
        if proto not in self.settings.enabled:
            st.proto = AppProto.FAILED
            return False
        st.proto = proto
        st.parser = self._parser(proto)
        if proto in _HTTP_PROTOS and self.settings.file_depth and hasattr(flow, "toclient"):
            # a flow that carries files: its downloads are reassembled as deep as the file engines need
            flow.toclient.depth = max(flow.toclient.depth, file_stream_depth(self.settings.file_depth))
        self._count(f"app.{proto.value}")
        return True

    def _guess(self, flow: Any, to_server: bool, data: bytes) -> AppProto | None:
        if flow.proto == PROTO_UDP:
            return AppProto.DNS if DNS_PORT in (flow.server_port, flow.client_port) else AppProto.FAILED
        if flow.proto != PROTO_TCP:
            return AppProto.FAILED
        if looks_like_tls(data):
            return AppProto.TLS
        if _looks_http(to_server, data):
            return AppProto.HTTP
        if flow.server_port in SMTP_PORTS and looks_like_smtp(data, to_server):
            return AppProto.SMTP
        if flow.server_port == DNS_PORT:
            return AppProto.DNS
        return None

    def _parser(self, proto: AppProto) -> Any:
        s = self.settings
        if proto is AppProto.HTTP:
            parser = HttpParser(
                request_body_limit=s.http_request_body_limit,
                response_body_limit=s.http_response_body_limit,
                decompress_layers=s.http_decompress_layers,
            )
            parser.file_depth = s.file_depth
            return parser
        if proto is AppProto.HTTP2:
            return self._http2_parser()
        if proto is AppProto.TLS:
            return TlsParser()
        if proto is AppProto.SMTP:
            return SmtpParser()
        return None  # DNS over UDP is stateless; TCP DNS gets a framing parser on first use

    def _http2_parser(self, upgrade: Any = None, first_tx_id: int = 0) -> Http2Parser:
        s = self.settings
        parser = Http2Parser(
            request_body_limit=s.http_request_body_limit,
            response_body_limit=s.http_response_body_limit,
            decompress_layers=s.http_decompress_layers,
            upgrade=upgrade,
            first_tx_id=first_tx_id,
        )
        parser.file_depth = s.file_depth
        return parser

    def _h2c_upgrade(self, st: AppState) -> Any:
        """The HTTP/1 transaction whose 101 answer switched the flow to HTTP/2 (``Upgrade: h2c``
        asked and granted), or None."""
        if st.proto is not AppProto.HTTP or AppProto.HTTP2 not in self.settings.enabled:
            return None
        for tx in reversed(getattr(st.parser, "transactions", ())):
            if not tx.response_headers_done:
                continue
            if tx.status_code != b"101":
                return None
            granted = (tx.header(b"upgrade", response=True) or b"").lower()
            asked = (tx.header(b"upgrade") or b"").lower()
            return tx if b"h2c" in granted and b"h2c" in asked else None
        return None

    # -- parsing ---------------------------------------------------------------------------
    def _feed(self, flow: Any, st: AppState, to_server: bool, data: bytes) -> list[tuple[Hook, Any]]:
        try:
            if st.proto is AppProto.DNS:
                return self._dns(flow, st, to_server, data)
            events = st.parser.feed(to_server, data)
        except Exception:  # a parser bug: stop parsing this flow, keep the worker alive
            log.exception("%s parser failed; no more app-layer parsing for flow %s", st.proto.value, flow.flow_id)
            self._count(f"errors.app.{st.proto.value}")
            st.proto = AppProto.FAILED
            self._uncount(flow, st)
            st.parser = None
            return []
        if st.proto is AppProto.SMTP and getattr(st.parser, "encrypted", False):
            return self._wrap(flow, st.proto, events) + self._change(flow, st, {})  # STARTTLS
        if getattr(st.parser, "encrypted", False):
            flow.encrypted = True
        tunnel = getattr(st.parser, "tunnel", None) if st.proto is AppProto.HTTP else None
        if tunnel is not None:  # CONNECT accepted, or 101 Switching Protocols
            return self._wrap(flow, st.proto, events) + self._change(flow, st, tunnel)
        return self._wrap(flow, st.proto, events)

    def _change(self, flow: Any, st: AppState, pending: dict[bool, bytes]) -> list[tuple[Hook, Any]]:
        """A protocol change (HTTP CONNECT or Upgrade, SMTP STARTTLS), as Suricata makes one: the
        old parser stops (rules for its protocol stop matching), the protocol of what follows is
        detected afresh (TLS, most often) and its parser takes the bytes from there on."""
        self._count(f"app.protocol_change.{st.proto.value}")
        upgrade = self._h2c_upgrade(st)
        next_tx = getattr(st.parser, "_next_id", 0)
        st.changed_from = st.proto
        self._uncount(flow, st)  # the old parser's held bytes leave the worker's budget with it
        st.proto, st.parser = AppProto.UNKNOWN, None
        st.seen_ts = st.seen_tc = 0
        st.early = ()
        out: list[tuple[Hook, Any]] = []
        if upgrade is not None:  # Upgrade: h2c granted: HTTP/2 from here on, the request is stream 1
            st.proto = AppProto.HTTP2
            st.parser = self._http2_parser(upgrade, first_tx_id=max(next_tx, upgrade.tx_id + 1))
            self._count("app.http2")
            self._count("app.http2.upgrade")
            for to_server in (True, False):
                if pending.get(to_server):
                    out += self._feed(flow, st, to_server, pending[to_server])
            return out
        for to_server in (True, False):
            data = pending.get(to_server, b"")
            if not data or st.proto is AppProto.FAILED:
                continue
            if st.proto is AppProto.UNKNOWN:
                if not self._detect(flow, st, to_server, data):
                    continue
                early, st.early = st.early, ()
                for ts, d in early:
                    out += self._feed(flow, st, ts, d)
            out += self._feed(flow, st, to_server, data)
        return out

    def _dns(self, flow: Any, st: AppState, to_server: bool, data: bytes) -> list[tuple[Hook, Any]]:
        if flow.proto == PROTO_UDP:
            msg = parse_dns(data, to_server)
            if msg is None:
                self._count("app.dns.not_dns")
                return []
            return [(Hook.DNS, msg)]
        if st.parser is None:
            st.parser = DnsTcpParser()
        return [(Hook.DNS, m) for m in st.parser.feed(to_server, data)]

    def _wrap(self, flow: Any, proto: AppProto, events: list[Any]) -> list[tuple[Hook, Any]]:
        if proto in _HTTP_PROTOS:
            out: list[tuple[Hook, Any]] = []
            for e in events:
                out.append((Hook.HTTP_REQUEST if e.to_server else Hook.HTTP_RESPONSE, e))
                if e.stage == "response_headers" and self.settings.file_depth and hasattr(flow, "toclient"):
                    # each download of a kept-alive connection gets its own file depth from where it starts
                    s = flow.toclient
                    s.depth = max(s.depth, s.delivered + file_stream_depth(self.settings.file_depth))
                if self.files and e.stage in _DONE_STAGES:
                    try:
                        files = http_files(flow, e)
                    except Exception:  # a bug here must not stop the flow's HTTP events
                        log.exception("file of HTTP transaction %d failed", e.tx.tx_id)
                        self._count("errors.app.files")
                        continue
                    for file in files:
                        self._count("app.files")
                        if file.partial:
                            self._count("app.files.partial")
                        if file.truncated:
                            self._count("app.files.truncated")
                        out.append((Hook.FILE, file))
            return out
        if proto is AppProto.TLS:
            return [(Hook.TLS_HELLO, e) for e in events]
        if proto is AppProto.SMTP:
            return [(Hook.MAIL, e) for e in events]
        return [(Hook.DNS, e) for e in events]

    def _count(self, key: str) -> None:
        self.counters[key] = self.counters.get(key, 0) + 1
