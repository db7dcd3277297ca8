"""Firewall engine: zone/address/service policy with allow, deny, reject and log rules.

The same policy is compiled into the kernel ruleset by ``agent.dataplane.ruleset`` (pure L3/L4 rules are
decided there, even while the agent is down) and evaluated here on each new flow, which is what
offline (pcap) mode and anything the kernel did not decide rely on.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Iterable, Literal, Mapping

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from filters.engine import (Action, ConfigError, Decision, Engine, EngineConfig, EngineContext, Verdict,
                            validate_section)
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
            raise _err(k, ADDRESS_EXPECTED)
        if item in groups:
            nets.extend(groups[item])
            continue
        try:
            nets.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise _err(k, f"{item!r} is neither an address group nor an IP address/CIDR") from None
    return tuple(nets)


# -- the config section (pydantic): shapes here, references between its parts in _build_policy ----
ADDRESS_EXPECTED = "expected 'any', an address group name, an IP address or a CIDR"


def _address_shape(value: Any) -> Any:
    if isinstance(value, list):
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise ConfigError(ADDRESS_EXPECTED, key=f"[{i}]")
    elif value is not None and not isinstance(value, str):
        raise ConfigError(ADDRESS_EXPECTED)
    return value


def _service_shape(value: Any) -> Any:
    """A rule's service: 'any', a service name or text, or a list of them (names resolved later)."""
    for j, s in enumerate(_as_list(value)):
        if not isinstance(s, str):
            parse_service(s, f"[{j}]" if isinstance(value, list) else "")
    return value


def _service_list(value: Any) -> list[Any]:
    """A named service's entries: each a service text (one entry alone is a list of one)."""
    items = _as_list(value)
    for i, s in enumerate(items):
        parse_service(s, f"[{i}]")
    return items


def _rule_action(value: Any) -> Any:
    if value not in ACTIONS:
        raise ValueError("expected one of allow, deny, reject, log")
    return value


Addresses = Annotated[str | list[str] | None, BeforeValidator(_address_shape)]
Zone = Literal["lan", "wan", "any"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class DefaultPolicyConfig(_Section):
    lan_to_wan: Literal["allow", "deny", "reject"] = Field("allow", description="new connections started from the LAN")
    wan_to_lan: Literal["allow", "deny", "reject"] = Field("deny", description="new connections started from the internet")


class RuleConfig(_Section):
    name: Annotated[str | None, BeforeValidator(lambda v: v if v is None else str(v))] = Field(
        None, description="shown in the alarm's signature (default: rule <position>)")
    from_: Zone = Field("any", alias="from", description="the side the connection starts from: lan, wan or any")
    to: Zone = Field("any", description="the side it goes to: lan, wan or any")
    src: Addresses = Field(None, description="'any' (default), an address group, an IP address or CIDR, or a list of them")
    dst: Addresses = Field(None, description="like src, for the destination")
    service: Annotated[str | list[str], BeforeValidator(_service_shape)] = Field(
        "any", description="'any' (default), a service name from services, a service like tcp/443, udp/53-54, icmp/8, "
                           "or a list of them")
    action: Annotated[Literal["allow", "deny", "reject", "log"], BeforeValidator(_rule_action)] = Field(
        description="allow, deny (drop), reject (TCP reset / ICMP unreachable) or log (allow and raise an alarm)")


class FirewallConfig(EngineConfig):
    """``engines.firewall``: the zone/address/service policy (also compiled into the kernel ruleset)."""

    enabled: bool = Field(True, description="run the firewall")
    default: DefaultPolicyConfig | None = Field(None, description="what happens to connections no rule matches")
    address_groups: dict[str, Annotated[list[str], BeforeValidator(_as_list)]] | None = Field(
        None, description="group name -> IP addresses and CIDRs, usable in src, dst and blocklist")
    services: dict[str, Annotated[list[str], BeforeValidator(_service_list)]] | None = Field(
        None, description="service name -> services like tcp/445, udp/137-138, icmp/8, usable in rules")
    rules: list[RuleConfig] | None = Field(None, description="the rules, first match wins")
    blocklist: Addresses = Field(None, description="addresses and groups blocked in both directions (kernel ipset)")

    @model_validator(mode="after")
    def _references(self) -> "FirewallConfig":
        _build_policy(self)  # group and service names, addresses: ConfigError names the key
        return self


def _parse_groups(raw: Mapping[str, list[Any]] | None) -> dict[str, tuple[Network, ...]]:
    out: dict[str, tuple[Network, ...]] = {}
    for name, items in (raw or {}).items():
        nets = parse_addresses(items, {}, f"address_groups.{name}")
        if nets is None:
            raise _err(f"address_groups.{name}", "a group cannot be 'any'")
        out[str(name)] = nets
    return out


def _parse_services(raw: Mapping[str, list[Any]] | None) -> dict[str, tuple[ServiceEntry, ...]]:
    return {str(n): tuple(parse_service(s, f"services.{n}[{i}]") for i, s in enumerate(v)) for n, v in (raw or {}).items()}


def _parse_rule(i: int, raw: RuleConfig, groups: Mapping[str, tuple[Network, ...]],
                services: Mapping[str, tuple[ServiceEntry, ...]]) -> Rule:
    key = f"rules[{i}]"
    svc_raw = raw.service
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
        name=raw.name if raw.name is not None else f"rule {i + 1}",
        src_zone=ZONES[raw.from_],
        dst_zone=ZONES[raw.to],
        src=parse_addresses(raw.src, groups, f"{key}.src"),
        dst=parse_addresses(raw.dst, groups, f"{key}.dst"),
        services=tuple(svcs) or None,
        action=raw.action,
    )


