"""The center's signature on operating records: Ed25519 (``cryptography``), over canonical JSON.

Signed record file (``operating-record-<contract>-<YYYY-MM>.json``), the whole file canonical JSON plus
one newline::

    {"format":"vcr-operating-record/1",
     "record":{...the record, with "generated_at" and "key_id"...},
     "signature":{"alg":"Ed25519","key_id":"<16 hex>","public_key":"<base64, 32 bytes>","value":"<base64, 64 bytes>"}}

Canonical JSON: UTF-8, object keys sorted by code point, no whitespace, ``json.dumps(...,
sort_keys=True, separators=(",", ":"), ensure_ascii=False)``; the record holds only strings,
integers, booleans, null, lists and objects (no floats). The signed message is
``b"vcr-operating-record/1\\n" + canonical(record)``. The key id is the first 16 hex digits of the
SHA-256 of the raw 32-byte public key.

Verification is strict: the file must be exactly the canonical form of what it parses to (so any
changed byte, even whitespace, makes it invalid), the key id must match the public key, and the
signature must verify. The embedded public key only proves the file is intact; that the center signed
it takes the center's published public key (``--pubkey``) or its key id (``--key-id``).
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

FORMAT = "vcr-operating-record/1"
DOMAIN = FORMAT.encode() + b"\n"
KEY_FILE = "report-signing.key"
PUB_FILE = "report-signing.pub"
MAX_FILE = 1 << 20


class RecordError(ValueError):
    """A signed record that is not valid (the message says why)."""


def _check(obj: Any, path: str = "record") -> None:
    if isinstance(obj, float):
        raise TypeError(f"{path}: floats are not allowed in a signed record")
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, str):
                raise TypeError(f"{path}: keys must be strings")
            _check(v, f"{path}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            _check(v, f"{path}[{i}]")
    elif not (obj is None or isinstance(obj, (str, int, bool))):
        raise TypeError(f"{path}: {type(obj).__name__} is not JSON")


def canonical(obj: Any) -> bytes:
    _check(obj)
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def raw_public(pub: Ed25519PublicKey) -> bytes:
    return pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id_of(pub: Ed25519PublicKey) -> str:
    return hashlib.sha256(raw_public(pub)).hexdigest()[:16]


def public_pem(pub: Ed25519PublicKey) -> str:
    return pub.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


@dataclass(frozen=True)
class SigningKey:
    private: Ed25519PrivateKey

    @property
    def public(self) -> Ed25519PublicKey:
        return self.private.public_key()

    @property
    def key_id(self) -> str:
        return key_id_of(self.public)

    @property
    def public_pem(self) -> str:
        return public_pem(self.public)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "SigningKey":
        data = Path(path).read_bytes()
        key = serialization.load_pem_private_key(data, password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{path}: not an Ed25519 private key")
        return cls(key)


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def ensure_key(directory: str | os.PathLike[str]) -> tuple[Path, Path, bool]:
    """``report-signing.key`` (0600) and ``report-signing.pub`` in ``directory``: kept when present (records
    signed before stay verifiable), created otherwise. Returns (key path, public key path, created)."""
    d = Path(directory)
    key_path, pub_path = d / KEY_FILE, d / PUB_FILE
    created = False
    if key_path.exists():
        key = SigningKey.load(key_path)
    else:
        priv = Ed25519PrivateKey.generate()
        _write_private(key_path, priv.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                    serialization.NoEncryption()))
        key, created = SigningKey(priv), True
    if created or not pub_path.exists():
        pub_path.write_text(key.public_pem)
    return key_path, pub_path, created


def load_public(path: str | os.PathLike[str]) -> Ed25519PublicKey:
    """A PEM public key (``report-signing.pub``), or a PEM private key (its public half)."""
    data = Path(path).read_bytes()
    try:
        pub = serialization.load_pem_public_key(data)
    except ValueError:
        priv = serialization.load_pem_private_key(data, password=None)
        pub = priv.public_key()  # type: ignore[assignment]
    if not isinstance(pub, Ed25519PublicKey):
        raise ValueError(f"{path}: not an Ed25519 key")
    return pub


def sign_record(record: dict[str, Any], key: SigningKey, generated_at: str) -> bytes:
    """The signed record file (see the module text) for ``record``, stamped with ``generated_at`` and the key id."""
    body = {**record, "generated_at": generated_at, "key_id": key.key_id}
    sig = key.private.sign(DOMAIN + canonical(body))
    envelope = {"format": FORMAT, "record": body, "signature": {
        "alg": "Ed25519", "key_id": key.key_id, "public_key": base64.b64encode(raw_public(key.public)).decode(),
        "value": base64.b64encode(sig).decode()}}
    return canonical(envelope) + b"\n"


def record_digest(data: bytes) -> str:
    """SHA-256 of a signed record file (printed on the report, so the PDF and the file can be matched)."""
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Verified:
    record: dict[str, Any]
    key_id: str
    pinned: bool  # checked against a key the caller trusts (not only the embedded one)
    digest: str


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise RecordError(f"duplicate key {k!r}")
        out[k] = v
    return out


def _constant(name: str) -> Any:
    raise RecordError(f"{name} is not allowed")


def _b64(text: Any, size: int, what: str) -> bytes:
    if not isinstance(text, str):
        raise RecordError(f"{what} is missing")
    try:
        raw = base64.b64decode(text, validate=True)
    except ValueError:
        raise RecordError(f"{what} is not base64") from None
    if len(raw) != size or base64.b64encode(raw).decode() != text:
        raise RecordError(f"{what} must be {size} bytes in canonical base64")
    return raw


def verify(data: bytes, trusted: list[Ed25519PublicKey] | None = None, key_ids: list[str] | None = None) -> Verified:
    """Check a signed record file; RecordError says what is wrong. With ``trusted`` keys or ``key_ids``
    the signing key must be one of them."""
    if len(data) > MAX_FILE:
        raise RecordError("file too large for a signed record")
    try:
        text = data.decode("utf-8")
        env = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_constant, parse_float=_float)
    except UnicodeDecodeError:
        raise RecordError("not UTF-8") from None
    except json.JSONDecodeError as exc:
        raise RecordError(f"not JSON: {exc.msg} at byte {exc.pos}") from None
    if not isinstance(env, dict) or set(env) != {"format", "record", "signature"}:
        raise RecordError("not a signed operating record (expected format, record, signature)")
    if env["format"] != FORMAT:
        raise RecordError(f"unknown format {env['format']!r} (expected {FORMAT})")
    try:
        if canonical(env) + b"\n" != data:
            raise RecordError("the file is not in canonical form (it was changed after signing)")
    except TypeError as exc:
        raise RecordError(str(exc)) from None
    sig, record = env["signature"], env["record"]
    if not isinstance(sig, dict) or not isinstance(record, dict):
        raise RecordError("record and signature must be objects")
    if sig.get("alg") != "Ed25519":
        raise RecordError(f"unsupported signature algorithm {sig.get('alg')!r}")
    pub = Ed25519PublicKey.from_public_bytes(_b64(sig.get("public_key"), 32, "signature.public_key"))
    kid = key_id_of(pub)
    if sig.get("key_id") != kid or record.get("key_id") != kid:
        raise RecordError("the key id does not match the public key")
    try:
        pub.verify(_b64(sig.get("value"), 64, "signature.value"), DOMAIN + canonical(record))
    except InvalidSignature:
        raise RecordError("the signature does not match the record (it was changed after signing)") from None
    pinned = False
    if trusted or key_ids:
        ok = {key_id_of(k) for k in trusted or []} | {k.lower() for k in key_ids or []}
        if kid not in ok:
            raise RecordError(f"signed by key {kid}, which is not the center's published key")
        pinned = True
    return Verified(record=record, key_id=kid, pinned=pinned, digest=record_digest(data))


def _float(text: str) -> Any:
    raise RecordError(f"floats are not allowed in a signed record ({text})")
