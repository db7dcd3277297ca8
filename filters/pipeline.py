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
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

from filters import eve
from filters.app.layer import AppLayer
from filters.engine import Action, Decision, Engine, Hold, Hook, Inject, IORequest, Scope, Verdict
from filters.flow import Flow, FlowTable
from filters.packet import Packet

log = logging.getLogger(__name__)


class Outcome(enum.IntEnum):
    ACCEPT = 0
    DROP = 1
    REJECT = 2


@dataclass(frozen=True, slots=True)
class Release:
    """The verdict for one packet. ``offload`` asks the driver to decide the whole flow in the kernel."""

    token: Any
    outcome: Outcome
    offload: bool = False
    packet: Packet | None = None  # the judged packet, when there is something to inject
    inject: tuple[Inject, ...] = ()  # packets the driver should send in reply to ``packet``


@dataclass(frozen=True, slots=True)
class PipelinePolicy:
    on_engine_error: Action = Action.NONE  # NONE: the failing engine has no say; DROP: fail closed
    on_malformed: Action = Action.NONE
    hold_max_packets: int = 64
    hold_max_bytes: int = 8 << 20
    hold_overflow: Action = Action.DROP
    ips: bool = True  # False: IDS mode, blocking verdicts are only reported
    kernel_offload: bool = False  # True inline: decided flows live in the kernel (connmark)


@dataclass(slots=True, eq=False)
class _HoldState:
    hold_id: int
    flow: Flow
    hold: Hold
    deadline: float
    trigger: tuple[Any, Packet]  # the packet whose inspection asked for the hold (already inspected)
    later: list[tuple[Any, Packet]] = field(default_factory=list)  # not yet inspected


APP_HOOKS = (Hook.DNS, Hook.HTTP_REQUEST, Hook.HTTP_RESPONSE, Hook.TLS_HELLO, Hook.FILE, Hook.MAIL)
_OUTCOME = {Action.DROP: Outcome.DROP, Action.REJECT: Outcome.REJECT}
MAX_EXPIRED_HOLDS = 4096  # timed-out holds whose late I/O result still goes to the engine


