"""The rendered kernel ruleset: chains, fast path, queue options and compiled firewall rules."""
from __future__ import annotations

from agent.ruleset import DataplaneSpec, parse_nflog_prefix, render
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
    assert "CONNMARK --save-mark" in fwd[3] and "-j VCR-BLOCK" in fwd[4]
    # two workers: a symmetric 5-tuple hash picks the queue (flows of one address pair spread too)
    assert "-j HMARK --hmark-tuple src,dst,sport,dport,proto --hmark-mod 2 --hmark-offset 0x100" in fwd[-4]
    assert fwd[-3] == "-A VCR-FWD -m mark --mark 0x100 -j NFQUEUE --queue-num 0 --queue-bypass"
    assert fwd[-2] == "-A VCR-FWD -m mark --mark 0x101 -j NFQUEUE --queue-num 1 --queue-bypass"
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
    from agent.bridge import forward_jumps
    from agent.ruleset import jump_rule

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
