"""The IPS lets go of a flow (kernel offload) once no loaded rule can match it any more, and only
then: a rule whose header fits the flow keeps it, one that needs a flowbit nothing on the flow can
set does not, the app protocol is waited for, other flows keep being inspected
(``engines.ips.unmatchable_flows``; filters/ips/reach.py)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import Ether

from agent.dataplane.worker import pipeline_from_config
from agent.engines import build_engines
from agent.offline import replay as offline
from filters.packet import parse_ethernet
from filters.pipeline import Outcome

CLIENT, SERVER = "192.168.10.5", "198.51.100.7"
ATTACK = b"EXPLOIT-UDP-0xdeadbeef"


class Box:
    """The inline worker's pipeline (kernel offload on) with ``rules`` loaded."""

    def __init__(self, tmp_path: Path, rules: str, **ips: Any) -> None:
        (tmp_path / "test.rules").write_text(rules)
        base = {"engines": {"firewall": {"enabled": False}, "ips": ips}, "dataplane": {"flows": {"midstream": False}},
                "home_net": offline.SURICATA_HOME_NET}  # offline_config's default, with ``ips`` keys added
        cfg = offline.offline_config(base, [], rule_files=[str(tmp_path / "test.rules")])
        self.alerts: list[dict[str, Any]] = []
        self.pipe = pipeline_from_config(cfg, self._emit, engines=build_engines(cfg), kernel_offload=True)
        self.now = 1000.0

    def _emit(self, rec: dict[str, Any]) -> None:
        if rec.get("event_type") == "alert":
            self.alerts.append(rec)

    def send(self, frame: Any) -> tuple[Outcome, bool, bool]:
        """(outcome, offload asked, inspected in Python) of one packet."""
        self.now += 0.001
        decided = self.pipe.counters.get("packets.decided", 0)
        [rel] = self.pipe.process(parse_ethernet(bytes(frame), self.now), object(), self.now)
        return rel.outcome, rel.offload, self.pipe.counters.get("packets.decided", 0) == decided

    def sids(self) -> list[int]:
        return [a["alert"]["signature_id"] for a in self.alerts]

    def ips_counter(self, name: str) -> int:
        return self.pipe.stats()["ips"].get(name, 0)


def udp(dport: int, data: bytes, sport: int = 40000, reply: bool = False) -> Any:
    if reply:
        return Ether() / IP(src=SERVER, dst=CLIENT) / UDP(sport=dport, dport=sport) / data
    return Ether() / IP(src=CLIENT, dst=SERVER) / UDP(sport=sport, dport=dport) / data


def test_a_udp_flow_no_rule_fits_leaves_python_and_an_attack_on_a_rule_port_is_still_caught(tmp_path: Path) -> None:
    box = Box(tmp_path, f'alert udp any any -> any 6000 (msg:"attack"; content:"{ATTACK.decode()}"; sid:1;)\n'
                        'alert http any any -> any any (msg:"http"; http.uri; content:"/evil"; sid:2;)\n')
    # port 5201: no rule fits; the app layer concludes on the first datagram (not DNS): offloaded
    assert box.send(udp(5201, b"a" * 36)) == (Outcome.ACCEPT, True, True)
    assert box.send(udp(5201, ATTACK)) == (Outcome.ACCEPT, True, False)  # (queued before the kernel took it)
    # port 6000: the rule fits; every datagram is inspected and the attack is caught
    for i in range(5):
        assert box.send(udp(6000, b"b" * 36, sport=41000)) == (Outcome.ACCEPT, False, True)
    assert box.send(udp(6000, ATTACK, sport=41000))[2]
    assert box.sids() == [1]
    assert box.ips_counter("flows.bypassed_unmatchable") == 1


def test_a_rule_that_fits_the_flow_keeps_it_in_python(tmp_path: Path) -> None:
    box = Box(tmp_path, f'alert udp any any -> any any (msg:"anywhere"; content:"{ATTACK.decode()}"; sid:1;)\n')
    for _ in range(5):
        assert box.send(udp(5201, b"a" * 36)) == (Outcome.ACCEPT, False, True)
        assert box.send(udp(5201, b"r" * 36, reply=True)) == (Outcome.ACCEPT, False, True)
    box.send(udp(5201, ATTACK, reply=True))  # the rule fits the reply direction too (either way round)
    assert box.sids() == [1]
    assert box.ips_counter("flows.bypassed_unmatchable") == 0


