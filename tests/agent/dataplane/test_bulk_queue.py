"""A worker's two queues (agent/dataplane/worker.py ``_run_queues``): the first queue is served
before each bulk packet, a packet that reached the first queue before a connection's first bulk
packet has its verdict first (a connection moving to the bulk queue keeps its order), and a first
queue that never empties neither starves the bulk queue nor keeps the worker in its queues.

The queues are datagram socket pairs standing in for the netlink sockets: the real QueueSocket
reads them, a stand-in for NetfilterQueue's ``run_socket`` loop hands each message to the
worker's callback, as the library does."""
from __future__ import annotations

import socket
import struct
from types import SimpleNamespace

from agent.dataplane.nfq import NFQA_PAYLOAD, QueueSocket, packet_connection
from agent.dataplane.worker import BULK_QUOTA, FIRST_QUOTA, Worker, queue_settings


class Queue:
    """One kernel queue: ``put`` enqueues a packet; ``run_socket`` is NetfilterQueue's loop."""

    def __init__(self, handled: list[bytes], during: dict[bytes, list[tuple["Queue", bytes]]]) -> None:
        self.kernel, self.user = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.kernel.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        self.handled, self.during = handled, during
        self.refill = 0  # a flood: each packet handed on is followed by a new one, this many times

    def put(self, packet: bytes) -> None:
        self.kernel.send(packet)

    def run_socket(self, qsock: QueueSocket) -> None:
        while True:
            try:
                packet = qsock.recv(65536)
            except BlockingIOError:
                return
            self.handled.append(packet)
            for queue, later in self.during.pop(packet, []):  # what arrives while this one is inspected
                queue.put(later)
            if self.refill > 0:
                self.refill -= 1
                self.put(b"flood-%d" % self.refill)


def worker(during: dict[bytes, list[tuple[Queue, bytes]]], maxlen: int = 4096) -> tuple[Worker, Queue, Queue, list[bytes]]:
    handled: list[bytes] = []
    first, bulk = Queue(handled, during), Queue(handled, during)
    w = Worker.__new__(Worker)  # the queues only: no pipeline
    w.cfg = SimpleNamespace(dataplane=SimpleNamespace(queue_maxlen=maxlen))
    w._bulk_conns, w.bulk_connections = {}, 0
    w.nfq, w.bulk_nfq = first, bulk
    w.qsock = QueueSocket(first.user.fileno(), 0)
    w.bulk_qsock = QueueSocket(bulk.user.fileno(), 2, before=w._before_bulk)
    return w, first, bulk, handled


def message(ip: bytes) -> bytes:
    """A queued-packet message as the kernel sends it: nlmsghdr, nfgenmsg, the packet header
    attribute (7 bytes, padded), the payload attribute (the packet)."""
    attrs = struct.pack("=HH", 11, 1) + b"\0" * 7 + b"\0"
    attrs += struct.pack("=HH", 4 + len(ip), NFQA_PAYLOAD) + ip + b"\0" * (-len(ip) % 4)
    return struct.pack("=IHHII", 20 + len(attrs), (3 << 8) | 0, 0, 0, 0) + struct.pack("!BBH", 2, 0, 0) + attrs


def tcp4(src: str, sport: int, dst: str, dport: int, data: bytes = b"") -> bytes:
    tcp = struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 5 << 4, 0x18, 65535, 0, 0) + data
    return (struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 1, 0, 64, 6, 0, socket.inet_aton(src),
                        socket.inet_aton(dst)) + tcp)


def download(n: int, port: int = 40000) -> bytes:
    """Segment ``n`` of a download on the client port ``port``, as its netlink message."""
    return message(tcp4("198.51.100.80", 80, "192.0.2.10", port, b"%d" % n))


def test_the_first_queue_goes_before_each_bulk_packet():
    during: dict[bytes, list[tuple[Queue, bytes]]] = {}
    w, first, bulk, handled = worker(during)
    first.put(b"syn-1")
    for n in range(3):
        bulk.put(b"download-%d" % n)
    # a new connection's packets arrive while the download's segments are inspected
    during[b"download-0"] = [(first, b"syn-2"), (first, b"dns-query")]
    during[b"download-1"] = [(first, b"clienthello")]
    w._run_queues()
    assert handled == [b"syn-1", b"download-0", b"syn-2", b"dns-query", b"download-1", b"clienthello", b"download-2"]
    assert (w.qsock.messages, w.bulk_qsock.messages) == (4, 3) and w._messages() == 7


