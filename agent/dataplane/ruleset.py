"""The agent's kernel ruleset: iptables/ip6tables chains, connmark fast path and NFQUEUE, as restore text.

Layout (filter table, both families), entered from FORWARD for bridged packets::

    VCR-FWD     connmark fast path, save a verdict mark from the queue, blocklists,
                out-of-state TCP from the WAN dropped, firewall policy on new connections only
                (NEW and, for TCP, a SYN), stream-depth cap, then NFQUEUE
    VCR-BLOCK   ipset blocklists and the engines' kernel sets (logged via NFLOG, dropped)
    VCR-POLICY  the compiled firewall rules and default policy (deny/reject logged via NFLOG)
    VCR-REJECT  TCP reset / ICMP unreachable
    VCR-PF      the kernel prefilter of UDP/ICMP connections: on to the chain of the worker that
                gave the connection's prefilter id (VCR-PF-W<i>, then VCR-PF-<id>: filled by the
                workers at run time, agent/dataplane/prefilter.py)

and from INPUT for what reaches the box itself through the bridge (its management address)::

    VCR-IN      the box's own input policy: replies of its own connections (center link, updates,
                port check, NTP, DNS), IPv6 neighbour discovery and MLD, then from the LAN port only:
                ping and the block page (TCP 80); anything else from the LAN is refused (reset /
                unreachable, so a browser sent to the sinkhole over HTTPS gives up at once), and
                anything else from the WAN port is dropped. Loopback never enters it.

Every chain the agent owns starts with ``VCR-``; nothing else is touched.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from filters.firewall import DHCP_REPLIES, NDP_TYPES, Policy, Rule, ServiceEntry
from filters.packet import ACK, FIN, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, RST, SYN
from filters.registry import kernel_sets

CHAINS = ("VCR-FWD", "VCR-BLOCK", "VCR-POLICY", "VCR-REJECT", "VCR-IN", "VCR-PF")
BLOCKPAGE_PORT = 80  # agent/dataplane/blockpage.py, on the management address
ND_TYPES = (135, 136)  # neighbour solicitation and advertisement
RA_TYPE = 134  # router advertisement: from the router's side only (a LAN PC must not become the box's router)
MLD_TYPES = (130, 131, 132, 143)  # multicast listener query/report/done, MLDv2 report
MARK_MASK = 0x70000000
MARK_ACCEPT = 0x10000000
MARK_DROP = 0x20000000
MARK_REJECT = 0x30000000
# Set on a queued packet that conntrack has in its connection's reply direction: the worker's flow
# table takes the connection's direction from it when it did not see the connection start.
MARK_CT_REPLY = 0x08000000
# Connection mark bits of the empty-ACK skip (_skip_lines): where a connection is in its handshake
# as the kernel saw it pass to the queue. 1: its SYN went to a worker; 2: so did its first empty
# ACK (the handshake's third packet): later ones stay in the kernel; 3: a FIN passed: all go again.
SKIP_MASK = 0x06000000
SKIP_SYN = 0x02000000
SKIP_ON = 0x04000000
SKIP_OFF = 0x06000000
# An empty ACK: ACK without SYN, FIN and RST, and no payload (the payload test holds for any TCP
# packet: the SYN+ACK of the handshake skip too). The IP headers and TCP data offset
# are multiples of 4 bytes, so the payload length is the IP length mod 4 (0 when empty), and a
# payload of 4 bytes or more leaves 4 bytes to read after the TCP header (u32 fails past the end).
# IPv6 only without extension headers (next header TCP); anything else goes to the queue.
EMPTY_ACK_U32 = {
    4: '-m u32 --u32 "0&0x3=0" -m u32 ! --u32 "0>>22&0x3C@12>>26&0x3C@0=0:0xFFFFFFFF"',
    6: '-m u32 --u32 "4>>16&0x3=0&&4>>8&0xFF=6" -m u32 ! --u32 "52>>26&0x3C@40=0:0xFFFFFFFF"',
}
# Connection mark bit of a connection whose first matching firewall rule is a ``log`` rule (allow
# and alarm): its alarm is raised by the Python firewall, so it goes to the queue even when no
# engine needs packets (_skip_lines).
MARK_LOG = 0x01000000
# The kernel prefilter (agent/dataplane/prefilter.py): a UDP/ICMP connection's prefilter id in
# these connection mark bits (and, on its way back from the queue, in the packet mark's): its
# packets holding none of the id's patterns are accepted here (VCR-PF), the others are queued.
PF_MASK = 0x00FF0000
PF_SHIFT = 16
PF_NONE = 0xFF  # an id no worker gives: the connection's bits are cleared, every packet is queued
# Set on a queued packet of a prefiltered connection that conntrack calls established: the worker
# that forgot its flow picks it up as established (both ways seen: Packet.ct_established).
MARK_CT_EST = 0x80000000
QUEUE_MARK_MASK = 0x7FFF  # the HMARK values (FLOW_HASH_BASE + worker) sit in these bits
# The handshake skip: set by the worker on a connection's SYN (in the packet mark, saved to the
# connection mark) when no engine needs the server's SYN+ACK (Engine.needs_handshake), which
# then stays in the kernel (_fwd_lines): one trip through a worker less on every connection's
# first round trip. The client's ACK that completes the handshake still goes to the worker (it
# tells the server's sequence numbers: filters/stream.py).
MARK_HS = 0x8000
BLOCK_SETS = {4: "vcr-block4", 6: "vcr-block6"}
# Besides the blocklist, VCR-BLOCK matches the kernel sets the engines declare (filters/registry.py
# ``kernel_sets``: ATP's C&C addresses and ip:port channels), filled by the daemon.
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
    mail_port: int = 0  # the mail proxy's port (engines.mail.listen_port) when it runs: REDIRECTed mail reaches it
    # What the enabled engines need from the kernel (filters.registry.dataplane_needs); unknown: all.
    inspect: bool = True  # some engine needs packets; False: allowed connections pass in the kernel
    empty_acks: bool = True  # some engine needs empty ACKs; False: the kernel keeps them (_skip_lines)
    bulk_after: int = 0  # bytes (both ways, headers included) past which a connection uses the bulk queue; 0: never


def bulk_queue_num(queue_base: int, workers: int, index: int) -> int:
    """Worker ``index``'s second queue (``_queue_lines``): after every worker's first queue."""
    return queue_base + workers + index


def jump_rule(spec: DataplaneSpec) -> list[str]:
    """The one rule the agent adds to the built-in FORWARD chain.

    With br_netfilter, a bridged packet enters FORWARD with the bridge as both its in and out
    device, so ``-i br0 -o br0`` selects bridged traffic. These two are native nft expressions;
    ``-m physdev --physdev-is-bridged`` would add an xt compat match that every forwarded packet,
    offloaded ones included, pays for (about 0.7% of the CPU in a bulk-transfer profile). Routed
    traffic would need the box to route br0 back out of br0, which it does not do."""
    return ["-i", spec.bridge, "-o", spec.bridge, "-j", "VCR-FWD"]


def input_jump_rule(spec: DataplaneSpec) -> list[str]:
    """The one rule the agent adds to the built-in INPUT chain: what reaches the box through the
    bridge (the management address lives on it) goes through VCR-IN. Loopback and any other
    interface of the box are not the agent's business."""
    return ["-i", spec.bridge, "-j", "VCR-IN"]