def test_a_rule_needing_a_flowbit_only_other_flows_can_set_does_not_keep_the_flow(tmp_path: Path) -> None:
    rules = ('alert tcp any any -> any 80 (msg:"login seen"; content:"LOGIN"; flowbits:set,logged_in; flowbits:noalert; sid:10;)\n'
             f'alert udp any any -> any 5201 (msg:"after login"; flowbits:isset,logged_in; content:"{ATTACK.decode()}"; sid:11;)\n')
    box = Box(tmp_path, rules)
    assert box.send(udp(5201, b"a" * 36)) == (Outcome.ACCEPT, True, True)
    assert box.ips_counter("flows.bypassed_unmatchable") == 1


def test_a_rule_needing_a_flowbit_the_flow_can_set_keeps_it_and_fires(tmp_path: Path) -> None:
    rules = ('alert udp any any -> any 5201 (msg:"login seen"; content:"LOGIN"; flowbits:set,logged_in; flowbits:noalert; sid:10;)\n'
             f'alert udp any any -> any 5201 (msg:"after login"; flowbits:isset,logged_in; content:"{ATTACK.decode()}"; sid:11;)\n')
    box = Box(tmp_path, rules)
    for data in (b"a" * 36, b"LOGIN bob", b"c" * 36, ATTACK):
        assert box.send(udp(5201, data)) == (Outcome.ACCEPT, False, True)
    assert box.sids() == [11]


def test_a_flowbit_set_by_a_rule_of_the_other_direction_counts(tmp_path: Path) -> None:
    """The setter's header fits the flow's replies only (server port as source): still settable."""
    rules = ('alert udp any 5201 -> any any (msg:"server hello"; content:"HELLO"; flowbits:set,greeted; flowbits:noalert; sid:10;)\n'
             f'alert udp any any -> any 5201 (msg:"after hello"; flowbits:isset,greeted; content:"{ATTACK.decode()}"; sid:11;)\n')
    box = Box(tmp_path, rules)
    assert box.send(udp(5201, b"a" * 36)) == (Outcome.ACCEPT, False, True)
    assert box.send(udp(5201, b"HELLO", reply=True)) == (Outcome.ACCEPT, False, True)
    box.send(udp(5201, ATTACK))
    assert box.sids() == [11]


def test_unmatchable_flows_inspect_keeps_every_flow(tmp_path: Path) -> None:
    box = Box(tmp_path, 'alert udp any any -> any 6000 (msg:"other port"; content:"x"; sid:1;)\n',
              unmatchable_flows="inspect")
    for _ in range(3):
        assert box.send(udp(5201, b"a" * 36)) == (Outcome.ACCEPT, False, True)
    assert box.ips_counter("flows.bypassed_unmatchable") == 0


def test_ping_leaves_python_only_without_an_icmp_rule(tmp_path: Path) -> None:
    echo = Ether() / IP(src=CLIENT, dst=SERVER) / ICMP(type=8, id=7, seq=1) / (b"p" * 56)
    reply = Ether() / IP(src=SERVER, dst=CLIENT) / ICMP(type=0, id=7, seq=1) / (b"p" * 56)
    box = Box(tmp_path, 'alert udp any any -> any 6000 (msg:"udp only"; content:"x"; sid:1;)\n')
    assert box.send(echo) == (Outcome.ACCEPT, True, True)
    box = Box(tmp_path, 'alert icmp any any -> any any (msg:"icmp"; itype:0; content:"secret"; sid:2;)\n')
    assert box.send(echo) == (Outcome.ACCEPT, False, True)
    assert box.send(reply) == (Outcome.ACCEPT, False, True)


def tcp_conv(box: Box, dport: int, chunks: list[tuple[bool, bytes]]) -> list[tuple[Outcome, bool, bool]]:
    c, s, out = 1000, 5000, []

    def add(from_client: bool, flags: str, data: bytes = b"") -> None:
        nonlocal c, s
        if from_client:
            pkt = Ether() / IP(src=CLIENT, dst=SERVER) / TCP(sport=40000, dport=dport, flags=flags, seq=c, ack=s if "A" in flags else 0)
            c += len(data) + (1 if "S" in flags else 0)
        else:
            pkt = Ether() / IP(src=SERVER, dst=CLIENT) / TCP(sport=dport, dport=40000, flags=flags, seq=s, ack=c)
            s += len(data) + (1 if "S" in flags else 0)
        out.append(box.send(pkt / data if data else pkt))

    add(True, "S")
    add(False, "SA")
    add(True, "A")
    for from_client, data in chunks:
        add(from_client, "PA", data)
        add(not from_client, "A")
    return out


