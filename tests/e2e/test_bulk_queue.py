"""A connection past ``dataplane.bulk_queue_kib`` goes to its worker's second queue (issue 15:
new connections are not kept waiting behind downloads), and is still inspected there.

A real agent on the lab bridge (two workers, each with its two queues) with the IPS on one rule.
A LAN client downloads 200 KB, well past the threshold, then sends a harmless line and then an
attack: the download arrives whole, the harmless line is answered, the attack (which reaches the
worker through the bulk queue) is blocked and alarmed. The kernel's counters of the bulk queue's
lines and the workers' own count show that the later packets took that queue."""
from __future__ import annotations

import sys
import subprocess
import time
from pathlib import Path

import pytest

from lab.agentrun import LabAgent
from lab.bench.dataplane import FLOW_HOSTS, FLOW_PORT_BASE, LOAD, SINK_PORT
from lab.bench.host import NFQUEUE_PROC, helper_argv, helper_env, parse_nfqueue
from lab.netns import Lab
from tests.e2e.test_dataplane_acks import CLIENT, SERVER

pytestmark = pytest.mark.lab

PORT = 8097
ATTACK_SID = 9215011
ATTACK_RULE = (f'drop tcp $HOME_NET any -> $EXTERNAL_NET {PORT} (msg:"VCR TEST attack after a download"; '
               f'flow:established,to_server; content:"EVIL-AFTER-BULK"; sid:{ATTACK_SID}; rev:1;)\n')


def bulk_queued(lab: Lab) -> dict[int, int]:
    """Packets each bulk-queue line of VCR-FWD sent to its queue (iptables counters)."""
    out = lab.exec("utm", ["iptables", "-w", "-nvxL", "VCR-FWD"]).stdout
    return {int(line.split("NFQUEUE num ")[1].split()[0]): int(line.split()[0])
            for line in out.splitlines() if "connbytes 65536 " in line and "NFQUEUE num" in line}


def talk(lab: Lab, line: str) -> str:
    """Download 200 KB, then send ``line``: "answered" or "cut" (see CLIENT)."""
    proc = lab.popen("pc1", [sys.executable, "-c", CLIENT, lab.hosts["web"].ipv4, str(PORT), line], name="bulk-client",
                     stdout=subprocess.PIPE, text=True)
    proc.stdout.readline()  # its port
    answer = proc.stdout.readline().strip()
    proc.wait(30)
    return answer


def start_agent(lab: Lab, tmp_path: Path, workers: int, **overrides: object) -> LabAgent:
    lab.exec("utm", ["sysctl", "-w", "net.netfilter.nf_conntrack_acct=1"])
    lab.popen("web", [sys.executable, "-c", SERVER, str(PORT)], name="bulk-server")
    rules = tmp_path / "test.rules"
    rules.write_text(ATTACK_RULE)
    agent = LabAgent(lab, tmp_path / "agent", overrides={
        "engines.webfilter.enabled": False, "engines.atp.enabled": False, "dataplane.workers": workers,
        "dataplane.bulk_queue_kib": 64, "engines.ips.rule_files": [str(rules)], **overrides})
    agent.bridge_up()
    return agent


def test_a_connection_past_the_threshold_takes_the_bulk_queue_and_is_still_inspected(office: Lab, tmp_path: Path):
    agent = start_agent(office, tmp_path, workers=2)
    try:
        agent.start(timeout=60)
        assert office.wait_tcp("pc2", office.hosts["web"].ipv4, PORT, 15)
        before = bulk_queued(office)
        assert sorted(before) == [2, 3]  # worker i's bulk queue: queue_base + workers + i
        # the whole download arrives (the client reads 200 KB before it sends), and the line after it
        assert talk(office, "harmless") == "answered"
        assert talk(office, "EVIL-AFTER-BULK") == "cut"
        assert agent.wait_alarm(lambda r: r.get("alert", {}).get("signature_id") == ATTACK_SID, timeout=15)
        queued = sum(bulk_queued(office).values()) - sum(before.values())
        # each connection's packets past 64 KiB: the download's later segments (GSO packets of up to
        # 64 KiB), the client's two lines and their answers (its empty ACKs stay in the kernel)
        assert queued >= 2 * 4, (before, queued)
        # ... and the workers took them from their bulk queues
        assert agent.wait_counter("worker", "bulk_packets", queued, timeout=10) >= queued
        # one bulk packet per connection waited for the whole first queue: the workers read each
        # queued packet's connection from the kernel's message (agent/dataplane/nfq.py)
        assert agent.counter("worker", "bulk_connections") == 2, agent.counter("worker", "bulk_connections")
        time.sleep(0.1)
        assert agent.counter("worker", "callback_errors") == 0
    finally:
        agent.kill()
        agent.bridge_down()


