"""The IPS engine: Suricata-compatible rules run inline on packets, streams and app-layer transactions."""
from __future__ import annotations

import glob
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable, Mapping

from filters.app.layer import flow_app_proto
from filters.engine import Action, ConfigError, Decision, Engine, EngineContext, Hook, Verdict
from filters.flow import TcpState
from filters.ips.detect import (
    Detector,
    RuleInfo,
    dns_buffers,
    header_matches,
    http_buffer,
    tls_buffers,
)
from filters.ips.match import MatchContext, match_packet_checks, match_section
from filters.ips.model import BUFFERS, PKT, Action as RuleAction, BufDir, FlowbitCmd, Rule, Threshold, ThresholdType, Track
from filters.ips.netspec import Variables
from filters.ips.rules import LoadResult, load_classification, load_files
from filters.packet import PROTO_TCP, PROTO_UDP, Packet

log = logging.getLogger(__name__)

STREAM_TAIL = 4096  # bytes of a stream kept to find matches spanning two chunks
MAX_THRESHOLD_ENTRIES = 100_000
MAX_REPORTED_ERRORS = 20
APPS_WITH_PARSER = frozenset({"http", "http1", "tls", "dns", "smtp"})
VERDICT_ACTION = {
    RuleAction.ALERT: Action.ALERT, RuleAction.DROP: Action.DROP, RuleAction.PASS: Action.PASS,
    RuleAction.REJECT: Action.REJECT, RuleAction.REJECTSRC: Action.REJECT, RuleAction.REJECTDST: Action.REJECT,
    RuleAction.REJECTBOTH: Action.REJECT,
}
SECTION_KEYS = {"enabled", "rule_files", "vars", "classification", "stream_tail"}


MAX_HEADER_CACHE = 256  # rule headers remembered per TCP flow (bounds the memory of 100k flows)
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
class _FlowState:
    flowbits: set[str] = field(default_factory=set)
    flowints: dict[str, int] = field(default_factory=dict)
    passed: bool = False
    iponly_done: set[bool] = field(default_factory=set)
    fired_tx: set[tuple[Any, int]] = field(default_factory=set)
    tail: dict[bool, bytes] = field(default_factory=lambda: {True: b"", False: b""})
    relevant: tuple[bool, bool, bool] | None = None  # could (iponly, packet, stream) rules apply at all
    # Rule headers (protocol, addresses, ports) judged once per flow and direction: 2 * rule + to_server.
    headers: dict[int, bool] = field(default_factory=dict)
    headers_for: tuple[bytes, int] = (b"", -1)  # the flow's client when ``headers`` was filled
    tx_memos: OrderedDict[Any, _TxMemo] = field(default_factory=OrderedDict)
    # Per direction: the packet group's rules without a fast pattern whose header fits this flow
    # (they are candidates for every packet; the header never changes within a direction).
    unfiltered: dict[bool, frozenset[int]] = field(default_factory=dict)

    def tx_memo(self, key: Any) -> _TxMemo:
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
    return flow.pkts_toserver > 0 and flow.pkts_toclient > 0


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