SSH = [(False, b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n"), (True, b"SSH-2.0-OpenSSH_9.6\r\n"),
       (True, b"\x00\x00\x05\xdc" + bytes(60)), (False, b"\x00\x00\x04\x1c" + bytes(60)),
       (True, b"\x00\x00\x00\x2c" + bytes(40)), (False, b"\x00\x00\x00\x3c" + bytes(40))]


def test_a_tcp_flow_of_an_unknown_protocol_leaves_python_once_detection_gave_up(tmp_path: Path) -> None:
    box = Box(tmp_path, 'alert http any any -> any any (msg:"http"; http.uri; content:"/evil"; sid:2;)\n'
                        'alert tcp any any -> any 25 (msg:"smtp port"; content:"EVIL"; sid:3;)\n')
    got = tcp_conv(box, 22, SSH + [(True, b"\x00" * 64)] * 3)
    offloaded = [n for n, (_, offload, _) in enumerate(got) if offload]
    assert offloaded, "the SSH flow never left Python"
    # not before the app layer gave up on it: an HTTP rule could have matched until then
    assert offloaded[0] >= 3 + 2 * 3 and all(g[1] for g in got[offloaded[0]:])
    assert box.ips_counter("flows.bypassed_unmatchable") == 1


def test_a_stream_rule_that_fits_keeps_a_tcp_flow(tmp_path: Path) -> None:
    box = Box(tmp_path, 'alert tcp any any -> any 22 (msg:"ssh attack"; flow:to_server; content:"EVIL-SSH"; sid:4;)\n')
    got = tcp_conv(box, 22, SSH + [(True, b"EVIL-SSH" + bytes(20))])
    assert not any(offload for _, offload, _ in got)
    assert box.sids() == [4]


# -- the decision itself (filters/ips/reach.py), on real rules and a real flow -------------------
def reach_of(rules: str) -> Any:
    from filters.ips.netspec import Variables
    from filters.ips.reach import Reach
    from filters.ips.rule_groups import Detector
    from filters.ips.rule_parser import load_text

    loaded = load_text(rules, Variables.suricata_defaults())
    assert not loaded.errors and loaded.rules
    return Reach(Detector(loaded.rules))


def udp_flow(dport: int = 5201) -> Any:
    from filters.flow import FlowTable

    found = FlowTable().lookup(parse_ethernet(bytes(udp(dport, b"x")), 1000.0))
    assert found is not None
    return found[0]


def test_reach_a_rule_fitting_either_direction_could_match() -> None:
    flow = udp_flow()
    assert reach_of('alert udp any 5201 -> any any (content:"x"; sid:1;)').could_apply("packet", flow)  # replies
    assert not reach_of('alert udp any any -> any 5202 (content:"x"; sid:1;)').could_apply("packet", flow)
    assert not reach_of('alert tcp any any -> any 5201 (content:"x"; sid:1;)').could_apply("packet", flow)


def test_reach_flowbits_gate_a_rule_only_when_nothing_fitting_the_flow_sets_them() -> None:
    flow = udp_flow()
    checker = 'alert udp any any -> any 5201 (flowbits:isset,a&b; content:"x"; sid:1;)\n'
    # a and b are set only by rules of other flows: the checker can never match this one
    other = ('alert tcp any any -> any 80 (content:"A"; flowbits:set,a; flowbits:noalert; sid:2;)\n'
             'alert udp any any -> any 53 (content:"B"; flowbits:set,b; flowbits:noalert; sid:3;)\n')
    reach = reach_of(checker + other)
    assert not reach.could_apply("packet", flow)
    assert reach.settable(flow) == set()
    # both bits must be settable for a&b: one already set on the flow is not enough ...
    assert not reach.could_apply("packet", flow, {"a"})
    # ... both are (e.g. set under the rules before a reload)
    assert reach.could_apply("packet", flow, {"a", "b"})
    # a|b: either will do; an HTTP rule setting it counts as a setter only on a flow it fits
    any_of = reach_of('alert udp any any -> any 5201 (flowbits:isset,a|b; content:"x"; sid:1;)\n' + other)
    assert any_of.could_apply("packet", flow, {"b"}) and not any_of.could_apply("packet", flow)
    app_setter = reach_of(checker.replace("a&b", "a")
                          + 'alert http any any -> any any (http.uri; content:"/x"; flowbits:set,a; sid:4;)\n')
    assert not app_setter.could_apply("packet", flow)  # http rules are tcp: they never fit a UDP flow


def test_reach_isnotset_and_xbits_are_not_followed() -> None:
    flow = udp_flow()
    assert reach_of('alert udp any any -> any 5201 (flowbits:isnotset,a; content:"x"; sid:1;)').could_apply("packet", flow)
    assert reach_of('alert udp any any -> any 5201 (xbits:isset,a,track ip_pair; content:"x"; sid:1;)').could_apply("packet", flow)
