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
from typing import Annotated, Any, ClassVar, Iterable, Mapping

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from filters.app.events import DnsMessage, HttpEvent, TlsHello
from filters.app.dns import normalize_name
from filters.engine import (Action, BlockPage, ConfigError, Decision, Engine, EngineConfig, EngineContext, KernelSet,
                            LocalService, Verdict)
from filters.packet import PROTO_TCP, PROTO_UDP, Packet, Side, ntop
from filters.threatintel import FORMATS, FeedLimits, Indicator, ParseResult, ThreatIntel, load_feed
from filters.webfilter.blocking import (RR_A, RR_AAAA, Alarm, BoxName, Sinkhole, SinkholeConfig, block_dns_query,
                                        block_dns_response, block_flow, block_http, block_tls, client_sni, needs_name,
                                        parse_sinkhole)
from filters.webfilter import page

log = logging.getLogger(__name__)

SID_IP = 9_400_001
SID_DNS = 9_400_002
SID_DNS_ANSWER = 9_400_003
SID_TLS = 9_400_004
SID_HTTP_HOST = 9_400_005
SID_URL = 9_400_006
CATEGORY = "A Network Trojan was detected"  # Suricata's classification for C&C traffic
MAX_FEED_FILES = 256
# The C&C sets in the kernel (dropped and logged in VCR-BLOCK with the NFLOG prefix kind "ti"):
# listed IPs/CIDRs (hash:net) and ip:port channels (hash:ip,port), with per-entry counters.
TI_NET_SETS = {4: "vcr-ti4", 6: "vcr-ti6"}
TI_PORT_SETS = {4: "vcr-tip4", 6: "vcr-tip6"}
TI_MAXELEM = 2_000_000
KERNEL_TAG = "ti"


@dataclass(frozen=True, slots=True)
class FeedSpec:
    path: Path
    format: str | None = None
    options: Mapping[str, Any] | None = None
    source: str | None = None


