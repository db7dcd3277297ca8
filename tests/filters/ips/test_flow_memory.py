"""Python heap per flow through the pipeline with the IPS: the shape of `make bench`'s memory
scenario (one UDP datagram per flow, a hundred clients, one server), small enough for a test."""
from __future__ import annotations

import gc
import tracemalloc
from collections import Counter
from pathlib import Path

from filters.flow import FlowTable
from filters.ips.engine import Ips
from filters.packet import PROTO_UDP
from filters.pipeline import Pipeline
from tests.filters.factories import tpacket

RULES = [
    'alert udp any any -> any 9 (msg:"bench flow"; content:"bench flow"; sid:1; rev:1;)',  # a prefilter hit
    'alert udp any any -> any 9 (msg:"no fast pattern"; dsize:>1000; sid:2; rev:1;)',  # evaluated, no match
    'alert ip 203.0.113.0/24 any -> any any (msg:"ip-only"; sid:3; rev:1;)',  # judged once per direction
]
FLOWS = 5000


def test_one_packet_udp_flows_cost_under_a_kilobyte(tmp_path: Path) -> None:
    """Measured 881 bytes per flow (921 with ET Open), 1,626 (1,738) before the app layer's and the
    IPS's states were slimmed and made slots of the flow: no engine_data dict, no reply stream, no
    list or dict per direction, one bytes object per address. The 100,000 flows of `make bench`
    cost a worker pair that many times over (agent PSS 421 -> 338 MiB)."""
    path = tmp_path / "bench.rules"
    path.write_text("\n".join(RULES) + "\n")
    ips = Ips()
    ips.reload([path])
    sids: Counter[int] = Counter()  # not the records themselves: they would count as the flows' memory

    def emit(rec: dict) -> None:
        if rec.get("event_type") == "alert":
            sids[rec["alert"]["signature_id"]] += 1

    pipe = Pipeline([ips], FlowTable(max_flows=FLOWS), emit=emit)
    pkts = [tpacket(proto=PROTO_UDP, src=f"192.0.2.{100 + i % 100}", sport=20_000 + i // 100, dport=9,
                    payload=b"python -m lab bench flow", ts=1.0 + i * 1e-5) for i in range(FLOWS)]
    pipe.process(pkts[0], object())  # the caches every flow shares (header classes, IP-only answers)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for pkt in pkts[1:]:
            pipe.process(pkt, object())
        gc.collect()
        used = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    flows = list(pipe.flows)
    assert len(flows) == FLOWS
    assert sids == {1: FLOWS}  # every flow's datagram, once
    for flow in flows[:10]:
        assert flow.app_state is not None and flow.ips_state is not None
        assert flow._engine_data is None and flow._toclient is None
    per_flow = used / (FLOWS - 1)
    print(f"{per_flow:.0f} bytes of Python heap per flow")
    assert per_flow < 1000
