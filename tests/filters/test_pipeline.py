"""The pipeline: verdict combination, failure isolation, deferred verdicts (holds) and offload."""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import pytest

from filters.engine import Action, Engine, Hold, Hook, IORequest, Scope, Verdict
from filters.flow import FlowTable
from filters.packet import ACK, PSH, SYN, Packet
from filters.pipeline import Outcome, Pipeline, PipelinePolicy, Release
from tests.filters.factories import tpacket


class Fixed(Engine):
    """Returns the same action for every new flow (NONE: nothing)."""


    def __init__(self, name: str, action: Action, *, more: bool = False, scope: Scope = Scope.FLOW) -> None:
        super().__init__()
        self.name = name  # type: ignore[misc]
        self.action, self.more, self.scope = action, more, scope

    def on_flow_start(self, flow, pkt):
        if self.action is Action.NONE:
            return None
        return [Verdict(self.action, self.name, rule_id=7, signature=f"{self.name} says {self.action.name}", scope=self.scope)]

    def needs_more(self, flow) -> bool:
        return self.more


class Boom(Engine):
    name: ClassVar[str] = "boom"

    def on_packet(self, pkt, flow):
        raise RuntimeError("engine bug")


class Holder(Engine):
    """Holds every new flow to port 8080 until told; the answer decides."""

    name: ClassVar[str] = "holder"

    def __init__(self, on_timeout: Action = Action.PASS) -> None:
        super().__init__()
        self.on_timeout = on_timeout
        self.results: list[Any] = []

    def on_flow_start(self, flow, pkt):
        if flow.server_port == 8080:
            return [Hold(self.name, IORequest("lookup", {"host": flow.server_ip}), timeout=2.0, on_timeout=self.on_timeout)]
        return None

    def on_io_result(self, flow, request, result, error):
        self.results.append((result, error))
        if result == "block":
            return [Verdict(Action.DROP, self.name, rule_id=99, signature="held and blocked")]
        return None


class Streamer(Engine):
    """Wants stream data; alerts on 'EVIL' in the client's bytes."""

    name: ClassVar[str] = "streamer"

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[bytes] = []

    def on_stream(self, flow, to_server, data, offset):
        self.seen.append(data)
        if b"EVIL" in data:
            return [Verdict(Action.DROP, self.name, rule_id=5, signature="evil bytes")]
        return None

    def needs_more(self, flow) -> bool:
        return True


class Eve(list):
    """EVE records a pipeline emitted; iterating gives the alerts, ``.drops`` the drop records."""

    def __iter__(self):
        return (r for r in list.__iter__(self) if r["event_type"] == "alert")

    def __getitem__(self, i):
        return [r for r in self][i]

    @property
    def drops(self) -> list[dict]:
        return [r for r in list.__iter__(self) if r["event_type"] == "drop"]


def make(*engines: Engine, **policy: Any) -> tuple[Pipeline, Eve]:
    out = Eve()
    return Pipeline(list(engines), FlowTable(), PipelinePolicy(**policy), out.append), out


def syn(port: int = 80, sport: int = 40000, ts: float = 1.0) -> Packet:
    return tpacket(tcp_flags=SYN, dport=port, sport=sport, seq=999, ack=0, ts=ts, raw=b"x" * 60)


def test_strictest_wins_and_alerts_are_all_recorded():
    p, eve = make(Fixed("a", Action.ALERT), Fixed("b", Action.DROP), Fixed("c", Action.PASS))
    (rel,) = p.process(syn(), "t1")
    assert rel.outcome is Outcome.DROP and rel.offload
    sigs = sorted(r["alert"]["signature"] for r in eve)
    assert sigs == ["a says ALERT", "b says DROP"]
    assert {r["alert"]["action"] for r in eve if r["alert"]["signature"].startswith("b")} == {"blocked"}
    assert {r["alert"]["action"] for r in eve if r["alert"]["signature"].startswith("a")} == {"allowed"}
    (drop,) = eve.drops  # one drop record for the flow, naming the deciding rule
    assert drop["drop"]["signature_id"] == 7 and drop["drop"]["engine"] == "b" and drop["drop"]["action"] == "drop"
    # the rest of the flow is dropped without inspection
    (rel2,) = p.process(tpacket(tcp_flags=ACK), "t2")
    assert rel2.outcome is Outcome.DROP