class FeedConfig(BaseModel):
    """One feed of ``engines.atp.feeds``: a file or a folder (every feed file in it)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    path: str = Field(description="a feed file, or a folder whose files are all feeds")
    format: str | None = Field(None, description=f"the parser: {', '.join(FORMATS)}; default: detected from the "
                                                 "file name and content")
    options: dict[str, Any] | None = Field(None, description="parser options, e.g. {include_offline: false}")
    source: str | None = Field(None, description="the feed's name in alarms; default: from the file name")

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        if not v:
            raise ValueError("expected the path of a feed file or folder")
        return v

    @field_validator("format")
    @classmethod
    def _format(cls, v: str | None) -> str | None:
        if v is not None and v not in FORMATS:
            raise ValueError(f"unknown feed format, expected one of {', '.join(FORMATS)}")
        return v


class AtpConfig(SinkholeConfig, EngineConfig):
    """``engines.atp``: C&C and malware indicators from threat-intel feeds, enforced inline."""

    feeds: list[Annotated[FeedConfig, BeforeValidator(lambda v: {"path": v} if isinstance(v, str) else v)]] | None = Field(
        None, description="feed files or folders: a path, or a mapping with path, format, options and source; the "
                          "live threatintel bundle joins them")
    monitor_only: bool = Field(False, description="raise alarms instead of blocking")
    allow_documentation_addresses: bool = Field(False, description="accept indicators in the documentation ranges "
                                                                   "(192.0.2.0/24...), for tests and demos")
    box_name: BoxName = Field("", description="the box's name on the block page; default: the host name")


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
    Config = AtpConfig
    bundle_kinds = ("threatintel",)
    kernel_sets = tuple(KernelSet(sets[fam], fam, KERNEL_TAG, kind, TI_MAXELEM, counters=True)
                        for fam in (4, 6) for sets, kind in ((TI_NET_SETS, "hash:net"), (TI_PORT_SETS, "hash:ip,port")))
    name: ClassVar[str] = "atp"

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
        conf = self.check_section(section)
        self.feeds = [FeedSpec(Path(f.path), f.format, f.options or {}, f.source) for f in conf.feeds or []]
        self.sinkhole = parse_sinkhole(conf, ctx)
        self.monitor = conf.monitor_only
        self.limits = FeedLimits(allow_documentation=conf.allow_documentation_addresses)
        self.box = conf.box_name or os.uname().nodename

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
                "feeds": len(self.loaded_files), "feed_errors": list(self.errors), "monitor_only": self.monitor,
                "signatures": {"atp": self.intel.version} if self.intel.version else {}}

    # -- integration with the box: the threatintel bundle, the C&C sets in the kernel -----------
    @classmethod
    def apply_bundle(cls, section: Mapping[str, Any], kind: str, folder: Path) -> dict[str, Any]:
        """The live threatintel bundle's folder joins the feeds (replacing an entry that names the
        bundles' threatintel folder, or this version, itself)."""
        feeds = section.get("feeds") or []
        feeds = list(feeds) if isinstance(feeds, list) else [feeds]
        own = [f for f in feeds if not (isinstance(f, str) and os.path.realpath(f) in (str(folder.parent), str(folder)))]
        return {**section, "feeds": own + [str(folder)]}

    def kernel_set_entries(self) -> Mapping[str, Iterable[str]]:
        nets, ports = self.intel.ipset_entries(), self.intel.ipset_ip_port_entries(("tcp", "udp"))
        return {TI_NET_SETS[4]: nets[0], TI_PORT_SETS[4]: ports[0], TI_NET_SETS[6]: nets[1], TI_PORT_SETS[6]: ports[1]}

    def local_services(self) -> tuple[LocalService, ...]:
        """The block page where names it sinkholes land: the C&C page (the PC may be infected)."""
        return (BlockPage(self.describe_block, self.box),)

    def describe_block(self, host: str) -> tuple[list[str], str, str]:
        """For the block page server: a listed C&C name gives the threat page; others nothing."""
        hit = self.intel.match_domain(host.lower().rstrip(".")) if host else None
        return (["malware"], "threat", hit.threat) if hit is not None else ([], "", "")

    def kernel_drop_verdict(self, pkt: Packet) -> Verdict:
        """A kernel drop of a listed C&C address: name the LAN host, the indicator and the threat."""
        # The listed end is the remote one: the destination of a LAN host's attempt, or the
        # source of an inbound packet from the C&C.
        ends = [(pkt.dst_addr, pkt.dport, pkt.src_addr), (pkt.src_addr, pkt.sport, pkt.dst_addr)]
        if pkt.side is Side.WAN:
            ends.reverse()
        remote, remote_port, lan = ends[0]
        ind = None
        for r, rp, other in ends:
            ind = self.intel.match_ip(r, rp or None)
            if ind is not None:
                remote, remote_port, lan = r, rp, other
                break
        details: dict[str, Any] = {"lan_host": ntop(lan), "where": "kernel", "seen": f"{ntop(remote)}:{remote_port}"}
        if ind is not None:
            details.update(indicator=ind.value, indicator_type=ind.kind.value, threat=ind.threat, source=ind.source)
        threat = ind.threat if ind is not None else "listed address"
        return Verdict(Action.DROP, self.name, rule_id=SID_IP,
                       signature=f"VCR ATP: connection with a listed C&C address ({threat})",
                       category=CATEGORY, severity=1, reason="kernel", metadata={self.name: details})

    # -- alarms ------------------------------------------------------------------------------
    def _alarm(self, sid: int, what: str, ind: Indicator, flow: Any, where: str, seen: str, **extra: Any) -> Alarm:
        self.count(f"blocked.{where}")
        # the LAN endpoint: the client, unless the flow's start was not seen and its first packet
        # here came from the internet side (its "client" is then the server)
        lan_host = flow.server_ip if getattr(flow, "client_side", None) is Side.WAN else flow.client_ip
        details = {"lan_host": lan_host, "indicator": ind.value, "indicator_type": ind.kind.value,
                   "threat": ind.threat, "source": ind.source, "where": where, "seen": seen}
        if ind.tags:
            details["tags"] = list(ind.tags)
        details.update(extra)
        return Alarm(self.name, sid, f"VCR ATP: {what} ({ind.threat})", CATEGORY, 1, details)

    # -- hooks -------------------------------------------------------------------------------
    def on_flow_start(self, flow: Any, pkt: Packet) -> Iterable[Decision] | None:
        ports = flow.proto in (PROTO_TCP, PROTO_UDP)
        ind = self.intel.match_ip(flow.server_addr, flow.server_port if ports else None)
        seen = f"{flow.server_ip}:{flow.server_port}"
        if ind is None:
            # The client's side with its port too: a flow whose start the worker did not see (a
            # reply first, after a bypassed queue or a forgotten flow) has the server as "client",
            # and a listed ip:port channel is then on this side.
            ind = self.intel.match_ip(flow.client_addr, flow.client_port if ports else None)
            if ind is None:
                return None
            seen = f"{flow.client_ip}:{flow.client_port}"
        return [block_flow(self._alarm(SID_IP, "connection with a listed C&C address", ind, flow, "ip", seen),
                           monitor=self.monitor)]

    def on_dns(self, flow: Any, msg: DnsMessage) -> list[Verdict]:
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

    def on_http_request(self, flow: Any, ev: HttpEvent) -> list[Verdict]:
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
        html = page.render(host + path, ["malware"], "threat", box=self.box, threat=hit.threat)
        return [block_http(alarm, html, monitor=self.monitor, http2=tx.protocol == b"HTTP/2")]

    def on_tls_hello(self, flow: Any, hello: TlsHello) -> list[Verdict]:
        seen = flow.engine_data.setdefault(self.name, {})
        if hello.to_server:
            name = client_sni(seen, hello)
            if name is None:
                return []
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
        return needs_name(self.name, flow)