def _build_policy(conf: FirewallConfig) -> Policy:
    default = conf.default or DefaultPolicyConfig()
    groups = _parse_groups(conf.address_groups)
    services = _parse_services(conf.services)
    rules = tuple(_parse_rule(i, r, groups, services) for i, r in enumerate(conf.rules or []))
    blocklist = parse_addresses(conf.blocklist or [], groups, "blocklist") or ()
    return Policy(rules, default.lan_to_wan, default.wan_to_lan, groups, blocklist)


def parse_policy(section: Mapping[str, Any]) -> Policy:
    """The policy of an ``engines.firewall`` section; ConfigError names the key relative to it."""
    return _build_policy(validate_section(FirewallConfig, section))


BLOCKLISTED = Rule(0, "blocklisted address", None, None, None, None, None, "deny")


def _in(addr: ipaddress.IPv4Address | ipaddress.IPv6Address, nets: tuple[Network, ...] | None) -> bool:
    return nets is None or any(addr.version == n.version and addr in n for n in nets)


class Firewall(Engine):
    Config = FirewallConfig
    name: ClassVar[str] = "firewall"

    def __init__(self) -> None:
        super().__init__()
        self.policy = Policy((), "allow", "deny", {})

    def configure(self, section: Mapping[str, Any], ctx: EngineContext = EngineContext()) -> None:
        self.policy = parse_policy(section)

    def summary(self) -> dict[str, Any]:
        return {"rules": len(self.policy.rules), "lan_to_wan": self.policy.lan_to_wan, "wan_to_lan": self.policy.wan_to_lan}

    def needs_packets(self) -> bool:
        """No: the policy is compiled into the kernel (agent/dataplane/ruleset.py: deny and reject
        with NFLOG alarms). The one thing still done here, a ``log`` rule's alarm, needs only the
        connections that rule matched, and the kernel marks those and queues them whatever the
        engines need (``MARK_LOG``)."""
        return False

    def needs_empty_acks(self) -> bool:
        return False  # it judges a connection's first packet only

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
        if flow.proto == PROTO_TCP and (getattr(flow, "midstream", False) or getattr(flow, "no_session", False)):
            # Only a new connection is matched against the policy, as stateful firewalls do. A TCP
            # flow whose first packet here had no SYN is a connection already under way (a late
            # reply or retransmission of one the flow table or conntrack forgot, or one that passed
            # the queue while it was full): its sender may well be the server, and judging it as
            # a new connection from that side would drop a LAN client's reply traffic as
            # "default deny wan_to_lan". Inline, the kernel has already dropped such packets from
            # the WAN side (agent/dataplane/ruleset.py); what comes here is counted and passed.
            self.count("flows.out_of_state")
            return None
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
