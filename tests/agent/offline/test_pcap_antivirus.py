"""``vcr-agent pcap -r FILE --clamd SOCKET``: the antivirus over a capture writes its alerts and the
fileinfo records (a real private clamd, the ``clamd`` fixture)."""
from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path
from typing import Any

from scapy.layers.inet import IP, TCP
from scapy.utils import wrpcap

from agent.cli import main

EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"


def http_download(sport: int, path: str, body: bytes, extra: bytes = b"", status: bytes = b"200 OK") -> list[Any]:
    c, s = "192.168.1.10", "203.0.113.80"
    req = f"GET {path} HTTP/1.1\r\nHost: dl.example\r\n\r\n".encode()
    head = b"HTTP/1.1 %s\r\nContent-Length: %d\r\n%s\r\n" % (status, len(body), extra)
    ci, si = 1000, 9000
    pkts = [IP(src=c, dst=s) / TCP(sport=sport, dport=80, flags="S", seq=ci),
            IP(src=s, dst=c) / TCP(sport=80, dport=sport, flags="SA", seq=si, ack=ci + 1),
            IP(src=c, dst=s) / TCP(sport=sport, dport=80, flags="A", seq=ci + 1, ack=si + 1),
            IP(src=c, dst=s) / TCP(sport=sport, dport=80, flags="PA", seq=ci + 1, ack=si + 1) / req]
    seq, data = si + 1, head + body
    for i in range(0, len(data), 1400):
        pkts.append(IP(src=s, dst=c) / TCP(sport=80, dport=sport, flags="PA", seq=seq, ack=ci + 1 + len(req)) / data[i:i + 1400])
        seq += len(data[i:i + 1400])
    pkts.append(IP(src=s, dst=c) / TCP(sport=80, dport=sport, flags="FA", seq=seq, ack=ci + 1 + len(req)))
    return pkts


def test_pcap_with_clamd_writes_antivirus_alerts_and_fileinfo(tmp_path: Path, clamd: Any):
    clam = Path("/usr/share/clamav-testfiles/clam.zip").read_bytes()
    clean = b"just a plain text file\n" * 100
    pkts = (http_download(40001, "/eicar.com", EICAR) + http_download(40002, "/clam.zip", clam)
            + http_download(40003, "/readme.txt", clean)
            + http_download(40004, "/e.gz", gzip.compress(EICAR), b"Content-Encoding: gzip\r\n"))
    wrpcap(str(tmp_path / "av.pcap"), pkts)
    rc = main(["pcap", "-r", str(tmp_path / "av.pcap"), "--clamd", clamd.socket, "-l", str(tmp_path / "log")])
    assert rc == 0
    recs = [json.loads(line) for line in (tmp_path / "log" / "eve.json").read_text().splitlines()]
    alerts = {r["fileinfo"]["filename"]: r for r in recs if r["event_type"] == "alert"}
    assert sorted(alerts) == ["clam.zip", "e.gz", "eicar.com"]
    assert alerts["eicar.com"]["av"]["virus"].startswith("Eicar-Test-Signature")
    assert alerts["clam.zip"]["av"]["virus"].startswith("VCR.Test.clam")
    assert alerts["clam.zip"]["fileinfo"]["magic"] == "Zip archive data"
    assert alerts["clam.zip"]["fileinfo"]["sha256"] == hashlib.sha256(clam).hexdigest()
    assert alerts["eicar.com"]["alert"]["action"] == "allowed"  # offline (no --simulate-ips) blocks nothing
    infos = {r["fileinfo"]["filename"]: r["fileinfo"] for r in recs if r["event_type"] == "fileinfo"}
    assert sorted(infos) == ["clam.zip", "e.gz", "eicar.com", "readme.txt"]
    assert infos["readme.txt"] == {"filename": "readme.txt", "magic": "ASCII text", "gaps": False, "state": "CLOSED",
                                   "sha256": hashlib.sha256(clean).hexdigest(), "stored": False, "size": len(clean),
                                   "tx_id": 0}


MARKER = b"VCR-AV-TEST-MARKER-7f3a9c"  # VCR.Test.BodyMarker of config/av/vcr-starter.ndb


def test_pcap_5mb_download_with_the_signature_at_its_end_is_detected_with_default_limits(tmp_path: Path, clamd: Any):
    """No body limit or stream depth raised by hand: a 5 MB download whose only signature is in
    its last bytes (50x the IPS body limit, 5x the stream depth) is scanned whole (av.max_size)."""
    import random

    rnd = random.Random(13)
    padded = rnd.randbytes(5 << 20) + MARKER + b"\n"
    clean = rnd.randbytes(3 << 20)
    pkts = http_download(40011, "/big.bin", padded) + http_download(40012, "/clean.bin", clean)
    wrpcap(str(tmp_path / "big.pcap"), pkts)
    rc = main(["pcap", "-r", str(tmp_path / "big.pcap"), "--clamd", clamd.socket, "-l", str(tmp_path / "log")])
    assert rc == 0
    recs = [json.loads(line) for line in (tmp_path / "log" / "eve.json").read_text().splitlines()]
    alerts = [r for r in recs if r["event_type"] == "alert" and "av" in r]
    assert len(alerts) == 1, alerts
    alert = alerts[0]
    assert alert["av"]["virus"].startswith("VCR.Test.BodyMarker")
    assert alert["fileinfo"]["filename"] == "big.bin"
    assert alert["fileinfo"]["size"] == len(padded)
    assert alert["fileinfo"]["sha256"] == hashlib.sha256(padded).hexdigest()
    assert alert["fileinfo"]["state"] == "CLOSED"
    infos = {r["fileinfo"]["filename"]: r["fileinfo"] for r in recs if r["event_type"] == "fileinfo"}
    assert infos["clean.bin"]["size"] == len(clean)  # scanned whole and clean: no alarm, no "too large"
    assert infos["clean.bin"]["sha256"] == hashlib.sha256(clean).hexdigest()


def test_pcap_range_response_past_the_body_limit_is_streamed_and_scanned(tmp_path: Path, clamd: Any):
    """A 206 range of 2 MiB (a download manager's piece) with the signature in its last bytes: what
    arrived is scanned whole (past the body limit), the alarm says which bytes were not."""
    import random

    piece = random.Random(7).randbytes(2 << 20) + MARKER
    total = 8 << 20
    rng = b"Content-Range: bytes 0-%d/%d\r\n" % (len(piece) - 1, total)
    wrpcap(str(tmp_path / "range.pcap"), http_download(40021, "/part.bin", piece, rng, b"206 Partial Content"))
    rc = main(["pcap", "-r", str(tmp_path / "range.pcap"), "--clamd", clamd.socket, "-l", str(tmp_path / "log")])
    assert rc == 0
    recs = [json.loads(line) for line in (tmp_path / "log" / "eve.json").read_text().splitlines()]
    (alert,) = [r for r in recs if r["event_type"] == "alert" and "av" in r]
    assert alert["av"]["virus"].startswith("VCR.Test.BodyMarker")
    assert alert["fileinfo"]["state"] == "TRUNCATED" and alert["fileinfo"]["size"] == len(piece)
    assert alert["av"]["not_scanned"] == "bytes %d-%d" % (len(piece), total - 1)