class Ips(Engine):
    name: ClassVar[str] = "ips"
    hooks: ClassVar[frozenset[Hook]] = frozenset(
        {Hook.PACKET, Hook.PACKET_END, Hook.STREAM, Hook.HTTP_REQUEST, Hook.HTTP_RESPONSE, Hook.TLS_HELLO, Hook.DNS}
    )

    def __init__(self) -> None:
        super().__init__()
        self.detector = Detector([])
        self.load: LoadResult | None = None
        self.load_seconds = 0.0
        self.inert: dict[str, int] = {}
        self.thresholds = Thresholds()
        self.stream_tail = STREAM_TAIL
        self.vars = Variables.suricata_defaults()
        self._pkt: Packet | None = None
        self._pkt_flow: Any = None  # the flow of the packet being processed (None between packets)
        self._pending: list[Decision] = []  # this packet's decisions so far (pass is applied at its end)
        self._app_before: str | None = None
        self._files: list[Path] = []
        self._classification: Mapping[str, tuple[str, int]] | None = None

    # -- configuration -------------------------------------------------------------------
    def configure(self, section: Mapping[str, Any], ctx: EngineContext = EngineContext()) -> None:
        unknown = set(section) - SECTION_KEYS
        if unknown:
            raise ConfigError("unknown key", key=sorted(unknown)[0])
        files = self._rule_files(section.get("rule_files", []))
        self.vars = self._variables(section.get("vars") or {}, list(ctx.home_net))
        classification = None
        if section.get("classification"):
            try:
                classification = load_classification(section["classification"])
            except OSError as exc:
                raise ConfigError(f"cannot read: {exc.strerror}", key="classification") from None
        tail = section.get("stream_tail", STREAM_TAIL)
        if not isinstance(tail, int) or not 0 <= tail <= 1 << 20:
            raise ConfigError("expected a byte count between 0 and 1048576", key="stream_tail")
        self.stream_tail = tail
        self._files, self._classification = files, classification

    def prepare(self) -> None:
        self.reload(self._files, self._classification)

    def _rule_files(self, raw: Any) -> list[Path]:
        if not isinstance(raw, list):
            raise ConfigError("expected a list of rule files (globs allowed)", key="rule_files")
        out: list[Path] = []
        for i, item in enumerate(raw):
            matches = sorted(glob.glob(str(item))) if isinstance(item, str) else []
            if not matches:
                raise ConfigError(f"no rule file matches {item!r}", key=f"rule_files[{i}]")
            out += [Path(m) for m in matches]
        return out

    def _variables(self, raw: Any, home_net: list[str] | None) -> Variables:
        if not isinstance(raw, dict) or set(raw) - {"address-groups", "port-groups"}:
            raise ConfigError("expected a mapping with address-groups and port-groups", key="vars")
        addrs = {k: str(v) for k, v in (raw.get("address-groups") or {}).items()}
        ports = {k: str(v) for k, v in (raw.get("port-groups") or {}).items()}
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
        self.detector, self.load, self.inert = detector, result, inert
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
        }

    # -- per-flow state ------------------------------------------------------------------
    @staticmethod
    def _state(flow: Any) -> _FlowState:
        st = flow.engine_data.get("ips")
        if st is None:
            st = flow.engine_data["ips"] = _FlowState()
            st.headers_for = (flow.client_addr, flow.client_port)
        elif st.headers and st.headers_for[0] is not flow.client_addr and st.headers_for != (flow.client_addr, flow.client_port):
            st.headers.clear()  # the flow was turned around (midstream pickup): directions changed
            st.unfiltered.clear()
            st.headers_for = (flow.client_addr, flow.client_port)
        return st

    def needs_more(self, flow: Any) -> bool:
        """Keep the flow in Python only while some loaded rule could still match it: otherwise
        the kernel takes it (the same reasoning as Suricata's bypass, made per flow)."""
        det = self.detector
        if not len(det):
            return False
        st = self._state(flow)
        if st.passed or flow.encrypted or (flow.toserver.depth_reached and flow.toclient.depth_reached):
            return False
        if st.relevant is None:
            st.relevant = (
                det.could_apply("iponly", flow),
                det.could_apply("packet", flow),
                flow.proto == PROTO_TCP and det.could_apply("stream", flow),
            )
        iponly, packet, stream = st.relevant
        if packet or stream or (iponly and len(st.iponly_done) < 2):
            return True
        app = flow_app_proto(flow)
        if app in (None, "unknown"):
            return bool(det.app_protos) and flow.proto in (PROTO_TCP, PROTO_UDP)
        return app != "failed" and ("*" in det.app_protos or app in det.app_protos)

    # -- hooks -----------------------------------------------------------------------------
    def on_packet(self, pkt: Packet, flow: Any) -> Iterable[Decision] | None:
        self._pkt, self._pkt_flow, self._pending = pkt, flow, []
        # TCP: app-protocol-only rules apply from the packet after detection (Suricata detects on
        # the acknowledged stream); UDP: from the detecting packet itself (see on_packet_end).
        self._app_before = flow_app_proto(flow) if flow.proto == PROTO_TCP else None
        return None

    def _defer(self, flow: Any, decisions: list[Decision]) -> list[Decision] | None:
        """Inside a packet, hold decisions until its end, where pass rules are applied."""
        if flow is self._pkt_flow:
            self._pending += decisions
            return None
        return decisions

    def on_packet_end(self, pkt: Packet, flow: Any) -> Iterable[Decision] | None:
        pending, self._pending, self._pkt_flow = self._pending, [], None
        st = self._state(flow)
        if st.passed and not any(d.action is Action.PASS for d in pending):
            return None
        to_server = flow.to_server(pkt)
        site = _Site(flow, to_server, pkt.src_addr, pkt.sport, pkt.dst_addr, pkt.dport, pkt.has_ports, pkt,
                     lambda name: [pkt.payload] if name == PKT and pkt.payload else [], pkt.ts,
                     self._app_before if flow.proto == PROTO_TCP else flow_app_proto(flow))
        out = pending
        addrs = (pkt.src_addr, pkt.dst_addr)
        if not st.passed and to_server not in st.iponly_done:
            st.iponly_done.add(to_server)
            out += self._run(self.detector.groups["iponly"].candidates(site.buffers, self.detector.infos, addrs),
                             site, st, tx_key=None)
        if not any(d.action is Action.PASS for d in out):
            group = self.detector.groups["packet"]
            base = st.unfiltered.get(to_server)
            if base is None:
                infos = self.detector.infos
                wide = group.index.lookup(*addrs) if group.index is not None else group.always
                base = frozenset(i for i in wide if header_matches(infos[i].rule, flow.proto, pkt.src_addr, pkt.sport,
                                                                   pkt.dst_addr, pkt.dport, pkt.has_ports))
                st.unfiltered[to_server] = base  # a flow's addresses (and ports) are fixed per direction
            out += self._run(group.candidates(site.buffers, self.detector.infos, base=base), site, st, tx_key=None)
        if any(d.action is Action.PASS for d in out):
            return [d for d in out if d.action is Action.PASS]  # a pass rule silences the packet
        return out

    def on_stream(self, flow: Any, to_server: bool, data: bytes, offset: int) -> Iterable[Decision] | None:
        if flow.proto != PROTO_TCP:
            return None
        st = self._state(flow)
        if st.passed:
            return None
        tail = st.tail[to_server]
        window = tail + data
        st.tail[to_server] = window[-self.stream_tail:] if self.stream_tail else b""
        site = self._flow_site(flow, to_server, lambda name: [window] if name == PKT else [])
        found = self.detector.groups["stream"].candidates(site.buffers, self.detector.infos, (site.src, site.dst))
        if tail:  # a match wholly inside the old tail was reported with the earlier chunk
            old = self._flow_site(flow, to_server, lambda name: [tail] if name == PKT else [])
            found = [i for i in found if not self._matches(i, old, st, check_bits=False)]
        return self._defer(flow, self._run(found, site, st, tx_key=None))

    def on_event(self, hook: Hook, flow: Any, event: Any) -> Iterable[Decision] | None:
        st = self._state(flow)
        if st.passed:
            return None
        return self._defer(flow, self._event(hook, flow, st, event))

    def _event(self, hook: Hook, flow: Any, st: _FlowState, event: Any) -> list[Decision]:
        if hook in (Hook.HTTP_REQUEST, Hook.HTTP_RESPONSE):
            return self._http(flow, st, event)
        if hook is Hook.TLS_HELLO:
            site = self._flow_site(flow, event.to_server, self._with_pkt(lambda n: tls_buffers(event, n)))
            return self._app(site, st, ("tls", event.to_server), {"tls"}, {"tls": {"sni": event.sni.decode("latin-1")}})
        if hook is Hook.DNS:
            site = self._flow_site(flow, event.to_server, self._with_pkt(lambda n: dns_buffers(event, n)))
            extra = {"dns": {"type": "query" if event.to_server else "answer", "id": event.txid,
                             "queries": [q.name.decode("latin-1") for q in event.questions]}}
            return self._app(site, st, ("dns", event.txid, event.to_server, id(event)), {"dns"}, extra)
        return []

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
        memo = st.tx_memo(tx_key)
        # Between two events of a body in progress only the body changes: the other buffers are
        # kept from the first of them (each event of a large download would rebuild them all).
        steady = ev.stage in _BODY_STAGES and memo.stage == ev.stage
        if not steady:
            memo.bufs = {}
            memo.prefilter.pop(("static", _GROWING), None)
        memo.stage = ev.stage
        fresh: dict[str, list[bytes]] = {}
        kept = memo.bufs

        def buffers(name: str) -> list[bytes]:
            cache = fresh if name in _GROWING else kept
            got = cache.get(name)
            if got is None:
                info = BUFFERS.get(name)
                side = to_server if info is None or info.direction is BufDir.BOTH else info.direction is BufDir.TO_SERVER
                value = http_buffer(tx, name, side)
                got = cache[name] = [value] if value is not None else []
            return got

        site = self._flow_site(flow, to_server, self._with_pkt(buffers))
        extra = {"http": _http_eve(tx)}
        out = self._app(site, st, tx_key, {"http", "http1"}, extra, memo=memo, changing=_GROWING if steady else None)
        if ev.stage == "response_done":
            st.tx_memos.pop(tx_key, None)  # the transaction's last event: its buffers need not be kept
        return out

    def _app(self, site: _Site, st: _FlowState, tx_key: Any, protos: set[str], extra: dict[str, Any],
             memo: _TxMemo | None = None, changing: frozenset[str] | None = None) -> list[Decision]:
        infos = [
            i for i in self.detector.groups["app"].candidates(site.buffers, self.detector.infos, (site.src, site.dst),
                                                              memo=memo.prefilter if memo is not None else None,
                                                              changing=changing)
            if site.to_server in i.dirs and (i.app_proto is None or i.app_proto in protos)
        ]
        return self._run(infos, site, st, tx_key=tx_key, extra={"app_proto": sorted(protos)[0], **extra}, memo=memo)

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
    def _run(self, infos: list[RuleInfo], site: _Site, st: _FlowState, *, tx_key: Any,
             extra: dict[str, Any] | None = None, memo: _TxMemo | None = None) -> list[Decision]:
        out: list[Decision] = []
        for info in infos:
            if tx_key is not None and (tx_key, info.idx) in st.fired_tx:
                continue
            seen = None
            r = info.rule
            if memo is not None and not (info.has_pkt or r.packet_checks or r.flowbits or r.flowints):
                # the same buffers as when this rule last ran for the transaction: the same answer
                seen = tuple(memo.version(n, site.buffers) for n in info.app_buffers)
                if memo.evaluated.get(info.idx) == seen:
                    continue
            if not self._matches(info, site, st):
                if seen is not None:
                    memo.evaluated[info.idx] = seen
                continue
            if tx_key is not None:
                st.fired_tx.add((tx_key, info.idx))
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

    def _matches(self, info: RuleInfo, site: _Site, st: _FlowState, *, check_bits: bool = True) -> bool:
        r = info.rule
        flow = site.flow
        if flow.proto == PROTO_TCP:  # long flows: judge each rule's header once per direction
            key = 2 * info.idx + site.to_server
            ok = st.headers.get(key)
            if ok is None:
                ok = header_matches(r, flow.proto, site.src, site.sport, site.dst, site.dport, site.has_ports)
                if len(st.headers) < MAX_HEADER_CACHE:
                    st.headers[key] = ok
        else:  # mostly one or two packets: a cache would cost memory for nothing
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
        if check_bits and not self._bits_ok(r, st):
            return False
        ctx = MatchContext()
        for sec in r.sections:
            if not any(match_section(sec, data, ctx) for data in site.buffers(sec.buffer)):
                return False
        return True

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
            hits = [(n in st.flowbits) == (op.cmd is FlowbitCmd.ISSET) for n in op.names]
            if not (any(hits) if op.any_of else all(hits)):
                return False
        for fi in r.flowints:
            if fi.is_check and not _flowint_check(fi, st.flowints):
                return False
        return True

    def _fire(self, info: RuleInfo, site: _Site, st: _FlowState, extra: dict[str, Any] | None) -> Verdict | None:
        r = info.rule
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
        meta: dict[str, Any] = dict(extra or {})
        if r.metadata_raw:
            meta["rule_metadata"] = {k: list(v) for k, v in r.metadata.items()}
        return Verdict(action, self.name, rule_id=r.sid, gid=r.gid, rev=r.rev, signature=r.msg, category=r.category,
                       severity=r.severity, metadata=meta)


def _aliases(name: str) -> set[str]:
    return {"http", "http1"} if name in ("http", "http1") else {name}


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


def _http_eve(tx: Any) -> dict[str, Any]:
    def s(b: bytes) -> str:
        return b.decode("latin-1")

    out: dict[str, Any] = {"hostname": s(tx.host), "url": s(tx.uri_raw), "http_method": s(tx.method), "protocol": s(tx.protocol)}
    if tx.user_agent:
        out["http_user_agent"] = s(tx.user_agent)
    if tx.status_code:
        out["status"] = int(tx.status_code) if tx.status_code.isdigit() else s(tx.status_code)
    return out
