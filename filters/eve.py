"""EVE JSON records (Suricata's alarm format) built from verdicts, packets and flows."""
from __future__ import annotations

import datetime as _dt
from typing import TYPE_CHECKING, Any

from filters.engine import Action, Verdict
from filters.packet import PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, Packet

if TYPE_CHECKING:  # pragma: no cover
    from filters.flow import Flow

PROTO_NAMES = {PROTO_TCP: "TCP", PROTO_UDP: "UDP", PROTO_ICMP: "ICMP", PROTO_ICMPV6: "IPv6-ICMP"}


def timestamp(ts: float) -> str:
    """Suricata's timestamp form: 2026-11-25T19:08:56.123456+0000."""
    t = _dt.datetime.fromtimestamp(ts, _dt.timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S.%f+0000")


def proto_name(proto: int) -> str:
    return PROTO_NAMES.get(proto, str(proto))


def base_record(event_type: str, ts: float, pkt: Packet | None, flow: "Flow | None") -> dict[str, Any]:
    rec: dict[str, Any] = {"timestamp": timestamp(ts), "event_type": event_type}
    if flow is not None:
        rec["flow_id"] = flow.flow_id
    if pkt is not None and pkt.version:
        rec["src_ip"] = pkt.src_ip
        if pkt.proto in (PROTO_TCP, PROTO_UDP):
            rec["src_port"] = pkt.sport
        rec["dest_ip"] = pkt.dst_ip
        if pkt.proto in (PROTO_TCP, PROTO_UDP):
            rec["dest_port"] = pkt.dport
        rec["proto"] = proto_name(pkt.proto)
        if pkt.proto in (PROTO_ICMP, PROTO_ICMPV6) and pkt.icmp_type >= 0:
            rec["icmp_type"] = pkt.icmp_type
            rec["icmp_code"] = pkt.icmp_code
        rec["in_iface"] = pkt.side.value
    elif flow is not None:
        rec.update(
            src_ip=flow.client_ip,
            src_port=flow.client_port,
            dest_ip=flow.server_ip,
            dest_port=flow.server_port,
            proto=proto_name(flow.proto),
        )
    return rec


def alert_record(v: Verdict, ts: float, pkt: Packet | None, flow: "Flow | None", *, blocked: bool) -> dict[str, Any]:
    """An ``alert`` record; ``blocked`` says whether the agent really blocked (IPS) or only saw (IDS)."""
    rec = base_record("alert", ts, pkt, flow)
    if flow is not None and pkt is not None and pkt.version:
        to_server = flow.to_server(pkt)
        rec["direction"] = "to_server" if to_server else "to_client"
    rec["alert"] = {
        "action": "blocked" if blocked else "allowed",
        "gid": v.gid,
        "signature_id": v.rule_id,
        "rev": v.rev,
        "signature": v.signature,
        "category": v.category,
        "severity": v.severity,
        "engine": v.engine,
    }
    if v.reason:
        rec["alert"]["reason"] = v.reason
    for k, val in v.metadata.items():
        if k == "rule_metadata":
            rec["alert"]["metadata"] = val
        else:
            rec.setdefault(k, val)
    return rec


def drop_record(reason: str, ts: float, pkt: Packet | None, flow: "Flow | None", engine: str = "pipeline") -> dict[str, Any]:
    """A ``drop`` record for drops that are not a rule's (policy drops: hold overflow, malformed...)."""
    rec = base_record("drop", ts, pkt, flow)
    rec["drop"] = {"reason": reason, "engine": engine}
    return rec


def action_word(action: Action) -> str:
    return {Action.DROP: "drop", Action.REJECT: "reject"}.get(action, "alert")
