"""The agent's kernel ruleset: iptables/ip6tables chains, connmark fast path and NFQUEUE, as restore text.

Layout (filter table, both families), entered from FORWARD for bridged packets only::

    VCR-FWD     connmark fast path, save a verdict mark from the queue, blocklists,
                firewall policy on NEW connections, stream-depth cap, then NFQUEUE
    VCR-BLOCK   ipset blocklists (logged via NFLOG, dropped)
    VCR-POLICY  the compiled firewall rules and default policy (deny/reject logged via NFLOG)
    VCR-REJECT  TCP reset / ICMP unreachable

Every chain the agent owns starts with ``VCR-``; nothing else is touched.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from filters.firewall import DHCP_REPLIES, NDP_TYPES, Policy, Rule, ServiceEntry
from filters.packet import PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP

CHAINS = ("VCR-FWD", "VCR-BLOCK", "VCR-POLICY", "VCR-REJECT")
MARK_MASK = 0x70000000
MARK_ACCEPT = 0x10000000
MARK_DROP = 0x20000000
MARK_REJECT = 0x30000000
BLOCK_SETS = {4: "vcr-block4", 6: "vcr-block6"}
# Threat protection (C&C): listed IPs/CIDRs (hash:net) and ip:port channels (hash:ip,port), filled
# from the threat-intel feeds by the daemon, with per-entry counters.
TI_NET_SETS = {4: "vcr-ti4", 6: "vcr-ti6"}
TI_PORT_SETS = {4: "vcr-tip4", 6: "vcr-tip6"}
TI_MAXELEM = 2_000_000
NFLOG_RATE = ("-m", "limit", "--limit", "50/sec", "--limit-burst", "200")
MAX_LINES_PER_RULE = 512
FLOW_HASH_BASE = 0x100  # HMARK values (one per worker) pick the queue; below MARK_MASK
FLOW_HASH_SEED = 0x5643522D  # fixed: a flow keeps its worker across ruleset reloads


@dataclass(frozen=True, slots=True)
class DataplaneSpec:
    bridge: str
    lan_port: str
    wan_port: str
    queue_base: int
    workers: int
    fail_open: bool
    nflog_group: int
    stream_depth: int


def jump_rule(spec: DataplaneSpec) -> list[str]:
    """The one rule the agent adds to the built-in FORWARD chain.

    With br_netfilter, a bridged packet enters FORWARD with the bridge as both its in and out
    device, so ``-i br0 -o br0`` selects bridged traffic. These two are native nft expressions;
    ``-m physdev --physdev-is-bridged`` would add an xt compat match that every forwarded packet,
    offloaded ones included, pays for (about 0.7% of the CPU in a bulk-transfer profile). Routed
    traffic would need the box to route br0 back out of br0, which it does not do."""
    return ["-i", spec.bridge, "-o", spec.bridge, "-j", "VCR-FWD"]


def _queue_lines(spec: DataplaneSpec) -> list[str]:
    """The NFQUEUE rules: one queue per worker, every packet of a flow (both directions) to the same one.

    ``--queue-balance`` hashes the address pair only, so all flows between one office PC and one
    server would land on one worker. HMARK hashes the 5-tuple symmetrically (addresses and ports
    are ordered before hashing), so those flows spread over the workers too. Its mark sits below
    the verdict bits and is replaced by the worker's verdict mark."""
    bypass = " --queue-bypass" if spec.fail_open else ""
    if spec.workers <= 1:
        return [f"-A VCR-FWD -j NFQUEUE --queue-num {spec.queue_base}{bypass}"]
    lines = [f"-A VCR-FWD -j HMARK --hmark-tuple src,dst,sport,dport,proto --hmark-mod {spec.workers}"
             f" --hmark-offset 0x{FLOW_HASH_BASE:x} --hmark-rnd 0x{FLOW_HASH_SEED:x}"]
    for i in range(spec.workers):
        lines.append(f"-A VCR-FWD -m mark --mark 0x{FLOW_HASH_BASE + i:x} -j NFQUEUE --queue-num {spec.queue_base + i}{bypass}")
    # A mark outside the range cannot happen; should it, the balance target still queues the packet.
    lines.append(f"-A VCR-FWD -j NFQUEUE --queue-balance {spec.queue_base}:{spec.queue_base + spec.workers - 1}{bypass}")
    return lines


def _nflog(spec: DataplaneSpec, prefix: str) -> str:
    return " ".join(NFLOG_RATE) + f' -j NFLOG --nflog-group {spec.nflog_group} --nflog-prefix "{prefix}"'


