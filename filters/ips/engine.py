"""The IPS engine: Suricata-compatible rules run inline on packets, streams and app-layer transactions."""
from __future__ import annotations

import glob
import hashlib
import itertools
import logging
import os
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterable, Mapping, NamedTuple, Sequence

from filters.app.layer import flow_app_proto
from filters.engine import (MAX_KERNEL_PATTERN, Action, BundleError, BundleLoad, ConfigError, Decision, Engine,
                            EngineContext, KernelFilter, KernelPattern, Verdict)
from filters.ips.app_buffers import dns_buffers, http_builder, tls_buffers
from filters.ips.buffer_match import MatchContext, match_section
from filters.ips.config import STREAM_TAIL, IpsConfig, IpsVars
from filters.ips.netspec import Variables
from filters.ips.packet_match import header_matches, match_packet_checks
from filters.ips.reach import Reach
from filters.ips.rule import (BUFFERS, PKT, Action as RuleAction, BufDir, FieldCheck, FlowbitCmd, IntOp, PacketField, Rule,
                              Threshold, ThresholdType, Track)
from filters.ips.rule_groups import Detector, RuleInfo, could_hold, could_match_synack, evaluation_order
from filters.ips.rule_parser import LoadResult, load_classification, load_files
from filters.packet import PROTO_TCP, PROTO_UDP, Packet
from filters.stream import TcpState

if TYPE_CHECKING:  # pragma: no cover
    from filters.app.events import DnsMessage, HttpEvent, TlsHello

log = logging.getLogger(__name__)

MAX_THRESHOLD_ENTRIES = 100_000
MAX_REPORTED_ERRORS = 20
_GENERATIONS = itertools.count(1)  # a number per Detector built in this process (_FlowState.detector)
APPS_WITH_PARSER = frozenset({"http", "http1", "http2", "tls", "dns", "smtp"})
VERDICT_ACTION = {
    RuleAction.ALERT: Action.ALERT, RuleAction.DROP: Action.DROP, RuleAction.PASS: Action.PASS,
    RuleAction.REJECT: Action.REJECT, RuleAction.REJECTSRC: Action.REJECT, RuleAction.REJECTDST: Action.REJECT,
    RuleAction.REJECTBOTH: Action.REJECT,
}


MAX_KERNEL_PATTERNS = 256  # patterns per direction past which a header class is not prefiltered in the kernel
MAX_CLASS_CACHE = 4096  # header classes (protocol, addresses, port classes, direction) kept, and IP-only answers
MAX_CLASS_FITS = 256  # prefilter hits whose fit is remembered per header class
MAX_HEADER_CACHE = 256  # rule headers remembered per TCP flow (bounds the memory of 100k flows)
MAX_LIMIT_SIDS = 64  # rules whose bound hits are counted by sid (the rest under "sid:other")
MAX_FIRED_TX = 1024  # (transaction, rule) pairs remembered per flow so a rule fires once per transaction
MAX_TX_MEMOS = 4  # app-layer transactions per flow whose inspection state is kept (pipelining)
_BODY_STAGES = frozenset({"request_body", "response_body"})
_GROWING = frozenset({PKT, "file.data", "http.request_body", "http.response_body"})  # change within a body stage


@dataclass
class _TxMemo:
    """What one app-layer transaction's earlier events already inspected.

    A body in progress raises an event per chunk; without this, each event would scan every buffer
    of the transaction again and re-run every candidate rule. ``prefilter``: per prefilter, the
    buffer last scanned and its hits (Group.candidates). ``versions``: per buffer, a number that
    changes when its content does; ``evaluated``: per rule that ran without firing, the versions
    of its buffers then. Such a rule runs again only once one of them changed."""

    prefilter: dict[Any, Any] = field(default_factory=dict)
    last: dict[str, list[bytes]] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)
    evaluated: dict[int, tuple[int, ...]] = field(default_factory=dict)
    checked: set[str] = field(default_factory=set)  # buffers compared during the current event
    stage: str | None = None  # the transaction's stage at the last event
    bufs: dict[str, list[bytes]] = field(default_factory=dict)  # buffers that cannot change in this stage
    # (rule, buffer) -> the buffer in which that rule's required content was last found missing
    absent: dict[tuple[int, str], bytes] = field(default_factory=dict)
    # rules with a required content missing from a buffer that cannot change within the stage
    # (not _GROWING: a status code, a header...): they cannot match before the stage changes, so
    # the body events that follow skip them without a look (emptied with ``bufs``)
    dead: set[int] = field(default_factory=set)

    def begin(self) -> None:
        self.checked.clear()

    def version(self, name: str, buffers: Callable[[str], list[bytes]]) -> int:
        if name not in self.checked:
            self.checked.add(name)
            cur = buffers(name)
            prev = self.last.get(name)
            if prev is None or not (cur is prev or cur == prev):
                self.versions[name] = self.versions.get(name, 0) + 1
                self.last[name] = cur
        return self.versions.get(name, 0)


@dataclass(slots=True, eq=False)
class _HeaderClass:
    """What the packet group's rules make of one header class: packets of one protocol from one
    address to another, whose ports fall in the same port classes (Detector.port_class), in one
    direction of their flow. Every packet of the class fits the same rule headers and the same
    static checks (could_hold, flow:to_server/to_client); most flows share a class with others (a
    client's connections to one service differ only in the source port).

    ``unfiltered``: the rules without a fast pattern that fit, in evaluation order (candidates for
    every packet). ``fits``: per prefilter hit judged so far, whether it fits: a hit that does
    not is dropped by a dict lookup, with no evaluation (most hits of a UDP or ICMP payload are
    rules of other protocols or ports)."""

    proto: int
    src: bytes
    sport: int
    dst: bytes
    dport: int
    has_ports: bool
    to_server: bool
    unfiltered: tuple[RuleInfo, ...] = ()
    fits: dict[int, bool] = field(default_factory=dict)
    # the kernel prefilter's patterns of the class (Ips._class_patterns, once ``kernel_known``):
    # None when a rule that fits has no fast pattern on the payload
    kernel: Any = None
    kernel_known: bool = False
    # could a rule of the class match a SYN+ACK without payload (Ips.needs_handshake; None: not asked yet)
    synack: bool | None = None

    def fit(self, info: RuleInfo) -> bool:
        """Could the rule match a packet of this class, judging by what the class fixes?"""
        r = info.rule
        f = r.flow
        if f is not None and (f.to_server and not self.to_server or f.to_client and self.to_server):
            return False
        return (header_matches(r, self.proto, self.src, self.sport, self.dst, self.dport, self.has_ports)
                and could_hold(r, self.proto, self.src == self.dst))


