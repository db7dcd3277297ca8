"""The queue floor's kernel rules (lab/bench/queuefloor.py): the agent's flow hash and queue numbers,
the empty ACK and SYN+ACK kept in the kernel, and a ruleset the kernel takes (root, a scratch
network namespace)."""
from __future__ import annotations

import subprocess
import uuid

from agent.dataplane.ruleset import DataplaneSpec, render
from filters.firewall import parse_policy
from lab.bench.queuefloor import ruleset


def test_the_queue_lines_are_the_agents():
    text = ruleset(2)
    agent = render(DataplaneSpec("br0", "lan0", "wan0", queue_base=0, workers=2, fail_open=True, nflog_group=17,
                                 stream_depth=0), parse_policy({}), 4)
    hmark = next(line for line in agent.splitlines() if "HMARK" in line).split(" -j ", 1)[1]
    assert f"-A VCR-QF -j {hmark}" in text
    for q in (0, 1):
        line = next(line for line in agent.splitlines() if f"--queue-num {q} " in line)
        assert line.replace("VCR-FWD", "VCR-QF") in text
    kept = [line for line in text.splitlines() if line.endswith("-j ACCEPT")]
    assert len(kept) == 2 and "SYN,ACK,FIN,RST ACK " in kept[0] and "SYN,ACK,FIN,RST SYN,ACK " in kept[1]


def test_the_kernel_takes_the_ruleset():
    ns = f"vqft{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        res = subprocess.run(["ip", "netns", "exec", ns, "iptables-restore", "--test"], input=ruleset(3),
                             capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
