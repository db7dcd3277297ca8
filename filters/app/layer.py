"""Application-layer detection and parsing per flow: picks HTTP/TLS/DNS/SMTP and yields their events."""
from __future__ import annotations

import enum
import logging
import re
from dataclasses import dataclass, field
from typing import Any

# The parsers are imported here, not on a flow's first use: the daemon imports this module before
# it forks its workers, so no worker stalls on an import (compiling the module, when there is no
# bytecode cache) in the middle of its first HTTP or DNS flow.
from filters.app.dns import DnsTcpParser, parse_dns
from filters.app.http import HttpParser
from filters.app.smtp import SmtpParser, looks_like_smtp
from filters.app.tls import TlsParser, looks_like_tls
from filters.engine import Hook
from filters.packet import PROTO_TCP, PROTO_UDP

log = logging.getLogger(__name__)

DETECT_LIMIT = 4096  # bytes per direction looked at before giving up on detection
HTTP_REQUEST_RE = re.compile(rb"^[A-Za-z][A-Za-z_-]{1,15}[ \t]+\S")
HTTP_METHODS = frozenset(
    b"GET POST HEAD PUT DELETE OPTIONS CONNECT TRACE PATCH PROPFIND PROPPATCH MKCOL COPY MOVE LOCK UNLOCK "
    b"SEARCH REPORT CHECKOUT MERGE NOTIFY SUBSCRIBE UNSUBSCRIBE M-SEARCH".split()
)
SMTP_PORTS = frozenset({25, 587, 2525})
DNS_PORT = 53


class AppProto(enum.Enum):
    UNKNOWN = "unknown"  # not decided yet
    HTTP = "http"
    TLS = "tls"
    DNS = "dns"
    SMTP = "smtp"
    FAILED = "failed"  # decided: none of ours


@dataclass(frozen=True, slots=True)
class AppSettings:
    http_request_body_limit: int = 100 * 1024
    http_response_body_limit: int = 100 * 1024
    http_decompress_layers: int = 2
    enabled: frozenset[AppProto] = frozenset({AppProto.HTTP, AppProto.TLS, AppProto.DNS, AppProto.SMTP})


@dataclass(slots=True, eq=False)
class AppState:
    proto: AppProto = AppProto.UNKNOWN
    parser: Any = None
    seen: dict[bool, int] = field(default_factory=lambda: {True: 0, False: 0})
    next_offset: dict[bool, int] = field(default_factory=lambda: {True: 0, False: 0})
    early: list[tuple[bool, bytes]] = field(default_factory=list)  # bytes before detection (other side)


def _looks_http(to_server: bool, data: bytes) -> bool:
    if not to_server:
        return data[:5].upper() == b"HTTP/"
    if not HTTP_REQUEST_RE.match(data[:32]):
        return False
    method = data.split(None, 1)[0].upper()
    return method in HTTP_METHODS


def flow_app_proto(flow: Any) -> str | None:
    """The app-layer protocol name of a flow ("http", "unknown", "failed"...), None before any data."""
    st = flow.engine_data.get("app")
    return st.proto.value if st is not None else None


class AppLayer:
    """Owns the per-flow app-layer state (in ``flow.engine_data['app']``)."""

    def __init__(self, settings: AppSettings = AppSettings()) -> None:
        self.settings = settings
        self.counters: dict[str, int] = {}

    def state(self, flow: Any) -> AppState:
        st = flow.engine_data.get("app")
        if st is None:
            st = flow.engine_data["app"] = AppState()
        return st

    def on_chunk(self, flow: Any, to_server: bool, data: bytes, offset: int) -> list[tuple[Hook, Any]]:
        st = self.state(flow)
        if st.proto is AppProto.FAILED or not data:
            return []
        expected = st.next_offset[to_server]
        st.next_offset[to_server] = offset + len(data)
        if offset > expected and flow.proto == PROTO_TCP:
            self._count("app.gaps")
            self.on_gap(flow, to_server, offset - expected)
        if st.proto is AppProto.UNKNOWN:
            if flow.midstream and to_server and not st.seen[False] and _looks_http(False, data):
                flow.reverse()  # picked up midstream with the server's packet first
                st.next_offset[True], st.next_offset[False] = st.next_offset[False], st.next_offset[True]
                to_server = False
                self._count("app.reversed")
            if not self._detect(flow, st, to_server, data):
                return []
            early, st.early = st.early, []
            out: list[tuple[Hook, Any]] = []
            for ts, d in early:
                out += self._feed(flow, st, ts, d)
            return out + self._feed(flow, st, to_server, data)
        return self._feed(flow, st, to_server, data)

    def on_gap(self, flow: Any, to_server: bool, length: int) -> None:
        st = flow.engine_data.get("app")
        if st is not None and st.proto is AppProto.HTTP and hasattr(st.parser, "gap"):
            st.parser.gap(to_server, length)

    def on_close(self, flow: Any) -> list[tuple[Hook, Any]]:
        st = flow.engine_data.get("app")
        if st is None or st.parser is None or not hasattr(st.parser, "close"):
            return []
        return self._wrap(st.proto, st.parser.close())

    # -- detection -------------------------------------------------------------------------
    def _detect(self, flow: Any, st: AppState, to_server: bool, data: bytes) -> bool:
        proto = self._guess(flow, to_server, data)
        if proto is None:
            st.seen[to_server] += len(data)
            if len(st.early) < 16:
                st.early.append((to_server, data[:DETECT_LIMIT]))
            if st.seen[True] >= DETECT_LIMIT or st.seen[False] >= DETECT_LIMIT or (st.seen[True] and st.seen[False] > 0 and len(st.early) >= 4):
                st.proto = AppProto.FAILED
                st.early = []
                self._count("app.failed")
            return False
        if proto not in self.settings.enabled:
            st.proto = AppProto.FAILED
            return False
        st.proto = proto
        st.parser = self._parser(proto)
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
            return HttpParser(
                request_body_limit=s.http_request_body_limit,
                response_body_limit=s.http_response_body_limit,
                decompress_layers=s.http_decompress_layers,
            )
        if proto is AppProto.TLS:
            return TlsParser()
        if proto is AppProto.SMTP:
            return SmtpParser()
        return None  # DNS over UDP is stateless; TCP DNS gets a framing parser on first use

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
            return []
        if getattr(st.parser, "encrypted", False):
            flow.encrypted = True
        return self._wrap(st.proto, events)

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

    @staticmethod
    def _wrap(proto: AppProto, events: list[Any]) -> list[tuple[Hook, Any]]:
        if proto is AppProto.HTTP:
            return [(Hook.HTTP_REQUEST if e.to_server else Hook.HTTP_RESPONSE, e) for e in events]
        if proto is AppProto.TLS:
            return [(Hook.TLS_HELLO, e) for e in events]
        if proto is AppProto.SMTP:
            return [(Hook.MAIL, e) for e in events]
        return [(Hook.DNS, e) for e in events]

    def _count(self, key: str) -> None:
        self.counters[key] = self.counters.get(key, 0) + 1
