"""Encrypted config backups (agent/lifecycle/backup.py)."""
from __future__ import annotations

import base64

import pytest

from agent.lifecycle.backup import BackupError, decrypt, decrypt_b64, encrypt, encrypt_b64

TEXT = "settings_sheet:\n  contact: 総務部 山田\n"


def test_round_trip_and_not_plaintext():
    blob = encrypt(TEXT, secret="s3cret", contract_id="C-1", revision=4, meta={"source": "center"})
    assert "総務部".encode() not in blob and b"settings_sheet" not in blob
    data = decrypt(blob, secret="s3cret", contract_id="C-1", revision=4)
    assert data["config"] == TEXT and data["revision"] == 4 and data["meta"] == {"source": "center"}
    assert decrypt_b64(encrypt_b64(TEXT, secret="s3cret", contract_id="C-1", revision=4),
                       secret="s3cret", contract_id="C-1", revision=4)["config"] == TEXT


@pytest.mark.parametrize("kw", [{"secret": "other"}, {"contract_id": "C-2"}, {"revision": 5}])
def test_wrong_key_contract_or_revision(kw):
    blob = encrypt(TEXT, secret="s3cret", contract_id="C-1", revision=4)
    args = {"secret": "s3cret", "contract_id": "C-1", "revision": 4, **kw}
    with pytest.raises(BackupError, match="does not decrypt"):
        decrypt(blob, **args)


def test_tampered_and_garbage():
    blob = bytearray(encrypt(TEXT, secret="k", contract_id="C", revision=1))
    blob[-1] ^= 1
    with pytest.raises(BackupError):
        decrypt(bytes(blob), secret="k", contract_id="C", revision=1)
    with pytest.raises(BackupError, match="format"):
        decrypt(b"hello", secret="k", contract_id="C", revision=1)
    with pytest.raises(BackupError, match="base64"):
        decrypt_b64("!!!", secret="k", contract_id="C", revision=1)
    with pytest.raises(BackupError, match="no backup secret"):
        encrypt(TEXT, secret="", contract_id="C", revision=1)
    assert base64.b64decode(encrypt_b64(TEXT, secret="k", contract_id="C", revision=1))[:5] == b"VCRB1"


def test_nonce_is_fresh():
    a = encrypt(TEXT, secret="k", contract_id="C", revision=1)
    b = encrypt(TEXT, secret="k", contract_id="C", revision=1)
    assert a != b
