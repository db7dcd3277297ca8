"""The rendered kernel ruleset: chains, fast path, queue options and compiled firewall rules."""
from __future__ import annotations

from dataclasses import replace

from agent.dataplane.ruleset import (EMPTY_ACK_U32, MARK_CT_EST, MARK_CT_REPLY, MARK_HS, MARK_LOG, MARK_MASK, PF_MASK, PF_NONE,
                                     QUEUE_MARK_MASK, SKIP_MASK, DataplaneSpec, bulk_queue_num, parse_nflog_prefix, pf_block, pf_ids,
                                     render)
from filters.firewall import parse_policy

SPEC = DataplaneSpec("br0", "lan0", "wan0", queue_base=0, workers=2, fail_open=True, nflog_group=17, stream_depth=1 << 20)


def policy(**section):
    return parse_policy(section)


def test_fast_path_and_queue():
    text = render(SPEC, policy(), 4)
    lines = text.splitlines()
    assert lines[0] == "*filter" and lines[-1] == "COMMIT"
    fwd = [l for l in lines if l.startswith("-A VCR-FWD")]
    # the fast path comes first (a decided flow costs one compare), then the mark save; the queue last
    assert fwd[0] == "-A VCR-FWD -m connmark --mark 0x10000000/0x70000000 -j ACCEPT"
    assert "CONNMARK --save-mark" in fwd[3] and "-j VCR-BLOCK" in fwd[8]
    # a packet back from the queue with a prefilter id: saved for the connection, accepted
    assert fwd[4] == "-A VCR-FWD -m mark ! --mark 0x0/0xff0000 -j CONNMARK --save-mark --nfmask 0xff0000 --ctmask 0xff0000"
    assert fwd[5] == "-A VCR-FWD -m mark ! --mark 0x0/0xff0000 -j ACCEPT"
    # ... or a SYN with the handshake skip: the bit kept for the connection, the SYN accepted
    assert fwd[6] == "-A VCR-FWD -m mark --mark 0x8000/0x8000 -j CONNMARK --set-xmark 0x8000/0x8000"
    assert fwd[7] == "-A VCR-FWD -m mark --mark 0x8000/0x8000 -j ACCEPT"
    # such a connection's SYN+ACK without payload stays in the kernel (after the blocklists)
    synack = [n for n, l in enumerate(fwd) if "SYN,ACK -m connmark --mark 0x8000/0x8000" in l]
    assert len(synack) == 1 and synack[0] > 8 and fwd[synack[0]].endswith(EMPTY_ACK_U32[4] + " -j ACCEPT")
    # a prefiltered connection (not TCP) goes through its prefilter before the queue
    assert fwd[-7] == "-A VCR-FWD ! -p tcp -m connmark ! --mark 0x0/0xff0000 -j VCR-PF"
    # two workers: a symmetric 5-tuple hash picks the queue (flows of one address pair spread too)
    assert "-j HMARK --hmark-tuple src,dst,sport,dport,proto --hmark-mod 2 --hmark-offset 0x100" in fwd[-6]
    # a packet in its connection's reply direction tells the worker so (a flow it did not see start)
    assert fwd[-5] == "-A VCR-FWD -m conntrack --ctdir REPLY -j MARK --set-xmark 0x8000000/0x8000000"
    # ... and a prefiltered connection's packet that it is established (after HMARK, which sets the mark)
    assert fwd[-4] == ("-A VCR-FWD ! -p tcp -m connmark ! --mark 0x0/0xff0000 -m conntrack --ctstate ESTABLISHED"
                       " -j MARK --set-xmark 0x80000000/0x80000000")
    # VCR-PF: to the chain of the worker whose block holds the id (two workers: 128 ids each)
    assert [l for l in lines if l.startswith("-A VCR-PF")] == [
        "-A VCR-PF -m connmark --mark 0x0/0x800000 -g VCR-PF-W0", "-A VCR-PF -m connmark --mark 0x800000/0x800000 -g VCR-PF-W1"]
    assert fwd[-3] == "-A VCR-FWD -m mark --mark 0x100/0x7fff -j NFQUEUE --queue-num 0 --queue-bypass"
    assert fwd[-2] == "-A VCR-FWD -m mark --mark 0x101/0x7fff -j NFQUEUE --queue-num 1 --queue-bypass"
    assert fwd[-1].endswith("-j NFQUEUE --queue-balance 0:1 --queue-bypass")
    assert any("connmark --mark 0x10000000/0x70000000 -j ACCEPT" in l for l in fwd)
    assert any("connbytes" in l for l in fwd)
    # each direction past the depth (plus headers) stays in the kernel on its own
    one = (1 << 20) + (1 << 18) + 65536
    assert f"-A VCR-FWD -m conntrack --ctdir ORIGINAL -m connbytes --connbytes {one}: --connbytes-dir original --connbytes-mode bytes -j ACCEPT" in fwd
    assert f"-A VCR-FWD -m conntrack --ctdir REPLY -m connbytes --connbytes {one}: --connbytes-dir reply --connbytes-mode bytes -j ACCEPT" in fwd
    closed = render(DataplaneSpec("br0", "lan0", "wan0", 0, 1, False, 17, 0), policy(), 4)
    assert "-j NFQUEUE --queue-num 0\n" in closed and "bypass" not in closed
    assert "connbytes" not in closed


