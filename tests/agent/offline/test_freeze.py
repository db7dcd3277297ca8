"""`vcr-agent pcap` freezes what its pipeline loaded (OfflineOptions.freeze), as the daemon does:
the compiled rules stay out of the collector's full scans; a library call of run_pcap does not."""
from __future__ import annotations

import gc
import io
from pathlib import Path

from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.utils import wrpcap

from agent.offline import replay as offline


def test_run_pcap_freezes_the_loaded_pipeline_only_when_asked(tmp_path: Path) -> None:
    pcap, rules = tmp_path / "u.pcap", tmp_path / "u.rules"
    wrpcap(str(pcap), [Ether() / IP(src="192.168.10.5", dst="198.51.100.7") / UDP(sport=5000, dport=53) / b"x"])
    rules.write_text('alert udp any any -> any 53 (msg:"u"; content:"x"; sid:1; rev:1;)\n')
    cfg = offline.offline_config(None, [], rule_files=[str(rules)])
    gc.unfreeze()
    try:
        offline.run_pcap(offline.OfflineOptions(pcap=pcap), cfg, out=io.StringIO())
        assert gc.get_freeze_count() == 0
        out = io.StringIO()
        summary = offline.run_pcap(offline.OfflineOptions(pcap=pcap, freeze=True), cfg, out=out)
        assert gc.get_freeze_count() > 0
        assert summary["packets"] == 1 and '"signature_id":1' in out.getvalue()
    finally:
        gc.unfreeze()