def _input_lines(spec: DataplaneSpec, family: int) -> list[str]:
    """VCR-IN: the management address answers only what it must (security issue, item 2)."""
    icmp = "icmp" if family == 4 else "ipv6-icmp"
    echo = "--icmp-type echo-request" if family == 4 else "--icmpv6-type echo-request"
    lan = f"-m physdev --physdev-in {spec.lan_port}"
    lines = ["-A VCR-IN -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT"]
    if family == 6:
        # IPv6 needs neighbour discovery on both sides (the gateway is on the WAN side); on-link only
        lines += [f"-A VCR-IN -p ipv6-icmp --icmpv6-type {t} -m hl --hl-eq 255 -j ACCEPT" for t in ND_TYPES]
        lines.append(f"-A VCR-IN -m physdev --physdev-in {spec.wan_port} -s fe80::/10 -p ipv6-icmp "
                     f"--icmpv6-type {RA_TYPE} -m hl --hl-eq 255 -j ACCEPT")
        lines += [f"-A VCR-IN -s fe80::/10 -p ipv6-icmp --icmpv6-type {t} -j ACCEPT" for t in MLD_TYPES]
    lines += [
        "-A VCR-IN -m conntrack --ctstate INVALID -j DROP",
        *([f"-A VCR-IN -p tcp --dport {spec.mail_port} -m conntrack --ctstate DNAT -j ACCEPT"]
          if spec.mail_port else []),  # mail REDIRECTed to the proxy (agent/dataplane/mailproxy.py)
        f"-A VCR-IN {lan} -p {icmp} {echo} -m limit --limit 20/sec --limit-burst 50 -j ACCEPT",
        f"-A VCR-IN {lan} -p tcp --dport {BLOCKPAGE_PORT} -m conntrack --ctstate NEW -j ACCEPT",
        f"-A VCR-IN {lan} -j VCR-REJECT",
        "-A VCR-IN -j DROP",  # the WAN side (and anything else): nothing new
    ]
    return lines