def test_a_connection_moving_to_the_bulk_queue_keeps_its_order():
    during: dict[bytes, list[tuple[Queue, bytes]]] = {}
    w, first, bulk, handled = worker(during)
    bulk.put(b"other-download")
    # while it is inspected, a connection's segment 7 reaches the first queue and, its byte count
    # now past the threshold, segment 8 the bulk queue (behind the other download)
    during[b"other-download"] = [(first, b"seg-7"), (bulk, b"seg-8")]
    w._run_queues()
    assert handled == [b"other-download", b"seg-7", b"seg-8"]
    # both arrive before the worker looks again: the first queue's segment still goes first
    first.put(b"seg-9")
    bulk.put(b"seg-10")
    w._run_queues()
    assert handled[3:] == [b"seg-9", b"seg-10"]


def test_one_queue_when_there_is_no_bulk_queue():
    w, first, _, handled = worker({})
    w.bulk_qsock = None
    first.put(b"a")
    first.put(b"b")
    w._run_queues()
    assert handled == [b"a", b"b"] and w._messages() == 2


def test_a_first_queue_that_never_empties_leaves_the_bulk_queue_its_share():
    """More new connections than the worker can take: the round ends after its quotas (the
    worker's loop gets its turn) and the download on the bulk queue moves on."""
    w, first, bulk, handled = worker({}, maxlen=256)
    first.refill = 100_000  # before the quotas, the worker never left its first queue
    for n in range(3 * BULK_QUOTA):
        bulk.put(download(n))
    w._run_queues()
    floods = sum(p.startswith(b"flood") for p in handled)
    # the download's first segment waits for what was queued ahead of it (at most the queue's
    # length), its later ones only for the round's first-queue quota
    assert [p for p in handled if not p.startswith(b"flood")] == [download(n) for n in range(BULK_QUOTA)]
    assert floods <= 256 + FIRST_QUOTA and w.bulk_connections == 1
    w._run_queues()
    w._run_queues()
    assert [p for p in handled if not p.startswith(b"flood")] == [download(n) for n in range(3 * BULK_QUOTA)]
    assert sum(p.startswith(b"flood") for p in handled) <= floods + 2 * FIRST_QUOTA


def test_a_connections_first_bulk_packet_waits_for_the_whole_first_queue_and_later_ones_do_not():
    w, first, bulk, handled = worker({})
    for n in range(300):
        first.put(b"new-%d" % n)
    bulk.put(download(0))
    w._run_queues()
    assert handled.index(download(0)) == 300  # everything queued ahead of it, past the quota
    del handled[:]
    for n in range(300):
        first.put(b"new-%d" % n)
    bulk.put(download(1))
    bulk.put(download(0, port=40001))  # another download's first bulk packet
    w._run_queues()
    assert handled.index(download(1)) == FIRST_QUOTA  # the same connection: the round's quota only
    assert handled.index(download(0, port=40001)) == 301 and w.bulk_connections == 2


def test_the_connection_of_a_queued_packet():
    a, b = "192.0.2.10", "198.51.100.80"
    one = packet_connection(message(tcp4(a, 40000, b, 80)))
    assert one == (6, (socket.inet_aton(a), 40000), (socket.inet_aton(b), 80))
    assert packet_connection(message(tcp4(b, 80, a, 40000, b"answer"))) == one  # both directions
    assert packet_connection(message(tcp4(a, 40001, b, 80))) != one
    six = struct.pack("!IHBB16s16s", 6 << 28, 8, 17, 64, socket.inet_pton(socket.AF_INET6, "2001:db8::1"),
                      socket.inet_pton(socket.AF_INET6, "2001:db8::2")) + struct.pack("!HHHH", 5353, 53, 8, 0)
    assert packet_connection(message(six))[0::2] == (17, (socket.inet_pton(socket.AF_INET6, "2001:db8::2"), 53))
    later = bytearray(tcp4(a, 40000, b, 80))
    later[6:8] = struct.pack("!H", 100)  # a fragment past the first: no ports in it
    assert packet_connection(message(bytes(later)))[1:] == ((socket.inet_aton(a), 0), (socket.inet_aton(b), 0))
    for bad in (b"", b"x" * 19, message(b"\x45" + b"\0" * 10), message(b"garbage" * 5),
                message(tcp4(a, 1, b, 2))[:40], struct.pack("=IHHII", 28, 0, 0, 0, 0) + b"\0" * 4 + struct.pack("=HH", 2, 10)):
        assert packet_connection(bad) is None


def test_the_status_shows_the_kernels_answer_for_both_queues():
    w, _, _, _ = worker({})
    qs = [w.qsock, w.bulk_qsock]
    assert queue_settings(qs) == "no answer"
    w.qsock.answer = 0
    assert queue_settings(qs) == "no answer"  # the bulk queue's answer has not come
    w.bulk_qsock.answer = 0
    assert queue_settings(qs) == "taken"
    w.bulk_qsock.answer = 22
    assert queue_settings(qs) == "refused on queue 2: Invalid argument"
