"""A 20 MB download through the pipeline with the antivirus on (a real private clamd, av.max_size
raised to 32 MiB; IPS body limit and stream depth as shipped): scanned whole, its signature in the
last bytes found, and the worker's memory stays bounded (the file is streamed to clamd, never kept
whole in Python: docs/memory.md)."""
from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from agent.offline import replay as offline
from tests.agent.rawpcap import CLIENT, PCAP_HEADER, SERVER, ip_tcp, record, replay_traced

MiB = 1 << 20
MARKER = b"VCR-AV-TEST-MARKER-7f3a9c"  # VCR.Test.BodyMarker of config/av/vcr-starter.ndb


def _pcap(path: Path, body: bytes) -> None:
    """One HTTP download as a classic pcap written directly (fast, no scapy; checksums zero)."""
    cli, srv, sport = CLIENT, SERVER, 40100
    cseq, sseq = 1000, 5000
    req = b"GET /big.iso HTTP/1.1\r\nHost: dl.example\r\n\r\n"
    frames = [ip_tcp(cli, srv, sport, 80, cseq, 0, 0x02, b""), ip_tcp(srv, cli, 80, sport, sseq, cseq + 1, 0x12, b"")]
    cseq, sseq = cseq + 1, sseq + 1
    frames.append(ip_tcp(cli, srv, sport, 80, cseq, sseq, 0x18, req))
    cseq += len(req)
    wire = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    with path.open("wb") as fh:
        fh.write(PCAP_HEADER)
        n = 0

        def put(f: bytes) -> None:
            nonlocal n
            fh.write(record(n, f))
            n += 1

        for f in frames:
            put(f)
        for i in range(0, len(wire), 1448):
            piece = wire[i:i + 1448]
            put(ip_tcp(srv, cli, 80, sport, sseq, cseq, 0x18, piece))
            sseq += len(piece)
        put(ip_tcp(srv, cli, 80, sport, sseq, cseq, 0x11, b""))


def test_20mb_download_through_the_antivirus_is_scanned_whole_in_bounded_memory(tmp_path: Path, clamd: Any) -> None:
    body = random.Random(20).randbytes(20 * MiB) + MARKER
    pcap = tmp_path / "big.pcap"
    _pcap(pcap, body)
    del body
    cfg = offline.offline_config(None, [], clamd=clamd.socket)
    cfg.engines["av"] = {**cfg.engines["av"], "max_size": 32 * MiB}
    assert cfg.app_layer.http.response_body_limit == 100 * 1024  # the IPS's limit, as shipped
    result, eve, peak = replay_traced(pcap, cfg)
    recs = [json.loads(line) for line in eve.splitlines()]
    alerts = [r for r in recs if r["event_type"] == "alert" and "av" in r]
    assert len(alerts) == 1 and alerts[0]["av"]["virus"].startswith("VCR.Test.BodyMarker"), alerts
    assert alerts[0]["fileinfo"]["size"] == 20 * MiB + len(MARKER)
    assert result["stats"]["pipeline"].get("memcap.cut", 0) == 0
    assert result["stats"]["av"]["stream_verdicts"] == 1  # clamd had the file while it arrived
    print(f"traced peak {peak / MiB:.1f} MiB for a {len(MARKER) + 20 * MiB} byte download")
    # the worker's budget (dataplane.flows.memcap) is 128 MiB; the file is 20 MiB and never kept whole
    assert peak < 8 * MiB, peak  # measured 1.3 MiB
