"""The packet pipeline: runs the engines on each packet, combines verdicts, holds flows for I/O.

Sans-IO: the driver (the NFQUEUE worker, or the pcap runner) hands in packets with an opaque
``token`` and gets back ``Release`` records saying what to do with which token. I/O that engines
ask for comes out of ``take_io()`` and goes back in through ``io_done()``; ``tick()`` fires hold
timeouts and flow expiry.
"""
from __future__ import annotations

import enum
import itertools
import logging
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable, Sequence

from filters import eve
from filters.app.layer import AppLayer
from filters.engine import (APP_HOOKS, PACKET_HOOKS, Action, Decision, Engine, Hold, Hook, Inject, IORequest,
                            KernelFilter, KernelPattern, Scope, Submit, Verdict, implemented_hooks)
from filters.defrag import DefragResult, Defragmenter
from filters.flow import Flow, FlowTable
from filters.packet import ACK, FIN, PROTO_TCP, RST, SYN, Packet

log = logging.getLogger(__name__)


class Outcome(enum.IntEnum):
    ACCEPT = 0
    DROP = 1
    REJECT = 2


@dataclass(frozen=True, slots=True, init=False)
class Release:
    """The verdict for one packet. ``offload`` asks the driver to decide the whole flow in the kernel.
    ``prefilter`` (an accept, inline): the flow's kernel prefilter, the patterns of its packets
    in conntrack's original and reply directions (Engine.kernel_filter): the kernel may keep
    the flow's later packets that hold none of their direction's patterns; ``NO_PREFILTER``:
    the kernel must stop doing so. ``handshake`` (an accepted SYN, inline): no engine needs the
    connection's SYN+ACK, the kernel may keep it (Engine.needs_handshake)."""

    token: Any
    outcome: Outcome
    offload: bool = False
    packet: Packet | None = None  # the judged packet, when there is something to inject
    inject: tuple[Inject, ...] = ()  # packets the driver should send in reply to ``packet``
    prefilter: KernelFilter | None = None
    handshake: bool = False

    def __init__(self, token: Any, outcome: Outcome, offload: bool = False, packet: Packet | None = None,
                 inject: tuple[Inject, ...] = (), prefilter: KernelFilter | None = None,
                 handshake: bool = False) -> None:
        # One per packet: the slots' own setters, not the frozen dataclass's object.__setattr__
        # by name (a third of the cost of a decided flow's packet in Python).
        _set_token(self, token)
        _set_outcome(self, outcome)
        _set_offload(self, offload)
        _set_packet(self, packet)
        _set_inject(self, inject)
        _set_prefilter(self, prefilter)
        _set_handshake(self, handshake)


NO_PREFILTER: Any = ()  # Release.prefilter: the flow's packets all go to the queue again

_set_token, _set_outcome, _set_offload, _set_packet, _set_inject, _set_prefilter, _set_handshake = (
    Release.__dict__[f].__set__ for f in ("token", "outcome", "offload", "packet", "inject", "prefilter", "handshake"))


def _fin_delivered(s: Any) -> bool:
    """The direction's FIN came and every byte before it was delivered."""
    return s.fin and s.fin_seq is not None and s.next_seq == (s.fin_seq + 1) & 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class PipelinePolicy:
    on_engine_error: Action = Action.NONE  # NONE: the failing engine has no say; DROP: fail closed
    on_malformed: Action = Action.NONE
    hold_max_packets: int = 64
    hold_max_bytes: int = 8 << 20
    hold_overflow: Action = Action.DROP
    ips: bool = True  # False: IDS mode, blocking verdicts are only reported
    kernel_offload: bool = False  # True inline: decided flows live in the kernel (connmark)
    # Fragments of a datagram that never completed (timeout): drop them, so a datagram the box
    # could not inspect whole never reaches its receiver whole either (pass: let them through).
    defrag_timeout: Action = Action.DROP
    anomaly_eve_per_second: int = 50  # EVE anomaly records per second at most (the rest are counted)
    # Packets queued before their flow's pass was saved in the kernel (connmark) still reach the
    # worker: within this many seconds of the decision they take it, later ones are decided afresh.
    offload_grace: float = 2.0


class _FragToken:
    """The token under which a reassembled datagram goes through the pipeline: its verdict is
    applied to every fragment (``members``: the drivers' tokens and the fragments)."""

    __slots__ = ("members",)

    def __init__(self, members: list[tuple[Any, Packet]]) -> None:
        self.members = members


@dataclass(slots=True, eq=False)
class _HoldState:
    hold_id: int
    flow: Flow
    hold: Hold
    deadline: float
    trigger: tuple[Any, Packet]  # the packet whose inspection asked for the hold (already inspected)
    later: list[tuple[Any, Packet]] = field(default_factory=list)  # not yet inspected
    # Other engines' holds asked for by the same packet (e.g. the antivirus and the sandbox on one
    # file): each starts in turn once the one before it ends without blocking.
    rest: tuple[Hold, ...] = ()


