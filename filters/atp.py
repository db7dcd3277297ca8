"""Advanced Threat Protection: C&C and malware indicators from threat-intel feeds, enforced inline.

Where each kind of indicator is caught:

* IPs, CIDRs and ip:port channels: in the kernel (the daemon loads them into ipsets, dropped and
  logged in VCR-BLOCK); a flow that reaches user space anyway (a set still loading, UDP to a
  listed ip:port) is dropped here at its first packet.
* Domains: at the DNS query (answered by the agent with the sinkhole or NXDOMAIN, the real query
  dropped), in DNS answers (CNAME targets, listed addresses), at the TLS SNI (certificate names as
  a fallback) and at the HTTP Host.
* URLs: at the HTTP request line.

Every block names the LAN host, the indicator and the threat, so the operations center can act
on the infected PC.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Iterable, Mapping

from filters.app import DnsMessage, HttpEvent, TlsHello
from filters.app.dns import normalize_name
from filters.app.layer import flow_app_proto
from filters.engine import ConfigError, Decision, Engine, EngineContext, Hook, Verdict
from filters.packet import PROTO_TCP, PROTO_UDP, Packet, ntop
from filters.threatintel import FORMATS, FeedLimits, Indicator, ParseResult, ThreatIntel, load_feed
from filters.webfilter.blocking import (RR_A, RR_AAAA, Alarm, Sinkhole, block_dns_query, block_dns_response, block_flow,
                                        block_http, block_tls, config_bool, parse_sinkhole)
from filters.webfilter import page

log = logging.getLogger(__name__)

SID_IP = 9_400_001
SID_DNS = 9_400_002
SID_DNS_ANSWER = 9_400_003
SID_TLS = 9_400_004
SID_HTTP_HOST = 9_400_005
SID_URL = 9_400_006
CATEGORY = "A Network Trojan was detected"  # Suricata's classification for C&C traffic
KEYS = {"enabled", "feeds", "dns_action", "sinkhole_ipv4", "sinkhole_ipv6", "monitor_only",
        "allow_documentation_addresses", "box_name"}
FEED_KEYS = {"path", "format", "options", "source"}
MAX_FEED_FILES = 256


@dataclass(frozen=True, slots=True)
class FeedSpec:
    path: Path
    format: str | None = None
    options: Mapping[str, Any] | None = None
    source: str | None = None


def _feed_specs(raw: Any) -> list[FeedSpec]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ConfigError("expected a list of feed files or folders", key="feeds")
    out = []
    for i, item in enumerate(raw):
        key = f"feeds[{i}]"
        if isinstance(item, str):
            item = {"path": item}
        if not isinstance(item, dict):
            raise ConfigError("expected a path or a mapping with path, format, options", key=key)
        unknown = set(item) - FEED_KEYS
        if unknown:
            raise ConfigError("unknown key", key=f"{key}.{sorted(unknown)[0]}")
        path = item.get("path")
        if not isinstance(path, str) or not path:
            raise ConfigError("expected the path of a feed file or folder", key=f"{key}.path")
        fmt = item.get("format")
        if fmt is not None and fmt not in FORMATS:
            raise ConfigError(f"unknown feed format, expected one of {', '.join(FORMATS)}", key=f"{key}.format")
        options = item.get("options") or {}
        if not isinstance(options, dict):
            raise ConfigError("expected a mapping of parser options", key=f"{key}.options")
        source = item.get("source")
        if source is not None and not isinstance(source, str):
            raise ConfigError("expected a feed name", key=f"{key}.source")
        out.append(FeedSpec(Path(path), fmt, options, source))
    return out


_NOT_FEEDS = ("README", "LICENSE", "LICENCE", "COPYING", "NOTICE", "MANIFEST", "CHANGELOG")
_NOT_FEED_SUFFIXES = (".md", ".json", ".sig", ".asc", ".sha256", ".html", ".pdf")


def _is_feed_name(name: str) -> bool:
    """Files of a bundle folder that are feeds: not hidden, not its documentation or metadata."""
    upper = name.upper()
    return not (name.startswith(".") or upper.startswith(_NOT_FEEDS) or name.lower().endswith(_NOT_FEED_SUFFIXES))


def _feed_files(spec: FeedSpec) -> list[Path]:
    """A feed path's files: the file itself, or every regular, visible file of a folder (sorted)."""
    if spec.path.is_dir():
        files = sorted(p for p in spec.path.iterdir() if p.is_file() and _is_feed_name(p.name))
        return files[:MAX_FEED_FILES]
    return [spec.path]


