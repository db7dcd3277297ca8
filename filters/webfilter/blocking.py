"""How a blocked name is blocked where it shows: DNS (sinkhole answer), HTTP (block page), TLS (resets)."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationInfo, field_validator

from filters.app.dns import normalize_name
from filters.app.layer import flow_app_proto
from filters.engine import Action, EngineContext, Inject, InjectKind, Scope, Verdict
from filters.packet import PROTO_TCP, PROTO_UDP

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


class SinkholeConfig(BaseModel):
    """The section keys of an engine that answers blocked DNS queries itself (web filter, ATP)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    dns_action: Literal["sinkhole", "nxdomain"] = Field(
        "sinkhole", description="answer a blocked name with the sinkhole address (the box's own, where the block "
                                "page is served) or with NXDOMAIN")
    sinkhole_ipv4: str | None = Field(None, description="A answer for blocked names; default: the box's management "
                                                        "address (none: NXDOMAIN)")
    sinkhole_ipv6: str | None = Field(None, description="AAAA answer for blocked names; default: the box's IPv6 "
                                                        "management address")

    @field_validator("sinkhole_ipv4", "sinkhole_ipv6")
    @classmethod
    def _address(cls, value: str | None, info: ValidationInfo) -> str | None:
        version = 4 if info.field_name == "sinkhole_ipv4" else 6
        if value:
            try:
                if ipaddress.ip_address(value).version != version:
                    raise ValueError
            except ValueError:
                raise ValueError(f"expected an IPv{version} address") from None
        return value


# The box's name on block pages (any scalar; empty: the host name).
BoxName = Annotated[str, BeforeValidator(lambda v: "" if v is None else str(v))]


def parse_sinkhole(conf: SinkholeConfig, ctx: EngineContext) -> Sinkhole:
    """The sinkhole of a validated section (the box's management addresses unless the section
    names its own, NXDOMAIN when there is none)."""
    given = conf.model_fields_set
    v4 = conf.sinkhole_ipv4 if "sinkhole_ipv4" in given else ctx.management_ipv4
    v6 = conf.sinkhole_ipv6 if "sinkhole_ipv6" in given else ctx.management_ipv6
    return Sinkhole(v4 or "", v6 or "", nxdomain=conf.dns_action == "nxdomain" or not (v4 or v6))


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


def block_http(alarm: Alarm, page_html: str, *, monitor: bool = False, http2: bool = False) -> Verdict:
    """Block page to the client, reset to the server, rest of the flow dropped in the kernel.
    On HTTP/2 (``http2``) an HTTP/1 page would be a broken frame to the client: both sides are reset."""
    if http2:
        return _verdict(alarm, Action.DROP, Scope.FLOW, (Inject(InjectKind.TCP_RESET, {"sender": True, "receiver": True}),), monitor)
    return _verdict(alarm, Action.DROP, Scope.FLOW, (Inject(InjectKind.HTTP_BLOCK_PAGE, {"html": page_html}),), monitor)


def block_tls(alarm: Alarm, *, monitor: bool = False) -> Verdict:
    """Reset both sides (nothing readable can be sent into TLS), rest of the flow dropped."""
    return _verdict(alarm, Action.DROP, Scope.FLOW, (Inject(InjectKind.TCP_RESET, {"sender": True, "receiver": True}),), monitor)


def block_flow(alarm: Alarm, *, monitor: bool = False) -> Verdict:
    return _verdict(alarm, Action.DROP, Scope.FLOW, (), monitor)


# -- what the name-based engines (web filter, ATP) share about a flow ----------------------------
def client_sni(seen: dict[str, Any], hello: Any) -> str | None:
    """A client hello: noted in the engine's ``seen`` (its ``flow.engine_data`` entry); its SNI
    normalized, or None when it has none."""
    seen["client_hello"] = True
    if not hello.sni:
        return None
    seen["sni"] = True
    return normalize_name(hello.sni)


def needs_name(engine_name: str, flow: Any) -> bool:
    """Whether a name-based engine still waits for a name on ``flow``: an HTTP host not judged yet,
    a DNS message or application protocol not known yet, or a TLS SNI (or certificate)."""
    app = flow_app_proto(flow) or "unknown"
    if app in ("http", "http2"):
        return not flow.engine_data.get(engine_name, {}).get("http_judged")
    if app in ("unknown", "dns"):
        return flow.proto in (PROTO_TCP, PROTO_UDP)
    if app == "tls":
        seen = flow.engine_data.get(engine_name, {})
        return not seen.get("sni") and not flow.encrypted
    return False