def test_reject_beats_drop():
    p, _ = make(Fixed("a", Action.DROP), Fixed("b", Action.REJECT))
    assert p.process(syn(), 1)[0].outcome is Outcome.REJECT


def test_ids_mode_reports_but_does_not_block():
    p, eve = make(Fixed("a", Action.DROP), ips=False)
    (rel,) = p.process(syn(), 1)
    assert rel.outcome is Outcome.ACCEPT
    assert eve[0]["alert"]["action"] == "allowed"


def test_packet_scope_drop_does_not_decide_flow():
    p, _ = make(Fixed("a", Action.DROP, scope=Scope.PACKET, more=True))
    (rel,) = p.process(syn(), 1)
    assert rel.outcome is Outcome.DROP and not rel.offload
    (rel2,) = p.process(tpacket(tcp_flags=ACK), 2)
    assert rel2.outcome is Outcome.ACCEPT


def test_offload_only_when_no_engine_needs_more():
    p, _ = make(Fixed("a", Action.NONE))
    assert p.process(syn(), 1)[0].offload
    p2, _ = make(Fixed("a", Action.NONE), Streamer())
    assert not p2.process(syn(), 1)[0].offload


def test_engine_exception_is_isolated_and_counted():
    p, _ = make(Boom())
    for i in range(3):
        (rel,) = p.process(syn(sport=40000 + i), i)
        assert rel.outcome is Outcome.ACCEPT
    assert p.counters["errors.engine.boom"] == 3
    closed, _ = make(Boom(), on_engine_error=Action.DROP)
    assert closed.process(syn(), 1)[0].outcome is Outcome.DROP


def test_malformed_packets_follow_policy():
    bad = Packet(b"\x45\x00", anomaly="ipv4.truncated")
    p, _ = make()
    assert p.process(bad, 1)[0].outcome is Outcome.ACCEPT
    assert p.counters["anomaly.ipv4.truncated"] == 1
    strict, _ = make(on_malformed=Action.DROP)
    assert strict.process(bad, 1)[0].outcome is Outcome.DROP


def test_stream_data_reaches_engines_and_can_drop():
    s = Streamer()
    p, eve = make(s)
    p.process(syn(), 0)
    p.process(tpacket(reply=True, tcp_flags=SYN | ACK, seq=4999, ack=1000), 1)
    p.process(tpacket(tcp_flags=ACK, seq=1000, ack=5000), 2)
    assert p.process(tpacket(tcp_flags=PSH | ACK, seq=1000, payload=b"hello "), 3)[0].outcome is Outcome.ACCEPT
    rel = p.process(tpacket(tcp_flags=PSH | ACK, seq=1006, payload=b"EVIL"), 4)[0]
    assert rel.outcome is Outcome.DROP
    assert b"".join(s.seen) == b"hello EVIL"
    assert eve[-1]["alert"]["signature_id"] == 5