def _queue_lines(spec: DataplaneSpec) -> list[str]:
    """The NFQUEUE rules: one queue per worker, every packet of a flow (both directions) to the same one.

    ``--queue-balance`` hashes the address pair only, so all flows between one office PC and one
    server would land on one worker. HMARK hashes the 5-tuple symmetrically (addresses and ports
    are ordered before hashing), so those flows spread over the workers too. Its mark sits below
    the verdict bits and is replaced by the worker's verdict mark. A packet in its connection's
    reply direction (conntrack) also carries ``MARK_CT_REPLY`` to the worker.

    Each worker has a second queue, the bulk queue: a connection past ``bulk_after`` bytes (both
    ways, as conntrack counts them) sends its later packets there, and the worker serves it only
    while its first queue is empty (agent/dataplane/worker.py). A queue is FIFO: without it a new
    connection's SYN, a DNS query or a ClientHello waits behind every segment of the downloads the
    worker is inspecting, as a router without a fair queue makes a page wait behind a download.
    The byte count only grows, so a connection moves to the bulk queue once and its packets stay in
    order (the worker drains the first queue before each bulk packet it takes)."""
    bypass = " --queue-bypass" if spec.fail_open else ""
    bulk = (f" -m connbytes --connbytes {spec.bulk_after}: --connbytes-dir both --connbytes-mode bytes"
            if spec.bulk_after else "")
    reply = f"-A VCR-FWD -m conntrack --ctdir REPLY -j MARK --set-xmark 0x{MARK_CT_REPLY:x}/0x{MARK_CT_REPLY:x}"
    # (after HMARK, which sets the whole mark)
    est = (f"-A VCR-FWD ! -p tcp -m connmark ! --mark 0x0/0x{PF_MASK:x} -m conntrack --ctstate ESTABLISHED"
           f" -j MARK --set-xmark 0x{MARK_CT_EST:x}/0x{MARK_CT_EST:x}")
    if spec.workers <= 1:
        return [reply, est, *([f"-A VCR-FWD{bulk} -j NFQUEUE --queue-num {bulk_queue_num(spec.queue_base, 1, 0)}{bypass}"]
                              if bulk else []),
                f"-A VCR-FWD -j NFQUEUE --queue-num {spec.queue_base}{bypass}"]
    lines = [f"-A VCR-FWD -j HMARK --hmark-tuple src,dst,sport,dport,proto --hmark-mod {spec.workers}"
             f" --hmark-offset 0x{FLOW_HASH_BASE:x} --hmark-rnd 0x{FLOW_HASH_SEED:x}", reply, est]
    worker = [f"-A VCR-FWD -m mark --mark 0x{FLOW_HASH_BASE + i:x}/0x{QUEUE_MARK_MASK:x}" for i in range(spec.workers)]
    if bulk:
        lines += [f"{match}{bulk} -j NFQUEUE --queue-num {bulk_queue_num(spec.queue_base, spec.workers, i)}{bypass}"
                  for i, match in enumerate(worker)]
    lines += [f"{match} -j NFQUEUE --queue-num {spec.queue_base + i}{bypass}" for i, match in enumerate(worker)]
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
        # (agent.dataplane.bridge.cut_listed_connections), so a newly listed C&C still loses them.
        f"-A VCR-FWD -m connmark --mark 0x{MARK_ACCEPT:x}/{m} -j ACCEPT",
        f"-A VCR-FWD -m connmark --mark 0x{MARK_DROP:x}/{m} -j DROP",
        f"-A VCR-FWD -m connmark --mark 0x{MARK_REJECT:x}/{m} -j VCR-REJECT",
        # A packet coming back from the queue with a verdict mark (NF_REPEAT): remember the verdict
        # for the connection and act on the packet's own mark (untracked packets have no connmark).
        f"-A VCR-FWD -m mark ! --mark 0x0/{m} -j CONNMARK --save-mark --nfmask {m} --ctmask {m}",
        # ... or with a prefilter id (accepted: the worker passed it): kept for the connection
        f"-A VCR-FWD -m mark ! --mark 0x0/0x{PF_MASK:x} -j CONNMARK --save-mark --nfmask 0x{PF_MASK:x} --ctmask 0x{PF_MASK:x}",
        f"-A VCR-FWD -m mark ! --mark 0x0/0x{PF_MASK:x} -j ACCEPT",
        # ... or with the handshake skip (a SYN the worker passed): kept for the connection
        f"-A VCR-FWD -m mark --mark 0x{MARK_HS:x}/0x{MARK_HS:x} -j CONNMARK --set-xmark 0x{MARK_HS:x}/0x{MARK_HS:x}",
        f"-A VCR-FWD -m mark --mark 0x{MARK_HS:x}/0x{MARK_HS:x} -j ACCEPT",
        "-A VCR-FWD -j VCR-BLOCK",
        f"-A VCR-FWD -m mark --mark 0x{MARK_ACCEPT:x}/{m} -j ACCEPT",
        f"-A VCR-FWD -m mark --mark 0x{MARK_DROP:x}/{m} -j DROP",
        f"-A VCR-FWD -m mark --mark 0x{MARK_REJECT:x}/{m} -j VCR-REJECT",
        # The server's SYN+ACK (without payload) of a connection with the handshake skip
        f"-A VCR-FWD -p tcp --tcp-flags SYN,ACK,FIN,RST SYN,ACK -m connmark --mark 0x{MARK_HS:x}/0x{MARK_HS:x}"
        f" {EMPTY_ACK_U32[family]} -j ACCEPT",
        # Only a new connection is matched against the policy, as stateful firewalls do. A TCP
        # packet without SYN that conntrack calls NEW (nf_conntrack_tcp_loose picks up a
        # connection midstream: a late retransmission or reply after the kernel forgot its
        # connection, e.g. 10 s after a reset) starts nothing: it is not judged by the zone policy
        # (no "default deny wan_to_lan" alarm for a server's late reply). From the WAN side it is
        # dropped quietly (out of state: an ACK scan must not reach the LAN); from the LAN side it
        # goes on to inspection, so an office connection survives a lost conntrack entry.
        f"-A VCR-FWD -p tcp ! --syn -m conntrack --ctstate NEW -m physdev --physdev-in {spec.wan_port} -j DROP",
        "-A VCR-FWD -p tcp --syn -m conntrack --ctstate NEW -j VCR-POLICY",
        "-A VCR-FWD ! -p tcp -m conntrack --ctstate NEW -j VCR-POLICY",
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
    # A prefiltered connection (UDP/ICMP): its packets holding none of its patterns end there
    pf = f"-A VCR-FWD ! -p tcp -m connmark ! --mark 0x0/0x{PF_MASK:x} -j VCR-PF"
    return lines + _skip_lines(spec, family) + [pf] + _queue_lines(spec)