@dataclass(slots=True, eq=False)
class _FlowState:
    """The IPS's state of one flow. A worker holds one per flow (100,000 and more): containers
    are made when first needed, most flows never need them."""

    # The rule set (Detector) the caches below were filled for: they name rules by their index in
    # it, so a flow living across a reload must not read them against the new one (see Ips._state).
    detector: int = 0
    flowbits: set[str] | None = None
    flowints: dict[str, int] | None = None
    passed: bool = False
    bypassed: bool = False  # counted once as a flow the IPS let go of (encrypted, or no rule can match it)
    iponly_done: int = 0  # directions whose IP-only rules ran: 1 to_server, 2 to_client
    fired_tx: dict[tuple[Any, int, int], None] | None = None  # (tx, gid, sid) that fired, oldest first
    tail_ts: bytes = b""  # the end of each stream direction, for matches across two chunks
    tail_tc: bytes = b""
    # per stream direction: the stream rules whose fast pattern was in the window that ends with
    # the tail (Group.window_hits); None: not known (a reload)
    hits_ts: tuple[int, ...] | None = ()
    hits_tc: tuple[int, ...] | None = ()
    relevant: tuple[bool, bool, bool] | None = None  # could (iponly, packet, stream) rules apply at all
    # Rule headers (protocol, addresses, ports) judged once per flow and direction: 2 * rule + to_server.
    headers: dict[int, bool] | None = None
    # the flow's client when ``headers`` was filled (two slots: a tuple per flow costs 56 bytes)
    headers_addr: bytes = b""
    headers_port: int = -1
    tx_memos: OrderedDict[Any, _TxMemo] | None = None
    # Per direction: the packet group's judgement of this direction's header (see _HeaderClass;
    # the header never changes within a direction).
    class_ts: _HeaderClass | None = None
    class_tc: _HeaderClass | None = None

    def rebind(self, detector: int) -> None:
        """A reload swapped the rule set: forget what names rules by index (header judgements,
        unfiltered candidates, transactions' prefilter hits and evaluated rules, whether rules
        could apply at all); keep what the flow earned (flowbits, flowints, a pass, IP-only rules
        done, the stream tail, the rules that fired per transaction, by sid)."""
        self.detector = detector
        self.headers = None
        self.class_ts = self.class_tc = None
        self.tx_memos = None
        self.relevant = None
        self.hits_ts = self.hits_tc = None

    def tx_memo(self, key: Any) -> _TxMemo:
        if self.tx_memos is None:
            self.tx_memos = OrderedDict()
        memo = self.tx_memos.get(key)
        if memo is None:
            memo = self.tx_memos[key] = _TxMemo()
            while len(self.tx_memos) > MAX_TX_MEMOS:
                self.tx_memos.popitem(last=False)
        memo.begin()
        return memo


@dataclass(slots=True)
class _Seen:
    start: float
    count: int = 0
    alerted: bool = False


class Thresholds:
    """threshold / detection_filter bookkeeping on packet time, bounded in entries."""

    def __init__(self) -> None:
        self.entries: OrderedDict[tuple[Any, ...], _Seen] = OrderedDict()

    def allow(self, th: Threshold, key: tuple[Any, ...], ts: float) -> bool:
        st = self.entries.get(key)
        if st is None or ts - st.start >= th.seconds:
            st = _Seen(ts)
            self.entries[key] = st
            if len(self.entries) > MAX_THRESHOLD_ENTRIES:
                self.entries.popitem(last=False)
        st.count += 1
        if th.detection_filter:
            return st.count > th.count
        if th.type is ThresholdType.LIMIT:
            return st.count <= th.count
        if th.type is ThresholdType.THRESHOLD:
            if st.count >= th.count:
                st.count, st.start = 0, ts
                return True
            return False
        if th.type is ThresholdType.BOTH:
            if st.count >= th.count and not st.alerted:
                st.alerted = True
                return True
            return False
        return st.count == 1 or (th.count > 0 and st.count % th.count == 0)  # backoff, approximately


def _track_key(track: Track, src: bytes, dst: bytes, flow: Any) -> tuple[Any, ...]:
    if track is Track.BY_SRC:
        return (src,)
    if track is Track.BY_DST:
        return (dst,)
    if track is Track.BY_BOTH:
        return (src, dst)
    if track is Track.BY_FLOW:
        return (flow.flow_id,)
    return ()


def _established(flow: Any) -> bool:
    """Suricata's flow:established for the packet being inspected: the handshake was complete
    before it (the ACK that completes the handshake is not yet 'established')."""
    if flow.proto == PROTO_TCP:
        if flow.midstream:
            return flow.state is not TcpState.CLOSED
        return flow.prev_state in (TcpState.ESTABLISHED, TcpState.CLOSING)
    # ct_established: a flow the kernel prefilter carried while the worker forgot it (see Ips._state)
    return flow.pkts_toserver > 0 and flow.pkts_toclient > 0 or flow.ct_established


@dataclass(slots=True)
class _Site:
    """Where a rule is being evaluated: direction, addresses, the packet, and buffer access."""

    flow: Any
    to_server: bool
    src: bytes
    sport: int
    dst: bytes
    dport: int
    has_ports: bool
    pkt: Packet | None
    buffers: Callable[[str], list[bytes]]
    ts: float
    app: str | None = None  # the flow's app-layer protocol as this site sees it


