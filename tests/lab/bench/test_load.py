"""lab/bench/load.py: the DNS client's answer check, and every role the benches spawn parses as they spawn it."""
from __future__ import annotations

import socket
import subprocess
import sys

from filters.app.dns import build_query, build_response, nxdomain
from lab.bench.host import REPO
from lab.bench.load import _parser, answer_problem


def test_answer_check():
    query = build_query("abc.example.com", txid=4242)
    ok = build_response(query, answers=[(1, socket.inet_aton("198.51.100.10"))])
    assert answer_problem(ok, 4242, "198.51.100.10") == ""
    assert answer_problem(ok, 4243, "198.51.100.10") == "not the answer"
    assert answer_problem(ok, 4242, "192.0.2.2") == "answered 198.51.100.10"
    assert answer_problem(nxdomain(query), 4242, "198.51.100.10") == "rcode 3"
    assert answer_problem(build_response(query), 4242, "198.51.100.10") == "no A record"


def test_roles_parse() -> None:
    args = _parser().parse_args(["udp-flows", "--dst", "198.51.100.10", "--dport", "9", "--first", "100", "--last",
                                 "199", "--ports", "1000", "--base-port", "20000", "--rate", "4000"])
    assert (args.role, args.first, args.last, args.rate) == ("udp-flows", 100, 199, 4000.0)
    args = _parser().parse_args(["dns-client", "--server", "198.51.100.53", "--port", "53", "--names", "n.txt",
                                 "--first-port", "20000", "--expect", "198.51.100.10", "--warmup", "20"])
    assert (args.role, args.first_port, args.warmup) == ("dns-client", 20000, 20)
    res = subprocess.run([sys.executable, "-m", "lab.bench.load", "--help"], cwd=REPO, capture_output=True,
                         text=True, timeout=60, check=False)
    assert res.returncode == 0
    for role in ("http-load", "serve-close", "tcp-rr", "udp-flows", "dns-server", "dns-client", "https-load"):
        assert role in res.stdout
