"""lab/bench/blocks.py: the order of the modes over the runs (the blocks themselves need the lab: tests/lab/test_lab.py)."""
from __future__ import annotations

from lab.bench.blocks import rotated


def test_rotated_puts_each_mode_first_once() -> None:
    modes = ["bare", "fw", "ips"]
    assert [rotated(modes, r) for r in range(4)] == [
        ["bare", "fw", "ips"], ["fw", "ips", "bare"], ["ips", "bare", "fw"], ["bare", "fw", "ips"]]
    assert rotated(["bare", "fw"], 1) == ["fw", "bare"]


def test_measure_keeps_the_values_or_the_error(capsys) -> None:
    from lab.bench.blocks import measure, record_error

    samples: dict = {"bare": {}}
    errors: dict = {"bare": {}}
    assert measure("bulk", lambda: {"bulk_gbps": 9.5, "conn_rate": 1234.5}, ("bulk_gbps",), "bare", 0, samples,
                   errors) == {"bulk_gbps": 9.5, "conn_rate": 1234.5}
    assert "  bare  bulk: bulk_gbps=9.500, conn_rate=1,234" in capsys.readouterr().out

    def broken() -> dict:
        raise RuntimeError("no route")

    assert measure("latency", broken, ("ping_p50", "rr_p50"), "bare", 1, samples, errors, whole_from=1e9) is None
    assert "  bare  latency: ERROR no route" in capsys.readouterr().out
    measure("https", lambda: {"https_rate": 1234.5}, ("https_rate",), "bare", 1, samples, errors, whole_from=1e9)
    assert "https_rate=1,234.500" in capsys.readouterr().out
    record_error(errors, "bare", ["bulk_gbps"], "bare, run 3: boom")
    assert samples == {"bare": {"bulk_gbps": [9.5], "conn_rate": [1234.5], "https_rate": [1234.5]}}
    assert errors == {"bare": {"ping_p50": ["bare, run 2: no route"], "rr_p50": ["bare, run 2: no route"],
                               "bulk_gbps": ["bare, run 3: boom"]}}


def test_block_noise_notes_the_block(capsys) -> None:
    from lab.bench.blocks import block_noise

    loads: list[str] = []
    with block_noise(1, 3, "fw", loads):
        pass
    assert capsys.readouterr().out.startswith("run 2/3: fw (load average ")
    assert len(loads) == 1 and loads[0].startswith("run 2 fw: load ") and "other processes" in loads[0]
