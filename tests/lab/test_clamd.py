"""lab/clamd.py and the ``clamd`` fixture's rule: without ClamAV, a loud skip, and a failure under CI."""
from __future__ import annotations

import pytest

from lab import clamd as labclamd
from tests.conftest import require_clamav


def test_missing_clamav_fails_under_ci_and_skips_elsewhere(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(labclamd, "missing", lambda: "`clamd` is not installed")
    monkeypatch.setenv("CI", "1")
    with pytest.raises(pytest.fail.Exception, match="CLAMD TEST CANNOT RUN IN CI"):
        require_clamav()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="CLAMD TEST SKIPPED"):
        require_clamav()


def test_private_clamd_answers_on_its_own_socket(clamd):
    assert clamd.ping() and clamd.socket.startswith(str(clamd.base))
    assert (clamd.base / "clamd.conf").read_text().count("ConcurrentDatabaseReload yes") == 1


def test_the_shipped_clamd_config_unit_and_agent_config_agree():
    """systemd/vcr-clamd.service runs clamd with config/av/clamd.conf, whose socket is the agent's
    default engines.av.clamd_socket and whose database is where the av bundle goes live."""
    from pathlib import Path

    import yaml

    from agent.config import Updates
    from filters.av.engine import AvConfig

    root = Path(__file__).resolve().parents[2]
    conf = dict(line.split(None, 1) for line in (root / "config/av/clamd.conf").read_text().splitlines()
                if line.strip() and not line.startswith("#"))
    unit = (root / "systemd/vcr-clamd.service").read_text()
    assert "ExecStart=/usr/sbin/clamd -c /opt/vcr-agent/config/av/clamd.conf" in unit
    assert conf["LocalSocket"] == AvConfig().clamd_socket == "/run/vcr-clamd/clamd.sock"
    assert "RuntimeDirectory=vcr-clamd" in unit and "User=clamav" in unit
    shipped = yaml.safe_load((root / "config/vcr-agent.yaml").read_text())["engines"]["av"]
    assert shipped["clamd_socket"] == conf["LocalSocket"] and shipped["enabled"] is False
    assert conf["DatabaseDirectory"] == shipped["database"] == f"{Updates().bundles_dir}/av/current"
    assert conf["ConcurrentDatabaseReload"] == "yes" and conf["AlertEncrypted"] == "yes"
    path_unit = (root / "systemd/vcr-clamd.path").read_text()
    assert f"PathExists={conf['DatabaseDirectory']}" in path_unit


def test_a_private_clamd_runs_the_shipped_config_with_its_own_paths(clamd):
    text = (clamd.base / "clamd.conf").read_text()
    assert f"LocalSocket {clamd.socket}" in text and f"DatabaseDirectory {clamd.database}" in text
    assert "AlertExceedsMax yes" in text and "/run/vcr-clamd" not in text and "User " not in text