def _fwd_lines(spec: DataplaneSpec, family: int) -> list[str]:
    m = f"0x{MARK_MASK:x}"
    lines = [
        # The fast path first: a decided connection costs one conntrack-mark compare per packet.
        # Its packets skip the blocklists; a list update cuts the connections it now lists
        # (agent.bridge.cut_listed_connections), so a newly listed C&C still loses them.
        f"-A VCR-FWD -m connmark --mark 0x{MARK_ACCEPT:x}/{m} -j ACCEPT",
        f"-A VCR-FWD -m connmark --mark 0x{MARK_DROP:x}/{m} -j DROP",
        f"-A VCR-FWD -m connmark --mark 0x{MARK_REJECT:x}/{m} -j VCR-REJECT",
        # A packet coming back from the queue with a verdict mark (NF_REPEAT): remember the verdict
        # for the connection and act on the packet's own mark (untracked packets have no connmark).
        f"-A VCR-FWD -m mark ! --mark 0x0/{m} -j CONNMARK --save-mark --nfmask {m} --ctmask {m}",
        "-A VCR-FWD -j VCR-BLOCK",
        f"-A VCR-FWD -m mark --mark 0x{MARK_ACCEPT:x}/{m} -j ACCEPT",
        f"-A VCR-FWD -m mark --mark 0x{MARK_DROP:x}/{m} -j DROP",
        f"-A VCR-FWD -m mark --mark 0x{MARK_REJECT:x}/{m} -j VCR-REJECT",
        "-A VCR-FWD -m conntrack --ctstate NEW -j VCR-POLICY",
        # ICMP errors about a connection share its conntrack entry: decide them in the kernel,
        # so a verdict on one can never land on the connection itself.
        f"-A VCR-FWD -p {'icmp' if family == 4 else 'ipv6-icmp'} -m conntrack --ctstate RELATED -j ACCEPT",
    ]
    if spec.stream_depth:
        # Kernel-side stream depth: a flow past the inspection depth in both directions together
        # (plus headers) is offloaded even if user space never decided it.
        cap = 2 * spec.stream_depth + 65536
        lines += [
            f"-A VCR-FWD -m connbytes --connbytes {cap}: --connbytes-dir both --connbytes-mode bytes"
            f" -j CONNMARK --set-xmark 0x{MARK_ACCEPT:x}/{m}",
            f"-A VCR-FWD -m connmark --mark 0x{MARK_ACCEPT:x}/{m} -j ACCEPT",
        ]
        # One direction past the depth (its payload plus up to a quarter for headers): its packets
        # stay in the kernel while the other direction is still inspected (an upload's data goes
        # no further than the depth; its ACKs and the replies still reach the engines).
        one = spec.stream_depth + spec.stream_depth // 4 + 65536
        lines += [
            f"-A VCR-FWD -m conntrack --ctdir {ctdir} -m connbytes --connbytes {one}: --connbytes-dir {cdir}"
            " --connbytes-mode bytes -j ACCEPT"
            for ctdir, cdir in (("ORIGINAL", "original"), ("REPLY", "reply"))
        ]
    return lines + _queue_lines(spec)


def _block_lines(spec: DataplaneSpec, family: int) -> list[str]:
    lines = []
    for s, kind, dst, src in ((BLOCK_SETS[family], "bl", "dst", "src"),
                              (TI_NET_SETS[family], "ti", "dst", "src"),
                              (TI_PORT_SETS[family], "ti", "dst,dst", "src,src")):
        for match in (dst, src):
            lines.append(f"-A VCR-BLOCK -m set --match-set {s} {match} {_nflog(spec, f'vcr:{kind}:0:drop')}")
            lines.append(f"-A VCR-BLOCK -m set --match-set {s} {match} -j DROP")
    return lines


def _reject_lines(family: int) -> list[str]:
    unreach = "icmp-port-unreachable" if family == 4 else "icmp6-port-unreachable"
    return [
        "-A VCR-REJECT -p tcp -j REJECT --reject-with tcp-reset",
        f"-A VCR-REJECT -p udp -j REJECT --reject-with {unreach}",
        "-A VCR-REJECT -j DROP",
    ]


def _svc_matches(svc: ServiceEntry, family: int) -> list[str] | None:
    """iptables match text for one service entry, or None if it cannot apply to this family."""
    if svc.proto == 0:
        return [""]
    if svc.proto == PROTO_ICMP and family == 6 or svc.proto == PROTO_ICMPV6 and family == 4:
        return None
    if svc.proto in (PROTO_TCP, PROTO_UDP):
        p = "tcp" if svc.proto == PROTO_TCP else "udp"
        if (svc.lo, svc.hi) == (0, 65535):
            return [f"-p {p}"]
        ports = str(svc.lo) if svc.lo == svc.hi else f"{svc.lo}:{svc.hi}"
        return [f"-p {p} --dport {ports}"]
    if svc.proto == PROTO_ICMP:
        if (svc.lo, svc.hi) == (0, 65535):
            return ["-p icmp"]
        return [f"-p icmp --icmp-type {t}" for t in range(svc.lo, svc.hi + 1)]
    if (svc.lo, svc.hi) == (0, 65535):
        return ["-p ipv6-icmp"]
    return [f"-p ipv6-icmp --icmpv6-type {t}" for t in range(svc.lo, svc.hi + 1)]


