"""The web filter engine: URL categories enforced at DNS, HTTP Host/URL and TLS SNI, without decryption."""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, ClassVar, Iterable, Mapping

from pydantic import Field

from filters.app.events import DnsMessage, HttpEvent, TlsHello
from filters.app.dns import normalize_name
from filters.app.layer import flow_app_proto
from filters.engine import (Action, BlockPage, BundleError, BundleLoad, Decision as EngineDecision, Engine, EngineConfig,
                            EngineContext, Hold, IORequest, LocalService, Verdict)
from filters.packet import PROTO_TCP, PROTO_UDP, Packet, Side
from filters.webfilter import page
from filters.webfilter.blocking import (Alarm, BoxName, Sinkhole, SinkholeConfig, block_dns_query, block_dns_response,
                                        block_flow, block_http, block_tls, client_sni, needs_name, parse_sinkhole)
from filters.webfilter.categories import CategoryDB
from filters.webfilter.lookup import LookupCache, LookupConfig, LookupSettings
from filters.webfilter.policy import DEFAULT_BLOCKED, POLICY_KEYS, Decision, WebPolicy, WebVerdict, decide, parse_policy

log = logging.getLogger(__name__)

SID_CATEGORY = 9_300_001
SID_DENY_LIST = 9_300_002
SID_DOH_CANARY = 9_300_010
SID_QUIC = 9_300_011
SID_DOT = 9_300_012
SID_LOOKUP_FAILED = 9_300_020
CATEGORY = "Web filter"
DOH_CANARY = "use-application-dns.net"


class WebFilterConfig(SinkholeConfig, EngineConfig):
    """``engines.webfilter``: URL categories and the customer's lists, enforced without decryption."""

    database: str | None = Field(None, description="the category database: a UT1-layout folder (one folder per "
                                                   "category); arrives with signature sync (bundle kind webcat)")
    blocked: list[str] | None = Field(sorted(DEFAULT_BLOCKED), description="category names blocked; missing: "
                                      "the security categories; empty: none")
    allow: list[str] | None = Field(None, description="always allowed, wins over everything: example.co.jp (with its "
                                                      "subdomains), 192.0.2.1, example.com/path")
    deny: list[str] | None = Field(None, description="the customer's own block list, entries like allow")
    block_quic: bool = Field(True, description="drop QUIC (UDP/443) so browsers use TLS over TCP, where the SNI shows")
    doh_canary: bool = Field(True, description="answer use-application-dns.net with NXDOMAIN (Firefox then keeps "
                                               "using the system's DNS)")
    block_dot: bool = Field(True, description="block DNS over TLS (port 853)")
    block_doh: bool = Field(True, description="block known DNS-over-HTTPS endpoints (category doh)")
    monitor_only: bool = Field(False, description="raise alarms instead of blocking")
    box_name: BoxName = Field("", description="the box's name on the block page; default: the host name")
    lookup: LookupConfig | None = Field(None, description="ask the operations center for names the lists do not have")


