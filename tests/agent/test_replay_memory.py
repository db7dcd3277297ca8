"""``vcr-agent pcap`` on a capture shaped like the reviewer's memory amplification (connections of
pipelined gzip POSTs, 100 KiB inflated each): the peak of traced memory stays bounded (it went
from 50 MiB to 1.1 GiB RSS before the bodies were released once inspected)."""
from __future__ import annotations

import gzip
from pathlib import Path

from agent.offline import replay as offline
from tests.agent.rawpcap import CLIENT, PCAP_HEADER, SERVER, ip_tcp, record, replay_traced

MiB = 1 << 20
GZ = gzip.compress(b"A" * (100 * 1024), 9)


def _pcap(path: Path, conns: int, posts: int) -> int:
    """A classic pcap (Ethernet/IPv4/TCP, checksums zero) written directly: fast, no scapy."""
    cli, srv = CLIENT, SERVER
    frames: list[bytes] = []
    for c in range(conns):
        sport = 40000 + c
        cseq, sseq = 1000, 5000
        frames.append(ip_tcp(cli, srv, sport, 80, cseq, 0, 0x02, b""))
        frames.append(ip_tcp(srv, cli, 80, sport, sseq, cseq + 1, 0x12, b""))
        cseq, sseq = cseq + 1, sseq + 1
        frames.append(ip_tcp(cli, srv, sport, 80, cseq, sseq, 0x10, b""))
        wire = b"".join(b"POST /u%d HTTP/1.1\r\nHost: a\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n"
                        % (i, len(GZ)) + GZ for i in range(posts))
        for i in range(0, len(wire), 1448):
            piece = wire[i:i + 1448]
            frames.append(ip_tcp(cli, srv, sport, 80, cseq, sseq, 0x18, piece))
            cseq += len(piece)
        frames.append(ip_tcp(srv, cli, 80, sport, sseq, cseq, 0x10, b""))
    out = bytearray(PCAP_HEADER)
    for n, f in enumerate(frames):
        out += record(n, f)
    path.write_bytes(bytes(out))
    return len(out)


def test_replay_of_pipelined_gzip_posts_stays_bounded(tmp_path: Path) -> None:
    pcap = tmp_path / "amplify.pcap"
    size = _pcap(pcap, conns=10, posts=300)
    rules = tmp_path / "http.rules"
    rules.write_text('alert http any any -> any any (msg:"body"; http.request_body; content:"NEVER"; sid:1; rev:1;)\n')
    cfg = offline.offline_config(None, [], rule_files=[str(rules)])
    result, _, peak = replay_traced(pcap, cfg)
    assert result["packets"] > 10 * 300 * 133 // 1448
    http = result["stats"]["pipeline"]
    assert result["stats"]["flows"]["flows_created"] == 10
    # 10 x 300 x 100 KiB = 293 MiB of decoded bodies went through; measured peak ~6 MiB
    assert peak < 32 * MiB, (peak, size, http)