FLOOD_FLOWS = 900_000
FLOOD_RATE = 60_000  # new flows per second: several times what one worker inspects


def test_a_flood_of_new_flows_does_not_starve_the_bulk_queue(office: Lab, tmp_path: Path):
    """More new flows than the worker can take keep its first queue from ever emptying. A download
    on its bulk queue still moves on (the worker's rounds leave the bulk queue its share) and is
    still inspected, and the worker still reports its counters (it leaves its queues each round)."""
    ct_max = office.exec("utm", ["sysctl", "-n", "net.netfilter.nf_conntrack_max"]).stdout.strip()
    office.exec("utm", ["sysctl", "-q", "-w", "net.netfilter.nf_conntrack_max=1048576"])
    # a shorter queue than the default 4,096: the download's first 64 KiB waits less behind the flood
    agent = start_agent(office, tmp_path, workers=1, **{"dataplane.queue_maxlen": 1024})
    try:
        agent.start(timeout=60)
        assert office.wait_tcp("pc2", office.hosts["web"].ipv4, PORT, 15)
        hosts = FLOW_HOSTS[:40]
        queued_before = parse_nfqueue(office.exec("utm", ["cat", NFQUEUE_PROC]).stdout)[0].id_sequence
        flood = office.popen("pc2", helper_argv(
            LOAD, "udp-flows", "--dst", office.hosts["web"].ipv4, "--dport", str(SINK_PORT), "--first", str(hosts[0]),
            "--last", str(hosts[-1]), "--ports", str(FLOOD_FLOWS // len(hosts)), "--base-port", str(FLOW_PORT_BASE),
            "--rate", str(FLOOD_RATE)), name="flood", env=helper_env(), stdout=subprocess.PIPE, text=True)
        time.sleep(0.5)
        stats_before = agent.counter("worker", "bulk_packets")
        start = time.monotonic()
        answer = talk(office, "EVIL-AFTER-BULK")
        took, flooding = time.monotonic() - start, flood.poll() is None
        print(f"download and attack: {took:.1f} s while flooding", flush=True)
        assert answer == "cut"  # inspected on the bulk queue, not passed by a full one
        assert flooding, f"the download waited for the flood to end ({took:.1f} s)"
        # the worker's counters came through during the flood
        assert agent.wait_counter("worker", "bulk_packets", stats_before + 8, timeout=2) >= stats_before + 8
        flood.wait(FLOOD_FLOWS / FLOOD_RATE * 4 + 30)
        assert agent.wait_alarm(lambda r: r.get("alert", {}).get("signature_id") == ATTACK_SID, timeout=15)
        # the flood did outrun the worker: its first queue was full, and fail-open passed part of
        # the flood without queueing it (the kernel numbers only the packets it queued)
        queued = parse_nfqueue(office.exec("utm", ["cat", NFQUEUE_PROC]).stdout)[0].id_sequence - queued_before
        print(f"flood: {flood.stdout.read().strip()}; first queue took {queued:,}", flush=True)
        assert queued < 0.9 * FLOOD_FLOWS, queued
        assert agent.counter("worker", "callback_errors") == 0
    finally:
        agent.kill()
        agent.bridge_down()
        office.exec("utm", ["sysctl", "-q", "-w", f"net.netfilter.nf_conntrack_max={ct_max}"])
