"""Firewall engine: zone/address/service policy with allow, deny, reject and log rules.

The same policy is compiled into the kernel ruleset by ``agent.ruleset`` (pure L3/L4 rules are
decided there, even while the agent is down) and evaluated here on each new flow, which is what
offline (pcap) mode and anything the kernel did not decide rely on.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any, ClassVar, Iterable, Mapping

from filters.engine import EngineContext, Action, ConfigError, Decision, Engine, Hook, Verdict
from filters.packet import PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, Packet, Side

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

SID_BASE = 9_000_000  # firewall rule N is signature_id SID_BASE + N; the default policy is SID_BASE
BLOCKLIST_SID = SID_BASE - 1
CATEGORY = "Firewall policy"
ACTIONS = {"allow": Action.PASS, "log": Action.ALERT, "deny": Action.DROP, "reject": Action.REJECT}
PROTOS = {"tcp": PROTO_TCP, "udp": PROTO_UDP, "icmp": PROTO_ICMP, "icmpv6": PROTO_ICMPV6, "any": 0}
ZONES = {"lan": Side.LAN, "wan": Side.WAN, "any": None}
# ICMPv6 neighbour discovery / MLD and DHCP replies must cross the bridge whatever the policy says.
NDP_TYPES = frozenset({130, 131, 132, 133, 134, 135, 136, 137, 143})
DHCP_REPLIES = ((PROTO_UDP, 67, 68), (PROTO_UDP, 547, 546))


@dataclass(frozen=True, slots=True)
class ServiceEntry:
    proto: int  # 0 = any protocol
    lo: int = 0  # port range (tcp/udp) or ICMP type (lo == hi); 0..0 with hi 65535 = any
    hi: int = 65535

    def matches(self, proto: int, port: int, icmp_type: int) -> bool:
        if self.proto and self.proto != proto:
            return False
        if proto in (PROTO_TCP, PROTO_UDP):
            return self.lo <= port <= self.hi
        if proto in (PROTO_ICMP, PROTO_ICMPV6) and self.proto:
            return self.lo <= icmp_type <= self.hi
        return True


@dataclass(frozen=True, slots=True)
class Rule:
    number: int  # 1-based position, used for the signature id
    name: str
    src_zone: Side | None
    dst_zone: Side | None
    src: tuple[Network, ...] | None  # None = any
    dst: tuple[Network, ...] | None
    services: tuple[ServiceEntry, ...] | None  # None = any
    action: str

    @property
    def sid(self) -> int:
        return SID_BASE + self.number


@dataclass(frozen=True, slots=True)
class Policy:
    rules: tuple[Rule, ...]
    lan_to_wan: str  # "allow" | "deny" | "reject"
    wan_to_lan: str
    groups: Mapping[str, tuple[Network, ...]]
    blocklist: tuple[Network, ...] = ()


def _err(key: str, problem: str) -> ConfigError:
    return ConfigError(problem, key=key)


def parse_service(text: Any, key: str) -> ServiceEntry:
    """``tcp/443``, ``tcp/8000-8080``, ``udp/53``, ``icmp``, ``icmp/8``, ``any``."""
    if not isinstance(text, str):
        raise _err(key, "expected a service like 'tcp/443', 'udp/53-54', 'icmp/8' or 'any'")
    proto_s, _, ports = text.strip().lower().partition("/")
    if proto_s not in PROTOS:
        raise _err(key, f"unknown protocol {proto_s!r} (expected tcp, udp, icmp, icmpv6 or any)")
    proto = PROTOS[proto_s]
    if not ports:
        return ServiceEntry(proto)
    if proto == 0:
        raise _err(key, "'any' takes no port")
    lo_s, _, hi_s = ports.partition("-")
    try:
        lo, hi = int(lo_s), int(hi_s or lo_s)
    except ValueError:
        raise _err(key, f"bad port or range {ports!r}") from None
    limit = 255 if proto in (PROTO_ICMP, PROTO_ICMPV6) else 65535
    if not (0 <= lo <= hi <= limit):
        raise _err(key, f"port/type range {ports!r} out of 0-{limit}")
    return ServiceEntry(proto, lo, hi)


def _as_list(v: Any) -> list[Any]:
    return v if isinstance(v, list) else [v]


def parse_addresses(value: Any, groups: Mapping[str, tuple[Network, ...]], key: str) -> tuple[Network, ...] | None:
    if value is None or value == "any":
        return None
    nets: list[Network] = []
    for i, item in enumerate(_as_list(value)):
        k = f"{key}[{i}]" if isinstance(value, list) else key
        if not isinstance(item, str):
            raise _err(k, "expected 'any', an address group name, an IP address or a CIDR")
        if item in groups:
            nets.extend(groups[item])
            continue
        try:
            nets.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise _err(k, f"{item!r} is neither an address group nor an IP address/CIDR") from None
    return tuple(nets)


def _parse_groups(raw: Any) -> dict[str, tuple[Network, ...]]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise _err("address_groups", "expected a mapping of group name to a list of CIDRs")
    out: dict[str, tuple[Network, ...]] = {}
    for name, items in raw.items():
        nets = parse_addresses(items, {}, f"address_groups.{name}")
        if nets is None:
            raise _err(f"address_groups.{name}", "a group cannot be 'any'")
        out[str(name)] = nets
    return out


def _parse_services(raw: Any) -> dict[str, tuple[ServiceEntry, ...]]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise _err("services", "expected a mapping of service name to a list like ['tcp/80', 'tcp/443']")
    return {
        str(n): tuple(parse_service(s, f"services.{n}[{i}]") for i, s in enumerate(_as_list(v))) for n, v in raw.items()
    }


def _parse_rule(i: int, raw: Any, groups: Mapping[str, tuple[Network, ...]], services: Mapping[str, tuple[ServiceEntry, ...]]) -> Rule:
    key = f"rules[{i}]"
    if not isinstance(raw, dict):
        raise _err(key, "expected a mapping with name, from, to, src, dst, service and action")
    unknown = set(raw) - {"name", "from", "to", "src", "dst", "service", "action"}
    if unknown:
        raise _err(f"{key}.{sorted(unknown)[0]}", "unknown key")
    action = raw.get("action")
    if action not in ACTIONS:
        raise _err(f"{key}.action", "expected one of allow, deny, reject, log")
    zones = []
    for z in ("from", "to"):
        val = raw.get(z, "any")
        if val not in ZONES:
            raise _err(f"{key}.{z}", "expected lan, wan or any")
        zones.append(ZONES[val])
    svc_raw = raw.get("service", "any")
    svcs: list[ServiceEntry] = []
    for j, s in enumerate(_as_list(svc_raw)):
        if s == "any":
            svcs = []
            break
        if isinstance(s, str) and s in services:
            svcs.extend(services[s])
        else:
            svcs.append(parse_service(s, f"{key}.service" + (f"[{j}]" if isinstance(svc_raw, list) else "")))
    return Rule(
        number=i + 1,
        name=str(raw.get("name", f"rule {i + 1}")),
        src_zone=zones[0],
        dst_zone=zones[1],
        src=parse_addresses(raw.get("src"), groups, f"{key}.src"),
        dst=parse_addresses(raw.get("dst"), groups, f"{key}.dst"),
        services=tuple(svcs) or None,
        action=action,
    )


def parse_policy(section: Mapping[str, Any]) -> Policy:
    unknown = set(section) - {"enabled", "default", "address_groups", "services", "rules", "blocklist"}
    if unknown:
        raise _err(sorted(unknown)[0], "unknown key")
    default = section.get("default") or {}
    if not isinstance(default, dict):
        raise _err("default", "expected a mapping with lan_to_wan and wan_to_lan")
    for k in default:
        if k not in ("lan_to_wan", "wan_to_lan"):
            raise _err(f"default.{k}", "unknown key (expected lan_to_wan or wan_to_lan)")
    l2w, w2l = default.get("lan_to_wan", "allow"), default.get("wan_to_lan", "deny")
    for k, v in (("lan_to_wan", l2w), ("wan_to_lan", w2l)):
        if v not in ("allow", "deny", "reject"):
            raise _err(f"default.{k}", "expected allow, deny or reject")
    groups = _parse_groups(section.get("address_groups"))
    services = _parse_services(section.get("services"))
    rules_raw = section.get("rules") or []
    if not isinstance(rules_raw, list):
        raise _err("rules", "expected a list of rules")
    rules = tuple(_parse_rule(i, r, groups, services) for i, r in enumerate(rules_raw))
    blocklist = parse_addresses(section.get("blocklist") or [], groups, "blocklist") or ()
    return Policy(rules, l2w, w2l, groups, blocklist)


BLOCKLISTED = Rule(0, "blocklisted address", None, None, None, None, None, "deny")


def _in(addr: ipaddress.IPv4Address | ipaddress.IPv6Address, nets: tuple[Network, ...] | None) -> bool:
    return nets is None or any(addr.version == n.version and addr in n for n in nets)


class Firewall(Engine):
    name: ClassVar[str] = "firewall"
    hooks: ClassVar[frozenset[Hook]] = frozenset({Hook.FLOW_START})

    def __init__(self) -> None:
        super().__init__()
        self.policy = Policy((), "allow", "deny", {})

    def configure(self, section: Mapping[str, Any], ctx: EngineContext = EngineContext()) -> None:
        self.policy = parse_policy(section)

    def summary(self) -> dict[str, Any]:
        return {"rules": len(self.policy.rules), "lan_to_wan": self.policy.lan_to_wan, "wan_to_lan": self.policy.wan_to_lan}

    def decide(self, client_side: Side, client: bytes, server: bytes, proto: int, dport: int, icmp_type: int) -> tuple[str, Rule | None]:
        """The action and the rule (None: default policy) for a new connection."""
        if proto == PROTO_ICMPV6 and icmp_type in NDP_TYPES:
            return "allow", None
        if any(proto == p and dport == d for p, _, d in DHCP_REPLIES):
            return "allow", None
        src = ipaddress.ip_address(client)
        dst = ipaddress.ip_address(server)
        if self.policy.blocklist and (_in(src, self.policy.blocklist) or _in(dst, self.policy.blocklist)):
            return "deny", BLOCKLISTED
        server_side = {Side.LAN: Side.WAN, Side.WAN: Side.LAN}.get(client_side)
        for r in self.policy.rules:
            if r.src_zone is not None and r.src_zone is not client_side:
                continue
            if r.dst_zone is not None and r.dst_zone is not server_side:
                continue
            if not (_in(src, r.src) and _in(dst, r.dst)):
                continue
            if r.services is not None and not any(s.matches(proto, dport, icmp_type) for s in r.services):
                continue
            return r.action, r
        if client_side is Side.WAN:
            return self.policy.wan_to_lan, None
        return self.policy.lan_to_wan, None

    def on_flow_start(self, flow: Any, pkt: Packet) -> Iterable[Decision] | None:
        action, rule = self.decide(flow.client_side, flow.client_addr, flow.server_addr, flow.proto, flow.server_port, pkt.icmp_type)
        self.count(f"flows.{action}")
        if action == "allow":
            return None
        if rule is None:
            direction = "wan_to_lan" if flow.client_side is Side.WAN else "lan_to_wan"
            sig = f"VCR firewall: default {action} {direction}"
            sid = SID_BASE
        elif rule is BLOCKLISTED:
            sig, sid = "VCR firewall: blocklisted address", BLOCKLIST_SID
        else:
            sig = f"VCR firewall: {rule.name}"
            sid = rule.sid
        return [Verdict(ACTIONS[action], self.name, rule_id=sid, signature=sig, category=CATEGORY, severity=3 if action == "log" else 2)]
