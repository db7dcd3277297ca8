"""EVE JSON records (Suricata's alarm format) built from verdicts, packets and flows."""
from __future__ import annotations

import datetime as _dt
from typing import TYPE_CHECKING, Any

from filters.engine import Action, Verdict
from filters.packet import PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, Packet, ntop

if TYPE_CHECKING:  # pragma: no cover
    from filters.flow import Flow

PROTO_NAMES = {PROTO_TCP: "TCP", PROTO_UDP: "UDP", PROTO_ICMP: "ICMP", PROTO_ICMPV6: "IPv6-ICMP"}


def timestamp(ts: float) -> str:
    """Suricata's timestamp form: 2026-11-25T19:08:56.123456+0000."""
    t = _dt.datetime.fromtimestamp(ts, _dt.timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S.%f+0000")


def proto_name(proto: int) -> str:
    return PROTO_NAMES.get(proto, str(proto))


def ip_text(addr: bytes) -> str:
    """An address as Suricata writes it in EVE: IPv4 dotted, IPv6 in full (eight groups of four
    hex digits, leading zeros kept, no ``::``), e.g. ``2001:0db8:0000:0000:0000:0000:0000:0001``."""
    if len(addr) == 16:
        return ":".join(addr[i : i + 2].hex() for i in range(0, 16, 2))
    return ntop(addr)


def base_record(event_type: str, ts: float, pkt: Packet | None, flow: "Flow | None") -> dict[str, Any]:
    rec: dict[str, Any] = {"timestamp": timestamp(ts), "event_type": event_type}
    if flow is not None:
        rec["flow_id"] = flow.flow_id
    if pkt is not None and pkt.version:
        ports = pkt.proto in (PROTO_TCP, PROTO_UDP) and pkt.has_ports
        rec["src_ip"] = ip_text(pkt.src_addr)
        if ports:
            rec["src_port"] = pkt.sport
        rec["dest_ip"] = ip_text(pkt.dst_addr)
        if ports:
            rec["dest_port"] = pkt.dport
        rec["proto"] = proto_name(pkt.proto)
        if pkt.proto in (PROTO_ICMP, PROTO_ICMPV6) and pkt.icmp_type >= 0:
            rec["icmp_type"] = pkt.icmp_type
            rec["icmp_code"] = pkt.icmp_code
        rec["in_iface"] = pkt.side.value
    elif flow is not None:
        rec.update(
            src_ip=ip_text(flow.client_addr),
            src_port=flow.client_port,
            dest_ip=ip_text(flow.server_addr),
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


def event_record(v: Verdict, ts: float, pkt: Packet | None, flow: "Flow | None") -> dict[str, Any]:
    """An informational record of type ``v.event`` (e.g. ``fileinfo``) carrying ``v.metadata``."""
    rec = base_record(v.event, ts, pkt, flow)
    for k, val in v.metadata.items():
        rec.setdefault(k, val)
    return rec


def drop_record(reason: str, ts: float, pkt: Packet | None, flow: "Flow | None", engine: str = "pipeline") -> dict[str, Any]:
    """A ``drop`` record for drops that are not a rule's (policy drops: hold overflow, malformed...)."""
    rec = base_record("drop", ts, pkt, flow)
    rec["drop"] = {"reason": reason, "engine": engine}
    return rec


def action_word(action: Action) -> str:
    return {Action.DROP: "drop", Action.REJECT: "reject"}.get(action, "alert")


def anomaly_record(event: str, ts: float, pkt: Packet | None, flow: "Flow | None" = None) -> dict[str, Any]:
    """An ``anomaly`` record, as Suricata's anomaly log writes a decoder event (``type: decode``;
    ``pcap`` for a capture-file problem, ``stream`` for a reassembly one)."""
    rec = base_record("anomaly", ts, pkt, flow)
    kind = "pcap" if event.startswith("pcap.") else "stream" if event.startswith("stream.") else "decode"
    rec["anomaly"] = {"type": kind, "event": event}
    return rec
