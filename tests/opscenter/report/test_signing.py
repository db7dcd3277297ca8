"""The signed operating record: canonical JSON, Ed25519, strict verification (any changed byte fails),
and the verify-report / report-key commands."""
from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from opscenter.cli import main
from opscenter.report.signing import FORMAT, RecordError, SigningKey, canonical, ensure_key, sign_record, verify

RECORD = {"type": "vcr-operating-record", "version": 1, "contract_id": "C-契約-1", "month": "2026-11",
          "availability_ppm": 999123, "availability_percent": "99.91", "outages": [
              {"kind": "no_checkin", "start": "2026-11-10T03:00:00Z", "end": "2026-11-10T03:20:00Z", "seconds": 1200}],
          "devices": [{"serial": "VCR116W-0001"}], "days": [], "service_start": None}


def test_canonical_form_and_envelope(key: SigningKey):
    data = sign_record(RECORD, key, "2026-12-01T02:00:00Z")
    assert data.endswith(b"}\n") and b" " not in data.split(b'"contract_id"')[0]
    env = json.loads(data)
    assert env["format"] == FORMAT and set(env) == {"format", "record", "signature"}
    assert env["record"]["generated_at"] == "2026-12-01T02:00:00Z" and env["record"]["key_id"] == key.key_id
    assert env["signature"]["alg"] == "Ed25519" and len(base64.b64decode(env["signature"]["value"])) == 64
    assert canonical(env) + b"\n" == data and "契約".encode() in data  # UTF-8, not \\u escapes
    with pytest.raises(TypeError):
        canonical({"x": 0.5})  # no floats in a signed record


def test_every_single_byte_change_is_detected(key: SigningKey):
    data = sign_record(RECORD, key, "2026-12-01T02:00:00Z")
    assert verify(data, trusted=[key.public]).record["contract_id"] == "C-契約-1"
    for i in range(len(data)):
        for flip in (0x01, 0x20):
            bad = bytearray(data)
            bad[i] ^= flip
            with pytest.raises(RecordError):
                verify(bytes(bad))


def test_resigned_by_another_key_fails_against_the_published_key(key: SigningKey):
    forged = dict(RECORD, availability_ppm=1_000_000, availability_percent="100.00")
    other = SigningKey(Ed25519PrivateKey.generate())
    data = sign_record(forged, other, "2026-12-01T02:00:00Z")
    assert not verify(data).pinned  # intact, but only against its own embedded key
    with pytest.raises(RecordError, match="not the center's published key"):
        verify(data, trusted=[key.public])
    with pytest.raises(RecordError):
        verify(data, key_ids=[key.key_id])
    assert verify(sign_record(RECORD, key, "x"), key_ids=[key.key_id]).pinned


def test_reformatted_or_extended_files_fail(key: SigningKey):
    data = sign_record(RECORD, key, "2026-12-01T02:00:00Z")
    pretty = json.dumps(json.loads(data), indent=1, ensure_ascii=False).encode() + b"\n"
    with pytest.raises(RecordError, match="canonical"):
        verify(pretty)
    env = json.loads(data)
    env["extra"] = 1
    with pytest.raises(RecordError):
        verify(canonical(env) + b"\n")
    with pytest.raises(RecordError, match="duplicate"):
        verify(data.replace(b'{"format"', b'{"format":"x","format"', 1))
    with pytest.raises(RecordError):
        verify(b"\xff\xfe")


def test_key_files(tmp_path: Path):
    k, pub, created = ensure_key(tmp_path)
    assert created and (k.stat().st_mode & 0o777) == 0o600 and pub.read_text().startswith("-----BEGIN PUBLIC KEY")
    again = ensure_key(tmp_path)
    assert again == (k, pub, False) and SigningKey.load(k).key_id == SigningKey.load(k).key_id


def test_verify_report_command(tmp_path: Path, key_dir: Path, key: SigningKey, capsys: pytest.CaptureFixture[str]):
    f = tmp_path / "operating-record-C-1-2026-11.json"
    f.write_bytes(sign_record(RECORD, key, "2026-12-01T02:00:00Z"))
    pub = str(key_dir / "report-signing.pub")
    assert main(["verify-report", str(f), "--pubkey", pub]) == 0
    out = capsys.readouterr().out
    assert "VALID" in out and "99.91%" in out and key.key_id in out
    assert main(["verify-report", str(f)]) == 0  # intact; says to compare the key id
    assert "--pubkey" in capsys.readouterr().out
    data = bytearray(f.read_bytes())
    data[data.index(b"99.91")] = ord("8")  # one byte: 99.91 -> 89.91
    f.write_bytes(bytes(data))
    assert main(["verify-report", str(f), "--pubkey", pub]) == 1
    assert "INVALID" in capsys.readouterr().err
    other = tmp_path / "other"
    ensure_key(other)
    good = tmp_path / "good.json"
    good.write_bytes(sign_record(RECORD, key, "t"))
    assert main(["verify-report", str(good), "--pubkey", str(other / "report-signing.pub")]) == 1
    assert main(["verify-report", str(tmp_path / "missing.json")]) == 1


def test_report_key_and_init_ca_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    assert main(["report-key", "--dir", str(tmp_path / "k"), "--show"]) == 0
    out = capsys.readouterr().out
    kid = SigningKey.load(tmp_path / "k" / "report-signing.key").key_id
    assert kid in out and "BEGIN PUBLIC KEY" in out
    assert main(["report-key", "--dir", str(tmp_path / "k")]) == 0  # kept, not replaced
    assert kid in capsys.readouterr().out
    assert main(["init-ca", "--dir", str(tmp_path / "ca"), "--host", "center.example"]) == 0
    assert (tmp_path / "ca" / "report-signing.key").is_file() and (tmp_path / "ca" / "report-signing.pub").is_file()