def _addr_matches(nets: tuple | None, flag: str, family: int) -> list[str] | None:
    if nets is None:
        return [""]
    mine = [n for n in nets if n.version == family]
    return [f"{flag} {n}" for n in mine] or None


def _zone(spec: DataplaneSpec, rule: Rule) -> str:
    parts = []
    ports = {"lan": spec.lan_port, "wan": spec.wan_port}
    if rule.src_zone is not None:
        parts.append(f"--physdev-in {ports[rule.src_zone.value]}")
    if rule.dst_zone is not None:
        parts.append(f"--physdev-out {ports[rule.dst_zone.value]}")
    return ("-m physdev " + " ".join(parts)) if parts else ""


def rule_lines(spec: DataplaneSpec, rule: Rule, family: int) -> list[str]:
    """The VCR-POLICY lines for one firewall rule in one family ([] if it cannot match there)."""
    srcs = _addr_matches(rule.src, "-s", family)
    dsts = _addr_matches(rule.dst, "-d", family)
    svcs: list[str] | None = [""]
    if rule.services is not None:
        svcs = [m for s in rule.services for m in (_svc_matches(s, family) or [])] or None
    if srcs is None or dsts is None or svcs is None:
        return []
    zone = _zone(spec, rule)
    matches = [" ".join(x for x in (zone, s, d, v) if x) for s in srcs for d in dsts for v in svcs]
    if len(matches) * 2 > MAX_LINES_PER_RULE:
        raise ValueError(f"firewall rule {rule.number} ({rule.name}) expands to {len(matches)} kernel rules")
    prefix = f"vcr:fw:{rule.number}:{rule.action}"
    out = []
    for m in matches:
        head = f"-A VCR-POLICY {m}".rstrip()
        if rule.action in ("allow", "log"):
            out.append(f"{head} -j RETURN")  # logged (if at all) by the Python firewall
        else:
            out.append(f"{head} {_nflog(spec, prefix)}")
            out.append(f"{head} -j {'DROP' if rule.action == 'deny' else 'VCR-REJECT'}")
    return out


def _policy_lines(spec: DataplaneSpec, policy: Policy, family: int) -> list[str]:
    lines: list[str] = []
    if family == 6:
        lines += [f"-A VCR-POLICY -p ipv6-icmp --icmpv6-type {t} -j RETURN" for t in sorted(NDP_TYPES)]
    for proto, sport, dport in DHCP_REPLIES:
        if (family == 4) == (sport == 67):
            lines.append(f"-A VCR-POLICY -p udp --sport {sport} --dport {dport} -j RETURN")
    for rule in policy.rules:
        lines += rule_lines(spec, rule, family)
    for side, action in (("wan", policy.wan_to_lan), ("lan", policy.lan_to_wan)):
        if action == "allow":
            continue
        port = spec.wan_port if side == "wan" else spec.lan_port
        direction = "wan_to_lan" if side == "wan" else "lan_to_wan"
        head = f"-A VCR-POLICY -m physdev --physdev-in {port}"
        lines.append(f"{head} {_nflog(spec, f'vcr:fw:0:{action}:{direction}')}")
        lines.append(f"{head} -j {'DROP' if action == 'deny' else 'VCR-REJECT'}")
    return lines


def render(spec: DataplaneSpec, policy: Policy, family: int) -> str:
    """iptables-restore (family 4) or ip6tables-restore (6) input for ``--noflush``."""
    lines = ["*filter"] + [f":{c} - [0:0]" for c in CHAINS]
    lines += _fwd_lines(spec, family) + _block_lines(spec, family) + _policy_lines(spec, policy, family) + _reject_lines(family)
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def parse_nflog_prefix(prefix: str) -> tuple[str, int, str, str] | None:
    """``vcr:fw:3:deny`` -> ("fw", 3, "deny", ""); ``vcr:fw:0:deny:wan_to_lan`` -> (..., "wan_to_lan")."""
    parts = prefix.strip().split(":")
    if len(parts) < 4 or parts[0] != "vcr":
        return None
    try:
        number = int(parts[2])
    except ValueError:
        return None
    return parts[1], number, parts[3], parts[4] if len(parts) > 4 else ""


def family_of(cidr: str) -> int:
    return ipaddress.ip_network(cidr, strict=False).version
