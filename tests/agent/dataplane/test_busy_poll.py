"""The worker's busy-poll (agent/dataplane/worker.py ``Worker._busy_poll``): bounded by its window when
no packet comes, back to the loop as soon as one comes or other work waits, and the setting's bounds."""
from __future__ import annotations

import queue
import time

import pytest

from agent.dataplane.nfq import QueueSocket
from agent.dataplane.worker import Worker


class FakeQueue:
    """``NetfilterQueue.run_socket`` over a QueueSocket stand-in: a packet arrives on call ``arrive_at``."""

    def __init__(self, arrive_at: int | None) -> None:
        self.calls = 0
        self.arrive_at = arrive_at

    def run_socket(self, qsock: QueueSocket) -> None:
        self.calls += 1
        if self.calls == self.arrive_at:
            qsock.messages += 1


def worker(window_us: int, nfq: FakeQueue) -> Worker:
    w = Worker.__new__(Worker)  # the loop's state only: no queue, no pipeline
    w.busy_poll = window_us / 1e6
    w.nfq = nfq
    w.qsock = QueueSocket.__new__(QueueSocket)
    w.qsock.messages = 0
    w.bulk_qsock = None
    w.running = True
    w.io_done = queue.SimpleQueue()
    w.fork_for = []
    return w


def test_quiet_window_ends_after_the_window():
    nfq = FakeQueue(None)
    w = worker(2000, nfq)
    t0 = time.perf_counter()
    assert w._busy_poll() is False  # the loop may sleep
    took = time.perf_counter() - t0
    assert took >= 0.002 and took < 1.0  # the whole window, and not much more
    assert nfq.calls > 1  # it kept looking


def test_a_packet_returns_at_once():
    nfq = FakeQueue(3)
    w = worker(0, nfq)
    w.busy_poll = 60.0  # a window far longer than the test: only the packet ends the poll
    assert w._busy_poll() is True and nfq.calls == 3  # a packet came: poll again after the loop's work


@pytest.mark.parametrize("pending", ["io", "fork", "stop"])
def test_other_work_ends_the_poll(pending):
    nfq = FakeQueue(None)
    w = worker(0, nfq)
    w.busy_poll = 60.0
    if pending == "io":
        w.io_done.put((1, None, None))
    elif pending == "fork":
        w.fork_for.append(1)
    else:
        w.running = False
    assert w._busy_poll() is True and nfq.calls == 0
