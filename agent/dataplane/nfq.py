"""NFQUEUE settings that NetfilterQueue 1.1.0 does not offer, sent on its own netlink socket.

* ``NFQA_CFG_F_GSO``: a GSO packet (up to 64 KiB of one TCP flow, as veth and most NICs hand
  them to the bridge) is queued whole. Without it the kernel cuts it into MTU-sized segments
  first, and each costs the worker a callback and a verdict.
* ``NFQA_CFG_F_FAIL_OPEN`` (fail-open mode only): when the queue is full, packets pass instead of
  being dropped, as ``--queue-bypass`` does when no worker listens.
* Copy range 64 KiB (``NFQA_CFG_PARAMS``): NetfilterQueue caps it at about 4 KiB, less than one
  GSO packet.

The settings go out on the queue's own socket (the kernel only takes them from the socket bound
to the queue). ``QueueSocket`` then stands in for that socket in ``NetfilterQueue.run_socket``:
it receives up to 64 KiB + headers per message (the library's own loop reads 4 KiB), takes
the kernel's answer to the settings out of the stream of packets, and ends the library's loop
after a quota of packets (``QueueSocket.quota``), so that a queue that never empties cannot keep
the worker from its other queue and its other work.
"""
from __future__ import annotations

import errno
import logging
import os
import socket
import struct
from typing import Callable

from agent.dataplane.nflog import attr, parse_attrs

log = logging.getLogger(__name__)

NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_CONFIG = 2
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLMSG_ERROR = 2
NFQA_CFG_PARAMS = 2
NFQA_CFG_MASK = 4
NFQA_CFG_FLAGS = 5
NFQA_CFG_F_FAIL_OPEN = 1 << 0
NFQA_CFG_F_GSO = 1 << 2
NFQA_PAYLOAD = 10
IP_HEADERS_MAX = 64  # an IPv4 header with options (60 bytes) and the ports after it; IPv6: 40 and 4
NFQNL_COPY_PACKET = 2
COPY_RANGE = 0xFFFF
RECV_SIZE = 0x10000 + 4096  # one whole packet plus its netlink and nfqueue headers
RCVBUF = 16 << 20  # room for a burst of large packets while the worker is busy
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)


def config_message(queue_num: int, *, gso: bool, fail_open: bool, copy_range: int = COPY_RANGE, seq: int = 1) -> bytes:
    """The NFQNL_MSG_CONFIG request: copy mode and range, and the GSO / fail-open flags (acked)."""
    flags = (NFQA_CFG_F_GSO if gso else 0) | (NFQA_CFG_F_FAIL_OPEN if fail_open else 0)
    body = struct.pack("!BBH", socket.AF_UNSPEC, 0, queue_num)  # nfgenmsg: family, version, res_id
    body += attr(NFQA_CFG_PARAMS, struct.pack("!IB", copy_range, NFQNL_COPY_PACKET))
    body += attr(NFQA_CFG_MASK, struct.pack("!I", NFQA_CFG_F_GSO | NFQA_CFG_F_FAIL_OPEN))
    body += attr(NFQA_CFG_FLAGS, struct.pack("!I", flags))
    kind = (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_CONFIG
    return struct.pack("=IHHII", 16 + len(body), kind, NLM_F_REQUEST | NLM_F_ACK, seq, 0) + body


def netlink_error(data: bytes) -> int | None:
    """The errno of an NLMSG_ERROR message (0: an acknowledgement), or None for anything else."""
    if len(data) < 20 or struct.unpack_from("=H", data, 4)[0] != NLMSG_ERROR:
        return None
    return -struct.unpack_from("=i", data, 16)[0]


def packet_connection(message: bytes) -> tuple | None:
    """The connection of the packet in a queued-packet message: ``(protocol, one end, other end)``,
    the ends ``(address, port)`` in a fixed order so that both directions give the same key; None
    when the message holds no IPv4 or IPv6 packet. Ports are 0 for a non-first fragment and for
    protocols without ports (and behind IPv6 extension headers: such a key is only coarser)."""
    if len(message) < 20:
        return None
    end = min(len(message), struct.unpack_from("=I", message, 0)[0])
    # nlmsghdr (16 bytes) and nfgenmsg (4), then the attributes; a view, so the packet is not copied
    attrs = parse_attrs(memoryview(message), 20, end)
    payload = attrs.get(NFQA_PAYLOAD) if attrs else None
    return None if payload is None else _ip_connection(bytes(payload[:IP_HEADERS_MAX]))


def _ip_connection(ip: bytes) -> tuple | None:
    if len(ip) >= 20 and ip[0] >> 4 == 4:
        proto, src, dst, l4 = ip[9], ip[12:16], ip[16:20], (ip[0] & 0x0F) * 4
        later_fragment = struct.unpack_from("!H", ip, 6)[0] & 0x1FFF
    elif len(ip) >= 40 and ip[0] >> 4 == 6:
        proto, src, dst, l4, later_fragment = ip[6], ip[8:24], ip[24:40], 40, 0
    else:
        return None
    sport = dport = 0
    if proto in (6, 17, 132) and not later_fragment and len(ip) >= l4 + 4:
        sport, dport = struct.unpack_from("!HH", ip, l4)
    a, b = (src, sport), (dst, dport)
    return (proto, a, b) if a <= b else (proto, b, a)


class QueueSocket:
    """The worker's end of its queue: settings out, packets in (for ``NetfilterQueue.run_socket``)."""

    def __init__(self, fd: int, queue_num: int, before: Callable[[bytes], None] | None = None) -> None:
        self.queue_num = queue_num
        # Called with each packet's message as it is received, before it is handed on: the bulk
        # queue's socket serves the worker's first queue there (agent/dataplane/worker.py)
        self.before = before
        # Packets still to hand on before ``recv`` answers "nothing waiting" (which ends the
        # library's loop); None: no limit, every waiting packet
        self.quota: int | None = None
        self.sock = socket.socket(fileno=os.dup(fd))  # the same netlink socket, as bound to the queue
        self.sock.setblocking(False)
        self.settings: dict[str, bool] = {}
        self.answer: int | None = None  # errno of the kernel's answer to the settings (0: taken)
        self.messages = 0  # packets handed on so far: the worker's busy-poll sees whether one came

    def configure(self, *, gso: bool = True, fail_open: bool = True) -> None:
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RCVBUF)
        except OSError as exc:
            log.warning("queue %d: receive buffer not enlarged: %s", self.queue_num, exc)
        self.settings = {"gso": gso, "fail_open": fail_open}
        self.sock.send(config_message(self.queue_num, gso=gso, fail_open=fail_open))

    def recv(self, _size: int) -> bytes:
        """One netlink message; the answer to ``configure`` is noted, not passed on. BlockingIOError
        (EAGAIN, which ends ``run_socket``) when nothing is waiting or the quota is spent."""
        while True:
            if self.quota is not None and self.quota <= 0:
                raise BlockingIOError(errno.EAGAIN, "queue quota spent")
            data = self.sock.recv(RECV_SIZE)  # BlockingIOError (EAGAIN) when nothing is waiting
            err = netlink_error(data)
            if err is None:
                self.messages += 1
                if self.quota is not None:
                    self.quota -= 1
                if self.before is not None:
                    self.before(data)
                return data
            self.answer = err
            if err:
                log.warning("queue %d: the kernel refused the queue settings %s: %s (packets are still "
                            "inspected, cut into segments)", self.queue_num, self.settings, os.strerror(err))
            else:
                log.info("queue %d: settings taken: %s, copy range %d", self.queue_num, self.settings, COPY_RANGE)

    def close(self) -> None:
        self.sock.close()