def test_a_connection_past_the_bulk_threshold_goes_to_its_workers_second_queue():
    fwd = [l for l in render(replace(SPEC, bulk_after=65536), policy(), 4).splitlines() if l.startswith("-A VCR-FWD")]
    queue = [l for l in fwd if "NFQUEUE" in l]
    # the bulk queue's lines first (a connection past the bytes), by the same flow hash as the first queues
    assert queue == [
        "-A VCR-FWD -m mark --mark 0x100/0x7fff -m connbytes --connbytes 65536: --connbytes-dir both"
        " --connbytes-mode bytes -j NFQUEUE --queue-num 2 --queue-bypass",
        "-A VCR-FWD -m mark --mark 0x101/0x7fff -m connbytes --connbytes 65536: --connbytes-dir both"
        " --connbytes-mode bytes -j NFQUEUE --queue-num 3 --queue-bypass",
        "-A VCR-FWD -m mark --mark 0x100/0x7fff -j NFQUEUE --queue-num 0 --queue-bypass",
        "-A VCR-FWD -m mark --mark 0x101/0x7fff -j NFQUEUE --queue-num 1 --queue-bypass",
        "-A VCR-FWD -j NFQUEUE --queue-balance 0:1 --queue-bypass"]
    # after the HMARK that picks the worker and the direction marks the worker reads
    assert fwd.index(queue[0]) > max(n for n, l in enumerate(fwd) if "HMARK" in l or "MARK --set-xmark 0x8" in l)
    assert [bulk_queue_num(0, 2, i) for i in range(2)] == [2, 3]
    one = render(replace(SPEC, workers=1, queue_base=10, bulk_after=4096, fail_open=False), policy(), 6).splitlines()
    assert [l for l in one if "NFQUEUE" in l] == [
        "-A VCR-FWD -m connbytes --connbytes 4096: --connbytes-dir both --connbytes-mode bytes -j NFQUEUE --queue-num 11",
        "-A VCR-FWD -j NFQUEUE --queue-num 10"]
    assert "connbytes 65536:" not in render(SPEC, policy(), 4)  # 0: one queue


def test_only_own_chains_declared():
    for fam in (4, 6):
        decl = [l for l in render(SPEC, policy(), fam).splitlines() if l.startswith(":")]
        assert decl and all(l.startswith(":VCR-") for l in decl)
        assert not any(l.startswith("-A FORWARD") or l.startswith("-F") for l in render(SPEC, policy(), fam).splitlines())


