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


def test_a_connection_past_the_threshold_takes_the_bulk_queue_and_is_still_inspected(office: Lab, tmp_path: Path):
    office.exec("utm", ["sysctl", "-w", "net.netfilter.nf_conntrack_acct=1"])
    office.popen("web", [sys.executable, "-c", SERVER, str(PORT)], name="bulk-server")
    rules = tmp_path / "test.rules"
    rules.write_text(ATTACK_RULE)
    agent = LabAgent(office, tmp_path / "agent", overrides={
        "engines.webfilter.enabled": False, "engines.atp.enabled": False, "dataplane.workers": 2,
        "dataplane.bulk_queue_kib": 64, "engines.ips.rule_files": [str(rules)]})
    agent.bridge_up()
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
        time.sleep(0.1)
        assert agent.counter("worker", "callback_errors") == 0
    finally:
        agent.kill()
        agent.bridge_down()
