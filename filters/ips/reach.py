"""Could a loaded rule still match a flow? The header half of the IPS's per-flow bypass (``Ips.needs_more``).

A rule can only ever match the packets of a flow its header fits (protocol, addresses, ports,
direction: either way round, as both directions of the flow carry packets). Among those, a rule
that needs a flowbit set (``flowbits:isset``) can only match once some rule sets that bit on this
very flow, and a rule sets a flowbit only when it matches the flow, so its header must fit the flow
too. A rule whose every way to its flowbit goes through rules that do not fit the flow can never
match it: it does not keep the flow in Python (e.g. a ``udp`` rule checking a bit that only an
HTTP rule on port 80 sets, seen from a UDP flow on port 5201).

What is left conservative (``unknown => keep inspecting``): setters are counted whatever their own
conditions (content, app protocol, their own flowbit checks), a bit already set on the flow counts
as settable, ``isnotset`` holds any time, and ``xbits``/``flowint`` checks are not followed (xbits
are set by other flows of the same hosts, at any time). App-protocol rules are judged by the flow's
app protocol in ``Ips.needs_more``; IP-only rules by their address index (``Ips._iponly``).
"""
from __future__ import annotations

from typing import Any, Iterable

from filters.ips.packet_match import header_matches
from filters.ips.rule import FlowbitCmd, Rule
from filters.ips.rule_groups import Detector, PortClasses, RuleInfo, _distinct_headers

GROUPS = ("packet", "stream")  # the groups judged here (iponly: Ips._iponly; app: by app protocol)
MAX_ANSWERS = 4096  # (group, protocol, addresses, port classes) whose answer is kept


def fits(rule: Rule, flow: Any) -> bool:
    """Does ``rule``'s header fit a packet of ``flow`` in either direction?"""
    proto, has_ports = flow.proto, flow.proto in (6, 17)
    c, cp, s, sp = flow.client_addr, flow.client_port, flow.server_addr, flow.server_port
    return header_matches(rule, proto, c, cp, s, sp, has_ports) or header_matches(rule, proto, s, sp, c, cp, has_ports)


def needed_bits(rule: Rule) -> tuple[tuple[tuple[str, ...], bool], ...]:
    """The rule's ``flowbits:isset`` checks as (names, any_of): each must hold for it to match."""
    return tuple((op.names, op.any_of) for op in rule.flowbits if op.cmd is FlowbitCmd.ISSET)


def set_bits(rule: Rule) -> frozenset[str]:
    """Flowbits the rule sets when it matches (set or toggle)."""
    return frozenset(n for op in rule.flowbits if op.cmd in (FlowbitCmd.SET, FlowbitCmd.TOGGLE) for n in op.names)


class Reach:
    """For one Detector: which of its packet and stream rules could still match a flow."""

    def __init__(self, det: Detector) -> None:
        self.detector = det
        self.free: dict[str, list[Rule]] = {}  # per group, distinct headers of rules without isset checks
        self.gated: dict[str, list[tuple[Rule, tuple[tuple[tuple[str, ...], bool], ...]]]] = {}
        for group in GROUPS:
            infos: list[RuleInfo] = [i for i in det.groups[group].rules if i.app_proto is None]
            self.free[group] = _distinct_headers([i for i in infos if not needed_bits(i.rule)])
            self.gated[group] = [(i.rule, needed_bits(i.rule)) for i in infos if needed_bits(i.rule)]
        # every rule that sets a flowbit, app-protocol rules and IP-only rules included: per
        # distinct header, the bits its rules set together
        by_header: dict[tuple[Any, ...], tuple[Rule, set[str]]] = {}
        for i in det.infos:
            bits = set_bits(i.rule)
            if bits:
                r = i.rule
                key = (r.ip_protos, r.ip_version, r.src.text, r.sport.text, r.direction, r.dst.text, r.dport.text)
                by_header.setdefault(key, (r, set()))[1].update(bits)
        self.setters = [(r, tuple(sorted(bits))) for r, bits in by_header.values()]
        # Without flowbits on the flow (a new flow), the answer depends on the flow's header only:
        # kept by protocol, addresses and port classes (over every rule judged here), a new flow
        # of a client to a service it used before is answered by a lookup.
        self.ports = PortClasses(spec for rules in (*self.free.values(), *(
            [r for r, _ in g] for g in self.gated.values()), [r for r, _ in self.setters])
            for r in rules for spec in (r.sport, r.dport))
        self._answers: dict[tuple[Any, ...], bool] = {}

    def could_apply(self, group: str, flow: Any, flowbits: Iterable[str] | None = None) -> bool:
        """Could a rule of ``group`` still match a packet of ``flow``, whose flowbits are ``flowbits``?"""
        if flowbits:
            return self.judge(group, flow, flowbits)
        ports = self.ports
        key = (group, flow.proto, flow.client_addr, flow.server_addr, ports.of(flow.client_port), ports.of(flow.server_port))
        got = self._answers.get(key)
        if got is None:
            got = self.judge(group, flow)
            if len(self._answers) >= MAX_ANSWERS:
                del self._answers[next(iter(self._answers))]
            self._answers[key] = got
        return got

    def judge(self, group: str, flow: Any, flowbits: Iterable[str] | None = None) -> bool:
        """could_apply worked out (no cache)."""
        if any(fits(r, flow) for r in self.free[group]):
            return True
        gated = [checks for r, checks in self.gated[group] if fits(r, flow)]
        if not gated:
            return False
        settable = self.settable(flow, flowbits)
        return any(all(_holds(names, any_of, settable) for names, any_of in checks) for checks in gated)

    def settable(self, flow: Any, flowbits: Iterable[str] | None = None) -> set[str]:
        """Flowbits that are or may become set on ``flow``: set now, or set by a rule that fits it."""
        out = set(flowbits or ())
        for rule, bits in self.setters:
            if not out.issuperset(bits) and fits(rule, flow):
                out.update(bits)
        return out


def _holds(names: tuple[str, ...], any_of: bool, settable: set[str]) -> bool:
    return any(n in settable for n in names) if any_of else all(n in settable for n in names)
