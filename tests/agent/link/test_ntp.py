"""The SNTP client: timestamp conversion across eras, reply checks, offset/delay, a real exchange."""
from __future__ import annotations

import socket
import struct
import threading

import pytest

from agent.link import ntp
def test_timestamp_round_trip_and_eras():
    for t in (0.0, 1_795_000_000.25, 2_085_978_495.5, 2_085_978_497.0, 2_500_000_000.75):  # 2036-02-07 06:28:16 is the wrap
        assert ntp.from_ntp(ntp.to_ntp(t), pivot=t) == pytest.approx(t, abs=1e-6)
    after_wrap = 2_085_978_496 + 100  # seconds field wrapped to 100 in era 1
    assert ntp.to_ntp(after_wrap) >> 32 == 100
    assert ntp.from_ntp(ntp.to_ntp(after_wrap), pivot=after_wrap - 1000) == pytest.approx(after_wrap)


def _reply(t1: float, server_now: float, *, leap: int = 0, stratum: int = 2, mode: int = 4, origin: int | None = None,
           ref: bytes = b"\xc6\x33\x64\x7b") -> tuple[bytes, int]:
    sent = ntp.to_ntp(t1)
    pkt = ntp.PACKET.pack((leap << 6) | (4 << 3) | mode, stratum, 4, -20, 0, 0, ref, ntp.to_ntp(server_now),
                          sent if origin is None else origin, ntp.to_ntp(server_now), ntp.to_ntp(server_now + 0.001))
    return pkt, sent


def test_offset_and_delay():
    # local clock 10 s behind the server; 20 ms each way; the server takes 1 ms
    t1 = 1_795_000_000.0
    data, sent = _reply(t1, t1 + 10 + 0.020)
    r = ntp.parse_reply(data, sent=sent, t1=t1, t4=t1 + 0.041, server="192.0.2.123")
    assert r.offset == pytest.approx(10.0, abs=1e-3)
    assert r.delay == pytest.approx(0.040, abs=1e-3)
    assert r.stratum == 2 and r.ref_id == "198.51.100.123"
    assert r.as_dict()["offset_s"] == pytest.approx(10.0, abs=1e-3)


@pytest.mark.parametrize("kw, message", [
    ({"mode": 3}, "mode"),
    ({"origin": 12345}, "origin"),
    ({"stratum": 0, "ref": b"RATE"}, "kiss-o'-death from server: RATE"),
    ({"leap": 3}, "not synchronized"),
])
def test_bad_replies_are_refused(kw, message):
    t1 = 1_795_000_000.0
    data, sent = _reply(t1, t1, **kw)
    with pytest.raises(ntp.NtpError, match=message):
        ntp.parse_reply(data, sent=sent, t1=t1, t4=t1)
    with pytest.raises(ntp.NtpError, match="short"):
        ntp.parse_reply(data[:40], sent=sent, t1=t1, t4=t1)


def test_request_shape():
    req = ntp.build_request(1_795_000_000.5)
    assert len(req) == 48 and req[0] == 0x23  # LI 0, version 4, mode 3
    assert struct.unpack_from("!Q", req, 40)[0] == ntp.to_ntp(1_795_000_000.5)
    assert ntp.make_reply(b"\x24" + bytes(47), now=0) is None  # only client requests get answers


def test_real_exchange_with_the_lab_responder():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    stop = threading.Event()

    def serve():
        sock.settimeout(0.1)
        while not stop.is_set():
            try:
                data, peer = sock.recvfrom(512)
            except socket.timeout:
                continue
            import time

            sock.sendto(ntp.make_reply(data, now=time.time(), offset=-400.0), peer)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        # the estimate is off by at most half the round trip (NTP's bound), however slow the machine
        r = ntp.query("127.0.0.1", port=port, timeout=2)
        assert r.delay >= 0 and abs(r.offset - -400.0) <= r.delay / 2 + 1e-3
        skewed = ntp.query("127.0.0.1", port=port, timeout=2, clock=lambda: __import__("time").time() + 100)
        assert abs(skewed.offset - -500.0) <= skewed.delay / 2 + 1e-3
    finally:
        stop.set()
        t.join()
        sock.close()
    with pytest.raises(ntp.NtpError, match="no NTP answer|failed"):
        ntp.query("127.0.0.1", port=port, timeout=0.3)