class TestHolds:
    def test_hold_then_allow_releases_in_order(self):
        h = Holder()
        p, _ = make(h)
        assert p.process(syn(8080), "syn", 1.0) == []
        # later packets of the held flow queue behind it
        assert p.process(tpacket(dport=8080, tcp_flags=ACK, seq=1000), "ack", 1.1) == []
        assert p.held_packets == 2
        # another flow is not delayed by the held one
        (other,) = p.process(syn(80, sport=41000), "other", 1.2)
        assert other.token == "other" and other.outcome is Outcome.ACCEPT
        ((hold_id, req),) = p.take_io()
        assert req.kind == "lookup" and req.args["host"] == "198.51.100.10"
        rels = p.io_done(hold_id, "allow", None, 1.3)
        assert [r.token for r in rels] == ["syn", "ack"]
        assert all(r.outcome is Outcome.ACCEPT for r in rels)
        assert p.held_packets == 0 and h.results == [("allow", None)]

    def test_hold_then_block_drops_everything_held(self):
        p, eve = make(Holder())
        p.process(syn(8080), "syn", 1.0)
        p.process(tpacket(dport=8080, seq=1000), "ack", 1.1)
        ((hold_id, _),) = p.take_io()
        rels = p.io_done(hold_id, "block", None, 1.2)
        assert [(r.token, r.outcome) for r in rels] == [("syn", Outcome.DROP), ("ack", Outcome.DROP)]
        assert eve[-1]["alert"]["signature"] == "held and blocked"

    @pytest.mark.parametrize("on_timeout, outcome", [(Action.PASS, Outcome.ACCEPT), (Action.DROP, Outcome.DROP)])
    def test_timeout_applies_policy(self, on_timeout, outcome):
        p, _ = make(Holder(on_timeout))
        p.process(syn(8080), "syn", 1.0)
        assert p.next_deadline() == pytest.approx(3.0)
        assert p.tick(2.9) == []
        rels = p.tick(3.1)
        assert [(r.token, r.outcome) for r in rels] == [("syn", outcome)]
        assert p.counters["hold.timeouts"] == 1
        (hold_id, _), = p.take_io()
        assert p.io_done(hold_id, "block") == []  # a late answer changes nothing
        assert p.counters["hold.late_results"] == 1

    def test_holds_of_two_engines_on_one_packet_run_in_turn(self):
        class Second(Holder):
            name: ClassVar[str] = "second"

        first, second = Holder(), Second()
        p, eve = make(first, second)
        assert p.process(syn(8080), "syn", 1.0) == []
        ((h1, r1),) = p.take_io()  # only the first engine's hold runs
        assert p.io_done(h1, "allow", None, 1.1) == []  # ...then the second one's: still held
        ((h2, r2),) = p.take_io()
        assert first.results == [("allow", None)] and second.results == []
        rels = p.io_done(h2, "block", None, 1.2)
        assert [(r.token, r.outcome) for r in rels] == [("syn", Outcome.DROP)]
        assert eve[-1]["alert"]["signature"] == "held and blocked"

    def test_first_hold_blocking_skips_the_next(self):
        class Second(Holder):
            name: ClassVar[str] = "second"

        second = Second()
        p, _ = make(Holder(), second)
        p.process(syn(8080), "syn", 1.0)
        ((h1, _),) = p.take_io()
        rels = p.io_done(h1, "block", None, 1.1)
        assert [(r.token, r.outcome) for r in rels] == [("syn", Outcome.DROP)]
        assert p.take_io() == [] and second.results == []

    def test_late_result_alarm_is_recorded_against_the_flow(self):
        class Retro(Holder):
            def on_io_late(self, request, result, error):
                return [Verdict(Action.ALERT, self.name, rule_id=77, signature=f"late {result}")]

        p, eve = make(Retro())
        p.process(syn(8080), "syn", 1.0)
        rels = p.tick(3.1)
        assert [(r.token, r.outcome) for r in rels] == [("syn", Outcome.ACCEPT)]
        (hold_id, _), = p.take_io()
        assert p.io_done(hold_id, "bad", None, 9.0) == []  # nothing to release...
        alert = eve[-1]  # ...but the alarm names the flow the late answer was about
        assert alert["alert"]["signature"] == "late bad" and alert["dest_port"] == 8080
        assert p.counters["hold.late_alarms"] == 1

    def test_held_packets_are_bounded(self):
        p, _ = make(Holder(), hold_max_packets=3)
        p.process(syn(8080), 0, 1.0)
        assert p.process(tpacket(dport=8080, seq=1000), 1, 1.0) == []
        assert p.process(tpacket(dport=8080, seq=1000), 2, 1.0) == []
        (over,) = p.process(tpacket(dport=8080, seq=1000), 3, 1.0)
        assert over.outcome is Outcome.DROP and p.counters["hold.overflow"] == 1

    def test_held_bytes_are_bounded(self):
        p, _ = make(Holder(), hold_max_bytes=100)
        p.process(syn(8080), 0, 1.0)  # 60 bytes
        (over,) = p.process(tpacket(dport=8080, seq=1000, raw=b"y" * 60), 1, 1.0)
        assert over.outcome is Outcome.DROP