class WebFilter(Engine):
    Config = WebFilterConfig
    bundle_kinds = ("webcat",)
    name: ClassVar[str] = "webfilter"

    def __init__(self) -> None:
        super().__init__()
        self.db = CategoryDB.from_entries({})
        self.policy = WebPolicy()
        self.database: Path | None = None
        self.sinkhole = Sinkhole()
        self.block_quic = self.doh_canary = self.block_dot = self.block_doh = True
        self.monitor = False
        self.box = ""
        self.missing = ""
        self.lookup = LookupSettings()
        self.cache = LookupCache(self.lookup.cache_size)

    # -- configuration -------------------------------------------------------------------
    def configure(self, section: Mapping[str, Any], ctx: EngineContext = EngineContext()) -> None:
        conf = self.check_section(section)
        known = None
        if conf.database:
            path = Path(conf.database)
            # A missing bundle is not a config error: the box must start and pass traffic until
            # signature sync delivers it (summary() says "database missing").
            known = {p.name for p in path.iterdir() if p.is_dir()} if path.is_dir() else None
            self.database = path
        self.policy = parse_policy({k: getattr(conf, k) for k in POLICY_KEYS if k in conf.model_fields_set},
                                   known_categories=known)
        self.sinkhole = parse_sinkhole(conf, ctx)
        self.block_quic, self.doh_canary = conf.block_quic, conf.doh_canary
        self.block_dot, self.block_doh = conf.block_dot, conf.block_doh
        self.monitor = conf.monitor_only
        self.box = conf.box_name or os.uname().nodename
        self.lookup = (conf.lookup or LookupConfig()).settings()
        self.cache = LookupCache(self.lookup.cache_size)

    def prepare(self) -> None:
        if self.database is None:
            return
        try:
            self.db = CategoryDB.load(self.database)
        except OSError as exc:
            log.warning("web filter: no category database (%s); nothing is blocked by category until it arrives", exc)
            self.missing = str(exc)

    def summary(self) -> dict[str, Any]:
        return {
            "categories": len(self.db.categories),
            "database_version": self.db.version,
            "blocked": sorted(self.policy.blocked),
            "allow": len(self.policy.allow),
            "deny": len(self.policy.deny),
            "monitor_only": self.monitor,
            "database_missing": self.missing,
            "lookup": {"enabled": self.lookup.enabled, "cached": len(self.cache)},
            "signatures": {"webcat": self.db.version} if self.db.version else {},
        }

    # -- integration with the box ----------------------------------------------------------
    @classmethod
    def apply_bundle(cls, section: Mapping[str, Any], kind: str, folder: Path) -> dict[str, Any]:
        """The live webcat bundle becomes the category database."""
        return {**section, "database": str(folder)}

    @classmethod
    def load_bundle(cls, kind: str, folder: Path, manifest: Mapping[str, Any], section: Mapping[str, Any],
                    ctx: EngineContext) -> BundleLoad:
        try:
            db = CategoryDB.load(folder)
        except (OSError, ValueError) as exc:
            raise BundleError(f"web categories do not load: {exc}") from None
        st = db.stats()
        n = int(st.get("domain_keys", 0)) + int(st.get("ip_keys", 0)) + int(st.get("url_hosts", 0))
        return BundleLoad(n, {"categories": st.get("categories"), "entries": n}, db)

    def local_services(self) -> tuple[LocalService, ...]:
        """The block page where sinkholed names land."""
        return (BlockPage(self.describe_block, self.box),)

    def describe_block(self, host: str) -> tuple[list[str], str]:
        """What the block page shows for ``host``: the blocked categories (or all its categories) and
        the reason ("deny list" or "category")."""
        d = self.decide_host(host)
        return sorted(d.categories & self.policy.blocked) or sorted(d.categories), "deny list" if d.reason == "deny list" else "category"

    # -- decisions -------------------------------------------------------------------------
    def decide_host(self, host: str, path: str = "") -> Decision:
        """The decision for a host (and path), as enforced (the block page server asks too)."""
        return self._decide(normalize_name(host.encode("utf-8", "surrogateescape")), path)

    def _decide(self, host: str, path: str = "") -> Decision:
        extra = (self.cache.get(host) or frozenset()) if self.lookup.enabled else frozenset()
        d = decide(self.db, self.policy, host, path, extra)
        if not d.blocks and self.block_doh and "doh" in d.categories and d.reason != "allow list":
            return Decision(WebVerdict.BLOCK, d.categories, "category doh", d.matched)
        return d

    def _alarm(self, d: Decision, host: str, where: str, url: str = "") -> Alarm:
        by_list = d.reason == "deny list"
        sid = SID_DENY_LIST if by_list else SID_CATEGORY
        sig = "VCR webfilter: site on the deny list" if by_list else f"VCR webfilter: blocked {d.reason}"
        self.count(f"blocked.{where}")
        details = {"host": host, "categories": sorted(d.categories), "reason": d.reason, "matched": d.matched, "where": where}
        if url:
            details["url"] = url
        return Alarm(self.name, sid, sig, CATEGORY, 2, details)

    def _page(self, d: Decision, site: str) -> str:
        reason = "deny list" if d.reason == "deny list" else "category"
        cats = [c for c in d.categories if c in self.policy.blocked or c == "doh"] or list(d.categories)
        return page.render(site, cats, reason, box=self.box)

    # -- hooks -------------------------------------------------------------------------------
    def on_flow_start(self, flow: Any, pkt: Packet) -> Iterable[EngineDecision] | None:
        # The internet side's port: the server's, or the "client's" when the flow's first packet
        # here came from the internet side (a reply seen first because the worker did not see the
        # flow start: its sender, the server, became the flow's client).
        port = flow.client_port if getattr(flow, "client_side", None) is Side.WAN else flow.server_port
        if self.block_quic and flow.proto == PROTO_UDP and port == 443:
            self.count("blocked.quic")
            return [block_flow(Alarm(self.name, SID_QUIC, "VCR webfilter: QUIC blocked (browsers fall back to TLS over TCP)",
                                     CATEGORY, 3, {"where": "quic"}), monitor=self.monitor)]
        if self.block_dot and port == 853 and flow.proto in (PROTO_TCP, PROTO_UDP):
            self.count("blocked.dot")
            return [block_flow(Alarm(self.name, SID_DOT, "VCR webfilter: DNS over TLS blocked", CATEGORY, 3,
                                     {"where": "dot"}), monitor=self.monitor)]
        return None

    def on_dns(self, flow: Any, msg: DnsMessage) -> list[EngineDecision]:
        if msg.to_server:
            for q in msg.questions:
                name = normalize_name(q.name)
                if self.doh_canary and name == DOH_CANARY:
                    self.count("blocked.doh_canary")
                    alarm = Alarm(self.name, SID_DOH_CANARY, "VCR webfilter: DoH canary answered NXDOMAIN", CATEGORY, 3,
                                  {"host": name, "where": "dns"})
                    return [block_dns_query(alarm, Sinkhole(nxdomain=True), q.rrtype)]
                d = self._decide(name)
                if d.blocks:
                    return [block_dns_query(self._alarm(d, name, "dns"), self.sinkhole, q.rrtype, monitor=self.monitor)]
                hold = self._lookup(flow, name, d, where="dns", rrtype=q.rrtype)
                if hold is not None:
                    return [hold]
            return []
        for ans in msg.answers:  # CNAME chains: any name in the answer that is blocked
            for raw in (ans.name, ans.data if ans.rrtype == 5 else b""):
                if raw:
                    name = normalize_name(raw)
                    d = self._decide(name)
                    if d.blocks:
                        return [block_dns_response(self._alarm(d, name, "dns_answer"), monitor=self.monitor)]
        return []

    def on_http_request(self, flow: Any, ev: HttpEvent) -> list[EngineDecision]:
        if ev.stage != "request_headers":
            return []
        # Judged once per connection: later requests on it go to the same server (the flow is
        # handed to the kernel unless another engine still wants it).
        flow.engine_data.setdefault(self.name, {})["http_judged"] = True
        tx = ev.tx
        host = tx.host.decode("latin-1") or flow.server_ip
        path = tx.uri_raw.decode("latin-1") if tx.uri_raw.startswith(b"/") else tx.uri.decode("latin-1")
        d = self._decide(host, path)
        if not d.blocks:
            hold = self._lookup(flow, normalize_name(host.partition(":")[0].encode("latin-1")), d, where="http",
                                path=path, host=host)
            return [hold] if hold is not None else []
        url = f"http://{host}{path}"
        return [block_http(self._alarm(d, host, "http", url), self._page(d, host + path), monitor=self.monitor,
                           http2=tx.protocol == b"HTTP/2")]

    def on_tls_hello(self, flow: Any, hello: TlsHello) -> list[EngineDecision]:
        seen = flow.engine_data.setdefault(self.name, {})
        if hello.to_server:
            name = client_sni(seen, hello)
            if name is None:
                return []
            d = self._decide(name)
            if d.blocks:
                return [block_tls(self._alarm(d, name, "tls_sni"), monitor=self.monitor)]
            hold = self._lookup(flow, name, d, where="tls_sni")
            return [hold] if hold is not None else []
        if seen.get("sni"):
            return []
        for raw in (*hello.cert_sans, _cn(hello.cert_subject)):  # no SNI: fall back to the certificate's names
            if raw:
                name = normalize_name(raw)
                d = self._decide(name.lstrip("*."))
                if d.blocks:
                    return [block_tls(self._alarm(d, name, "tls_certificate"), monitor=self.monitor)]
        return []

    # -- names the local lists do not have: ask the operations center -----------------------
    def _lookup(self, flow: Any, name: str, d: Decision, **context: Any) -> Hold | None:
        """A hold while the center categorises ``name``, or None (lookup off, known or cached)."""
        if not self.lookup.enabled or not name or d.categories or d.reason != "not blocked":
            return None
        if self.cache.get(name) is not None:
            return None  # cached, also as "no category" or a recent failure
        flow.engine_data.setdefault(self.name, {})["lookup"] = {"name": name, **context}
        self.count("lookup.requests")
        req = IORequest("category_lookup", {"url": self.lookup.url, "name": name, "timeout": self.lookup.timeout,
                                            "auth_file": self.lookup.auth_file, "ca_file": self.lookup.ca_file})
        return Hold(self.name, req, timeout=self.lookup.timeout, on_timeout=Action.ALERT,
                    reason=f"category lookup of {name} timed out: allowed")

    def _learn(self, name: str, result: Any, error: str | None) -> bool:
        """Cache an answer (or a failure, briefly); True when it was a usable answer."""
        if error is not None or not isinstance(result, dict) or not isinstance(result.get("categories"), list):
            self.count("lookup.errors")
            self.cache.put(name, frozenset(), self.lookup.error_ttl)
            return False
        cats = frozenset(str(c) for c in result["categories"])
        ttl = min(float(result.get("ttl") or self.lookup.cache_ttl), self.lookup.cache_ttl) if cats else self.lookup.negative_ttl
        self.cache.put(name, cats, ttl)
        self.count("lookup.answers")
        return True

    def on_io_result(self, flow: Any, request: IORequest, result: Any, error: str | None) -> list[EngineDecision]:
        name = str(request.args.get("name", ""))
        ctx = flow.engine_data.setdefault(self.name, {}).pop("lookup", {"name": name, "where": ""})
        if not self._learn(name, result, error):
            alarm = Alarm(self.name, SID_LOOKUP_FAILED, "VCR webfilter: category lookup failed, allowed", CATEGORY, 3,
                          {"host": name, "where": ctx.get("where", ""), "error": error or "bad answer"})
            return [Verdict(Action.ALERT, self.name, rule_id=alarm.sid, signature=alarm.signature, category=CATEGORY,
                            severity=3, metadata={self.name: alarm.details}, reason=error or "bad answer")]
        path = ctx.get("path", "")
        d = self._decide(name, path)
        if not d.blocks:
            return []
        where = ctx.get("where", "")
        if where == "dns":
            return [block_dns_query(self._alarm(d, name, "dns"), self.sinkhole, ctx.get("rrtype", 1), monitor=self.monitor)]
        if where == "tls_sni":
            return [block_tls(self._alarm(d, name, "tls_sni"), monitor=self.monitor)]
        if where == "http":
            host = ctx.get("host", name)
            alarm = self._alarm(d, host, "http", f"http://{host}{path}")
            return [block_http(alarm, self._page(d, host + path), monitor=self.monitor,
                               http2=flow_app_proto(flow) == "http2")]
        return []

    def on_io_late(self, request: IORequest, result: Any, error: str | None) -> None:
        self._learn(str(request.args.get("name", "")), result, error)

    def needs_more(self, flow: Any) -> bool:
        return needs_name(self.name, flow)


def _cn(subject: bytes) -> bytes:
    for part in subject.split(b","):
        key, _, value = part.strip().partition(b"=")
        if key.upper() == b"CN":
            return value.strip()
    return b""
