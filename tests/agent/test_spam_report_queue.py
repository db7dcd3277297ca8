"""The box's spam report queue (agent/link/spamreport.py): durable across a restart, bounded, never
blocks the caller, and a report leaves it only once the center took it."""
from __future__ import annotations

import threading

from agent.link.spamreport import ReportQueue, ReportSender


def rep(i: int) -> dict:
    return {"score": 20.0, "direction": "received", "digests": [f"{i:064x}"]}


def test_reports_survive_a_restart_and_leave_only_when_acked(tmp_path):
    q = ReportQueue(tmp_path / "r.db")
    for i in range(3):
        assert q.submit(rep(i))
    q.close()
    q = ReportQueue(tmp_path / "r.db")
    assert len(q) == 3
    posted: list[list[dict]] = []
    fail = [True]
    def post(batch):
        if fail[0]:
            raise ConnectionError("center unreachable")
        posted.append(batch)
    s = ReportSender(q, post, batch=2)
    try:
        s.send_once()
    except ConnectionError:
        pass
    assert len(q) == 3  # the center did not take them: kept
    fail[0] = False
    assert s.send_once() == 2 and s.send_once() == 1 and s.send_once() == 0
    assert [r["digests"][0] for b in posted for r in b] == [f"{i:064x}" for i in range(3)]
    assert len(q) == 0
    q.close()


def test_bounded_and_never_blocking(tmp_path):
    q = ReportQueue(tmp_path / "r.db", max_reports=5, memory_max=10)
    results = [q.submit(rep(i)) for i in range(20)]
    assert results[:10] == [True] * 10 or sum(results) >= 10  # the writer may already have drained some
    q.flush()
    assert len(q) == 5 and q.dropped == 15
    assert [r["digests"][0] for _, r in q.peek(10, 1 << 20)] == [f"{i:064x}" for i in range(5)]  # the oldest kept
    assert len(q.peek(10, 1)) == 1  # a batch is bounded in bytes (but carries at least one)
    q.close()


def test_submit_does_not_wait_for_a_slow_disk(tmp_path):
    """The mail thread's submit only touches memory: with the database busy (a commit stuck on a
    slow disk, held here by taking its lock), submit still returns at once."""
    q = ReportQueue(tmp_path / "r.db")
    done = threading.Event()
    with q._db_lock:
        t = threading.Thread(target=lambda: (q.submit(rep(1)), done.set()), daemon=True)
        t.start()
        assert done.wait(5), "submit blocked behind the database"
    q.flush()
    assert len(q) == 1
    q.close()


def test_daemon_wires_the_engine_to_the_queue_and_the_link(tmp_path):
    """The daemon's wiring (no dataplane started): the queue sits beside the alarm spool, the engine
    reports into it, the link's check-in feeds the engine's list, and without a link the sender keeps
    the reports (its post raises)."""
    import pytest

    from agent.config import parse_config
    from agent.dataplane.daemon import Daemon
    from filters.antispam.engine import AntiSpamEngine

    cfg = parse_config({"logging": {"dir": str(tmp_path / "log")},
                        "center": {"spool": {"path": str(tmp_path / "lib" / "spool.db")}}})
    engine = AntiSpamEngine()
    engine.configure({"enabled": True})

    class Link:
        known_spam_digests = None
        def send_spam_reports(self, reports):
            sent.extend(reports)
    sent: list[dict] = []
    d = Daemon.__new__(Daemon)
    d.engines, d.center = [engine], Link()
    d._wire_spam_reports(cfg)
    try:
        assert (tmp_path / "lib" / "spamreports.db").exists()
        assert engine.reports == d.spam_reports.submit
        assert d.center.known_spam_digests([f"{1:064x}"]) == 1 and len(engine.known_digests) == 1
        d._send_spam_reports([rep(1)])
        assert sent == [rep(1)]
        d.center = None
        with pytest.raises(ConnectionError):
            d._send_spam_reports([rep(2)])
    finally:
        d.spam_sender.stop()
        d.spam_reports.close()