def test_rules_compile_per_family():
    p = policy(
        address_groups={"office": ["192.0.2.0/24", "2001:db8:1::/64"]},
        rules=[
            {"name": "t", "from": "lan", "to": "wan", "src": "office", "service": ["tcp/23", "udp/137-138"], "action": "reject"},
            {"name": "ping", "from": "wan", "service": "icmp/8", "action": "allow"},
        ],
    )
    v4 = render(SPEC, p, 4)
    v6 = render(SPEC, p, 6)
    assert "-A VCR-POLICY -m physdev --physdev-in lan0 --physdev-out wan0 -s 192.0.2.0/24 -p tcp --dport 23 -j VCR-REJECT" in v4
    assert "-p udp --dport 137:138" in v4
    assert '--nflog-prefix "vcr:fw:1:reject"' in v4
    assert "-s 2001:db8:1::/64" in v6 and "192.0.2.0/24" not in v6
    assert "--icmp-type 8 -j RETURN" in v4 and "icmp-type" not in v6  # icmp (v4) rule skipped for v6
    # default policy last: WAN->LAN denied with a log
    pol = [l for l in v4.splitlines() if l.startswith("-A VCR-POLICY")]
    assert pol[-1] == "-A VCR-POLICY -m physdev --physdev-in wan0 -j DROP"
    assert "icmpv6-type 135 -j RETURN" in v6  # neighbour solicitation always crosses


def test_nflog_prefix_roundtrip():
    assert parse_nflog_prefix("vcr:fw:3:deny") == ("fw", 3, "deny", "")
    assert parse_nflog_prefix("vcr:fw:0:deny:wan_to_lan") == ("fw", 0, "deny", "wan_to_lan")
    assert parse_nflog_prefix("other") is None


def test_forward_jump_is_native_and_bridge_down_finds_every_jump():
    from agent.dataplane.bridge import forward_jumps
    from agent.dataplane.ruleset import jump_rule

    # no xt match in the rule every forwarded packet passes (iptables-nft runs xt matches through nft_compat)
    assert jump_rule(SPEC) == ["-i", "br0", "-o", "br0", "-j", "VCR-FWD"]
    listing = "\n".join([
        "-P FORWARD ACCEPT",
        "-A FORWARD -i br0 -o br0 -j VCR-FWD",
        '-A FORWARD -i br0 -o br0 -m physdev --physdev-is-bridged -j VCR-FWD',
        '-A FORWARD -p tcp -m comment --comment "to VCR-FWD" -j CUSTOMER',
        "-A CUSTOMER -j VCR-FWD",
    ])
    assert forward_jumps(listing) == [
        ["-i", "br0", "-o", "br0", "-j", "VCR-FWD"],
        ["-i", "br0", "-o", "br0", "-m", "physdev", "--physdev-is-bridged", "-j", "VCR-FWD"],
    ]


# -- the box's own input policy (security issue, item 2) -------------------------------------------

def input_lines(fam: int) -> list[str]:
    return [l for l in render(SPEC, policy(), fam).splitlines() if l.startswith("-A VCR-IN")]


