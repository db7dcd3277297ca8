"""lab/bench/offline.py: finding ET Open, the payloads of a capture, and the child's command line."""
from __future__ import annotations

import random
import socket
import subprocess
import sys
from pathlib import Path

from lab.bench.capture import Capture, TcpConversation
from lab.bench.host import REPO
from lab.bench.offline import capture_payloads, et_open_files


def test_et_open_files(tmp_path: Path) -> None:
    (tmp_path / "b.rules").write_text("")
    (tmp_path / "a.rules").write_text("")
    assert et_open_files(tmp_path) == ([tmp_path / "a.rules", tmp_path / "b.rules"], None)  # no classification
    (tmp_path / "classification.config").write_text("")
    assert et_open_files(tmp_path)[1] == tmp_path / "classification.config"
    assert et_open_files(tmp_path / "nowhere") == ([], None)


def test_capture_payloads(tmp_path: Path) -> None:
    cap = Capture()
    conv = TcpConversation(cap, (socket.inet_aton("192.168.10.10"), 40_000), (socket.inet_aton("198.51.100.20"), 80),
                           1.0, 0.01, random.Random(1))
    conv.open()
    conv.send(True, b"GET / HTTP/1.1\r\n\r\n")
    conv.close()
    cap.udp(2.0, (socket.inet_aton("192.168.10.10"), 5000), (socket.inet_aton("198.51.100.53"), 53), b"q")
    pcap = tmp_path / "t.pcap"
    frames, size = cap.write(pcap)
    assert capture_payloads(pcap) == ([b"GET / HTTP/1.1\r\n\r\n", b"q"], size)


def test_the_child_runs_as_a_module() -> None:
    res = subprocess.run([sys.executable, "-m", "lab.bench.offline", "--help"], cwd=REPO, capture_output=True,
                         text=True, timeout=60, check=False)
    assert res.returncode == 0 and "--pcap" in res.stdout and "--eve" in res.stdout