def pf_block(workers: int) -> int:
    """Prefilter ids per worker: the largest power of two that fits ``workers`` times in the id
    byte. Worker i owns ids i * block + 1 ... (i + 1) * block - 1 (not PF_NONE), so the ids of
    live workers never collide and VCR-PF finds a connection's worker by a mask."""
    block = 256
    while block * max(workers, 1) > 256:
        block //= 2
    return block


def pf_ids(index: int, workers: int) -> list[int]:
    """The prefilter ids worker ``index`` may give (see pf_block)."""
    block = pf_block(workers)
    return [i for i in range(index * block + 1, (index + 1) * block) if i != PF_NONE]


def pf_worker_chain(index: int) -> str:
    """The chain worker ``index`` owns (agent/dataplane/prefilter.py): a goto per id it gives to
    the id's chain, then a line clearing the bits of any other id of its block (a stale one)."""
    return f"VCR-PF-W{index}"


def pf_id_chain(pf_id: int) -> str:
    """The chain of one prefilter id: its patterns, per conntrack direction, return (the packet
    is queued); anything else is accepted."""
    return f"VCR-PF-{pf_id}"


def _pf_lines(spec: DataplaneSpec) -> list[str]:
    """VCR-PF: a prefiltered connection's packet goes to its worker's chain (pf_worker_chain),
    which that worker fills at run time; a packet that comes back is queued. Gotos, so that a
    pattern's RETURN comes back to VCR-FWD. The daemon never flushes the workers' chains
    (bridge.prepare_ruleset creates them)."""
    if spec.workers <= 1:
        return [f"-A VCR-PF -g {pf_worker_chain(0)}"]
    block = pf_block(spec.workers)
    mask = (~(block - 1) & 0xFF) << PF_SHIFT
    return [f"-A VCR-PF -m connmark --mark 0x{(i * block) << PF_SHIFT:x}/0x{mask:x} -g {pf_worker_chain(i)}"
            for i in range(spec.workers)]