def test_input_policy_only_the_block_page_from_the_lan():
    from agent.dataplane.ruleset import input_jump_rule

    assert input_jump_rule(SPEC) == ["-i", "br0", "-j", "VCR-IN"]  # loopback never enters it
    for fam, icmp in ((4, "-p icmp --icmp-type echo-request"), (6, "-p ipv6-icmp --icmpv6-type echo-request")):
        lines = input_lines(fam)
        assert ":VCR-IN - [0:0]" in render(SPEC, policy(), fam)
        # replies of the box's own connections (center link, updates, port check, NTP, DNS) first
        assert lines[0] == "-A VCR-IN -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT"
        assert lines[-1] == "-A VCR-IN -j DROP"  # nothing new from the WAN side
        accepts = [l for l in lines if l.endswith("-j ACCEPT") and "ESTABLISHED" not in l]
        new_tcp = [l for l in accepts if "-p tcp" in l]
        assert new_tcp == ["-A VCR-IN -m physdev --physdev-in lan0 -p tcp --dport 80 -m conntrack --ctstate NEW -j ACCEPT"]
        assert not any("-p udp" in l for l in accepts)
        echo = [l for l in accepts if "echo-request" in l]
        assert len(echo) == 1 and echo[0].startswith(f"-A VCR-IN -m physdev --physdev-in lan0 {icmp} -m limit")
        assert "-A VCR-IN -m physdev --physdev-in lan0 -j VCR-REJECT" in lines  # the LAN gets a fast refusal
        assert not any("wan0" in l for l in lines if "-p tcp" in l or "echo" in l)
        assert lines.index("-A VCR-IN -m conntrack --ctstate INVALID -j DROP") < lines.index(new_tcp[0])
    v6 = input_lines(6)
    nd = [l for l in v6 if any(f"--icmpv6-type {t} " in l for t in (133, 134, 135, 136, 137))]
    assert nd == ["-A VCR-IN -p ipv6-icmp --icmpv6-type 135 -m hl --hl-eq 255 -j ACCEPT",
                  "-A VCR-IN -p ipv6-icmp --icmpv6-type 136 -m hl --hl-eq 255 -j ACCEPT",
                  "-A VCR-IN -m physdev --physdev-in wan0 -s fe80::/10 -p ipv6-icmp --icmpv6-type 134 -m hl --hl-eq 255 -j ACCEPT"]
    assert not any("icmpv6" in l for l in input_lines(4))
    mld = [l for l in v6 if l.startswith("-A VCR-IN -s fe80::/10 -p ipv6-icmp --icmpv6-type ")]
    assert [l.split()[-3] for l in mld] == ["130", "131", "132", "143"]  # MLD, link-local sources only


def test_input_policy_follows_the_port_names():
    spec = DataplaneSpec("br9", "enp1s0", "enp2s0", queue_base=0, workers=1, fail_open=True, nflog_group=17, stream_depth=0)
    text = render(spec, policy(), 4)
    assert "-A VCR-IN -m physdev --physdev-in enp1s0 -p tcp --dport 80" in text and "lan0" not in text


def test_bridge_down_finds_every_input_jump():
    from agent.dataplane.bridge import forward_jumps, input_jumps

    listing = "\n".join([
        "-P INPUT ACCEPT",
        "-A INPUT -i br0 -j VCR-IN",
        "-A INPUT -i br-old -j VCR-IN",
        "-A INPUT -p tcp --dport 22 -j ACCEPT",
        "-A INPUT -j VCR-INPUT-CUSTOMER",
    ])
    assert input_jumps(listing) == [["-i", "br0", "-j", "VCR-IN"], ["-i", "br-old", "-j", "VCR-IN"]]
    assert forward_jumps(listing) == []


def test_policy_judges_only_new_connections():
    """Only a new connection meets the zone policy: for TCP a SYN that conntrack calls NEW. A TCP
    packet without SYN that conntrack picks up as NEW (a late reply after the kernel forgot its
    connection) is dropped quietly from the WAN side, never logged as "default deny wan_to_lan"."""
    for fam in (4, 6):
        fwd = [l for l in render(SPEC, policy(), fam).splitlines() if l.startswith("-A VCR-FWD")]
        to_policy = [l for l in fwd if l.endswith("-j VCR-POLICY")]
        assert to_policy == ["-A VCR-FWD -p tcp --syn -m conntrack --ctstate NEW -j VCR-POLICY",
                             "-A VCR-FWD ! -p tcp -m conntrack --ctstate NEW -j VCR-POLICY"]
        out_of_state = "-A VCR-FWD -p tcp ! --syn -m conntrack --ctstate NEW -m physdev --physdev-in wan0 -j DROP"
        assert fwd.index(out_of_state) < fwd.index(to_policy[0])
        assert not any("NFLOG" in l for l in fwd)  # no alarm for it