class Atp(Engine):
    name: ClassVar[str] = "atp"
    hooks: ClassVar[frozenset[Hook]] = frozenset({Hook.FLOW_START, Hook.DNS, Hook.HTTP_REQUEST, Hook.TLS_HELLO})

    def __init__(self) -> None:
        super().__init__()
        self.feeds: list[FeedSpec] = []
        self.intel = ThreatIntel.build([])
        self.limits = FeedLimits()
        self.sinkhole = Sinkhole()
        self.monitor = False
        self.box = ""
        self.errors: list[str] = []
        self.loaded_files: list[str] = []

    # -- configuration -------------------------------------------------------------------
    def configure(self, section: Mapping[str, Any], ctx: EngineContext = EngineContext()) -> None:
        unknown = set(section) - KEYS
        if unknown:
            raise ConfigError("unknown key", key=sorted(unknown)[0])
        self.feeds = _feed_specs(section.get("feeds"))
        self.sinkhole = parse_sinkhole(section, ctx)
        self.monitor = config_bool(section, "monitor_only", False)
        self.limits = FeedLimits(allow_documentation=config_bool(section, "allow_documentation_addresses", False))
        self.box = str(section.get("box_name", "") or os.uname().nodename)

    def prepare(self) -> None:
        """Load every feed; an unreadable or broken file is reported and skipped, never fatal."""
        results: list[ParseResult] = []
        self.errors, self.loaded_files = [], []
        for spec in self.feeds:
            if not spec.path.exists():
                self.errors.append(f"{spec.path}: missing")
                log.warning("threat intel: feed %s is missing; it is skipped until it arrives", spec.path)
                continue
            for path in _feed_files(spec):
                try:
                    results.append(load_feed(path, format=spec.format, source=spec.source,
                                             limits=self.limits, **dict(spec.options or {})))
                    self.loaded_files.append(str(path))
                except ConfigError as exc:
                    self.errors.append(str(exc))
                    log.error("threat intel: feed skipped: %s", exc)
        self.intel = ThreatIntel.build(results)

    def summary(self) -> dict[str, Any]:
        stats = self.intel.stats()
        return {"indicators": stats.indicators, "by_kind": dict(stats.by_kind), "version": self.intel.version,
                "feeds": len(self.loaded_files), "feed_errors": list(self.errors), "monitor_only": self.monitor}

    # -- alarms ------------------------------------------------------------------------------
    def _alarm(self, sid: int, what: str, ind: Indicator, flow: Any, where: str, seen: str, **extra: Any) -> Alarm:
        self.count(f"blocked.{where}")
        details = {"lan_host": flow.client_ip, "indicator": ind.value, "indicator_type": ind.kind.value,
                   "threat": ind.threat, "source": ind.source, "where": where, "seen": seen}
        if ind.tags:
            details["tags"] = list(ind.tags)
        details.update(extra)
        return Alarm(self.name, sid, f"VCR ATP: {what} ({ind.threat})", CATEGORY, 1, details)

    # -- hooks -------------------------------------------------------------------------------
    def on_flow_start(self, flow: Any, pkt: Packet) -> Iterable[Decision] | None:
        ind = self.intel.match_ip(flow.server_addr, flow.server_port if flow.proto in (PROTO_TCP, PROTO_UDP) else None)
        if ind is None:
            ind = self.intel.match_ip(flow.client_addr)
            if ind is None:
                return None
        return [block_flow(self._alarm(SID_IP, "connection with a listed C&C address", ind, flow, "ip",
                                       f"{flow.server_ip}:{flow.server_port}"), monitor=self.monitor)]

    def on_event(self, hook: Hook, flow: Any, event: Any) -> Iterable[Decision] | None:
        if hook is Hook.DNS:
            return self._dns(flow, event)
        if hook is Hook.HTTP_REQUEST:
            return self._http(flow, event)
        if hook is Hook.TLS_HELLO:
            return self._tls(flow, event)
        return None

    def _dns(self, flow: Any, msg: DnsMessage) -> list[Verdict]:
        if msg.to_server:
            for q in msg.questions:
                name = normalize_name(q.name)
                ind = self.intel.match_domain(name)
                if ind is not None:
                    alarm = self._alarm(SID_DNS, "DNS lookup of a listed C&C domain", ind, flow, "dns", name)
                    return [block_dns_query(alarm, self.sinkhole, q.rrtype, monitor=self.monitor)]
            return []
        for ans in msg.answers:
            ind = None
            if ans.rrtype in (RR_A, RR_AAAA) and len(ans.data) in (4, 16):
                ind = self.intel.match_ip(ans.data)
                seen = ntop(ans.data) if ind is not None else ""
            else:
                for raw in (ans.name, ans.data if ans.rrtype == 5 else b""):
                    if raw:
                        seen = normalize_name(raw)
                        ind = self.intel.match_domain(seen)
                        if ind is not None:
                            break
            if ind is not None:
                alarm = self._alarm(SID_DNS_ANSWER, "DNS answer leads to a listed C&C", ind, flow, "dns_answer", seen)
                return [block_dns_response(alarm, monitor=self.monitor)]
        return []

    def _http(self, flow: Any, ev: HttpEvent) -> list[Verdict]:
        if ev.stage != "request_headers":
            return []
        tx = ev.tx
        host = tx.host.decode("latin-1")
        path = tx.uri_raw.decode("latin-1") if tx.uri_raw.startswith(b"/") else tx.uri.decode("latin-1")
        url = f"http://{host or flow.server_ip}{path}"
        hit = self.intel.match_url(host or flow.server_ip, path)
        sid, what, where = SID_URL, "request for a listed malware URL", "http_url"
        if hit is None and host:
            hit = self.intel.match_domain(host.partition(":")[0])
            sid, what, where = SID_HTTP_HOST, "HTTP request to a listed C&C domain", "http_host"
        # Judged at the connection's first request, like the web filter: the rest of the
        # connection goes to the same server and is handed to the kernel.
        flow.engine_data.setdefault(self.name, {})["http_judged"] = True
        if hit is None:
            return []
        alarm = self._alarm(sid, what, hit, flow, where, url, url=url)
        html = page.render(host + path, ["malware"], "threat", box=self.box)
        return [block_http(alarm, html, monitor=self.monitor)]

    def _tls(self, flow: Any, hello: TlsHello) -> list[Verdict]:
        seen = flow.engine_data.setdefault(self.name, {})
        if hello.to_server:
            seen["client_hello"] = True
            if not hello.sni:
                return []
            seen["sni"] = True
            name = normalize_name(hello.sni)
            ind = self.intel.match_domain(name)
            if ind is None:
                return []
            return [block_tls(self._alarm(SID_TLS, "TLS connection to a listed C&C domain", ind, flow, "tls_sni", name),
                              monitor=self.monitor)]
        if seen.get("sni"):
            return []
        for raw in hello.cert_sans:
            name = normalize_name(raw).lstrip("*.")
            ind = self.intel.match_domain(name) if name else None
            if ind is not None:
                return [block_tls(self._alarm(SID_TLS, "TLS certificate of a listed C&C domain", ind, flow,
                                              "tls_certificate", name), monitor=self.monitor)]
        return []

    def needs_more(self, flow: Any) -> bool:
        if not len(self.intel):
            return False
        app = flow_app_proto(flow) or "unknown"
        if app == "http":
            return not flow.engine_data.get(self.name, {}).get("http_judged")
        if app in ("unknown", "dns"):
            return flow.proto in (PROTO_TCP, PROTO_UDP)
        if app == "tls":
            seen = flow.engine_data.get(self.name, {})
            return not seen.get("sni") and not flow.encrypted
        return False