def _skip_lines(spec: DataplaneSpec, family: int) -> list[str]:
    """What the kernel keeps from the workers, by what the engines need (docs/dataplane.md).

    No engine needs packets (the firewall alone; fail-open only, so a fail-closed box still
    blocks new connections while its agent is down): an allowed connection is accepted and marked
    here, as a worker would have done from its first packet; one that met a ``log`` rule
    (``MARK_LOG``) still goes to a worker, whose firewall raises its alarm, and so do packets
    conntrack calls INVALID, UNTRACKED or RELATED (no helper assigns the last here; ICMP errors
    are decided above), as before.

    No engine needs empty ACKs: they stay in the kernel once the connection's SYN and its first
    empty ACK (which completes the handshake in the worker's flow table) went to the queue, until
    a FIN passes (a close is tracked to its last ACK). A connection the kernel saw only midstream
    (SKIP bits 0) sends them all as before."""
    m = f"0x{MARK_MASK:x}"
    if not spec.inspect and spec.fail_open:
        return [f"-A VCR-FWD -m connmark --mark 0x0/0x{MARK_LOG:x} -m conntrack --ctstate NEW,ESTABLISHED"
                f" -j CONNMARK --set-xmark 0x{MARK_ACCEPT:x}/{m}",
                f"-A VCR-FWD -m connmark --mark 0x{MARK_ACCEPT:x}/{m} -j ACCEPT"]
    if spec.empty_acks:
        return []
    k = f"0x{SKIP_MASK:x}"
    ack = f"-p tcp --tcp-flags SYN,ACK,FIN,RST ACK -m connmark --mark"
    return [
        f"-A VCR-FWD -p tcp --syn -m conntrack --ctstate NEW -j CONNMARK --set-xmark 0x{SKIP_SYN:x}/{k}",
        f"-A VCR-FWD -p tcp --tcp-flags FIN FIN -j CONNMARK --set-xmark 0x{SKIP_OFF:x}/{k}",
        f"-A VCR-FWD {ack} 0x{SKIP_ON:x}/{k} {EMPTY_ACK_U32[family]} -j ACCEPT",
        f"-A VCR-FWD {ack} 0x{SKIP_SYN:x}/{k} {EMPTY_ACK_U32[family]} -j CONNMARK --set-xmark 0x{SKIP_ON:x}/{k}",
    ]


_SARF = SYN | ACK | FIN | RST
MAX_SKIP_CONNECTIONS = 65536  # EmptyAckSkip: connections remembered (the oldest are forgotten: all sent)