def test_fuzzed_packets_never_break_the_pipeline():
    import random

    from filters.firewall import Firewall
    from filters.packet import parse_ip

    rnd = random.Random(7)
    fw = Firewall()
    fw.configure({})
    p, _ = make(fw, Streamer(), Holder())
    from scapy.layers.inet import IP, TCP, UDP

    seeds = [bytes(IP(src="192.0.2.10", dst="198.51.100.10") / TCP(sport=1234, dport=d, flags="S") / b"GET / HTTP/1.1\r\n")
             for d in (80, 8080)] + [bytes(IP(src="192.0.2.10", dst="198.51.100.10") / UDP(sport=5, dport=53) / (b"x" * 20))]
    for i in range(5000):
        data = bytearray(rnd.choice(seeds))
        for _ in range(rnd.randint(0, 6)):
            data[rnd.randrange(len(data))] = rnd.randrange(256)
        data = bytes(data[: rnd.randint(0, len(data))]) if rnd.random() < 0.3 else bytes(data)
        p.process(parse_ip(data, ts=i * 0.001), i, i * 0.001)
        if i % 100 == 0:
            for hold_id, _ in p.take_io():
                p.io_done(hold_id, rnd.choice(["allow", "block", None]), None, i * 0.001)
            p.tick(i * 0.001)
    assert p.counters["packets"] == 5000


class EveryPacket(Engine):
    """Gives ``action`` (flow-wide) on every packet it sees; counts them."""

    name = "every"

    def __init__(self, action: Action) -> None:
        super().__init__()
        self.action, self.seen = action, 0

    def on_packet(self, pkt, flow):
        if flow is None:
            return None
        self.seen += 1
        return [Verdict(self.action, self.name, rule_id=7, signature="every")] if self.action is not Action.NONE else None


def test_kernel_offload_pass_grace_and_dropped_flows_stay_dropped() -> None:
    """Inline, packets queued before a flow's verdict reached the kernel still come to the worker:
    within ``offload_grace`` of a pass they take it; a later SYN (the kernel forgot the verdict: a
    new connection on the same ports) is decided afresh, a later non-SYN keeps the pass. A dropped flow is never decided afresh: its packets stay dropped."""
    pipe = Pipeline([Fixed("f", Action.NONE)], FlowTable(), PipelinePolicy(kernel_offload=True, offload_grace=2.0))
    (first,) = pipe.process(tpacket(tcp_flags=SYN, ts=1.0), "a")
    assert first.offload and first.outcome is Outcome.ACCEPT
    (queued,) = pipe.process(tpacket(tcp_flags=ACK, ts=1.5), "b")
    assert queued.outcome is Outcome.ACCEPT and pipe.counters.get("flows.redecided", 0) == 0
    # a late non-SYN packet (conntrack found it out of window, or forgot the connection) keeps the
    # pass: it is no new connection, and its sender must not become a new flow's client
    (late,) = pipe.process(tpacket(reply=True, tcp_flags=ACK, ts=10.0), "c")
    assert late.outcome is Outcome.ACCEPT and pipe.counters.get("flows.redecided", 0) == 0
    pipe.process(tpacket(tcp_flags=SYN, ts=20.0), "d")  # a new connection on the same ports
    assert pipe.counters["flows.redecided"] == 1
    eng = EveryPacket(Action.DROP)
    dropper = Pipeline([eng], FlowTable(), PipelinePolicy(kernel_offload=True))
    outs = [dropper.process(tpacket(tcp_flags=SYN if i == 0 else ACK, ts=1.0 + 100 * i), i)[0] for i in range(3)]
    assert [r.outcome for r in outs] == [Outcome.DROP] * 3 and dropper.counters.get("flows.redecided", 0) == 0
    assert eng.seen == 1 and dropper.counters["packets.decided"] == 2


