"""The kernel prefilter's worker half (agent/dataplane/prefilter.py): ids, chains and marks, with a
recording runner, and its chains restored by the real iptables-restore in a fresh netns, where
datagrams with and without a pattern take their two ways."""
from __future__ import annotations

import subprocess
import time
from typing import Iterator

import pytest

from agent.dataplane.prefilter import Prefilters, id_chain_lines, worker_chain_lines
from agent.dataplane.ruleset import PF_NONE, PF_SHIFT
from filters.pipeline import NO_PREFILTER
from tests.agent.dataplane.test_nflog import nsrun

KF = (frozenset({(b"uid=0(root)", False, -1)}), frozenset({(b"ABC", True, -1), (b"PING", False, 8)}))
OTHER = (frozenset({(b"other", False, -1)}), frozenset())


class Recorder:
    def __init__(self, fail: bool = False) -> None:
        self.calls: list[tuple[list[str], str | None]] = []
        self.fail = fail

    def __call__(self, argv: list[str], stdin: str | None = None) -> int:
        self.calls.append((argv, stdin))
        return 1 if self.fail else 0


def _wait_ready(pf: Prefilters, pf_id: int) -> None:
    for _ in range(200):
        if pf_id in pf.ready:
            return
        time.sleep(0.005)
    raise AssertionError("not installed")


def test_lines() -> None:
    assert id_chain_lines(7, KF) == [
        "-A VCR-PF-7 -m conntrack --ctdir REPLY -g VCR-PF-7R",
        '-A VCR-PF-7 -m string --algo bm --hex-string "|7569643d3028726f6f7429|" -j RETURN',
        "-A VCR-PF-7 -j ACCEPT",
        '-A VCR-PF-7R -m string --algo bm --hex-string "|414243|" --icase -j RETURN',
        '-A VCR-PF-7R -p icmp --icmp-type 8 -m string --algo bm --hex-string "|50494e47|" -j RETURN',
        "-A VCR-PF-7R -j ACCEPT"]
    assert "-p ipv6-icmp --icmpv6-type 8 -m string" in id_chain_lines(7, KF, 6)[4]
    assert worker_chain_lines(1, [130, 131]) == [
        "-A VCR-PF-W1 -m connmark --mark 0x820000/0xff0000 -g VCR-PF-130",
        "-A VCR-PF-W1 -m connmark --mark 0x830000/0xff0000 -g VCR-PF-131",
        "-A VCR-PF-W1 -j CONNMARK --set-xmark 0x0/0xff0000"]
    long = id_chain_lines(3, (frozenset({(b"x" * 300, False, -1)}), frozenset()))[1]
    assert long.count("78") == 128  # cut to xt_string's longest pattern


def test_ids_are_given_installed_then_marked() -> None:
    rec = Recorder()
    pf = Prefilters(1, 2, runner=rec, lister=lambda argv: "")
    pf.start(now=0.0)
    # the worker's chain is cleared at start, in both families: only the clearing line
    assert [a[0] for a, _ in rec.calls] == ["iptables-restore", "ip6tables-restore"]
    assert ":VCR-PF-W1 - [0:0]" in rec.calls[0][1] and "-g VCR-PF-" not in rec.calls[0][1]
    assert pf.mark(KF, now=1.0) is None  # the id is being installed: the packet is simply accepted
    _wait_ready(pf, 129)
    assert pf.mark(KF, now=1.0) == 129 << PF_SHIFT
    assert pf.mark(OTHER, now=1.0) is None
    _wait_ready(pf, 130)
    text = rec.calls[-1][1]
    assert "-g VCR-PF-129" in text and "-g VCR-PF-130" in text and ":VCR-PF-130 - [0:0]" in text
    assert pf.mark(NO_PREFILTER) == PF_NONE << PF_SHIFT
    pf.close()
    assert pf.stats()["ids_in_use"] == 2 and pf.stats()["marked"] == 1 and pf.stats()["stopped"] == 1


