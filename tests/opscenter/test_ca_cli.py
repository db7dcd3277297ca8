"""`vcr-opscenter init-ca` and the operator commands (Japanese with English)."""
from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import pytest
from cryptography import x509

from opscenter.ca import init_ca
from opscenter.cli import main


def test_init_ca_sans_and_ca_reuse(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    assert main(["init-ca", "--dir", str(tmp_path / "pki"), "--host", "center.lab.example",
                 "--ip", "192.0.2.80", "2001:db8::80"]) == 0
    assert "ca.crt" in capsys.readouterr().out
    ca1 = (tmp_path / "pki" / "ca.crt").read_bytes()
    cert = x509.load_pem_x509_certificate((tmp_path / "pki" / "server.crt").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["center.lab.example"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("192.0.2.80"),
                                                       ipaddress.ip_address("2001:db8::80")]
    ca = x509.load_pem_x509_certificate(ca1)
    cert.verify_directly_issued_by(ca)
    assert oct((tmp_path / "pki" / "server.key").stat().st_mode & 0o777) == "0o600"
    assert oct((tmp_path / "pki" / "ca.key").stat().st_mode & 0o777) == "0o600"
    files = init_ca(tmp_path / "pki", ["other.example"], [])  # a new server cert, the same CA
    assert files.ca_cert.read_bytes() == ca1
    x509.load_pem_x509_certificate(files.cert.read_bytes()).verify_directly_issued_by(ca)


def test_operator_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    db = ["--db", f"sqlite:///{tmp_path / 'c.db'}"]
    assert main(["issue-code", "--contract", "C-1", "--serial", "SN-1", "--term-days", "365"] + db) == 0
    out = capsys.readouterr().out
    assert "アクティベーションコード / activation code:" in out and "SN-1" in out
    assert main(["issue-code", "--contract", "C-1", "--json"] + db) == 0
    issued = json.loads(capsys.readouterr().out)
    assert issued["contract_id"] == "C-1" and issued["kind"] == "initial" and len(issued["code"]) == 19
    assert main(["replace", "NOPE"] + db) == 1
    assert main(["replace", "C-1", "--serial", "SN-2"] + db) == 0
    assert "交換用コード / replacement code" in capsys.readouterr().out
    assert main(["devices"] + db) == 0
    assert "登録された機器はありません / no devices enrolled" in capsys.readouterr().out
    assert main(["alarms"] + db) == 0
    assert "アラームはありません / no alarms" in capsys.readouterr().out
    assert main(["task", "add", "dev-missing", "config", "--params", "{}"] + db) == 1
    assert main(["task", "add", "dev-x", "config", "--params", "[1]"] + db) == 2
    assert main(["desired", "--agent-version", "0.2.0", "--signature", "ips=2026.12.01"] + db) == 0
    assert json.loads(capsys.readouterr().out)["desired"] == {"agent_version": "0.2.0",
                                                             "signatures": {"ips": "2026.12.01"}}
    assert main(["devices", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "設定エラー / settings error" in capsys.readouterr().err