def test_ids_mode_flow_drop_ends_inspection() -> None:
    """IDS mode blocks nothing, but a flow-wide drop ends the flow's inspection (no more alerts)."""
    emitted: list[dict] = []
    eng = EveryPacket(Action.DROP)
    pipe = Pipeline([eng], FlowTable(), PipelinePolicy(ips=False), emit=emitted.append)
    outs = [pipe.process(tpacket(tcp_flags=SYN if i == 0 else ACK, ts=1.0 + i), i)[0] for i in range(4)]
    assert {r.outcome for r in outs} == {Outcome.ACCEPT} and eng.seen == 1
    assert [r["alert"]["action"] for r in emitted if r["event_type"] == "alert"] == ["allowed"]


def test_only_the_last_http_stage_of_a_chunk_counts_for_coalescing_engines() -> None:
    """The IPS (coalesce_http) gets only the last of the HTTP events one chunk raises for a
    message; other engines get every stage (a web filter may act on the request headers)."""
    from types import SimpleNamespace

    from filters.pipeline import _superseded

    tx1, tx2 = object(), object()
    ev = lambda tx, stage, to_server=True: SimpleNamespace(tx=tx, stage=stage, to_server=to_server)  # noqa: E731
    events = [(Hook.HTTP_REQUEST, ev(tx1, "request_headers")), (Hook.HTTP_REQUEST, ev(tx1, "request_done")),
              (Hook.HTTP_REQUEST, ev(tx2, "request_headers")), (Hook.HTTP_RESPONSE, ev(tx2, "response_headers", False)),
              (Hook.HTTP_RESPONSE, ev(tx2, "response_body", False)), (Hook.HTTP_RESPONSE, ev(tx2, "response_done", False))]
    assert [_superseded(events, n) for n in range(len(events))] == [True, False, False, True, True, False]


class Quiet(Engine):
    """Takes packets, says nothing, keeps Engine.needs_more (never needs more)."""

    name: ClassVar[str] = "quiet"

    def on_packet(self, pkt, flow):
        return None


class Toggle(Engine):
    """Needs more of every flow while ``more``; counts how often it was asked."""

    name: ClassVar[str] = "toggle"

    def __init__(self) -> None:
        super().__init__()
        self.more, self.asked = True, 0

    def on_packet(self, pkt, flow):
        return None

    def needs_more(self, flow) -> bool:
        self.asked += 1
        return self.more


def test_needs_more_is_asked_on_every_packet_and_its_latest_answer_counts():
    # The pipeline keeps a tuple of the engines it asks (_bind): one whose answer changes between
    # two packets of a flow must be asked again, and its new answer must offload the flow then.
    toggle = Toggle()
    p, _ = make(Quiet(), toggle)
    assert not p.process(syn(), 1)[0].offload
    assert not p.process(tpacket(tcp_flags=ACK), 2)[0].offload
    assert toggle.asked == 2
    toggle.more = False
    (rel,) = p.process(tpacket(tcp_flags=ACK), 3)
    assert rel.offload and toggle.asked == 3
    assert p.counters["flows.offloaded"] == 1
    toggle.more = True  # a decided flow is not inspected again
    assert p.process(tpacket(tcp_flags=ACK), 4)[0].offload and toggle.asked == 3


def test_engines_without_needs_more_are_not_asked_but_a_reload_rebinds():
    p, _ = make(Quiet())
    assert p._needs_more == ()  # Engine.needs_more is always False: nothing to ask
    assert p.process(syn(sport=40001), 1)[0].offload
    toggle = Toggle()
    p.replace_engines([Quiet(), toggle])
    assert not p.process(syn(sport=40002), 2)[0].offload and toggle.asked == 1
    p.replace_engines([Quiet()])
    assert p.process(syn(sport=40003), 3)[0].offload
    # an instance's own needs_more (not the class's) is asked too
    q = Quiet()
    q.needs_more = lambda flow: True  # type: ignore[method-assign]
    p.replace_engines([q])
    assert not p.process(syn(sport=40004), 4)[0].offload


def test_release_is_a_frozen_value():
    rel = Release("t", Outcome.DROP, True)
    assert (rel.token, rel.outcome, rel.offload, rel.packet, rel.inject) == ("t", Outcome.DROP, True, None, ())
    assert rel == Release("t", Outcome.DROP, offload=True) and rel != Release("t", Outcome.DROP)
    assert hash(rel) == hash(Release("t", Outcome.DROP, True))
    with pytest.raises(dataclasses.FrozenInstanceError):
        rel.outcome = Outcome.ACCEPT  # type: ignore[misc]
    assert dataclasses.replace(rel, offload=False) == Release("t", Outcome.DROP)


