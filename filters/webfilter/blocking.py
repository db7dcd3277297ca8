"""How a blocked name is blocked where it shows: DNS (sinkhole answer), HTTP (block page), TLS (resets)."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any, Mapping

from filters.engine import Action, ConfigError, EngineContext, Inject, InjectKind, Scope, Verdict

RR_A, RR_AAAA = 1, 28
RCODE_NXDOMAIN = 3


@dataclass(frozen=True, slots=True)
class Sinkhole:
    """Where blocked names resolve to (the box's own address serves the block page), or NXDOMAIN."""

    ipv4: str = ""
    ipv6: str = ""
    nxdomain: bool = False
    ttl: int = 60

    def answer(self, rrtype: int) -> Inject:
        if self.nxdomain:
            return Inject(InjectKind.DNS_ANSWER, {"rcode": RCODE_NXDOMAIN})
        answers: list[tuple[int, bytes]] = []
        if rrtype == RR_A and self.ipv4:
            answers = [(RR_A, ipaddress.IPv4Address(self.ipv4).packed)]
        elif rrtype == RR_AAAA and self.ipv6:
            answers = [(RR_AAAA, ipaddress.IPv6Address(self.ipv6).packed)]
        elif rrtype not in (RR_A, RR_AAAA):
            return Inject(InjectKind.DNS_ANSWER, {"rcode": RCODE_NXDOMAIN})
        return Inject(InjectKind.DNS_ANSWER, {"rcode": 0, "answers": answers, "ttl": self.ttl})


def config_bool(section: Mapping[str, Any], key: str, default: bool) -> bool:
    value = section.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError("expected true or false", key=key)
    return value


def parse_sinkhole(section: Mapping[str, Any], ctx: EngineContext) -> Sinkhole:
    """``dns_action``, ``sinkhole_ipv4`` and ``sinkhole_ipv6`` of an engine section (the box's
    management addresses by default; NXDOMAIN when there is none)."""
    action = section.get("dns_action", "sinkhole")
    if action not in ("sinkhole", "nxdomain"):
        raise ConfigError("expected sinkhole or nxdomain", key="dns_action")
    v4 = section.get("sinkhole_ipv4", ctx.management_ipv4)
    v6 = section.get("sinkhole_ipv6", ctx.management_ipv6)
    for key, value, version in (("sinkhole_ipv4", v4, 4), ("sinkhole_ipv6", v6, 6)):
        if value:
            try:
                if not isinstance(value, str) or ipaddress.ip_address(value).version != version:
                    raise ValueError
            except ValueError:
                raise ConfigError(f"expected an IPv{version} address", key=key) from None
    return Sinkhole(v4 or "", v6 or "", nxdomain=action == "nxdomain" or not (v4 or v6))


@dataclass(frozen=True, slots=True)
class Alarm:
    """What an engine reports when it blocks (becomes the EVE alert)."""

    engine: str
    sid: int
    signature: str
    category: str
    severity: int
    details: dict[str, Any]


def _verdict(alarm: Alarm, action: Action, scope: Scope, inject: tuple[Inject, ...], monitor: bool) -> Verdict:
    if monitor:
        action, inject = Action.ALERT, ()
    return Verdict(action, alarm.engine, rule_id=alarm.sid, signature=alarm.signature, category=alarm.category,
                   severity=alarm.severity, scope=scope, metadata={alarm.engine: alarm.details}, inject=inject)


def block_dns_query(alarm: Alarm, sinkhole: Sinkhole, rrtype: int, *, monitor: bool = False) -> Verdict:
    """Answer the query ourselves and drop the real one (the flow itself goes on)."""
    return _verdict(alarm, Action.DROP, Scope.PACKET, (sinkhole.answer(rrtype),), monitor)


def block_dns_response(alarm: Alarm, *, monitor: bool = False) -> Verdict:
    """A response leading to a blocked name (a CNAME chain): drop it."""
    return _verdict(alarm, Action.DROP, Scope.PACKET, (), monitor)


def block_http(alarm: Alarm, page_html: str, *, monitor: bool = False) -> Verdict:
    """Block page to the client, reset to the server, rest of the flow dropped in the kernel."""
    return _verdict(alarm, Action.DROP, Scope.FLOW, (Inject(InjectKind.HTTP_BLOCK_PAGE, {"html": page_html}),), monitor)


def block_tls(alarm: Alarm, *, monitor: bool = False) -> Verdict:
    """Reset both sides (nothing readable can be sent into TLS), rest of the flow dropped."""
    return _verdict(alarm, Action.DROP, Scope.FLOW, (Inject(InjectKind.TCP_RESET, {"sender": True, "receiver": True}),), monitor)


def block_flow(alarm: Alarm, *, monitor: bool = False) -> Verdict:
    return _verdict(alarm, Action.DROP, Scope.FLOW, (), monitor)
