"""The fuzzers' short CI budget (``make test``); the long runs are ``make fuzz`` (docs/fuzzing.md).

* every input of the committed corpus (seeds and the regression inputs of fixed bugs) replayed
  in-process, each within a time bound;
* each atheris target for a fixed number of inputs (fixed seed, capped in seconds), in its own
  process: libFuzzer exits the process when it is done;
* schemathesis on the center's device API, a fixed number of derandomized examples per operation.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fuzz import targets_files, targets_wire  # noqa: F401  (registers the targets)
from tests.fuzz.harness import TARGETS, corpus_files

ROOT = Path(__file__).resolve().parents[2]
REPLAY_LIMIT_S = 5.0  # one corpus input (generous: the CI machine is shared)
CI_CAP_S = 10  # seconds one target's short run may take at most, whatever its input count
SLOWEST_INPUT_S = 5  # libFuzzer -timeout in the short runs: an input taking longer is a hang
NAMES = sorted(TARGETS)


def test_every_target_has_a_seed_corpus():
    assert set(NAMES) == {"packet", "dns", "tls", "http", "smtp", "pipeline", "pcap", "rules", "threatintel",
                          "webcat", "manifest"}
    for name in NAMES:
        assert any(p.name.startswith("seed-") for p in corpus_files(name)), name


@pytest.mark.parametrize("name", NAMES)
def test_corpus_replays_clean(name: str):
    target = TARGETS[name]
    for path in corpus_files(name):
        start = time.perf_counter()
        target.run(path.read_bytes())
        took = time.perf_counter() - start
        assert took < REPLAY_LIMIT_S, f"{path.name} took {took:.1f}s"


@pytest.mark.parametrize("name", NAMES)
def test_short_fuzz_run(name: str, tmp_path: Path):
    pytest.importorskip("atheris", reason="FUZZ SKIPPED: atheris is not installed (pip install '.[test]')")
    target = TARGETS[name]
    from hypothesis import settings

    seed = ["--seed", "1"] if settings.default.derandomize else []  # HYPOTHESIS_PROFILE=explore: a fresh seed
    cmd = [sys.executable, "-m", "tests.fuzz", name, "--runs", str(target.ci_runs), "--seconds", str(CI_CAP_S),
           *seed, "--timeout", str(SLOWEST_INPUT_S), "--corpus", str(tmp_path / "corpus"),
           "--artifacts", str(tmp_path / "artifacts")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=CI_CAP_S + 120)
    found = sorted(p.name for p in (tmp_path / "artifacts").glob("*"))
    if proc.returncode != 0 or found:
        tail = "\n".join(proc.stderr.splitlines()[-60:])
        pytest.fail(f"fuzz target {name} failed (exit {proc.returncode}, artifacts {found}); reproduce with "
                    f"`python -m tests.fuzz replay {name} FILE`:\n{tail}")
    assert "Done" in proc.stderr or "DONE" in proc.stderr, proc.stderr[-2000:]


# -- the center's API ----------------------------------------------------------------------------------

API_EXAMPLES = 25  # per operation, each sent with four kinds of credentials


def _api_budget() -> tuple[int, bool]:
    """(examples, derandomize): the ci profile's fixed examples, or fresh ones under ``explore``."""
    from hypothesis import settings

    derandomize = bool(settings.default.derandomize)
    return (API_EXAMPLES if derandomize else 10 * API_EXAMPLES), derandomize


@pytest.fixture(scope="module")
def center():
    pytest.importorskip("schemathesis", reason="API FUZZ SKIPPED: schemathesis is not installed (pip install '.[test]')")
    import logging

    from tests.fuzz.api import running_center

    logging.getLogger("vcr-opscenter").setLevel(logging.CRITICAL)  # a 500 is reported by the check, not the log
    with running_center() as c:
        yield c
    logging.getLogger("vcr-opscenter").setLevel(logging.NOTSET)


API_OPERATIONS = ["GET /api/v1/category", "GET /api/v1/time", "POST /api/v1/activate", "POST /api/v1/alarms",
                  "POST /api/v1/antispam/report", "POST /api/v1/backups", "POST /api/v1/checkin",
                  "POST /api/v1/provision", "POST /api/v1/sandbox/files", "POST /api/v1/sandbox/verdicts",
                  "POST /api/v1/tasks/{task_id}/status"]


def test_api_schema_lists_the_device_operations(center):
    from tests.fuzz.api import device_operations

    assert [op.label for op in device_operations(center.schema)] == API_OPERATIONS


@pytest.mark.parametrize("label", API_OPERATIONS)
def test_api_operation(center, label: str):
    from tests.fuzz.api import device_operations, run_operation

    (op,) = [op for op in device_operations(center.schema) if op.label == label]
    examples, derandomize = _api_budget()
    run_operation(center, op, max_examples=examples, derandomize=derandomize)


def test_api_raw_requests(center):
    from tests.fuzz.api import run_raw

    examples, derandomize = _api_budget()
    run_raw(center, max_examples=4 * examples, derandomize=derandomize)
