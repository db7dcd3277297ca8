"""lab/bench/host.py: what the benches read of the machine (/proc, psutil, EVE files), and their helper processes."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lab.bench.host import (
    BenchError,
    busy_share,
    cpu_ticks,
    eve_alerts,
    foreign_use,
    helper_argv,
    helper_env,
    helper_results,
    last_json,
    machine,
    machine_info,
    noise_line,
    parse_nfqueue,
)


def test_machine_info() -> None:
    info = machine_info("processor\t: 0\nmodel name\t: AMD EPYC\n", "MemTotal:       24684000 kB\n", 2, "6.18.0")
    assert info == {"nproc": "2", "kernel": "6.18.0", "cpu": "AMD EPYC", "memory": "23.5 GiB"}
    assert machine_info("", "", 1, "x")["cpu"] == "unknown"
    assert set(machine()) == {"nproc", "kernel", "cpu", "memory"}


def test_parse_nfqueue() -> None:
    text = "    0  31163     5 2  4016     7     1    18165  1\n    1  31164     0 2  4016     0     0   121534  1\n"
    qs = parse_nfqueue(text)
    assert sorted(qs) == [0, 1]
    assert (qs[0].waiting, qs[0].dropped, qs[0].user_dropped, qs[0].id_sequence) == (5, 7, 1, 18165)
    assert parse_nfqueue("") == {}


def test_cpu_ticks_and_busy_share() -> None:
    before = cpu_ticks("cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1 2 3 4\n")
    after = cpu_ticks("cpu  200 0 100 850 50 0 0 0 0 0\n")
    assert before == (150, 1000) and after == (300, 1200)
    assert busy_share(before, after) == 0.75
    assert busy_share((0, 0), (0, 0)) == 0.0
    assert cpu_ticks("") == (0, 0)


def test_noise_line() -> None:
    line = noise_line("Before the bench", 0.42, (1.5, 1.25, 0.75), [(88.0, "pytest -q tests"), (12.4, "nginx")])
    assert line.startswith("Before the bench: 42% of the CPUs busy over 3 s")
    assert "load average 1.50 / 1.25 / 0.75 (1/5/15 min)" in line and "pytest -q tests 88%, nginx 12%" in line
    assert "none above 1% of a CPU" in noise_line("After", 0.0, (0, 0, 0), [])


def test_eve_alerts(tmp_path: Path) -> None:
    eve = tmp_path / "eve.json"
    lines = [{"event_type": "alert", "alert": {"signature": "A"}}, {"event_type": "flow"},
             {"event_type": "alert", "alert": {"signature": "B"}}, {"event_type": "alert", "alert": {"signature": "A"}}]
    eve.write_text("\n".join(json.dumps(x) for x in lines) + "\nnot json\n")
    assert eve_alerts(eve) == (3, [("A", 2), ("B", 1)])


def test_foreign_use() -> None:
    before = {10: ("pytest -q", 5.0), 11: ("sshd", 1.0)}
    after = {10: ("pytest -q", 8.0), 11: ("sshd", 1.0), 12: ("make lint", 1.0), 13: ("cron", 0.05)}
    share, top = foreign_use(before, after, 20.0)
    assert share == pytest.approx((3.0 + 1.0 + 0.05) / 20.0)
    assert top == [(3.0, "pytest -q"), (1.0, "make lint")]  # below 0.1 s is not named
    assert foreign_use({}, {}, 0.0) == (0.0, [])


def test_helper_processes_report_their_last_json_line() -> None:
    assert last_json('starting\n{"done": 3}\n') == {"done": 3}
    with pytest.raises(ValueError):
        last_json("no json here")
    code = "import json, sys; print('noise'); print(json.dumps({'ok': sys.argv[1:]}))"
    procs = [subprocess.Popen([sys.executable, "-c", code, "x"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)]
    assert helper_results(procs, 30, "echo") == [{"ok": ["x"]}]
    bad = [subprocess.Popen([sys.executable, "-c", "import sys; sys.exit('broken')"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)]
    with pytest.raises(BenchError, match="echo failed: broken"):
        helper_results(bad, 30, "echo")
    assert helper_argv("lab.bench.load", "tcp-rr", "--ip", "x")[1:] == ["-m", "lab.bench.load", "tcp-rr", "--ip", "x"]
    assert helper_env()["PYTHONPATH"] == str(Path(__file__).resolve().parents[3])