class HttpAndStream(Streamer):
    """Takes HTTP requests (so the pipeline has an app layer) and stream bytes."""

    name: ClassVar[str] = "httpstream"

    def on_http_request(self, flow, event):
        return None


def test_a_flow_of_no_known_protocol_leaves_the_app_layer_but_not_the_stream_engines(monkeypatch):
    eng = HttpAndStream()
    p, _ = make(eng)
    assert p.app is not None
    p.process(syn(), 0)
    p.process(tpacket(reply=True, tcp_flags=SYN | ACK, seq=4999, ack=1000), 1)
    seq = {True: 1000, False: 5000}
    for n, (client, data) in enumerate([(True, b"\x01junk" * 20)] * 3 + [(False, b"\x02knuj" * 20)]):
        p.process(tpacket(reply=not client, tcp_flags=PSH | ACK, seq=seq[client], payload=data), 2 + n)
        seq[client] += len(data)
        if n < 3:  # detection still waits: the bytes seen so far are held
            assert p.app.held_total == 100 * (n + 1) and not p.app.finished(next(iter(p.flows)))
    flow = next(iter(p.flows))
    assert p.app.state(flow).proto.value == "failed"
    assert p.app.held_total == 0 and p.app.finished(flow)  # what detection held was released
    calls: list[Any] = []
    monkeypatch.setattr(p.app, "on_chunk", lambda *a: calls.append(a) or [])
    p.process(tpacket(tcp_flags=PSH | ACK, seq=seq[True], payload=b"EVIL"), 9)
    assert calls == [] and eng.seen[-1] == b"EVIL"  # the stream engines still get the bytes


def test_finished_waits_until_what_a_failed_flow_held_is_counted_out():
    from filters.app.layer import AppLayer, AppProto
    from tests.filters.factories import tflow

    app, flow = AppLayer(), tflow()
    st = app.state(flow)
    assert not app.finished(flow)  # detection has not given up
    st.proto, st.held, app.held_total = AppProto.FAILED, 40, 40
    assert not app.finished(flow)  # its bytes are still counted: inspected() must run once more
    app.inspected(flow)
    assert app.held_total == 0 and app.finished(flow)
    st.early = [(True, b"x")]
    assert not app.finished(flow)


class Raiser(Engine):
    """Raises in the one hook named ``where``; the others say nothing."""

    name: ClassVar[str] = "raiser"

    def __init__(self, where: str) -> None:
        super().__init__()
        self.where = where

    def _maybe(self, hook: str) -> None:
        if hook == self.where:
            raise RuntimeError(f"bug in {hook}")

    def on_flow_start(self, flow, pkt):
        self._maybe("on_flow_start")

    def on_packet(self, pkt, flow):
        self._maybe("on_packet")

    def on_stream(self, flow, to_server, data, offset):
        self._maybe("on_stream")

    def on_http_request(self, flow, event):
        self._maybe("on_http_request")

    def on_packet_end(self, pkt, flow):
        self._maybe("on_packet_end")

    def needs_more(self, flow) -> bool:
        return True


@pytest.mark.parametrize("where", ["on_flow_start", "on_packet", "on_stream", "on_http_request", "on_packet_end"])
@pytest.mark.parametrize("policy", [Action.NONE, Action.DROP])
def test_every_hook_of_the_walk_isolates_an_engine_error(where: str, policy: Action):
    p, _ = make(Raiser(where), on_engine_error=policy)
    outcomes = [r.outcome for r in p.process(syn(), 0)]
    outcomes += [r.outcome for r in p.process(tpacket(reply=True, tcp_flags=SYN | ACK, seq=4999, ack=1000), 1)]
    outcomes += [r.outcome for r in p.process(
        tpacket(tcp_flags=PSH | ACK, seq=1000, ack=5000, payload=b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"), 2)]
    assert p.counters["errors.engine.raiser"] >= 1
    assert (Outcome.DROP in outcomes) is (policy is Action.DROP)