class EmptyAckSkip:
    """The empty-ACK skip of ``_skip_lines`` for a pipeline fed without the kernel (``vcr-agent
    pcap``, the benches): ``queued(pkt)`` is False for an empty ACK the kernel would keep from the
    workers, so that offline the engines see what they see inline.

    A connection's SKIP bits as the four kernel lines set them: a SYN (``--syn``, conntrack NEW)
    sets SYN; a FIN (whatever else is set) sets OFF; an empty ACK (ACK without SYN, FIN and RST,
    no payload; PSH, URG, ECE and CWR do not count) in SYN goes and sets ON, in ON stays. OFF and
    no bits (a connection seen midstream) send everything, so a FIN forgets the connection, and so
    does running out of room (``max_connections``): forgetting only ever sends more. Only a SYN, a
    FIN and an empty ACK look the connection up; data packets pass untouched. Unlike conntrack, a
    SYN on a connection conntrack holds as established (not NEW) starts it again here, and entries
    do not time out; an IP fragment and an IPv6 packet with extension headers are sent (the u32
    match reads neither)."""

    __slots__ = ("_state", "_max", "kept")

    def __init__(self, max_connections: int = MAX_SKIP_CONNECTIONS) -> None:
        self._state: dict[tuple[object, ...], int] = {}  # connection -> SKIP_SYN or SKIP_ON
        self._max = max_connections
        self.kept = 0  # empty ACKs kept from the pipeline

    def queued(self, pkt: Any) -> bool:
        """Would the kernel hand ``pkt`` (a parsed packet) to a worker, by the skip lines?"""
        if pkt.proto != PROTO_TCP:
            return True
        flags = pkt.tcp_flags & _SARF
        if flags == ACK:
            if pkt.payload or pkt.frag_offset or pkt.more_fragments or pkt.ext_headers:
                return True
            state = self._state
            key = _connection(pkt)
            bits = state.get(key)
            if bits == SKIP_ON:
                self.kept += 1
                return False
            if bits == SKIP_SYN:
                state[key] = SKIP_ON
            return True
        if flags == SYN or flags & FIN:
            if pkt.frag_offset or pkt.more_fragments:
                return True
            state = self._state
            key = _connection(pkt)
            if flags == SYN:
                if key not in state and len(state) >= self._max:
                    del state[next(iter(state))]  # the oldest: its empty ACKs go to the pipeline again
                state[key] = SKIP_SYN
            else:
                state.pop(key, None)  # OFF: as if never seen
        return True


class HandshakeSkip:
    """The handshake skip's SYN+ACK line of ``_fwd_lines`` for a pipeline fed without the kernel
    (the benches, the tests' simulated kernel): ``mark(pkt)`` for a SYN whose release carries
    ``handshake`` (the worker's MARK_HS), then ``queued(pkt)`` is False for that connection's
    SYN+ACK without payload (SYN and ACK set, FIN and RST clear), as the kernel keeps it."""

    __slots__ = ("_marked", "kept")

    def __init__(self) -> None:
        self._marked: set[tuple[object, ...]] = set()
        self.kept = 0  # SYN+ACKs kept from the pipeline

    def mark(self, pkt: Any) -> None:
        self._marked.add(_connection(pkt))

    def queued(self, pkt: Any) -> bool:
        if (self._marked and pkt.proto == PROTO_TCP and pkt.tcp_flags & _SARF == SYN | ACK and not pkt.payload
                and _connection(pkt) in self._marked):
            self.kept += 1
            return False
        return True


def _connection(pkt: Any) -> tuple[object, ...]:
    """A TCP connection's key, the same both ways (as conntrack's entry)."""
    a, b = (pkt.src_addr, pkt.sport), (pkt.dst_addr, pkt.dport)
    return (a, b) if a <= b else (b, a)


def _block_lines(spec: DataplaneSpec, family: int) -> list[str]:
    sets = [(BLOCK_SETS[family], "bl", "dst", "src")]
    for ks in kernel_sets():
        if ks.family == family:
            port = ks.kind == "hash:ip,port"
            sets.append((ks.name, ks.tag, "dst,dst" if port else "dst", "src,src" if port else "src"))
    lines = []
    for s, kind, dst, src in sets:
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
        if rule.action == "log":  # the alarm is the Python firewall's: the connection goes to a worker
            out.append(f"{head} -j CONNMARK --set-xmark 0x{MARK_LOG:x}/0x{MARK_LOG:x}")
            out.append(f"{head} -j RETURN")
        elif rule.action == "allow":
            out.append(f"{head} -j RETURN")
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
    lines += _fwd_lines(spec, family) + _pf_lines(spec) + _block_lines(spec, family) + _policy_lines(spec, policy, family) + _reject_lines(family)
    lines += _input_lines(spec, family)
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