HookMethod = Callable[..., "Iterable[Decision] | None"]
_PASS = Action.PASS
_ACCEPT = Outcome.ACCEPT
_HANDSHAKE_FLAGS = SYN | ACK | FIN | RST  # a connection's first SYN has SYN alone of these
_NOT_IP = frozenset({"eth.not_ip", "link.not_ip", "link.unsupported"})
_OUTCOME = {Action.DROP: Outcome.DROP, Action.REJECT: Outcome.REJECT}
MAX_EXPIRED_HOLDS = 4096  # timed-out holds whose late I/O result still goes to the engine


_HTTP_HOOKS = (Hook.HTTP_REQUEST, Hook.HTTP_RESPONSE)


def _superseded(events: list[tuple[Hook, Any]], n: int) -> bool:
    """Is event ``n`` an HTTP message stage that a later event of the same list takes further
    (the same transaction and direction)? Its buffers are then a part of the later event's: an
    engine that inspects a message's buffers as a whole needs only the last of them."""
    if len(events) < 2 or n == len(events) - 1:
        return False
    hook, ev = events[n]
    if hook not in _HTTP_HOOKS:
        return False
    for later_hook, later in events[n + 1:]:
        if later_hook is hook and later.tx is ev.tx and later.to_server == ev.to_server:
            return True
    return False


def _by_hook(engines: Sequence[Engine]) -> dict[Hook, list[tuple[Engine, HookMethod]]]:
    """Per hook, the engines that implement it (in pipeline order) with their bound hook method:
    worked out once per engine set, so dispatching a packet or event is a plain list walk."""
    out: dict[Hook, list[tuple[Engine, HookMethod]]] = {h: [] for h in Hook}
    for e in engines:
        wanted = implemented_hooks(e)
        for h in Hook:
            if h in wanted:
                out[h].append((e, getattr(e, h.method)))
    return out


