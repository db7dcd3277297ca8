"""`vcr-agent pcap` keeps the objects made before the run (the loaded rules) out of the garbage
collector's scans during the run, as the daemon and workers do once their rules are loaded, and
leaves the collector as it found it (replay._freeze)."""
from __future__ import annotations

import gc
from pathlib import Path
from unittest import mock

from agent.offline import replay
from tests.agent.offline.test_empty_acks import RULES, records, wire
from tests.agent.offline.test_evasion import run


def _frozen_during(tmp_path: Path) -> tuple[list[int], list[dict]]:
    seen: list[int] = []
    process = replay._process

    def counting(pipeline, pkt, token):
        seen.append(gc.get_freeze_count())
        return process(pipeline, pkt, token)

    with mock.patch.object(replay, "_process", counting):
        recs, _ = run(tmp_path, wire(), RULES)
    return seen, recs


def test_the_run_freezes_what_was_there_and_unfreezes_it(tmp_path: Path) -> None:
    assert gc.get_freeze_count() == 0
    seen, recs = _frozen_during(tmp_path)
    assert seen and min(seen) > 0  # every packet with the rules frozen
    assert gc.get_freeze_count() == 0  # the run's garbage and the rules are collectable again
    with mock.patch.object(replay, "_freeze", return_value=False):
        unfrozen, _ = run(tmp_path, wire(), RULES)
    assert records(recs) == records(unfrozen) and recs


def test_a_process_that_froze_its_own_keeps_them_frozen(tmp_path: Path) -> None:
    gc.freeze()
    try:
        before = gc.get_freeze_count()
        seen, _ = _frozen_during(tmp_path)
        assert seen and gc.get_freeze_count() >= before  # not unfrozen by the run
    finally:
        gc.unfreeze()
