"""The NFQUEUE settings message (agent/dataplane/nfq.py), checked field by field against the kernel's layout."""
from __future__ import annotations

import socket
import struct

from agent.dataplane.nfq import NFQA_CFG_F_FAIL_OPEN, NFQA_CFG_F_GSO, config_message, netlink_error


def attrs(body: bytes) -> dict[int, bytes]:
    out, i = {}, 0
    while i < len(body):
        size, kind = struct.unpack_from("=HH", body, i)
        out[kind] = body[i + 4:i + size]
        i += (size + 3) & ~3
    return out


def test_config_message_layout():
    msg = config_message(7, gso=True, fail_open=True)
    length, kind, flags, seq, pid = struct.unpack_from("=IHHII", msg)
    assert length == len(msg) and kind == (3 << 8) | 2  # NFNL_SUBSYS_QUEUE, NFQNL_MSG_CONFIG
    assert flags == 0x1 | 0x4 and pid == 0  # a request, acknowledged
    family, version, res_id = struct.unpack_from("!BBH", msg, 16)
    assert (family, version, res_id) == (socket.AF_UNSPEC, 0, 7)  # the queue number, big-endian
    a = attrs(msg[20:])
    assert a[2] == struct.pack("!IB", 0xFFFF, 2)  # NFQA_CFG_PARAMS: copy range, NFQNL_COPY_PACKET
    assert a[4] == struct.pack("!I", NFQA_CFG_F_GSO | NFQA_CFG_F_FAIL_OPEN)  # mask: both flags are ours
    assert a[5] == struct.pack("!I", NFQA_CFG_F_GSO | NFQA_CFG_F_FAIL_OPEN)


def test_fail_closed_clears_fail_open():
    a = attrs(config_message(0, gso=True, fail_open=False)[20:])
    assert a[4] == struct.pack("!I", NFQA_CFG_F_GSO | NFQA_CFG_F_FAIL_OPEN)  # cleared, not left as it was
    assert a[5] == struct.pack("!I", NFQA_CFG_F_GSO)


def test_netlink_error_parsing():
    ack = struct.pack("=IHHIIi", 36, 2, 0, 1, 0, 0) + bytes(16)
    refused = struct.pack("=IHHIIi", 36, 2, 0, 1, 0, -22) + bytes(16)
    packet = struct.pack("=IHHII", 40, (3 << 8) | 0, 0, 0, 0) + bytes(24)  # NFQNL_MSG_PACKET
    assert netlink_error(ack) == 0 and netlink_error(refused) == 22 and netlink_error(packet) is None
    assert netlink_error(b"short") is None