def fwd_lines(spec: DataplaneSpec, fam: int) -> list[str]:
    return [l for l in render(spec, policy(), fam).splitlines() if l.startswith("-A VCR-FWD")]


def test_what_the_engines_need_decides_what_the_kernel_keeps():
    """Issue 15: by default (unknown needs) every undecided packet goes to the queue, as before."""
    for fam in (4, 6):
        assert not any("SYN,ACK,FIN,RST ACK " in l or "0x6000000" in l for l in fwd_lines(SPEC, fam))
        # no engine needs packets: an allowed connection is accepted and marked before the queue
        # (INVALID packets still go to the worker); the policy and blocklists come first
        fwd = fwd_lines(replace(SPEC, inspect=False), fam)
        # (but not one whose first matching firewall rule is a log rule: the worker raises its alarm)
        accept = ("-A VCR-FWD -m connmark --mark 0x0/0x1000000 -m conntrack --ctstate NEW,ESTABLISHED"
                  " -j CONNMARK --set-xmark 0x10000000/0x70000000")
        assert fwd.index(accept) > fwd.index("-A VCR-FWD -p tcp --syn -m conntrack --ctstate NEW -j VCR-POLICY")
        assert fwd[fwd.index(accept) + 1] == "-A VCR-FWD -m connmark --mark 0x10000000/0x70000000 -j ACCEPT"
        assert "NFQUEUE" in fwd[-1]
        # fail-closed: a new connection still needs a worker to pass (the agent down blocks it)
        closed = fwd_lines(replace(SPEC, inspect=False, fail_open=False), fam)
        assert accept not in closed


def test_empty_acks_stay_in_the_kernel_after_the_handshake_until_a_fin():
    for fam in (4, 6):
        fwd = fwd_lines(replace(SPEC, empty_acks=False), fam)
        queue = next(i for i, l in enumerate(fwd) if "HMARK" in l)
        syn, fin, skip, first, prefilter = fwd[queue - 5:queue]
        assert prefilter.endswith("-j VCR-PF")
        assert syn == "-A VCR-FWD -p tcp --syn -m conntrack --ctstate NEW -j CONNMARK --set-xmark 0x2000000/0x6000000"
        assert fin == "-A VCR-FWD -p tcp --tcp-flags FIN FIN -j CONNMARK --set-xmark 0x6000000/0x6000000"
        empty = "-p tcp --tcp-flags SYN,ACK,FIN,RST ACK -m connmark --mark"
        assert skip.startswith(f"-A VCR-FWD {empty} 0x4000000/0x6000000 ") and skip.endswith("-j ACCEPT")
        # the first empty ACK after the SYN (the handshake's) goes to the worker and turns the skip on
        assert first.startswith(f"-A VCR-FWD {empty} 0x2000000/0x6000000 ")
        assert first.endswith("-j CONNMARK --set-xmark 0x4000000/0x6000000")
        assert EMPTY_ACK_U32[fam] in skip and EMPTY_ACK_U32[fam] in first
        # the marks stay clear of the verdict bits, the reply bit and the queue hash
        assert SKIP_MASK & (MARK_MASK | MARK_CT_REPLY | QUEUE_MARK_MASK) == 0
        # so do the prefilter's, and they of each other (MARK_LOG: a connection mark bit)
        bits = [MARK_MASK, MARK_CT_REPLY, QUEUE_MARK_MASK, SKIP_MASK, MARK_LOG, PF_MASK, MARK_CT_EST, MARK_HS]
        assert all(a & b == 0 for n, a in enumerate(bits) for b in bits[n + 1:])