def test_a_predecessors_ids_pause_the_prefilter_for_the_conntrack_timeout() -> None:
    rec = Recorder()
    listing = "-N VCR-PF-W0\n-A VCR-PF-W0 -m connmark --mark 0x10000/0xff0000 -g VCR-PF-1\n"
    pf = Prefilters(0, 1, runner=rec, idle_limit=30.0, lister=lambda argv: listing)
    pf.start(now=100.0)
    assert pf.mark(KF, now=130.0) is None and not pf.ids and pf.counters["paused"] == 1
    assert pf.mark(KF, now=136.0) is None and pf.ids  # given once every stale entry had its chance
    pf.close()


def test_exhausted_and_failures() -> None:
    pf = Prefilters(3, 4, runner=Recorder(), lister=lambda argv: "")
    pf.start(now=0.0)
    n = len(pf.free)
    for k in range(n + 2):
        pf.mark((frozenset({(b"p%d" % k, False, -1)}), frozenset()), now=1.0)
    assert pf.counters["exhausted"] == 2
    pf.close()
    bad = Prefilters(0, 1, runner=Recorder(fail=True), lister=lambda argv: "")
    bad.start(now=0.0)  # the chain cannot be cleared: no id is ever given
    assert bad.mark(KF, now=1.0) is None and not bad.ids and bad.counters["install_failures"] == 1
    bad.close()


# ------------------------------------------------------------- the real chains in a fresh netns

@pytest.fixture
def pf_netns(lab_prefix: str) -> Iterator[str]:
    name = f"{lab_prefix}kpf"
    subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
    subprocess.run(["ip", "netns", "add", name], check=True)
    nsrun(name, "ip", "link", "set", "lo", "up")
    yield name
    subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


def test_real_chains_keep_datagrams_without_a_pattern(pf_netns: str) -> None:
    """Datagrams to port 5555 carry prefilter id 1 (set by a test rule, as VCR-FWD's save would);
    VCR-PF's chains accept those without the pattern, and return the others to the rule after
    them (the queue on the box; here a counting rule). Port 5556 carries an id nobody installed:
    its worker chain clears it."""
    def runner(argv: list[str], stdin: str | None = None) -> int:
        return nsrun(pf_netns, *argv, stdin=stdin, check=False).returncode

    def lister(argv: list[str]) -> str:
        return nsrun(pf_netns, *argv, check=False).stdout

    for tool in ("iptables", "ip6tables"):
        nsrun(pf_netns, tool, "-w", "-N", "VCR-PF-W0")
        nsrun(pf_netns, tool, "-w", "-N", "VCR-PF")
        nsrun(pf_netns, tool, "-w", "-A", "VCR-PF", "-g", "VCR-PF-W0")
    pf = Prefilters(0, 1, runner=runner, lister=lister)
    pf.start()
    assert pf.not_before == 0.0  # a fresh chain: nothing stale
    assert pf.mark(KF) is None
    _wait_ready(pf, 1)
    pf.close()
    for port, pf_id in ((5555, 1), (5556, 9)):
        nsrun(pf_netns, "iptables", "-w", "-A", "OUTPUT", "-p", "udp", "--dport", str(port), "-j", "CONNMARK",
              "--set-xmark", f"0x{pf_id << PF_SHIFT:x}/0xff0000")
        nsrun(pf_netns, "iptables", "-w", "-A", "OUTPUT", "-p", "udp", "--dport", str(port), "-m", "connmark", "!",
              "--mark", "0/0xff0000", "-j", "VCR-PF")
        nsrun(pf_netns, "iptables", "-w", "-A", "OUTPUT", "-p", "udp", "--dport", str(port), "-j", "ACCEPT")
    script = ("import socket\n"
              "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
              "for d in (b'nothing', b'x uid=0(root) x', b'UID=0(ROOT)', b'zzz'):\n"
              "    s.sendto(d, ('127.0.0.1', 5555)); s.sendto(d, ('127.0.0.1', 5556))\n")
    nsrun(pf_netns, "python3", "-c", script)
    out = nsrun(pf_netns, "iptables", "-w", "-L", "OUTPUT", "-v", "-x", "-n").stdout
    queued = {int(line.split()[-1].split(":")[-1]): int(line.split()[0])
              for line in out.splitlines() if "ACCEPT" in line and "dpt:" in line}
    assert queued == {5555: 1, 5556: 4}, out  # the pattern is case-sensitive: one of four
    assert "VCR-PF-1" in nsrun(pf_netns, "ip6tables", "-w", "-S").stdout  # both families