class Pipeline:
    def __init__(
        self,
        engines: Sequence[Engine],
        flows: FlowTable,
        policy: PipelinePolicy = PipelinePolicy(),
        emit: Callable[[dict[str, Any]], None] = lambda rec: None,
        app: AppLayer | None = None,
        defrag: Defragmenter | None = None,
    ) -> None:
        self.engines = list(engines)
        # IP fragments are reassembled before flow handling (a pipeline without one gets the defaults).
        self.defrag = defrag if defrag is not None else Defragmenter()
        self._anomaly_second = -1
        self._anomaly_budget = 0
        self.flows = flows
        self.policy = policy
        self.emit = emit
        self.counters: dict[str, int] = {}
        self._by_hook = _by_hook(self.engines)
        self._bind()
        wants_app = any(self._by_hook[h] for h in APP_HOOKS)
        self.app = (app or AppLayer()) if wants_app else None
        if self.app is not None:
            self.app.files = bool(self._by_hook[Hook.FILE])
            # the file engines' own limits (Engine.file_depth): downloads followed that deep
            depth = max((e.file_depth() for e in self.engines), default=0) if self.app.files else 0
            if depth > self.app.settings.file_depth:
                self.app.settings = replace(self.app.settings, file_depth=depth)
        self._holds: dict[int, _HoldState] = {}
        self._detached: dict[int, tuple[Flow, str, IORequest]] = {}  # I/O of holds asked for at a flow's end
        self._expired: dict[int, tuple[str, IORequest, Flow]] = {}
        self._hold_of_flow: dict[int, int] = {}  # flow_id -> hold_id
        self._held_bytes = 0
        self._io_out: list[tuple[int, IORequest]] = []
        self._ids = itertools.count(1)

    def replace_engines(self, engines: Sequence[Engine]) -> None:
        """Swap in a new engine set (a reload); flows, holds and the app layer carry on."""
        self.engines = list(engines)
        self._by_hook = _by_hook(self.engines)
        self._bind()
        if self.app is None and any(self._by_hook[h] for h in APP_HOOKS):
            self.app = AppLayer()
        if self.app is not None:
            self.app.files = bool(self._by_hook[Hook.FILE])
            # the file engines' own limits (Engine.file_depth): downloads followed that deep
            depth = max((e.file_depth() for e in self.engines), default=0) if self.app.files else 0
            if depth > self.app.settings.file_depth:
                self.app.settings = replace(self.app.settings, file_depth=depth)

    def _bind(self) -> None:
        """The per-packet hooks' engines as tuples, and the engines whose ``needs_more`` can say
        anything but False: worked out once per engine set, so the walk over a packet looks up
        nothing. An engine that keeps ``Engine.needs_more`` (always False) is not asked."""
        by_hook = self._by_hook
        self._flow_start_hooks = tuple(by_hook[Hook.FLOW_START])
        self._packet_hooks = tuple(by_hook[Hook.PACKET])
        self._stream_hooks = tuple(by_hook[Hook.STREAM])
        self._packet_end_hooks = tuple(by_hook[Hook.PACKET_END])
        asked = [e for e in self.engines if getattr(e.needs_more, "__func__", None) is not Engine.needs_more]
        self._needs_more = tuple(e.needs_more for e in asked)
        # with a kernel prefilter (inline only): per engine asked, its kernel_filter or None
        self._kernel_filters = tuple(
            e.kernel_filter if getattr(e.kernel_filter, "__func__", None) is not Engine.kernel_filter else None
            for e in asked) if self.policy.kernel_offload else ()
        if not any(self._kernel_filters):
            self._kernel_filters = ()
        # the handshake skip (inline only): the engines that could need a connection's SYN+ACK
        self._needs_handshake = tuple(
            e.needs_handshake for e in self.engines
            if implemented_hooks(e) & PACKET_HOOKS or type(e).needs_handshake is not Engine.needs_handshake
        ) if self.policy.kernel_offload else None

    # -- public driver API -------------------------------------------------------------
    def process(self, pkt: Packet, token: Any, now: float | None = None) -> list[Release]:
        if now is None:
            now = pkt.ts
        counters = self.counters
        counters["packets"] = counters.get("packets", 0) + 1
        if pkt.anomaly is not None:
            self._anomaly(pkt.anomaly, pkt, now)
        if (pkt.frag_offset or pkt.more_fragments) and self.defrag is not None and pkt.version and pkt.l4_offset:
            return self._fragment(pkt, token, now)
        # Every release of _process carries ``token`` (the driver's, never a _FragToken): there is
        # nothing for _expand to do.
        return self._process(pkt, token, now)

    def _process(self, pkt: Packet, token: Any, now: float) -> list[Release]:
        try:
            found = self.flows.lookup(pkt)
        except Exception:  # a flow-table bug must not kill the worker
            log.exception("flow lookup failed")
            self._count("errors.flow_lookup")
            found = None
        if found is None:
            return [self._flowless(pkt, token)]
        flow, to_server, is_new = found
        decided = flow.decided
        if decided is not None:
            policy = self.policy
            if not (decided is _PASS and policy.kernel_offload and not is_new and now - flow.decided_ts > policy.offload_grace
                    and (pkt.proto != PROTO_TCP or pkt.tcp_flags & (SYN | ACK | RST) == SYN)):
                # a decided flow's packet: its verdict without inspection (_decided_outcome, inline)
                counters = self.counters
                counters["packets.decided"] = counters.get("packets.decided", 0) + 1
                return [Release(token, _OUTCOME.get(decided, _ACCEPT) if policy.ips else _ACCEPT, True)]  # type: ignore[arg-type]
            # The kernel holds passed flows; a packet of one here, well after the decision (not
            # one that was already queued then), means the kernel has forgotten the verdict (a
            # new connection on the same addresses and ports, or an expired conntrack entry):
            # decide it afresh. For TCP only a SYN starts a new connection: any other packet
            # (a late retransmission or a reply conntrack found out of window, INVALID, after a
            # reset) belongs to the connection that was passed and keeps its verdict. Deciding
            # afresh from it would make its sender the client of a "new" flow, often the
            # internet server of a LAN client, which the firewall then judged as a new inbound
            # connection ("default deny wan_to_lan"). A dropped flow stays dropped: its later
            # packets are dropped without inspection, as Suricata drops them.
            self._count("flows.redecided")
            self.flows.remove(flow)
            self._end_flow(flow, now)
            found = self.flows.lookup(pkt)
            if found is None:
                return [self._flowless(pkt, token)]
            flow, to_server, is_new = found
            if flow.decided is not None:
                self._count("packets.decided")
                return [Release(token, self._decided_outcome(flow), offload=True)]
        hold_id = self._hold_of_flow.get(flow.flow_id)
        if hold_id is not None:
            return self._hold_more(self._holds[hold_id], pkt, token)
        return self._inspect(flow, pkt, token, to_server, is_new, now)

    @property
    def gives_prefilters(self) -> bool:
        """Inline, an engine gives kernel prefilters (Release.prefilter)."""
        return bool(self._kernel_filters)

    def take_io(self) -> list[tuple[int, IORequest]]:
        """I/O requests the engines asked for since the last call, as (hold_id, request)."""
        out, self._io_out = self._io_out, []
        return out

    def io_done(self, hold_id: int, result: Any, error: str | None = None, now: float = 0.0) -> list[Release]:
        st = self._holds.get(hold_id)
        if st is None and hold_id in self._detached:
            flow, name, request = self._detached.pop(hold_id)
            engine = self._engine(name)
            decisions = self._call(engine, engine.on_io_result, flow, request, result, error) if engine else []
            verdicts = [d for d in decisions if isinstance(d, Verdict)]
            if verdicts:
                self._report(verdicts, None, flow, flow.last_ts)
            return []
        if st is None:
            self._count("hold.late_results")
            late = self._expired.pop(hold_id, None)
            engine = self._engine(late[0]) if late else None
            if late and engine is not None:
                # Alarms about a flow already decided (e.g. a sandbox verdict after the file was
                # passed): recorded against that flow, nothing is applied.
                verdicts = [d for d in self._call(engine, engine.on_io_late, late[1], result, error)
                            if isinstance(d, Verdict)]
                if verdicts:
                    self._count("hold.late_alarms")
                    self._report(verdicts, None, late[2], now or None)
            return []
        self._unhold(st)
        engine = self._engine(st.hold.engine)
        decisions = self._call(engine, engine.on_io_result, st.flow, st.hold.request, result, error) if engine else []
        return self._expand(self._resume(st, decisions + list(st.rest), st.trigger[1], now))

    def tick(self, now: float) -> list[Release]:
        """Fire hold timeouts, expire idle flows. Call at least once a second."""
        out: list[Release] = []
        # A timed-out hold's queued packets are inspected now and may start a new hold; when that
        # one is due by ``now`` as well (the offline mode's final tick(inf)), it fires too, so no
        # packet is left held.
        due = [s for s in self._holds.values() if s.deadline <= now]
        while due:
            for st in due:
                if self._holds.get(st.hold_id) is not st:
                    continue
                self._count("hold.timeouts")
                self._unhold(st)
                h = st.hold
                self._expired[st.hold_id] = (h.engine, h.request, st.flow)
                while len(self._expired) > MAX_EXPIRED_HOLDS:
                    self._expired.pop(next(iter(self._expired)))
                v = h.timeout_verdict or Verdict(h.on_timeout, h.engine, reason=h.reason or "hold timeout",
                                                 signature=f"{h.engine}: verdict timeout")
                out += self._expand(self._resume(st, [v, *st.rest], st.trigger[1], now))
            due = [s for s in self._holds.values() if s.deadline <= now]
        if self.defrag is not None:
            for failed, members in self.defrag.expire(now):
                if failed is None and members:
                    self._anomaly("defrag.timeout", members[-1][1], now)
                    out += [self._frag_release(tok, "defrag.timeout") for tok, _ in members]
        try:
            ended = self.flows.expire(now) + self.flows.pop_ended()
        except Exception:
            log.exception("flow expiry failed")
            self._count("errors.flow_expire")
            ended = []
        for flow in ended:
            self._end_flow(flow, now)
        return out

    def _end_flow(self, flow: Flow, now: float) -> None:
        """A flow left the table: flush its app-layer parser, tell the engines (alerts still count)."""
        decisions: list[Decision] = []
        if self.app is not None:
            try:
                events = self.app.on_close(flow)
            except Exception:
                log.exception("app-layer close failed")
                events = []
            for hook, event in events:
                decisions += self.dispatch_event(hook, flow, event)
        for e, fn in self._by_hook[Hook.FLOW_END]:
            decisions += self._call(e, fn, flow)
        verdicts = [d for d in decisions if isinstance(d, Verdict)]
        if verdicts:
            self._report(verdicts, None, flow, flow.last_ts)
        for d in decisions:
            # e.g. a file completed by the end of its connection: nothing is left to hold, but the
            # I/O is still done and its result can still raise alarms (``IORequest.detached``)
            if isinstance(d, (Hold, Submit)):
                self._detach(flow, d.engine, d.request)

    def _detach(self, flow: Flow, engine: str, request: IORequest) -> None:
        """I/O that holds no packet (``Submit``, or a ``Hold`` at a flow's end)."""
        hold_id = next(self._ids)
        self._detached[hold_id] = (flow, engine, replace(request, detached=True))
        while len(self._detached) > MAX_EXPIRED_HOLDS:
            self._detached.pop(next(iter(self._detached)))
        self._io_out.append((hold_id, self._detached[hold_id][2]))
        self._count("io.detached")

    def next_deadline(self) -> float | None:
        deadlines = [s.deadline for s in self._holds.values()]
        if self.defrag is not None and (d := self.defrag.next_deadline()) is not None:
            deadlines.append(d)
        return min(deadlines, default=None)

    @property
    def held_packets(self) -> int:
        frags = self.defrag.held_packets if self.defrag is not None else 0
        return sum(1 + len(s.later) for s in self._holds.values()) + frags

    def dispatch_event(self, hook: Hook, flow: Flow, event: Any, superseded: bool = False) -> list[Decision]:
        """Feed an application-layer event (from a protocol parser) to the engines that take its hook.
        ``superseded``: a later event of the same chunk is the same HTTP message further on (its
        headers, then its body, then its end); engines with ``coalesce_http`` only see that one."""
        out: list[Decision] = []
        for e, fn in self._by_hook[hook]:
            if superseded and e.coalesce_http:
                continue
            out += self._call(e, fn, flow, event)
        return out

    # -- inspection ----------------------------------------------------------------------
    def _inspect(self, flow: Flow, pkt: Packet, token: Any, to_server: bool, is_new: bool, now: float) -> list[Release]:
        # The per-packet walk: one call per hook (_run_hooks) rather than one per engine (_call),
        # all adding to one list of decisions.
        flows = self.flows
        try:
            chunks = flows.update(flow, pkt, to_server)
        except Exception:
            log.exception("flow update failed")
            self._count("errors.flow_update")
            chunks = []
        decisions: list[Decision] = []
        run = self._run_hooks
        if is_new:
            run(self._flow_start_hooks, decisions, flow, pkt)
        run(self._packet_hooks, decisions, pkt, flow)
        app = self.app
        if chunks:
            depth = flows.stream_depth
            stream_hooks = self._stream_hooks
            for c_to_server, data, offset in chunks:
                # past the table's stream depth (a file engine's deeper HTTP stream, Stream.depth) the
                # bytes go to the app layer only: raw stream inspection stops at the configured depth
                raw = data if offset + len(data) <= depth else data[:max(depth - offset, 0)]
                if raw:
                    run(stream_hooks, decisions, flow, c_to_server, raw, offset)
                if app is not None and not app.finished(flow):
                    events = app.on_chunk(flow, c_to_server, data, offset)
                    for n, (hook, event) in enumerate(events):
                        decisions += self.dispatch_event(hook, flow, event, superseded=_superseded(events, n))
                    app.inspected(flow)
        if app is not None and flow.proto == PROTO_TCP and flow.toclient.fin and _fin_delivered(flow.toclient):
            # the server closed its side: a response delimited by the close completes on this packet
            for hook, event in app.on_eof(flow, False):
                decisions += self.dispatch_event(hook, flow, event)
            app.inspected(flow)
        pending = flows.pending_total
        if app is not None and chunks or pending:
            # _memcap's own test first, inline: it has something to do only past the cap
            memcap = getattr(flows, "memcap", 0)
            if memcap and (app.held_total if app is not None else 0) + pending > memcap:
                decisions += self._memcap(flow, pkt)
        run(self._packet_end_hooks, decisions, pkt, flow)
        if not decisions:  # most packets: nothing to report, only whether the flow can leave Python
            return self._pass(flow, token, now, pkt)
        return self._conclude(flow, pkt, token, decisions, now)

    def _conclude(
        self, flow: Flow, pkt: Packet, token: Any, decisions: Iterable[Decision], now: float
    ) -> list[Release]:
        decisions = list(decisions)
        if not decisions:  # most packets: nothing to report, only whether the flow can leave Python
            return self._pass(flow, token, now, pkt)
        verdicts = [d for d in decisions if isinstance(d, Verdict)]
        holds = [d for d in decisions if isinstance(d, Hold)]
        for d in decisions:
            if isinstance(d, Submit):
                self._detach(flow, d.engine, d.request)
        strictest = self._report(verdicts, pkt, flow)
        if strictest.blocks and not self.policy.ips:
            # IDS mode: nothing is blocked, but as in Suricata a flow-wide drop still ends the
            # flow's inspection: its later packets raise no more alerts.
            if any(v.scope is Scope.FLOW and v.action.blocks for v in verdicts):
                flow.decided, flow.decided_ts = strictest, now
                self._count("flows.dropped_ids")
                return [Release(token, Outcome.ACCEPT, offload=True)]
        if strictest.blocks and self.policy.ips:
            flow_wide = any(v.scope is Scope.FLOW and v.action.blocks for v in verdicts)
            if flow_wide:
                flow.decided, flow.decided_ts = strictest, now
                cause = max((v for v in verdicts if v.action.blocks), key=lambda v: v.action)
                rec = eve.drop_record(cause.reason or "rule", pkt.ts, pkt, flow, engine=cause.engine)
                rec["drop"].update(signature_id=cause.rule_id, signature=cause.signature, action=strictest.name.lower())
                self.emit(rec)
            self._count("verdict." + strictest.name.lower())
            inject = tuple(i for v in verdicts for i in v.inject)
            if inject:
                self._count("inject." + "+".join(sorted({i.kind.value for i in inject})))
            return [Release(token, _OUTCOME[strictest], offload=flow_wide, packet=pkt if inject else None, inject=inject)]
        if holds:
            return self._start_hold(flow, holds[0], token, pkt, now, rest=tuple(holds[1:]))
        return self._pass(flow, token, now, pkt)

    def _pass(self, flow: Flow, token: Any, now: float, pkt: Packet | None = None) -> list[Release]:
        """The packet passes; the flow too, in the kernel, once no engine needs more of it. Every
        engine that can say yes is asked on every packet: its answer may change with any packet
        (an app-layer protocol found, a stream depth reached...), so none is remembered."""
        if self._kernel_filters and pkt is not None and flow.proto != PROTO_TCP:
            return self._prefilter(flow, token, pkt, now)
        for needs_more in self._needs_more:
            if needs_more(flow):
                if (pkt is not None and pkt.proto == PROTO_TCP and pkt.tcp_flags & _HANDSHAKE_FLAGS == SYN
                        and not flow.pkts_toclient and self._needs_handshake is not None
                        and not any(needs(flow) for needs in self._needs_handshake)):
                    self._count("flows.handshake_skipped")
                    return [Release(token, _ACCEPT, handshake=True)]
                return [Release(token, _ACCEPT)]
        flow.decided, flow.decided_ts = _PASS, now
        self._count("flows.offloaded")
        return [Release(token, _ACCEPT, True)]

    def _prefilter(self, flow: Flow, token: Any, pkt: Packet, now: float) -> list[Release]:
        """_pass for a non-TCP flow, inline, with engines that give kernel prefilters: when every
        engine that still needs the flow gives one (Engine.kernel_filter), the packet passes with
        their union, turned to conntrack's directions, for the kernel to keep the flow's packets
        that hold none of their direction's patterns (agent/dataplane/prefilter.py). The packets
        it still queues are inspected as any other (and pass with the same prefilter)."""
        ts: set[KernelPattern] | None = None
        tc: set[KernelPattern] = set()
        for needs_more, kernel_filter in zip(self._needs_more, self._kernel_filters):
            if needs_more(flow):
                got = kernel_filter(flow) if kernel_filter is not None else None
                if got is None:
                    if flow.prefiltered:  # the kernel must send every packet again
                        flow.prefiltered = False
                        self._count("flows.prefilter_stopped")
                        return [Release(token, _ACCEPT, prefilter=NO_PREFILTER)]
                    return [Release(token, _ACCEPT)]
                ts = (ts or set()) | got[0]
                tc |= got[1]
        if ts is None:
            flow.decided, flow.decided_ts = _PASS, now
            self._count("flows.offloaded")
            return [Release(token, _ACCEPT, True)]
        both = (frozenset(ts), frozenset(tc))
        # conntrack's original direction is the flow's to_server one unless this packet's
        # direction and conntrack's disagree (a flow picked up from its reply)
        original = both if flow.to_server(pkt) != pkt.ct_reply else (both[1], both[0])
        if not flow.prefiltered:
            flow.prefiltered = True
            self._count("flows.prefiltered")
        return [Release(token, _ACCEPT, prefilter=original)]

    def _report(self, verdicts: list[Verdict], pkt: Packet | None, flow: Flow, ts: float | None = None) -> Action:
        strictest = Action.NONE
        for v in verdicts:
            strictest = max(strictest, v.action)
        blocked = strictest.blocks and self.policy.ips
        for v in verdicts:
            if v.event:  # an informational record (fileinfo...), not an alarm
                when = pkt.ts if pkt is not None else (ts if ts is not None else flow.last_ts)
                self.emit(eve.event_record(v, when, pkt, flow))
                continue
            if v.action >= Action.ALERT:
                self._count(f"alerts.{v.engine}")
                when = pkt.ts if pkt is not None else (ts if ts is not None else flow.last_ts)
                self.emit(eve.alert_record(v, when, pkt, flow, blocked=blocked and v.action.blocks))
        return strictest

    def _flowless(self, pkt: Packet, token: Any) -> Release:
        """A packet without a flow (not IP, an invalid transport header, a full table...): the IP
        layer, when it was decoded, is still inspected (Suricata's IP-only rules match it)."""
        self._count("packets.flowless")
        if pkt.version:
            strictest = self._inspect_flowless(pkt)
            if strictest.blocks and self.policy.ips:
                self._count("verdict." + strictest.name.lower())
                return Release(token, _OUTCOME[strictest])
        if pkt.anomaly is not None and self.policy.on_malformed.blocks:
            self._count("verdict.malformed_drop")
            return Release(token, Outcome.DROP)
        return Release(token, Outcome.ACCEPT)

    def _inspect_flowless(self, pkt: Packet) -> Action:
        decisions: list[Decision] = []
        for e, fn in self._by_hook[Hook.PACKET]:
            decisions += self._call(e, fn, pkt, None)
        return self._report([d for d in decisions if isinstance(d, Verdict)], pkt, None)

    def _decided_outcome(self, flow: Flow) -> Outcome:
        """The verdict of a decided flow's later packets (IDS mode blocks nothing)."""
        if not self.policy.ips:
            return Outcome.ACCEPT
        return _OUTCOME.get(flow.decided, Outcome.ACCEPT)  # type: ignore[arg-type]

    # -- fragments -------------------------------------------------------------------------
    def _fragment(self, pkt: Packet, token: Any, now: float) -> list[Release]:
        """A fragment: inspected on its own (IP header rules), then held until its datagram is
        complete; the datagram goes through the pipeline and its verdict covers every fragment."""
        assert self.defrag is not None
        self._count("fragments")
        own = self._inspect_flowless(pkt)
        if own.blocks and self.policy.ips:  # dropped on its own: its datagram cannot complete
            self._count("verdict." + own.name.lower())
            return [Release(token, _OUTCOME[own])]
        try:
            res = self.defrag.add(pkt, token, now)
        except Exception:  # a defrag bug must not kill the worker
            log.exception("defragmentation failed")
            self._count("errors.defrag")
            res = DefragResult(failed="defrag.error", members=[(token, pkt)])
        for code in res.anomalies:
            self._anomaly(code, pkt, now)
        if res.datagram is not None:
            dg = res.datagram
            self._count("packets.reassembled")
            if dg.anomaly is not None:
                self._anomaly(dg.anomaly, dg, now)
            return self._expand(self._process(dg, _FragToken(res.members), now))
        if res.failed is not None:
            return [self._frag_release(tok, res.failed) for tok, _ in res.members]
        return []

    def _frag_release(self, token: Any, why: str) -> Release:
        if why == "defrag.timeout":
            act = self.policy.defrag_timeout
        elif why in ("defrag.memcap", "defrag.tracker_memcap", "defrag.max_frags", "defrag.max_trackers", "defrag.error"):
            act = self.policy.hold_overflow
        else:
            act = self.policy.on_malformed
        drop = act.blocks and self.policy.ips  # IDS mode blocks nothing
        self._count("defrag.released_" + ("drop" if drop else "accept"))
        return Release(token, Outcome.DROP if drop else Outcome.ACCEPT)

    @staticmethod
    def _expand(releases: list[Release]) -> list[Release]:
        """Releases of reassembled datagrams become releases of their fragments."""
        if not any(isinstance(r.token, _FragToken) for r in releases):
            return releases
        out: list[Release] = []
        for rel in releases:
            if not isinstance(rel.token, _FragToken):
                out.append(rel)
                continue
            members = rel.token.members
            for i, (tok, _) in enumerate(members):
                last = i == len(members) - 1  # replies (resets, block page) are sent once
                out.append(Release(tok, rel.outcome, offload=rel.offload, packet=rel.packet if last else None,
                                   inject=rel.inject if last else ()))
        return out

    def _anomaly(self, code: str, pkt: Packet | None, now: float, flow: Flow | None = None) -> None:
        """Count an anomaly and write it to EVE (at most ``anomaly_eve_per_second`` records a second)."""
        self._count("anomaly." + code)
        if code in _NOT_IP:  # ARP and other non-IP frames (pcap input): counted, not anomalies of IP
            return
        sec = int(now) if now < 1e15 else -2  # tick(inf) ends an offline run
        if sec != self._anomaly_second:
            self._anomaly_second, self._anomaly_budget = sec, self.policy.anomaly_eve_per_second
        if self._anomaly_budget <= 0:
            self._count("anomaly_eve_suppressed")
            return
        self._anomaly_budget -= 1
        self.emit(eve.anomaly_record(code, pkt.ts if pkt is not None else now, pkt, flow))

    # -- holds -----------------------------------------------------------------------------
    def _start_hold(self, flow: Flow, hold: Hold, token: Any, pkt: Packet, now: float,
                    rest: tuple[Hold, ...] = ()) -> list[Release]:
        size = len(pkt.raw)
        if self._held_bytes + size > self.policy.hold_max_bytes:
            self._count("hold.overflow")
            return [self._overflow_release(token, pkt, flow)]
        hold_id = next(self._ids)
        st = _HoldState(hold_id, flow, hold, now + hold.timeout, (token, pkt), rest=rest)
        self._holds[hold_id] = st
        self._hold_of_flow[flow.flow_id] = hold_id
        self._held_bytes += size
        flow.held.append(hold_id)
        self._io_out.append((hold_id, hold.request))
        self._count("hold.started")
        return []

    def _hold_more(self, st: _HoldState, pkt: Packet, token: Any) -> list[Release]:
        size = len(pkt.raw)
        if 1 + len(st.later) >= self.policy.hold_max_packets or self._held_bytes + size > self.policy.hold_max_bytes:
            self._count("hold.overflow")
            return [self._overflow_release(token, pkt, st.flow)]
        st.later.append((token, pkt))
        self._held_bytes += size
        return []

    def _overflow_release(self, token: Any, pkt: Packet, flow: Flow) -> Release:
        if self.policy.hold_overflow.blocks:
            return Release(token, Outcome.DROP)
        return Release(token, Outcome.ACCEPT)

    def _unhold(self, st: _HoldState) -> None:
        del self._holds[st.hold_id]
        self._hold_of_flow.pop(st.flow.flow_id, None)
        self._held_bytes -= len(st.trigger[1].raw) + sum(len(p.raw) for _, p in st.later)
        if st.hold_id in st.flow.held:
            st.flow.held.remove(st.hold_id)

    def _resume(self, st: _HoldState, decisions: list[Decision], pkt: Packet, now: float) -> list[Release]:
        """Finish a hold: decide the trigger packet, then inspect the packets that queued behind it."""
        token, _ = st.trigger
        out = self._conclude(st.flow, pkt, token, decisions, now)
        for i, (tok, p) in enumerate(st.later):
            new_hold = self._hold_of_flow.get(st.flow.flow_id)
            if new_hold is not None:  # the flow is held again: queue the rest behind the new hold
                for tok2, p2 in st.later[i:]:
                    out += self._hold_more(self._holds[new_hold], p2, tok2)
                break
            if st.flow.decided is not None:
                out.append(Release(tok, self._decided_outcome(st.flow), offload=True))
                continue
            to_server = st.flow.to_server(p)
            out += self._inspect(st.flow, p, tok, to_server, False, now)
        return out

    # -- memory --------------------------------------------------------------------------
    def _memcap(self, flow: Flow, pkt: Packet) -> list[Decision]:
        """Keep the bytes the worker holds for its flows (reassembly and app-layer parsers) under
        ``flows.memcap``: past it, the app-layer parsing of the flows that hold the most is cut
        (down to 90% of the cap), each with an EVE anomaly record and the ``memcap.cut`` counter.
        ``flows.memcap_policy`` "pass": the flow goes on without app-layer inspection (fail open);
        "drop": the flow is dropped."""
        flows, app = self.flows, self.app
        memcap = getattr(flows, "memcap", 0)
        held = (app.held_total if app is not None else 0) + flows.pending_total
        if not memcap or held <= memcap:
            return []
        out: list[Decision] = []
        cut = app.cut_largest(int(memcap * 0.9) - flows.pending_total) if app is not None else []
        if not cut:  # reassembly alone: this flow's out-of-order bytes go (the stream skips them as a gap)
            flows.streams.drop_pending(flow.toserver)
            flows.streams.drop_pending(flow.toclient)
            self._count("memcap.reassembly_dropped")
            return out
        drop = getattr(flows, "memcap_policy", "pass") == "drop"
        for victim, bytes_held in cut:
            self._count("memcap.cut")
            rec = eve.base_record("anomaly", pkt.ts, pkt if victim is flow else None, victim)
            rec["anomaly"] = {"type": "applayer", "event": "memcap_exceeded", "layer": "app_layer",
                              "app_proto": str(victim.app_state.proto.value), "held": bytes_held,
                              "memcap": memcap, "action": "drop" if drop else "pass"}
            self.emit(rec)
            log.warning("worker memcap (%d bytes) exceeded: app-layer inspection of flow %d cut (%d bytes held)",
                        memcap, victim.flow_id, bytes_held)
            if drop:
                victim.decided = Action.DROP
                if victim is flow:
                    out.append(Verdict(Action.DROP, "pipeline", scope=Scope.FLOW, reason="memcap",
                                       signature="worker memcap exceeded"))
        return out

    # -- engine isolation ----------------------------------------------------------------
    def _call(self, engine: Engine, fn: Callable[..., Iterable[Decision] | None], *args: Any) -> list[Decision]:
        try:
            res = fn(*args)
            return list(res) if res else []
        except Exception:
            return self._engine_error(engine, fn)

    def _run_hooks(self, hooks: tuple[tuple[Engine, HookMethod], ...], decisions: list[Decision], *args: Any) -> None:
        """_call for each of a hook's engines, their decisions added to ``decisions``."""
        for e, fn in hooks:
            try:
                res = fn(*args)
                if res:
                    decisions.extend(list(res))  # all or nothing, as _call: a generator may raise halfway
            except Exception:
                decisions.extend(self._engine_error(e, fn))

    def _engine_error(self, engine: Engine, fn: Callable[..., Any]) -> list[Decision]:
        """An engine's hook raised (called from an ``except`` block): counted and logged; the
        engine has no say, or blocks (``on_engine_error``)."""
        self._count(f"errors.engine.{engine.name}")
        log.exception("engine %s failed in %s", engine.name, getattr(fn, "__name__", fn))
        act = self.policy.on_engine_error
        if act is Action.NONE:
            return []
        return [Verdict(act, engine.name, reason="engine error", signature=f"{engine.name}: engine error")]

    def _engine(self, name: str) -> Engine | None:
        for e in self.engines:
            if e.name == name:
                return e
        return None

    def _count(self, key: str, n: int = 1) -> None:
        self.counters[key] = self.counters.get(key, 0) + n

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {"pipeline": dict(self.counters), "flows": dict(getattr(self.flows, "counters", {}))}
        if self.defrag is not None:
            out["defrag"] = dict(self.defrag.counters, trackers=len(self.defrag), held_bytes=self.defrag.held_bytes)
        out["flows"]["active"] = len(self.flows)
        out["pipeline"]["held_packets"] = self.held_packets
        for e in self.engines:
            out[e.name] = dict(e.counters)
        return out