def empty_ack_u32(fam: int, packet: bytes) -> bool:
    """xt_u32 evaluated as the kernel does it (network header at 0; a read past the end fails
    the test), for the two matches of EMPTY_ACK_U32[fam]."""
    def read(pos: int) -> int | None:
        return int.from_bytes(packet[pos:pos + 4], "big") if 0 <= pos <= len(packet) - 4 else None

    w = read(0 if fam == 4 else 4)
    if fam == 4:
        first = w is not None and w & 0x3 == 0
        tcp = ((w >> 22) & 0x3C) if w is not None else None
        doff = read(tcp + 12) if tcp is not None else None
        readable = doff is not None and read(tcp + ((doff >> 26) & 0x3C)) is not None
    else:
        first = w is not None and (w >> 16) & 0x3 == 0 and (w >> 8) & 0xFF == 6
        doff = read(52)
        readable = doff is not None and read(((doff >> 26) & 0x3C) + 40) is not None
    return first and not readable


def test_the_u32_matches_exactly_the_packets_without_payload():
    from scapy.layers.inet import IP, TCP
    from scapy.layers.inet6 import IPv6, IPv6ExtHdrHopByHop

    for fam, ip in ((4, IP(src="10.0.0.1", dst="10.0.0.2")), (6, IPv6(src="2001:db8::1", dst="2001:db8::2"))):
        for opts in ([], [("NOP", None), ("NOP", None), ("Timestamp", (1, 2))], [("SAck", (1, 2, 3, 4))]):
            for size in range(0, 9):
                pkt = bytes(ip / TCP(flags="A", options=opts) / (b"x" * size))
                assert empty_ack_u32(fam, pkt) == (size == 0), (fam, opts, size)
    # IPv6 with an extension header: not recognised, so it goes to the worker
    assert not empty_ack_u32(6, bytes(IPv6() / IPv6ExtHdrHopByHop() / TCP(flags="A")))


def test_a_log_rule_marks_its_connections_for_the_worker():
    p = policy(rules=[{"name": "rdp", "service": "tcp/3389", "action": "log"},
                      {"name": "web", "service": "tcp/80", "action": "allow"}])
    for fam in (4, 6):
        pol = [l for l in render(SPEC, p, fam).splitlines() if l.startswith("-A VCR-POLICY")]
        assert "-A VCR-POLICY -p tcp --dport 3389 -j CONNMARK --set-xmark 0x1000000/0x1000000" in pol
        assert pol.index("-A VCR-POLICY -p tcp --dport 3389 -j RETURN") == \
            pol.index("-A VCR-POLICY -p tcp --dport 3389 -j CONNMARK --set-xmark 0x1000000/0x1000000") + 1
        assert "-A VCR-POLICY -p tcp --dport 80 -j RETURN" in pol
        assert not any("--dport 80 -j CONNMARK" in l for l in pol)
    assert MARK_LOG & (MARK_MASK | MARK_CT_REPLY | QUEUE_MARK_MASK | SKIP_MASK) == 0


