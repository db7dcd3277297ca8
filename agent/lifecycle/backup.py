"""Encrypted config backups for the replacement box (issue 6, item 3).

Every applied config revision is sent to the center (``POST /api/v1/backups``) as an opaque blob:

    b"VCRB1" | nonce (12 bytes) | AES-256-GCM(zlib(JSON {"revision", "config", "meta"}))

The key is HKDF-SHA256 of the contract's backup secret (the center hands it to every box activated
for the contract, so a replacement box gets it too), with the contract id as ``info``. The
associated data binds a blob to its contract and revision: a blob moved to another contract or
revision number does not decrypt.

Threat model: this protects backups at rest in the center's database and in anything copied from
it (DB dumps, exports, logs) against readers who do not also hold the secrets table, and it lets
the box detect a damaged or altered backup. It does not protect against the center's operator,
who holds the secret by design (otherwise a new box could not restore).
"""
from __future__ import annotations

import base64
import json
import os
import zlib
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

MAGIC = b"VCRB1"
SALT = b"vcr-agent config backup v1"
NONCE_LEN = 12


class BackupError(Exception):
    """The backup cannot be made or read (no secret, wrong key, damaged); bilingual message."""


def derive_key(secret: str, contract_id: str) -> bytes:
    if not secret:
        raise BackupError("バックアップ用の鍵がありません (アクティベーションし直してください) / "
                          "no backup secret: the box was activated before the center handed one out")
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=SALT, info=contract_id.encode("utf-8")).derive(
        secret.encode("utf-8"))


def _aad(contract_id: str, revision: int) -> bytes:
    return f"vcr-backup|{contract_id}|{int(revision)}".encode("utf-8")


def encrypt(config_text: str, *, secret: str, contract_id: str, revision: int,
            meta: dict[str, Any] | None = None) -> bytes:
    payload = json.dumps({"revision": int(revision), "config": config_text, "meta": meta or {}},
                         ensure_ascii=False).encode("utf-8")
    nonce = os.urandom(NONCE_LEN)
    ct = AESGCM(derive_key(secret, contract_id)).encrypt(nonce, zlib.compress(payload, 9), _aad(contract_id, revision))
    return MAGIC + nonce + ct


def decrypt(blob: bytes, *, secret: str, contract_id: str, revision: int) -> dict[str, Any]:
    """-> {"revision", "config", "meta"}; BackupError when it is not ours, altered or damaged."""
    if not blob.startswith(MAGIC) or len(blob) < len(MAGIC) + NONCE_LEN + 16:
        raise BackupError("バックアップの形式が不明です / the backup is not in a known format")
    nonce = blob[len(MAGIC):len(MAGIC) + NONCE_LEN]
    try:
        plain = AESGCM(derive_key(secret, contract_id)).decrypt(nonce, blob[len(MAGIC) + NONCE_LEN:],
                                                                _aad(contract_id, revision))
        data = json.loads(zlib.decompress(plain))
    except InvalidTag:
        raise BackupError("バックアップを復号できません (鍵が違うか改ざんされています) / "
                          "the backup does not decrypt: wrong key, another contract or revision, or altered") from None
    except (zlib.error, ValueError) as exc:
        raise BackupError(f"バックアップが壊れています / the backup is damaged: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("config"), str):
        raise BackupError("バックアップに設定が含まれていません / the backup holds no configuration")
    return data


def encrypt_b64(config_text: str, **kw: Any) -> str:
    return base64.b64encode(encrypt(config_text, **kw)).decode("ascii")


def decrypt_b64(blob_b64: str, **kw: Any) -> dict[str, Any]:
    try:
        blob = base64.b64decode(blob_b64, validate=True)
    except ValueError:
        raise BackupError("バックアップが base64 ではありません / the backup is not base64") from None
    return decrypt(blob, **kw)
