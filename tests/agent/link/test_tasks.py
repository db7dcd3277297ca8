"""TaskRunner (agent/link/tasks.py): dedupe, durable statuses, restart, failures."""
from __future__ import annotations

import threading
import time

import pytest

from agent.link.tasks import TaskRunner


class Center:
    """A fake center: records statuses; can be 'down' (report raises)."""

    def __init__(self) -> None:
        self.got: list[tuple[int, str, str]] = []
        self.down = False
        self.lock = threading.Lock()

    def __call__(self, task_id: int, status: str, detail: str) -> None:
        if self.down:
            raise ConnectionError("center down")
        with self.lock:
            self.got.append((task_id, status, detail))

    def statuses(self, task_id: int) -> list[str]:
        with self.lock:
            return [s for t, s, _ in self.got if t == task_id]


def wait_for(pred, timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.02)
    return pred()


@pytest.fixture
def center() -> Center:
    return Center()


def make(tmp_path, center, **kw) -> TaskRunner:
    return TaskRunner(tmp_path, center, retry_base=0.05, retry_cap=0.2, **kw)


def test_runs_once_reports_done_and_dedupes(tmp_path, center):
    r = make(tmp_path, center)
    runs: list[dict] = []
    r.register("noop", lambda params, progress: runs.append(params))
    assert r.submit([{"task_id": 1, "kind": "noop", "params": {"a": 1}}]) == [1]
    # the center re-delivers the same task until it sees a status: never run twice
    assert r.submit([{"task_id": 1, "kind": "noop", "params": {"a": 1}}]) == []
    assert r.wait_idle(5)
    assert r.submit([{"task_id": 1, "kind": "noop", "params": {"a": 1}}]) == []
    assert wait_for(lambda: center.statuses(1) == ["done"])
    assert runs == [{"a": 1, "_task_id": 1}]
    r.stop()


def test_progress_and_final_status(tmp_path, center):
    r = make(tmp_path, center)

    def h(params, progress):
        progress("applying", "rev 3")
        progress("applied", "rev 3 live")

    r.register("config", h)
    r.submit([{"task_id": 7, "kind": "config", "params": {}}])
    assert r.wait_idle(5)
    assert wait_for(lambda: center.statuses(7) == ["applying", "applied"])  # no duplicate final status
    r.stop()


def test_failure_and_unknown_kind(tmp_path, center):
    r = make(tmp_path, center)

    def boom(params, progress):
        progress("applying", "")
        raise ValueError("bad key engines.x")

    r.register("boom", boom)
    r.submit([{"task_id": 2, "kind": "boom", "params": {}}, {"task_id": 3, "kind": "teleport", "params": {}}])
    assert r.wait_idle(5)
    assert wait_for(lambda: center.statuses(2) == ["applying", "failed"] and center.statuses(3) == ["failed"])
    details = {t: d for t, s, d in center.got if s == "failed"}
    assert "bad key engines.x" in details[2]
    assert "unknown task kind" in details[3]
    r.stop()


def test_one_at_a_time_in_order(tmp_path, center):
    r = make(tmp_path, center)
    active, order, overlap = [0], [], []

    def h(params, progress):
        active[0] += 1
        overlap.append(active[0])
        time.sleep(0.05)
        order.append(params["n"])
        active[0] -= 1

    r.register("k", h)
    r.submit([{"task_id": i, "kind": "k", "params": {"n": i}} for i in range(5)])
    assert r.wait_idle(5)
    assert order == [0, 1, 2, 3, 4] and max(overlap) == 1
    r.stop()


def test_statuses_survive_outage_and_restart(tmp_path, center):
    center.down = True
    r = make(tmp_path, center)
    r.register("noop", lambda p, progress: None)
    r.submit([{"task_id": 10, "kind": "noop", "params": {}}])
    assert r.wait_idle(5)
    time.sleep(0.2)
    assert center.got == [] and r.pending_statuses()[0]["status"] == "done"
    r.stop()
    # restart: the finished task is not run again, its status is still owed and gets delivered
    center.down = False
    runs: list[int] = []
    r2 = make(tmp_path, center)
    r2.register("noop", lambda p, progress: runs.append(1))
    r2.submit([{"task_id": 10, "kind": "noop", "params": {}}])
    assert wait_for(lambda: center.statuses(10) == ["done"])
    assert runs == [] and r2.pending_statuses() == []
    r2.stop()


def test_interrupted_task_resumes_after_restart(tmp_path, center):
    r = make(tmp_path, center)
    started, release = threading.Event(), threading.Event()

    def slow(params, progress):
        started.set()
        release.wait(5)

    r.register("upgrade", slow)
    r.submit([{"task_id": 20, "kind": "upgrade", "params": {"v": "2"}}, {"task_id": 21, "kind": "upgrade", "params": {}}])
    assert started.wait(5)
    # simulate a crash: a second runner reads the state while the first one is mid-task
    seen: list[dict] = []
    r2 = make(tmp_path, center)
    r2.register("upgrade", lambda p, progress: seen.append(p))
    r2.start()
    assert r2.wait_idle(5)
    assert seen[0] == {"v": "2", "_resumed": True, "_task_id": 20} and seen[1] == {"_task_id": 21}
    release.set()
    r.stop()
    r2.stop()


def test_damaged_state_file_does_not_stop_the_runner(tmp_path, center):
    (tmp_path / "tasks.json").write_text("{not json")
    r = make(tmp_path, center)
    r.register("noop", lambda p, progress: None)
    r.submit([{"task_id": 1, "kind": "noop", "params": {}}])
    assert wait_for(lambda: center.statuses(1) == ["done"])
    assert list(tmp_path.glob("tasks.json.damaged.*"))
    r.stop()


def test_post_later_status(tmp_path, center):
    r = make(tmp_path, center)
    r.post(5, "rolled_back", "no check-in within 20 s")
    assert wait_for(lambda: center.statuses(5) == ["rolled_back"])
    r.stop()
