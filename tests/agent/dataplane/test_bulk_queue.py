"""A worker's two queues (agent/dataplane/worker.py ``_run_queues``): the bulk queue is served only
while the first is empty, and a packet that reached the first queue before a bulk packet has its
verdict first (a connection moving to the bulk queue keeps its order).

The queues are datagram socket pairs standing in for the netlink sockets: the real QueueSocket
reads them, a stand-in for NetfilterQueue's ``run_socket`` loop hands each message to the
worker's callback, as the library does."""
from __future__ import annotations

import socket

from agent.dataplane.nfq import QueueSocket
from agent.dataplane.worker import Worker


class Queue:
    """One kernel queue: ``put`` enqueues a packet; ``run_socket`` is NetfilterQueue's loop."""

    def __init__(self, handled: list[bytes], during: dict[bytes, list[tuple["Queue", bytes]]]) -> None:
        self.kernel, self.user = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.handled, self.during = handled, during

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


def worker(during: dict[bytes, list[tuple[Queue, bytes]]]) -> tuple[Worker, Queue, Queue, list[bytes]]:
    handled: list[bytes] = []
    first, bulk = Queue(handled, during), Queue(handled, during)
    w = Worker.__new__(Worker)  # the queues only: no pipeline
    w.nfq, w.bulk_nfq = first, bulk
    w.qsock = QueueSocket(first.user.fileno(), 0)
    w.bulk_qsock = QueueSocket(bulk.user.fileno(), 2, before=w._run_first_queue)
    return w, first, bulk, handled


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