def _bundle_rules(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.rules") if p.is_file())


def rules_digest(files: Iterable[Path]) -> str:
    """``sha256:`` and 16 hex digits of the rule files' contents (sorted by path), or "" without files."""
    names = sorted({str(f) for f in files})
    if not names:
        return ""
    h = hashlib.sha256()
    for name in names:
        try:
            h.update(Path(name).read_bytes())
        except OSError:
            return ""
    return "sha256:" + h.hexdigest()[:16]


class Ips(Engine):
    Config = IpsConfig
    bundle_kinds = ("ips",)
    name: ClassVar[str] = "ips"
    coalesce_http: ClassVar[bool] = True  # decisions wait for the packet's end anyway (_defer)

    def __init__(self) -> None:
        super().__init__()
        self.detector = Detector([])
        self._generation = next(_GENERATIONS)  # changes with every Detector this engine runs
        self.load: LoadResult | None = None
        self.load_seconds = 0.0
        self.inert: dict[str, int] = {}
        self.thresholds = Thresholds()
        self.stream_tail = STREAM_TAIL
        self.encryption_bypass = True  # engines.ips.encryption_handling: bypass (see needs_more)
        self.unmatchable_bypass = True  # engines.ips.unmatchable_flows: bypass (see needs_more)
        self.kernel_prefilter = True  # engines.ips.kernel_prefilter: on (see kernel_filter)
        self._reach = Reach(self.detector)  # rebuilt with the detector in prepare()
        self.vars = Variables.suricata_defaults()
        self._pkt: Packet | None = None
        self._pkt_flow: Any = None  # the flow of the packet being processed (None between packets)
        self._pending: list[Decision] = []  # this packet's decisions so far (pass is applied at its end)
        self._class_cache: tuple[Any, dict[tuple[Any, ...], _HeaderClass]] = (None, {})
        self._interned: dict[tuple[RuleInfo, ...], tuple[RuleInfo, ...]] = {}  # distinct answers of both caches
        self._iponly_cache: tuple[Any, dict[tuple[Any, ...], tuple[RuleInfo, ...]]] = (None, {})
        # per flow app protocol, for the rule set it was worked out for (_app_fit)
        self._app_fit_cache: tuple[Any, dict[str, tuple[bool, bool]]] = (None, {})
        self._app_before: str | None = None
        self._files: list[Path] = []
        self._classification: Mapping[str, tuple[str, int]] | None = None
        self.pcre_limit_sids: dict[int, int] = {}  # sid -> pcre matches stopped by a PCRE2 bound
        self.rules_digest = ""  # "sha256:<16 hex>" of the loaded rule files (the heartbeat's signature)

    # -- configuration -------------------------------------------------------------------
    def configure(self, section: Mapping[str, Any], ctx: EngineContext = EngineContext()) -> None:
        conf = self.check_section(section)
        files = self._rule_files(conf.rule_files)
        self.vars = self._variables(conf.vars or IpsVars(), list(ctx.home_net))
        classification = None
        if conf.classification:
            try:
                classification = load_classification(conf.classification)
            except OSError as exc:
                raise ConfigError(f"cannot read: {exc.strerror}", key="classification") from None
        self.stream_tail = conf.stream_tail
        self.encryption_bypass = conf.encryption_handling == "bypass"
        self.unmatchable_bypass = conf.unmatchable_flows == "bypass"
        self.kernel_prefilter = conf.kernel_prefilter == "on"
        self._files, self._classification = files, classification

    def prepare(self) -> None:
        self.reload(self._files, self._classification)

    def _rule_files(self, patterns: list[str]) -> list[Path]:
        out: list[Path] = []
        for i, item in enumerate(patterns):
            matches = sorted(glob.glob(item))
            if not matches:
                raise ConfigError(f"no rule file matches {item!r}", key=f"rule_files[{i}]")
            out += [Path(m) for m in matches]
        return out

    def _variables(self, conf: IpsVars, home_net: list[str] | None) -> Variables:
        addrs = dict(conf.address_groups or {})
        ports = dict(conf.port_groups or {})
        if home_net and "HOME_NET" not in addrs:
            addrs["HOME_NET"] = "[" + ",".join(home_net) + "]"
        return Variables.suricata_defaults().with_overrides(address_groups=addrs, port_groups=ports)

    def reload(self, files: list[Path], classification: Mapping[str, tuple[str, int]] | None = None) -> None:
        """Load and compile a new rule set, then swap it in (the old one keeps working until then)."""
        t0 = time.monotonic()
        result = load_files(files, self.vars, classification=classification)
        usable, inert = [], {}
        for rule in result.rules:
            app = rule.app_proto
            if app is not None and app not in APPS_WITH_PARSER:
                inert[app] = inert.get(app, 0) + 1
                continue
            usable.append(rule)
        detector = Detector(usable)
        detector.scan_cache.attach(self.counters)  # its hits and misses in the engine's stats
        reach = Reach(detector)  # built with the rules, not on the first packet after the reload
        self.detector, self._reach, self.load, self.inert = detector, reach, result, inert
        self._generation = next(_GENERATIONS)
        self.rules_digest = rules_digest(files)
        self.load_seconds = time.monotonic() - t0
        for err in result.errors[:MAX_REPORTED_ERRORS]:
            log.warning("rule skipped (bad syntax): %s", err)
        log.info(
            "IPS: %d of %d active rules loaded in %.1fs (%d unsupported, %d bad); skipped by reason: %s",
            result.loaded, result.active, self.load_seconds, len(result.unsupported), len(result.errors),
            dict(result.skipped.most_common(10)),
        )

    def summary(self) -> dict[str, Any]:
        r = self.load
        if r is None:
            return {"rules_loaded": 0}
        return {
            "rules_active": r.active,
            "rules_loaded": r.loaded,
            "rules_unsupported": len(r.unsupported),
            "rules_bad": len(r.errors),
            "skipped_by_reason": dict(r.skipped.most_common()),
            "errors": [str(e) for e in r.errors[:MAX_REPORTED_ERRORS]],
            "inert_no_parser": self.inert,
            "groups": self.detector.counts,
            "load_seconds": round(self.load_seconds, 2),
            "pcre_limit_hits": self.counters.get("pcre.limit_hits", 0),
            "pcre_limit_sids": dict(sorted(self.pcre_limit_sids.items(), key=lambda kv: -kv[1])[:MAX_REPORTED_ERRORS]),
            "signatures": {"ips": self.rules_digest} if self.rules_digest else {},
        }

    # -- integration with the box: the ips signature bundle ----------------------------------
    @classmethod
    def apply_bundle(cls, section: Mapping[str, Any], kind: str, folder: Path) -> dict[str, Any]:
        """The bundle's rule files join ``rule_files`` (the config's own local rules stay) and its
        classification.config replaces the configured one."""
        own = section.get("rule_files") or []
        own = list(own) if isinstance(own, list) else [own]
        # a config that already names the bundle's files (by a glob over current/) keeps them once
        named = {os.path.realpath(f) for pat in own if isinstance(pat, str) for f in glob.glob(pat)}
        rules = [str(p) for p in _bundle_rules(folder) if str(p) not in named]
        if not rules:
            return dict(section)
        out = {**section, "rule_files": own + rules}
        if (folder / "classification.config").is_file():
            out["classification"] = str(folder / "classification.config")
        return out

    @classmethod
    def load_bundle(cls, kind: str, folder: Path, manifest: Mapping[str, Any], section: Mapping[str, Any],
                    ctx: EngineContext) -> BundleLoad:
        """Compile the bundle's rules with a new engine configured as the running one."""
        rules = _bundle_rules(folder)
        if not rules:
            raise BundleError("the bundle has no .rules file")
        staged: dict[str, Any] = {k: section[k] for k in ("vars", "stream_tail", "classification") if k in section}
        staged["rule_files"] = [str(p) for p in rules]
        if (folder / "classification.config").is_file():
            staged["classification"] = str(folder / "classification.config")
        engine = cls()
        try:
            engine.configure(staged, ctx)
            engine.prepare()
        except (ConfigError, OSError, ValueError) as exc:
            raise BundleError(f"IPS rules do not load: {exc}") from None
        summary = engine.summary()
        return BundleLoad(int(summary.get("rules_loaded", 0)),
                          {k: summary.get(k) for k in ("rules_active", "rules_loaded", "rules_unsupported", "rules_bad")},
                          engine, counts_manifest_rules=True)

    # -- per-flow state ------------------------------------------------------------------
    def _state(self, flow: Any) -> _FlowState:
        st = flow.ips_state
        if st is None:
            st = flow.ips_state = _FlowState(detector=self._generation)
            st.headers_addr, st.headers_port = flow.client_addr, flow.client_port
            if flow.ct_established:
                # picked up from a kernel-prefiltered connection (agent/dataplane/prefilter.py):
                # a worker saw its first packets both ways and ran the IP-only rules on them
                st.iponly_done = 3
        elif st.detector != self._generation:
            st.rebind(self._generation)
        elif st.headers_addr is not flow.client_addr or st.headers_port != flow.client_port:
            if st.headers_addr != flow.client_addr or st.headers_port != flow.client_port:
                # the flow was turned around (midstream pickup): directions changed
                if st.headers:
                    st.headers.clear()
                st.class_ts = st.class_tc = None
            st.headers_addr, st.headers_port = flow.client_addr, flow.client_port
        return st

    def needs_more(self, flow: Any) -> bool:
        """Keep the flow in Python only while some loaded rule could still match it: otherwise
        the kernel takes it (the same reasoning as Suricata's bypass, made per flow)."""
        det = self.detector
        if not len(det):
            return False
        st = self._state(flow)
        if st.passed or flow.depth_reached:
            return False
        if flow.encrypted:
            if self.encryption_bypass:
                self._bypassed(st, "flows.bypassed_encrypted")
                return False
            # full: only packet and stream rules can read what follows (app parsing stopped)
            iponly, packet, stream = self._relevance(st, flow)
            return packet or stream
        if not self.unmatchable_bypass:
            return True  # unmatchable_flows: inspect (until the flow ends or its stream depth)
        if self._matchable(st, flow):
            return True
        self._bypassed(st, "flows.bypassed_unmatchable")
        return False

    def _matchable(self, st: _FlowState, flow: Any) -> bool:
        """Could a loaded rule still match a packet of ``flow``: a packet, stream or IP-only rule
        that fits its header (and flowbits, see filters/ips/reach.py), or an app-layer rule of its
        app protocol (while that is not known yet, of any)."""
        det = self.detector
        iponly, packet, stream = self._relevance(st, flow)
        if packet or stream or (iponly and st.iponly_done != 3):
            return True
        app = flow_app_proto(flow)
        if app in (None, "unknown"):
            return bool(det.app_protos) and flow.proto in (PROTO_TCP, PROTO_UDP)
        other, fits = self._app_fit(app)
        if other and app in _CAN_CHANGE and not _changed(flow):
            return True  # HTTP CONNECT/Upgrade, SMTP STARTTLS: another protocol may follow
        return fits

    def _app_fit(self, app: str) -> tuple[bool, bool]:
        """For a flow of app protocol ``app``: (has a loaded app rule another protocol, could an
        app rule match the flow), worked out once per protocol and rule set (asked on every
        packet of a flow, through needs_more)."""
        det = self.detector
        cache = self._app_fit_cache
        if cache[0] is not det:  # a reload: the new rules answer afresh
            cache = self._app_fit_cache = (det, {})
        got = cache[1].get(app)
        if got is None:
            got = cache[1][app] = (
                any(app not in _aliases(p) for p in det.app_protos),
                app != "failed" and ("*" in det.app_protos or any(app in _aliases(p) for p in det.app_protos)))
        return got

    def kernel_filter(self, flow: Any) -> KernelFilter | None:
        """The patterns without which no later packet of ``flow`` can match a loaded rule, per
        direction (to_server, to_client), or None. Suricata's own prefilter, moved into the
        kernel (agent/dataplane/prefilter.py): a packet holding none of them meets no candidate
        rule here either (_packet_candidates). Only for a flow

        * not TCP (TCP rules meet the reassembled stream and the app layer);
        * seen both ways, by the worker or by conntrack (a flow the worker forgot and picked up
          again from a prefiltered connection: ``ct_established``), so that UDP/ICMP
          ``flow:established`` holds for every later packet, and the IP-only rules have had the
          first packet of each direction (``iponly_done``);
        * on which no app-layer rule can apply (UDP: its app protocol known, none loaded for it;
          ICMP has none);
        * whose two directions' header classes (_HeaderClass) hold no rule without a fast
          pattern on the packet payload nor one counting by flow (_class_patterns);
        * without flowbits or flowints set: the worker may forget a flow the kernel carries (its
          timeout passes while the kernel keeps the packets), and with it that state; when a
          queued packet sets some, the answer turns to None and the pipeline has the kernel
          send the flow's packets again (Release.prefilter).

        Asked while ``needs_more`` says yes, i.e. packet rules still fit the flow."""
        if not self.kernel_prefilter or flow.proto == PROTO_TCP or flow.encrypted:
            return None
        st = self._state(flow)
        if st.passed or st.iponly_done != 3 or not _established(flow):
            return None
        if st.flowbits or st.flowints:
            # state a later packet's rules may read: kept only while the worker keeps the flow,
            # which it may forget while the kernel carries the packets (no alert may depend on it)
            return None
        if (st.class_ts is None or st.class_tc is None) and not flow.ct_established:
            return None
        # (picked up with one direction seen, a one-way flow: the other's class from the flow)
        hts, htc = self._flow_class(st, flow, True), self._flow_class(st, flow, False)
        if flow.proto == PROTO_UDP:
            app, det = flow_app_proto(flow), self.detector
            if app != "failed" and (app in (None, "unknown") or "*" in det.app_protos
                                    or any(app in _aliases(p) for p in det.app_protos)):
                return None
        ts, tc = self._class_patterns(hts), self._class_patterns(htc)
        if ts is None or tc is None:
            return None
        return ts, tc

    def _class_patterns(self, hc: _HeaderClass) -> frozenset[KernelPattern] | None:
        """The fast patterns of the packet rules that fit a header class, as (bytes, nocase,
        icmp_type), cut to xt_string's length (a shorter pattern only widens the filter), with
        the ICMP type a rule's ``itype:N`` demands (-1: any; the ICMP packets of one conntrack
        direction share a type, and an echo reply holds what ET's echo rules look for) and without
        those that hold another of them (a packet holding the longer one holds the shorter);
        None when a rule that fits has no fast pattern on the raw payload (its ``unfiltered``
        rules, or a fast pattern after transforms), or counts by flow, or when they are too many."""
        if hc.kernel_known:
            return hc.kernel
        got: frozenset[KernelPattern] | None = None
        if not hc.unfiltered:
            pats: set[KernelPattern] | None = set()
            for info in self.detector.groups["packet"].rules:
                fp = info.rule.fast_pattern
                if fp is None or not fp.pattern or not hc.fit(info):
                    continue  # a rule without one that fits is in hc.unfiltered
                r = info.rule
                if fp.buffer != PKT or fp.transforms or any(
                        th is not None and th.track is Track.BY_FLOW for th in (r.threshold, r.detection_filter)):
                    pats = None  # (a count by flow restarts when the worker forgets the flow)
                    break
                pats.add((fp.pattern[:MAX_KERNEL_PATTERN], fp.nocase, _itype(r)))
            if pats is not None:
                got = _minimal_patterns(pats)
                if len(got) > MAX_KERNEL_PATTERNS:
                    got = None
        hc.kernel, hc.kernel_known = got, True
        return got

    def _bypassed(self, st: _FlowState, counter: str) -> None:
        if not st.bypassed:
            st.bypassed = True
            self.count(counter)

    def needs_handshake(self, flow: Any) -> bool:
        """Could a loaded rule match the connection's SYN+ACK (without payload)? The IP-only rules
        of the reply direction (they run on its first packet) and the packet rules of the reply's
        header class that need no payload and whose checks a SYN+ACK can meet
        (rule_groups.could_match_synack). Without payload no fast pattern is hit, so only the
        class's rules without one count. Asked on the SYN: the reply's class is worked out from
        the flow's addresses and ports (the class its first packet will have)."""
        if self.load is None:
            return True
        st = self._state(flow)
        if st.passed:
            return False
        if self._iponly(flow.proto, flow.server_addr, flow.client_addr):
            return True
        hc = self._flow_class(st, flow, False)
        if hc.synack is None:
            hc.synack = any(could_match_synack(info) for info in hc.unfiltered)
        return hc.synack

    def needs_empty_acks(self) -> bool:
        """Some loaded rule could match an empty ACK (rule_groups.could_match_empty_ack); before
        the rules are loaded: unknown, so yes."""
        return self.load is None or bool(self.detector.empty_ack_rules)

    def _relevance(self, st: _FlowState, flow: Any) -> tuple[bool, bool, bool]:
        """Could (iponly, packet, stream) rules apply to the flow at all, by their headers (and,
        for packet and stream rules, the flowbits they need: filters/ips/reach.py)."""
        if st.relevant is None:
            reach = self._reach
            c, srv = flow.client_addr, flow.server_addr
            rel = (
                bool(self._iponly(flow.proto, c, srv) or self._iponly(flow.proto, srv, c)),
                reach.could_apply("packet", flow, st.flowbits),
                flow.proto == PROTO_TCP and reach.could_apply("stream", flow, st.flowbits),
            )
            st.relevant = _RELEVANCE.setdefault(rel, rel)  # eight possible answers, one tuple each
        return st.relevant

    # -- hooks -----------------------------------------------------------------------------
    def on_packet(self, pkt: Packet, flow: Any) -> Iterable[Decision] | None:
        if flow is None:
            return self._flowless(pkt)
        self._pkt, self._pkt_flow, self._pending = pkt, flow, []
        # TCP: app-protocol-only rules apply from the packet after detection (Suricata detects on
        # the acknowledged stream); UDP: from the detecting packet itself (see on_packet_end).
        self._app_before = flow_app_proto(flow) if flow.proto == PROTO_TCP else None
        return None

    def _flowless(self, pkt: Packet) -> list[Decision]:
        """A packet with a decoded IP layer but no flow: a fragment (inspected on its own before
        its datagram is reassembled), a packet whose transport header is invalid, a packet the
        flow table had no room for. As in Suricata, IP-only rules match it (every such packet, as
        there is no flow to remember them by); a fragment also meets the per-packet header rules
        (fragbits, fragoffset, ttl, ip_proto...) that need no payload. Its L4 header is not
        trusted: no ports, so rules with ports do not match, and flow-state keywords do not either."""
        nf = _NoFlow(pkt.proto)
        st = _FlowState()
        site = _Site(nf, True, pkt.src_addr, 0, pkt.dst_addr, 0, False, pkt, lambda name: [], pkt.ts, None)
        infos = self.detector.infos
        addrs = (pkt.src_addr, pkt.dst_addr)
        found = self.detector.groups["iponly"].candidates(site.buffers, infos, addrs)
        if pkt.is_fragment and pkt.anomaly is None:
            group = self.detector.groups["packet"]
            wide = group.index.lookup(*addrs) if group.index is not None else group.always
            found += sorted((infos[i] for i in wide if not infos[i].rule.sections and infos[i].app_proto is None),
                            key=lambda r: r.order)
        found = [i for i in found if _stateless(i.rule)]
        out = self._run(found, site, st, tx_key=None)
        if any(d.action is Action.PASS for d in out):
            return [d for d in out if d.action is Action.PASS]
        return out

    def _defer(self, flow: Any, decisions: list[Decision]) -> list[Decision] | None:
        """Inside a packet, hold decisions until its end, where pass rules are applied."""
        if flow is self._pkt_flow:
            self._pending += decisions
            return None
        return decisions

    def on_packet_end(self, pkt: Packet, flow: Any) -> Iterable[Decision] | None:
        pending, self._pending, self._pkt_flow = self._pending, [], None
        st = self._state(flow)
        if st.passed and not (pending and any(d.action is Action.PASS for d in pending)):
            return None
        to_server = flow.to_server(pkt)
        out = pending
        site: _Site | None = None
        bit = 1 if to_server else 2
        if not st.passed and not st.iponly_done & bit:
            st.iponly_done |= bit
            iponly = self._iponly(flow.proto, pkt.src_addr, pkt.dst_addr)
            if iponly:
                site = self._packet_site(flow, pkt, to_server)
                out += self._run(iponly, site, st, tx_key=None, header_ok=None)
        if not (out and any(d.action is Action.PASS for d in out)):
            found = self._packet_candidates(st, flow, pkt, to_server)
            header_ok: frozenset[int] | None = None  # every candidate's header fits
            if flow.proto == PROTO_TCP and getattr(flow, "no_session", False):
                # No TCP session, so no stream to inspect: the stream rules meet the packet's
                # payload instead (Suricata inspects the payload of packets not added to a stream).
                if site is None:
                    site = self._packet_site(flow, pkt, to_server)
                stream = self.detector.groups["stream"].candidates(site.buffers, self.detector.infos,
                                                                    (pkt.src_addr, pkt.dst_addr))
                if stream:
                    header_ok = frozenset(i.idx for i in found)
                    found = sorted([*found, *stream], key=evaluation_order)
            if found:  # most packets of a UDP or ICMP flow have none: no site, no evaluation
                if site is None:
                    site = self._packet_site(flow, pkt, to_server)
                out += self._run(found, site, st, tx_key=None, header_ok=header_ok)
        if out and any(d.action is Action.PASS for d in out):
            return [d for d in out if d.action is Action.PASS]  # a pass rule silences the packet
        return out

    def _packet_site(self, flow: Any, pkt: Packet, to_server: bool) -> _Site:
        return _Site(flow, to_server, pkt.src_addr, pkt.sport, pkt.dst_addr, pkt.dport, pkt.has_ports, pkt,
                     lambda name: [pkt.payload] if name == PKT and pkt.payload else [], pkt.ts,
                     self._app_before if flow.proto == PROTO_TCP else flow_app_proto(flow))

    def _packet_candidates(self, st: _FlowState, flow: Any, pkt: Packet, to_server: bool) -> Sequence[RuleInfo]:
        """The packet group's rules worth evaluating on ``pkt``, in evaluation order: those
        without a fast pattern, and the prefilter hits, that fit the packet's header class
        (_HeaderClass). Each of them fits the packet's header (no need to check it again)."""
        hc = st.class_ts if to_server else st.class_tc
        if hc is None or hc.has_ports is not pkt.has_ports:  # fixed per direction
            # (but for a flow of ports 0, whose packets can be fragments without ports, the
            # class of the direction's first packet is not every packet's)
            hc = self._header_class(flow.proto, pkt, to_server)
            if to_server:
                st.class_ts = hc
            else:
                st.class_tc = hc
        hits = self.detector.groups["packet"].payload_hits(pkt.payload)
        if not hits:
            return hc.unfiltered
        infos, fits = self.detector.infos, hc.fits
        found = []
        for i in hits:
            ok = fits.get(i)
            if ok is None:
                ok = hc.fit(infos[i])
                if len(fits) < MAX_CLASS_FITS:
                    fits[i] = ok
            if ok:
                found.append(infos[i])
        if not found:
            return hc.unfiltered
        found += hc.unfiltered
        if len(found) > 1:
            found.sort(key=evaluation_order)
        return found

    def _iponly(self, proto: int, src: bytes, dst: bytes) -> tuple[RuleInfo, ...]:
        """The IP-only rules whose header fits a packet of ``proto`` from ``src`` to ``dst`` (their
        ports are any), in evaluation order; kept per protocol and addresses (a client's new
        flows to a server it used before: a lookup)."""
        det = self.detector
        cache = self._iponly_cache
        if cache[0] is not det:  # a reload: the new rules answer afresh
            cache = self._iponly_cache = (det, {})
        key = (proto, src, dst)
        got = cache[1].get(key)
        if got is None:
            infos = det.infos
            index = det.groups["iponly"].index
            assert index is not None
            got = tuple(sorted((infos[i] for i in index.lookup(src, dst)
                                if header_matches(infos[i].rule, proto, src, 0, dst, 0, False)), key=evaluation_order))
            got = self._interned.setdefault(got, got)
            if len(cache[1]) >= MAX_CLASS_CACHE:
                del cache[1][next(iter(cache[1]))]
            cache[1][key] = got
        return got

    def _flow_class(self, st: _FlowState, flow: Any, to_server: bool) -> _HeaderClass:
        """The header class of a direction of ``flow``: the one its packets had, or, before any
        (the reply's on the SYN, the unseen direction of a flow picked up), the one a packet of
        that direction will have, from the flow's addresses and ports."""
        hc = st.class_ts if to_server else st.class_tc
        if hc is None:
            ends = ((flow.client_addr, flow.client_port), (flow.server_addr, flow.server_port))
            (src, sport), (dst, dport) = ends if to_server else ends[::-1]
            hc = self._header_class(flow.proto, _Unseen(src, sport, dst, dport, flow.proto in (PROTO_TCP, PROTO_UDP)),
                                    to_server)
            if to_server:
                st.class_ts = hc
            else:
                st.class_tc = hc
        return hc

    def _header_class(self, proto: int, pkt: Packet, to_server: bool) -> _HeaderClass:
        """The header class of the packet's direction of its flow, shared by the flows of the
        same protocol, addresses and port classes (kept by those, up to MAX_CLASS_CACHE)."""
        det = self.detector
        has_ports = pkt.has_ports
        key = (proto, pkt.src_addr, pkt.dst_addr, has_ports,
               det.port_class(pkt.sport) if has_ports else 0, det.port_class(pkt.dport) if has_ports else 0, to_server)
        cache = self._class_cache
        if cache[0] is not det:  # a reload: the new rules answer afresh
            cache = self._class_cache = (det, {})
            self._interned = {}
        got = cache[1].get(key)
        if got is None:
            got = _HeaderClass(proto, pkt.src_addr, pkt.sport, pkt.dst_addr, pkt.dport, has_ports, to_server)
            group, infos = det.groups["packet"], det.infos
            wide = group.index.lookup(pkt.src_addr, pkt.dst_addr) if group.index is not None else group.always
            unfiltered = tuple(sorted((infos[i] for i in wide if got.fit(infos[i])), key=evaluation_order))
            got.unfiltered = self._interned.setdefault(unfiltered, unfiltered)  # one copy for the classes it is the answer of
            if len(cache[1]) >= MAX_CLASS_CACHE:
                del cache[1][next(iter(cache[1]))]
            cache[1][key] = got
        return got

    def on_stream(self, flow: Any, to_server: bool, data: bytes, offset: int) -> Iterable[Decision] | None:
        if flow.proto != PROTO_TCP:
            return None
        st = self._state(flow)
        if st.passed:
            return None
        tail, before = (st.tail_ts, st.hits_ts) if to_server else (st.tail_tc, st.hits_tc)
        group, infos = self.detector.groups["stream"], self.detector.infos
        if not group.rules:
            # no stream rule loaded (a rule set of app-layer rules): only the tail is kept, for
            # the stream rules a reload may bring (a match across the reload's chunk boundary)
            if self.stream_tail:
                keep = data[-self.stream_tail:] if len(data) >= self.stream_tail else (tail + data)[-self.stream_tail:]
                if to_server:
                    st.tail_ts = keep
                else:
                    st.tail_tc = keep
            return None
        window = tail + data
        keep = window[-self.stream_tail:] if self.stream_tail else b""
        hits = group.window_hits(tail, window, before, infos)
        now = (tuple(hits) if hits else ()) if hits is not None and keep else None
        if to_server:
            st.tail_ts, st.hits_ts = keep, now
        else:
            st.tail_tc, st.hits_tc = keep, now
        headers = st.headers
        if hits and headers:  # hits whose rule header is known not to fit this direction: no match
            # (_matches would reject them on that cached judgement first)
            hits = {i for i in hits if headers.get(2 * i + to_server) is not False}
        if hits is not None and not hits and not group.always:
            return self._defer(flow, [])  # no candidate: no site to build
        site = self._flow_site(flow, to_server, lambda name: [window] if name == PKT else [])
        found = group.candidates(site.buffers, infos, (site.src, site.dst), hits=hits)
        if tail and found:  # a match wholly inside the old tail was reported with the earlier chunk
            # the window first: most candidates fail there (their header, their other contents),
            # and only those that match it are looked for in the old tail alone
            old = self._flow_site(flow, to_server, lambda name: [tail] if name == PKT else [])
            found = [i for i in found if self._matches(i, site, st, check_bits=False)
                     and not self._matches(i, old, st, check_bits=False)]
        return self._defer(flow, self._run(found, site, st, tx_key=None))

    def on_http_request(self, flow: Any, ev: HttpEvent) -> Iterable[Decision] | None:
        st = self._state(flow)
        if st.passed:
            return None
        return self._defer(flow, self._http(flow, st, ev))

    def on_http_response(self, flow: Any, ev: HttpEvent) -> Iterable[Decision] | None:
        st = self._state(flow)
        if st.passed:
            return None
        return self._defer(flow, self._http(flow, st, ev))

    def on_tls_hello(self, flow: Any, hello: TlsHello) -> Iterable[Decision] | None:
        st = self._state(flow)
        if st.passed:
            return None
        site = self._flow_site(flow, hello.to_server, self._with_pkt(lambda n: tls_buffers(hello, n)))
        return self._defer(flow, self._app(site, st, ("tls", hello.to_server), {"tls"}, lambda: {"tls": _tls_eve(hello)}))

    def on_dns(self, flow: Any, msg: DnsMessage) -> Iterable[Decision] | None:
        st = self._state(flow)
        if st.passed:
            return None
        site = self._flow_site(flow, msg.to_server, self._with_pkt(lambda n: dns_buffers(msg, n)))

        def extra() -> dict[str, Any]:
            return {"dns": {"type": "query" if msg.to_server else "answer", "id": msg.txid,
                            "queries": [q.name.decode("latin-1") for q in msg.questions]}}

        return self._defer(flow, self._app(site, st, ("dns", msg.txid, msg.to_server, id(msg)), {"dns"}, extra))

    # -- app layer ---------------------------------------------------------------------------
    def _with_pkt(self, fn: Callable[[str], list[bytes]]) -> Callable[[str], list[bytes]]:
        pkt = self._pkt

        def buffers(name: str) -> list[bytes]:
            if name == PKT:
                return [pkt.payload] if pkt is not None and pkt.payload else []
            return fn(name)

        return buffers

    def _http(self, flow: Any, st: _FlowState, ev: Any) -> list[Decision]:
        tx, to_server = ev.tx, ev.to_server
        tx_key = ("http", tx.tx_id)
        last = ev.stage in ("request_done", "response_done")
        memo: _TxMemo | None
        if last and (st.tx_memos is None or tx_key not in st.tx_memos):
            # a message's only event (headers, body and end in one packet, as most requests and
            # small answers): no later event of it could use what a memo keeps
            memo, steady, kept = None, False, {}
        else:
            memo = st.tx_memo(tx_key)
            # Between two events of a body in progress only the body changes: the other buffers are
            # kept from the first of them (each event of a large download would rebuild them all).
            steady = ev.stage in _BODY_STAGES and memo.stage == ev.stage
            if not steady:
                memo.bufs = {}
                memo.dead.clear()
                memo.prefilter.pop(("static", _GROWING), None)
            memo.stage = ev.stage
            kept = memo.bufs
        fresh: dict[str, list[bytes]] = {}
        pkt = self._pkt
        fresh[PKT] = [pkt.payload] if pkt is not None and pkt.payload else []
        build = _HTTP_BUILD[to_server]

        def buffers(name: str) -> list[bytes]:
            cache = fresh if name in _GROWING else kept
            got = cache.get(name)
            if got is None:
                b = build.get(name)
                got = cache[name] = b(tx) if b is not None else []
            return got

        site = self._flow_site(flow, to_server, buffers)
        # Suricata: "http" rules (and their http.* buffers) match HTTP/1 and HTTP/2, "http1" and
        # "http2" rules only their own version
        h2 = tx.protocol == b"HTTP/2"
        app_proto = "http2" if h2 else "http"

        def extra() -> dict[str, Any]:
            return {"app_proto": app_proto, "http": _http_eve(tx)}

        protos = _HTTP2_RULES if h2 else _HTTP1_RULES
        out = self._app(site, st, tx_key, protos, extra, memo=memo, changing=_GROWING if steady else None)
        if last and memo is not None:
            # a message's last event: its body is not inspected again, and the memo would hold it
            # (the parser releases it now); a later event of the transaction starts a new memo
            if st.tx_memos is not None:
                st.tx_memos.pop(tx_key, None)
        return out

    def _app(self, site: _Site, st: _FlowState, tx_key: Any, protos: set[str], extra: Callable[[], dict[str, Any]],
             memo: _TxMemo | None = None, changing: frozenset[str] | None = None) -> list[Decision]:
        """The app-layer rules of one event; ``extra`` makes the alerts' EVE fields of the event
        (called only when a rule fires: most events fire none)."""
        infos = [
            i for i in self.detector.groups["app"].candidates(site.buffers, self.detector.infos, (site.src, site.dst),
                                                              memo=memo.prefilter if memo is not None else None,
                                                              changing=changing, app=_BUFFER_APP.get(min(protos)),
                                                              to_server=site.to_server)
            if site.to_server in i.dirs and (i.app_proto is None or i.app_proto in protos)
        ]
        first = min(protos)
        return self._run(infos, site, st, tx_key=tx_key, extra=lambda: {"app_proto": first, **extra()}, memo=memo)

    def _flow_site(self, flow: Any, to_server: bool, buffers: Callable[[str], list[bytes]]) -> _Site:
        if to_server:
            src, sport, dst, dport = flow.client_addr, flow.client_port, flow.server_addr, flow.server_port
        else:
            src, sport, dst, dport = flow.server_addr, flow.server_port, flow.client_addr, flow.client_port
        pkt = self._pkt
        ts = pkt.ts if pkt is not None else flow.last_ts
        return _Site(flow, to_server, src, sport, dst, dport, flow.proto in (PROTO_TCP, PROTO_UDP), pkt, buffers, ts,
                     flow_app_proto(flow))

    # -- evaluation ----------------------------------------------------------------------------
    def _run(self, infos: Sequence[RuleInfo], site: _Site, st: _FlowState, *, tx_key: Any,
             extra: Callable[[], dict[str, Any]] | None = None, memo: _TxMemo | None = None,
             header_ok: frozenset[int] | None = frozenset()) -> list[Decision]:
        """Evaluate the candidate rules in order; ``header_ok``: rules whose header is known to
        fit (None: every one's)."""
        out: list[Decision] = []
        for info in infos:
            if tx_key is not None and st.fired_tx is not None and (tx_key, info.rule.gid, info.rule.sid) in st.fired_tx:
                continue
            if memo is not None and info.idx in memo.dead:
                continue
            seen = None
            r = info.rule
            if memo is not None and not (info.has_pkt or r.packet_checks or r.flowbits or r.flowints):
                # the same buffers as when this rule last ran for the transaction: the same answer
                seen = tuple([memo.version(n, site.buffers) for n in info.app_buffers])
                if memo.evaluated.get(info.idx) == seen:
                    continue
            if memo is not None and info.required and _still_absent(info, site.buffers, memo):
                if seen is not None:
                    memo.evaluated[info.idx] = seen
                continue
            if not self._matches(info, site, st, header_known=header_ok is None or info.idx in header_ok):
                if seen is not None:
                    memo.evaluated[info.idx] = seen
                continue
            if tx_key is not None:
                if st.fired_tx is None:
                    st.fired_tx = {}
                st.fired_tx[(tx_key, info.rule.gid, info.rule.sid)] = None
                if len(st.fired_tx) > MAX_FIRED_TX:  # a long flow of alerting transactions: forget the oldest
                    del st.fired_tx[next(iter(st.fired_tx))]
            v = self._fire(info, site, st, extra)
            if v is not None:
                out.append(v)
            if info.rule.action is RuleAction.PASS:
                # An IP-only pass, or a pass on an established TCP session, passes the whole flow;
                # otherwise just this packet.
                if info.group == "iponly" or (site.flow.proto == PROTO_TCP and _established(site.flow)):
                    st.passed = True
                    self.count("flows.passed")
                return [d for d in out if d.action is Action.PASS]
        return out

    def _matches(self, info: RuleInfo, site: _Site, st: _FlowState, *, check_bits: bool = True,
                 header_known: bool = False) -> bool:
        r = info.rule
        flow = site.flow
        if header_known:
            ok = True
        elif flow.proto == PROTO_TCP or flow.pkts_toserver + flow.pkts_toclient > 3:
            # long flows: judge each rule's header once per direction (not for a flow of one or
            # two packets, most UDP and ICMP flows: there a cache would cost memory for nothing)
            key = 2 * info.idx + site.to_server
            headers = st.headers
            if headers is None:
                headers = st.headers = {}
            ok = headers.get(key)
            if ok is None:
                ok = header_matches(r, flow.proto, site.src, site.sport, site.dst, site.dport, site.has_ports)
                if len(headers) < MAX_HEADER_CACHE:
                    headers[key] = ok
        else:
            ok = header_matches(r, flow.proto, site.src, site.sport, site.dst, site.dport, site.has_ports)
        if not ok:
            return False
        if r.flow is not None and not self._flow_ok(r, site):
            return False
        if r.packet_checks and (site.pkt is None or not match_packet_checks(r, site.pkt)):
            return False
        if info.needs_payload and (site.pkt is None or not site.pkt.payload):
            return False
        if info.group == "packet" and info.app_proto is not None and site.app not in _aliases(info.app_proto):
            return False
        if r.app_layer_protocol is not None:
            same = flow_app_proto(flow) in _aliases(r.app_layer_protocol.name)
            if same == r.app_layer_protocol.negated:
                return False
        if check_bits and (r.flowbits or r.flowints) and not self._bits_ok(r, st):
            return False
        ctx = MatchContext()
        ok = True
        buffers = site.buffers
        for sec in r.sections:  # every section in one of its buffers (loops: no generator per rule)
            for data in buffers(sec.buffer):
                if match_section(sec, data, ctx):
                    break
            else:
                ok = False
                break
        if ctx.pcre_limit is not None or ctx.limit_hit:
            self._bound_hit(r, ctx)
        return ok

    def _bound_hit(self, r: Rule, ctx: MatchContext) -> None:
        """A rule's evaluation ran into a bound (a PCRE2 match limit, the inspection recursion
        limit): it counted as no match. Counted in total and per sid (in the stats), logged once per sid."""
        if ctx.limit_hit:
            self.count("inspection.recursion_limit")
        exc = ctx.pcre_limit
        if exc is None:
            return
        kind = "pcre.limit_hits" if exc.is_limit else "pcre.match_errors"
        self.count(kind)
        sids = self.pcre_limit_sids
        if r.sid not in sids and len(sids) >= MAX_LIMIT_SIDS:
            self.count(f"{kind}.sid:other")
            return
        self.count(f"{kind}.sid:{r.sid}")
        if r.sid not in sids:
            log.warning("IPS rule sid %d: pcre %s (%s); counted as no match", r.sid,
                        "hit a PCRE2 bound" if exc.is_limit else "failed", exc.what)
        sids[r.sid] = sids.get(r.sid, 0) + 1

    @staticmethod
    def _flow_ok(r: Rule, site: _Site) -> bool:
        f = r.flow
        assert f is not None
        if f.to_server and not site.to_server or f.to_client and site.to_server:
            return False
        est = _established(site.flow)
        if f.established and not est or f.not_established and est:
            return False
        return True

    @staticmethod
    def _bits_ok(r: Rule, st: _FlowState) -> bool:
        for op in r.flowbits:
            if not op.cmd.is_check:
                continue
            bits = st.flowbits or ()
            hits = [(n in bits) == (op.cmd is FlowbitCmd.ISSET) for n in op.names]
            if not (any(hits) if op.any_of else all(hits)):
                return False
        for fi in r.flowints:
            if fi.is_check and not _flowint_check(fi, st.flowints or {}):
                return False
        return True

    def _fire(self, info: RuleInfo, site: _Site, st: _FlowState,
              extra: Callable[[], dict[str, Any]] | None) -> Verdict | None:
        r = info.rule
        if r.flowbits and st.flowbits is None:
            st.flowbits = set()
        if r.flowints and st.flowints is None:
            st.flowints = {}
        for op in r.flowbits:
            for n in op.names:
                if op.cmd is FlowbitCmd.SET:
                    st.flowbits.add(n)
                elif op.cmd is FlowbitCmd.UNSET:
                    st.flowbits.discard(n)
                elif op.cmd is FlowbitCmd.TOGGLE:
                    st.flowbits ^= {n}
        for fi in r.flowints:
            if not fi.is_check:
                _flowint_apply(fi, st.flowints)
        for th in (r.threshold, r.detection_filter):
            if th is not None and not self.thresholds.allow(th, (info.idx, *_track_key(th.track, site.src, site.dst, site.flow)), site.ts):
                self.count("suppressed.threshold")
                return None
        action = VERDICT_ACTION[r.action]
        if r.noalert and action is Action.ALERT:
            return None
        self.count(f"matches.{r.action.value}")
        meta: dict[str, Any] = extra() if extra is not None else {}
        if r.metadata_raw:
            meta["rule_metadata"] = {k: list(v) for k, v in r.metadata.items()}
        return Verdict(action, self.name, rule_id=r.sid, gid=r.gid, rev=r.rev, signature=r.msg, category=r.category,
                       severity=r.severity, metadata=meta)


class _Unseen(NamedTuple):
    """The header of a flow's packet not seen yet (the header fields of a packet that
    _header_class reads): Ips._flow_class."""

    src_addr: bytes
    sport: int
    dst_addr: bytes
    dport: int
    has_ports: bool


@dataclass(slots=True, eq=False)
class _NoFlow:
    """Stands in for the flow of a packet that has none (see Ips._flowless)."""

    proto: int
    flow_id: int = 0
    midstream: bool = False
    state: TcpState = TcpState.NONE
    prev_state: TcpState = TcpState.NONE
    pkts_toserver: int = 0
    pkts_toclient: int = 0
    ct_established: bool = False
    engine_data: dict = field(default_factory=dict)
    app_state: Any = None
    ips_state: Any = None


def _stateless(rule: Rule) -> bool:
    """Whether a rule can match a packet without a flow (no direction or state, no flowbits checks)."""
    f = rule.flow
    if f is not None and (f.to_server or f.to_client or f.established or f.not_established or f.only_stream):
        return False
    return not any(op.cmd.is_check for op in rule.flowbits) and not rule.flowints and rule.app_layer_protocol is None


_RELEVANCE: dict[tuple[bool, bool, bool], tuple[bool, bool, bool]] = {}
_CAN_CHANGE = frozenset({"http", "smtp"})  # app protocols a flow can leave for another (a protocol change)
# the side a buffer is taken from whatever the event's direction (None: the event's own)
_BUFFER_SIDE = {name: None if info.direction is BufDir.BOTH else info.direction is BufDir.TO_SERVER
                for name, info in BUFFERS.items()}
# per event direction, each HTTP buffer's builder (app_buffers.http_builder), from the side _BUFFER_SIDE gives
_HTTP_BUILD = {to_server: {name: http_builder(name, to_server if side is None else side)
                           for name, side in _BUFFER_SIDE.items() if name != PKT}
               for to_server in (True, False)}
_BUFFER_APP = {"http": "http", "http1": "http", "http2": "http", "tls": "tls", "dns": "dns"}  # rule.BUFFERS' app names
_HTTP1_RULES = {"http", "http1"}  # rule protocols that inspect an HTTP/1 transaction
_HTTP2_RULES = {"http", "http2"}  # ... an HTTP/2 one


def _itype(rule: Rule) -> int:
    """The ICMP type the rule's ``itype:N`` demands, or -1."""
    for c in rule.packet_checks:
        if isinstance(c, FieldCheck) and c.field is PacketField.ITYPE and c.test.op is IntOp.EQ:
            return c.test.a
    return -1


def _minimal_patterns(pats: set[KernelPattern]) -> frozenset[KernelPattern]:
    """``pats`` less every pattern that holds another one: a caseless pattern is held by any
    pattern that holds it without regard to ASCII case, a case-sensitive one only by a
    case-sensitive pattern that holds it as it is; one for any ICMP type is held by no pattern
    for one type. The same packets hold one of them."""
    keep: list[KernelPattern] = []
    for pat, nocase, itype in sorted(pats, key=lambda p: (len(p[0]), not p[1], p[2])):  # shortest first, caseless before
        low = pat.lower()
        if not any((k.lower() in low if knc else not nocase and k in pat) and kt in (-1, itype) for k, knc, kt in keep):
            keep.append((pat, nocase, itype))
    return frozenset(keep)


def _still_absent(info: RuleInfo, buffers: Callable[[str], list[bytes]], memo: _TxMemo) -> bool:
    """Whether one of the rule's required contents (RuleInfo.required) is not in its buffer, so
    the rule cannot match. A buffer that grew from the one the content was last missing from (a
    body in progress) is searched from the end of that one only, less the content's length. A
    content missing from a buffer that cannot change within the stage marks the rule dead in
    ``memo`` for the rest of the stage (``_TxMemo.dead``)."""
    for name, needle, nocase in info.required:
        datas = buffers(name)
        if len(datas) != 1:
            continue
        data = datas[0]
        key = (info.idx, name)
        ref = memo.absent.get(key)
        start = 0
        if ref is not None:
            if data is ref:
                if name not in _GROWING:
                    memo.dead.add(info.idx)
                return True
            if len(data) > len(ref) and data.startswith(ref):
                start = max(0, len(ref) - len(needle) + 1)
        if nocase:
            missing = needle not in (data[start:] if start else data).lower()
        else:
            missing = data.find(needle, start) < 0
        if missing:
            memo.absent[key] = data
            if name not in _GROWING:
                memo.dead.add(info.idx)
            return True
        if ref is not None:
            del memo.absent[key]
    return False


def _changed(flow: Any) -> bool:
    st = flow.app_state
    return st is not None and getattr(st, "changed_from", None) is not None


def _aliases(name: str) -> set[str]:
    """The flow app protocols a rule protocol (or app-layer-protocol value) matches: "http" both
    HTTP versions (flows say "http" for HTTP/1, "http2" for HTTP/2), "http1" and "http2" one."""
    if name == "http":
        return {"http", "http1", "http2"}
    return {"http", "http1"} if name == "http1" else {name}


def _flowint_check(fi: Any, ints: dict[str, int]) -> bool:
    if fi.op == "isset":
        return fi.name in ints
    if fi.op == "notset":
        return fi.name not in ints
    if fi.name not in ints:
        return False
    a = ints[fi.name]
    b = ints.get(fi.value, 0) if isinstance(fi.value, str) else (fi.value or 0)
    return {"==": a == b, "!=": a != b, "<": a < b, ">": a > b, "<=": a <= b, ">=": a >= b}.get(fi.op, False)


def _flowint_apply(fi: Any, ints: dict[str, int]) -> None:
    val = ints.get(fi.value, 0) if isinstance(fi.value, str) else (fi.value or 0)
    if fi.op == "=":
        ints[fi.name] = val
    elif fi.op == "+":
        ints[fi.name] = ints.get(fi.name, 0) + val
    elif fi.op == "-":
        ints[fi.name] = ints.get(fi.name, 0) - val


def _tls_eve(hello: Any) -> dict[str, Any]:
    """The alert's ``tls`` object: SNI and, as Suricata writes them, the JA3/JA3S/JA4 fingerprints."""
    out: dict[str, Any] = {"sni": hello.sni.decode("latin-1")}
    for key, text in (("ja3", hello.ja3), ("ja3s", hello.ja3s)):
        if text:
            out[key] = {"hash": hashlib.md5(text.encode(), usedforsecurity=False).hexdigest(), "string": text}
    if hello.ja4:
        out["ja4"] = hello.ja4
    return out


def _http_eve(tx: Any) -> dict[str, Any]:
    def s(b: bytes) -> str:
        return b.decode("latin-1")

    out: dict[str, Any] = {"hostname": s(tx.host), "url": s(tx.uri_raw), "http_method": s(tx.method), "protocol": s(tx.protocol)}
    if tx.user_agent:
        out["http_user_agent"] = s(tx.user_agent)
    if tx.status_code:
        out["status"] = int(tx.status_code) if tx.status_code.isdigit() else s(tx.status_code)
    return out