def test_prefilter_ids_of_live_workers_never_collide():
    for workers in (1, 2, 3, 4, 5, 8):
        block = pf_block(workers)
        seen: set[int] = set()
        for i in range(workers):
            ids = pf_ids(i, workers)
            assert ids and not seen & set(ids) and 0 not in ids and PF_NONE not in ids
            # VCR-PF finds the worker by the block mask
            assert all(pid // block == i for pid in ids) and max(ids) <= 0xFF
            seen |= set(ids)
    assert len(pf_ids(0, 1)) == 254 and len(pf_ids(1, 2)) == 126
    single = render(replace(SPEC, workers=1), policy(), 4).splitlines()
    assert [l for l in single if l.startswith("-A VCR-PF")] == ["-A VCR-PF -g VCR-PF-W0"]


_TCP_FLAGS = {"FIN": 0x01, "SYN": 0x02, "RST": 0x04, "PSH": 0x08, "ACK": 0x10, "URG": 0x20}


class KernelSkip:
    """The skip lines of ``fwd_lines(spec, fam)`` run as the kernel runs them, read from their text:
    ``-p tcp``, ``--syn``, ``--tcp-flags MASK COMP``, ``--ctstate NEW``, ``--mark V/M`` (connmark),
    the u32 matches (``empty_ack_u32``), then ``-j ACCEPT`` (kept from the queue) or ``-j CONNMARK
    --set-xmark V/M``. Conntrack is modelled as far as the lines look at it: one entry per 5-tuple
    with its mark; NEW until the first packet of the reply direction; a SYN after a FIN starts a
    new entry (mark 0), as a TIME_WAIT connection reopened."""

    def __init__(self, fam: int) -> None:
        fwd = fwd_lines(replace(SPEC, empty_acks=False), fam)
        self.rules = [l for l in fwd if "--set-xmark 0x" in l and f"/0x{SKIP_MASK:x}" in l
                      or f"/0x{SKIP_MASK:x}" in l and l.endswith("-j ACCEPT")]
        assert len(self.rules) == 4
        self.fam = fam
        self.conns: dict[tuple, dict] = {}

    def queued(self, raw: bytes, pkt) -> bool:
        a, b = (pkt.src_addr, pkt.sport), (pkt.dst_addr, pkt.dport)
        key = (a, b) if a <= b else (b, a)
        ct = self.conns.get(key)
        syn_only = pkt.tcp_flags & 0x17 == 0x02
        if ct is None or syn_only and ct["fin"]:
            ct = self.conns[key] = {"mark": 0, "orig": a, "replied": False, "fin": False}
        if a != ct["orig"]:
            ct["replied"] = True
        new = not ct["replied"]
        queued = True
        for rule in self.rules:
            if self.matches(rule.split(), raw, pkt, ct["mark"], new):
                target = rule.split(" -j ", 1)[1].split()
                if target == ["ACCEPT"]:
                    queued = False
                    break
                value, mask = (int(x, 16) for x in target[2].split("/"))
                ct["mark"] = ct["mark"] & ~mask | value
        ct["fin"] = ct["fin"] or bool(pkt.tcp_flags & 0x01)
        return queued

    def matches(self, words: list[str], raw: bytes, pkt, mark: int, new: bool) -> bool:
        i, negate = 2, False
        while i < len(words):
            w = words[i]
            if w == "-j":
                return True
            if w == "!":
                negate, i = True, i + 1
                continue
            if w == "-p":
                ok, i = words[i + 1] == "tcp" and pkt.proto == 6, i + 2
            elif w == "--syn":
                ok, i = pkt.tcp_flags & 0x17 == 0x02, i + 1
            elif w == "--tcp-flags":
                mask = sum(_TCP_FLAGS[f] for f in words[i + 1].split(","))
                comp = sum(_TCP_FLAGS[f] for f in words[i + 2].split(","))
                ok, i = pkt.tcp_flags & mask == comp, i + 3
            elif w == "--ctstate":
                assert words[i + 1] == "NEW"
                ok, i = new, i + 2
            elif w == "--mark":
                value, mask = (int(x, 16) for x in words[i + 1].split("/"))
                ok, i = mark & mask == value, i + 2
            elif w == "--u32":
                # the two u32 matches of EMPTY_ACK_U32 together: the first and the negated second
                assert words[i - 2:i] == ["-m", "u32"] and words[i + 2:i + 6] == ["-m", "u32", "!", "--u32"]
                ok, i = empty_ack_u32(self.fam, raw), i + 7
            elif w == "-m":
                i += 2
                continue
            else:
                raise AssertionError(f"unknown match {w!r} in a skip line")
            if ok == negate:
                return False
            negate = False
        return True


def test_the_offline_empty_ack_skip_decides_as_the_kernel_lines():
    """EmptyAckSkip (vcr-agent pcap, the benches) against the skip lines run as the kernel would,
    packet by packet: handshakes, data, empty and PSH ACKs, payloads of 1 to 5 bytes, RST, a
    connection seen midstream, a closed connection's last ACKs, a port reused after a FIN,
    IPv4 options, IPv6 with an extension header, and connections interleaved."""
    from scapy.layers.inet import IP, TCP, IPOption_NOP
    from scapy.layers.inet6 import IPv6, IPv6ExtHdrHopByHop

    from agent.dataplane.ruleset import EmptyAckSkip
    from filters.packet import parse_ip

    for fam in (4, 6):
        def ip(c, s, to_server=True, **kw):
            cli, srv = (f"10.0.0.{c}", f"10.0.1.{s}") if fam == 4 else (f"2001:db8::{c}", f"2001:db8:1::{s}")
            src, dst = (cli, srv) if to_server else (srv, cli)
            return IP(src=src, dst=dst, **kw) if fam == 4 else IPv6(src=src, dst=dst)

        def tcp(c, s, flags, data=b"", to_server=True, sport=40000, dport=80, **kw):
            sp, dp = (sport, dport) if to_server else (dport, sport)
            return bytes(ip(c, s, to_server, **kw) / TCP(sport=sp, dport=dp, flags=flags) / data)

        seq = []
        for conn in (1, 2):  # two connections, interleaved below
            seq.append([tcp(conn, 1, "S"), tcp(conn, 1, "SA", to_server=False), tcp(conn, 1, "A"),
                        tcp(conn, 1, "A"), tcp(conn, 1, "PA", b"GET /"), tcp(conn, 1, "A", to_server=False),
                        tcp(conn, 1, "PA"), *(tcp(conn, 1, "A", b"x" * n) for n in range(1, 6)),
                        tcp(conn, 1, "A", to_server=False), tcp(conn, 1, "AU"), tcp(conn, 1, "AE"),
                        tcp(conn, 1, "FA", to_server=False), tcp(conn, 1, "A"), tcp(conn, 1, "FA"),
                        tcp(conn, 1, "A", to_server=False), tcp(conn, 1, "A"),
                        # the port reused: a new connection, skipping again after its handshake
                        tcp(conn, 1, "S"), tcp(conn, 1, "SA", to_server=False), tcp(conn, 1, "A"), tcp(conn, 1, "A"),
                        tcp(conn, 1, "R"), tcp(conn, 1, "A")])
        packets = [p for pair in zip(*seq) for p in pair]
        packets += [tcp(3, 1, "A"), tcp(3, 1, "A", to_server=False), tcp(3, 1, "PA", b"x"), tcp(3, 1, "A"),  # midstream
                    tcp(4, 1, "S"), tcp(4, 1, "S"), tcp(4, 1, "SA", to_server=False), tcp(4, 1, "A", to_server=False),
                    tcp(4, 1, "A"), tcp(4, 1, "A", to_server=False)]  # a retransmitted SYN, the ACK from the server
        if fam == 4:
            packets += [tcp(5, 1, "S"), tcp(5, 1, "SA", to_server=False), tcp(5, 1, "A", options=[IPOption_NOP()] * 4),
                        tcp(5, 1, "A", options=[IPOption_NOP()] * 4), tcp(5, 1, "A")]
        else:
            ext = bytes(ip(5, 1) / IPv6ExtHdrHopByHop() / TCP(sport=40000, dport=80, flags="A"))
            packets += [tcp(5, 1, "S"), tcp(5, 1, "SA", to_server=False), ext, tcp(5, 1, "A"), ext, tcp(5, 1, "A")]
        kernel, skip = KernelSkip(fam), EmptyAckSkip()
        decided = [(kernel.queued(raw, pkt := parse_ip(raw, 0.0)), skip.queued(pkt)) for raw in packets]
        assert [k for k, _ in decided] == [s for _, s in decided], fam
        kept = sum(not k for k, _ in decided)
        assert kept == skip.kept >= 10  # the sequence exercises the skip