class Pipeline:
    def __init__(
        self,
        engines: Sequence[Engine],
        flows: FlowTable,
        policy: PipelinePolicy = PipelinePolicy(),
        emit: Callable[[dict[str, Any]], None] = lambda rec: None,
        app: AppLayer | None = None,
    ) -> None:
        self.engines = list(engines)
        self.flows = flows
        self.policy = policy
        self.emit = emit
        self.counters: dict[str, int] = {}
        self._by_hook = {h: [e for e in self.engines if h in e.hooks] for h in Hook}
        wants_app = any(self._by_hook[h] for h in APP_HOOKS)
        self.app = (app or AppLayer()) if wants_app else None
        self._holds: dict[int, _HoldState] = {}
        self._expired: dict[int, tuple[str, IORequest]] = {}
        self._hold_of_flow: dict[int, int] = {}  # flow_id -> hold_id
        self._held_bytes = 0
        self._io_out: list[tuple[int, IORequest]] = []
        self._ids = itertools.count(1)

    def replace_engines(self, engines: Sequence[Engine]) -> None:
        """Swap in a new engine set (a reload); flows, holds and the app layer carry on."""
        self.engines = list(engines)
        self._by_hook = {h: [e for e in self.engines if h in e.hooks] for h in Hook}
        if self.app is None and any(self._by_hook[h] for h in APP_HOOKS):
            self.app = AppLayer()

    # -- public driver API -------------------------------------------------------------
    def process(self, pkt: Packet, token: Any, now: float | None = None) -> list[Release]:
        now = pkt.ts if now is None else now
        self._count("packets")
        if pkt.anomaly is not None:
            self._count("anomaly." + pkt.anomaly)
        try:
            found = self.flows.lookup(pkt)
        except Exception:  # a flow-table bug must not kill the worker
            log.exception("flow lookup failed")
            self._count("errors.flow_lookup")
            found = None
        if found is None:
            return [self._flowless(pkt, token)]
        flow, to_server, is_new = found
        if flow.decided is not None and self.policy.kernel_offload and not is_new:
            # The kernel holds decided flows; a packet of one here means the kernel has forgotten
            # the verdict (a new connection on the same addresses and ports, or an expired
            # conntrack entry): decide it afresh.
            self._count("flows.redecided")
            self.flows.remove(flow)
            self._end_flow(flow, now)
            found = self.flows.lookup(pkt)
            if found is None:
                return [self._flowless(pkt, token)]
            flow, to_server, is_new = found
        if flow.decided is not None:
            self._count("packets.decided")
            return [Release(token, _OUTCOME.get(flow.decided, Outcome.ACCEPT), offload=True)]
        hold_id = self._hold_of_flow.get(flow.flow_id)
        if hold_id is not None:
            return self._hold_more(self._holds[hold_id], pkt, token)
        return self._inspect(flow, pkt, token, to_server, is_new, now)

    def take_io(self) -> list[tuple[int, IORequest]]:
        """I/O requests the engines asked for since the last call, as (hold_id, request)."""
        out, self._io_out = self._io_out, []
        return out

    def io_done(self, hold_id: int, result: Any, error: str | None = None, now: float = 0.0) -> list[Release]:
        st = self._holds.get(hold_id)
        if st is None:
            self._count("hold.late_results")
            late = self._expired.pop(hold_id, None)
            engine = self._engine(late[0]) if late else None
            if late and engine is not None:
                self._call(engine, engine.on_io_late, late[1], result, error)
            return []
        self._unhold(st)
        engine = self._engine(st.hold.engine)
        decisions = self._call(engine, engine.on_io_result, st.flow, st.hold.request, result, error) if engine else []
        return self._resume(st, decisions, st.trigger[1], now)

    def tick(self, now: float) -> list[Release]:
        """Fire hold timeouts, expire idle flows. Call at least once a second."""
        out: list[Release] = []
        for st in [s for s in self._holds.values() if s.deadline <= now]:
            self._count("hold.timeouts")
            self._unhold(st)
            h = st.hold
            self._expired[st.hold_id] = (h.engine, h.request)
            while len(self._expired) > MAX_EXPIRED_HOLDS:
                self._expired.pop(next(iter(self._expired)))
            v = Verdict(h.on_timeout, h.engine, reason=h.reason or "hold timeout", signature=f"{h.engine}: verdict timeout")
            out += self._resume(st, [v], st.trigger[1], now)
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
        for e in self._by_hook[Hook.FLOW_END]:
            decisions += self._call(e, e.on_flow_end, flow)
        verdicts = [d for d in decisions if isinstance(d, Verdict)]
        if verdicts:
            self._report(verdicts, None, flow, flow.last_ts)

    def next_deadline(self) -> float | None:
        return min((s.deadline for s in self._holds.values()), default=None)

    @property
    def held_packets(self) -> int:
        return sum(1 + len(s.later) for s in self._holds.values())

    def dispatch_event(self, hook: Hook, flow: Flow, event: Any) -> list[Decision]:
        """Feed an application-layer event (from a protocol parser) to the engines that want it."""
        out: list[Decision] = []
        for e in self._by_hook[hook]:
            out += self._call(e, e.on_event, hook, flow, event)
        return out

    # -- inspection ----------------------------------------------------------------------
    def _inspect(self, flow: Flow, pkt: Packet, token: Any, to_server: bool, is_new: bool, now: float) -> list[Release]:
        try:
            chunks = self.flows.update(flow, pkt, to_server)
        except Exception:
            log.exception("flow update failed")
            self._count("errors.flow_update")
            chunks = []
        decisions: list[Decision] = []
        if is_new:
            for e in self._by_hook[Hook.FLOW_START]:
                decisions += self._call(e, e.on_flow_start, flow, pkt)
        for e in self._by_hook[Hook.PACKET]:
            decisions += self._call(e, e.on_packet, pkt, flow)
        for c_to_server, data, offset in chunks:
            for e in self._by_hook[Hook.STREAM]:
                decisions += self._call(e, e.on_stream, flow, c_to_server, data, offset)
            if self.app is not None:
                for hook, event in self.app.on_chunk(flow, c_to_server, data, offset):
                    decisions += self.dispatch_event(hook, flow, event)
        for e in self._by_hook[Hook.PACKET_END]:
            decisions += self._call(e, e.on_packet_end, pkt, flow)
        return self._conclude(flow, pkt, token, decisions, now)

    def _conclude(
        self, flow: Flow, pkt: Packet, token: Any, decisions: Iterable[Decision], now: float
    ) -> list[Release]:
        verdicts = [d for d in decisions if isinstance(d, Verdict)]
        holds = [d for d in decisions if isinstance(d, Hold)]
        strictest = self._report(verdicts, pkt, flow)
        if strictest.blocks and self.policy.ips:
            flow_wide = any(v.scope is Scope.FLOW and v.action.blocks for v in verdicts)
            if flow_wide:
                flow.decided = strictest
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
            return self._start_hold(flow, holds[0], token, pkt, now)
        offload = not any(e.needs_more(flow) for e in self.engines)
        if offload:
            flow.decided = Action.PASS
            self._count("flows.offloaded")
        return [Release(token, Outcome.ACCEPT, offload=offload)]

    def _report(self, verdicts: list[Verdict], pkt: Packet | None, flow: Flow, ts: float | None = None) -> Action:
        strictest = Action.NONE
        for v in verdicts:
            strictest = max(strictest, v.action)
        blocked = strictest.blocks and self.policy.ips
        for v in verdicts:
            if v.action >= Action.ALERT:
                self._count(f"alerts.{v.engine}")
                when = pkt.ts if pkt is not None else (ts if ts is not None else flow.last_ts)
                self.emit(eve.alert_record(v, when, pkt, flow, blocked=blocked and v.action.blocks))
        return strictest

    def _flowless(self, pkt: Packet, token: Any) -> Release:
        if pkt.anomaly is not None and self.policy.on_malformed.blocks:
            self._count("verdict.malformed_drop")
            return Release(token, Outcome.DROP)
        self._count("packets.flowless")
        return Release(token, Outcome.ACCEPT)

    # -- holds -----------------------------------------------------------------------------
    def _start_hold(self, flow: Flow, hold: Hold, token: Any, pkt: Packet, now: float) -> list[Release]:
        size = len(pkt.raw)
        if self._held_bytes + size > self.policy.hold_max_bytes:
            self._count("hold.overflow")
            return [self._overflow_release(token, pkt, flow)]
        hold_id = next(self._ids)
        st = _HoldState(hold_id, flow, hold, now + hold.timeout, (token, pkt))
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
                out.append(Release(tok, _OUTCOME.get(st.flow.decided, Outcome.ACCEPT), offload=True))
                continue
            to_server = st.flow.to_server(p)
            out += self._inspect(st.flow, p, tok, to_server, False, now)
        return out

    # -- engine isolation ----------------------------------------------------------------
    def _call(self, engine: Engine, fn: Callable[..., Iterable[Decision] | None], *args: Any) -> list[Decision]:
        try:
            res = fn(*args)
            return list(res) if res else []
        except Exception:
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
        out["flows"]["active"] = len(self.flows)
        out["pipeline"]["held_packets"] = self.held_packets
        for e in self.engines:
            out[e.name] = dict(e.counters)
        return out
