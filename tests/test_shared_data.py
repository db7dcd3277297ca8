"""tests/shared_data.py: where the shared test data is found, and that missing data fails under CI."""
from __future__ import annotations

from pathlib import Path

import pytest

import lab
from lab import verify
from tests import shared_data as shared

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv(shared.SHARED_ENV, raising=False)
    return monkeypatch


def test_default_is_shared_beside_the_repository(env: pytest.MonkeyPatch) -> None:
    assert shared.root() == REPO.parent / "shared" == lab.shared_dir()


def test_the_environment_variable_is_honoured(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "peer" / "et-open").mkdir(parents=True)
    env.setenv(shared.SHARED_ENV, str(tmp_path))
    assert shared.root() == tmp_path == lab.shared_dir()
    assert shared.require("peer", "et-open") == tmp_path / "peer" / "et-open"
    assert shared.find("peer", "et-open") == tmp_path / "peer" / "et-open" and shared.find("nope") is None
    data = shared.session()
    assert data.root == tmp_path and data.path("peer", "et-open").is_dir()


@pytest.mark.parametrize("ci", ["true", "1", "yes"])
def test_missing_data_fails_under_ci(env: pytest.MonkeyPatch, tmp_path: Path, ci: str) -> None:
    env.setenv("CI", ci)
    env.setenv(shared.SHARED_ENV, str(tmp_path / "absent"))
    assert shared.in_ci()
    with pytest.raises(pytest.fail.Exception, match="SHARED TEST DATA MISSING.*absent.*required under CI"):
        shared.session()
    with pytest.raises(pytest.fail.Exception, match="VCR_SHARED"):
        shared.require("peer", "suricata-verify")
    (tmp_path / "absent").mkdir()
    data = shared.session()  # the root exists now, a part of it does not
    with pytest.raises(pytest.fail.Exception, match="suricata-verify"):
        data.path("peer", "suricata-verify")
    with pytest.raises(pytest.fail.Exception, match=r"no \*\.rules"):
        (tmp_path / "absent" / "rules").mkdir()
        data.glob("rules", "*.rules")


@pytest.mark.parametrize("ci", [None, "", "false", "0"])
def test_missing_data_skips_loudly_elsewhere(env: pytest.MonkeyPatch, tmp_path: Path, ci: str | None) -> None:
    if ci is not None:
        env.setenv("CI", ci)
    env.setenv(shared.SHARED_ENV, str(tmp_path / "absent"))
    assert not shared.in_ci()
    with pytest.raises(pytest.skip.Exception, match=f"SHARED TEST DATA MISSING: {tmp_path / 'absent'}.*VCR_SHARED"):
        shared.session()


def test_the_fixture_is_the_shared_data(shared_data: shared.SharedData) -> None:
    assert shared_data.root == shared.root()
    assert verify.DEFAULT_ROOT == shared.root() / "peer" / "suricata-verify"  # as read when lab.verify was imported
