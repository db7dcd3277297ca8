"""File types from bytes (filters/app/magic.py), in libmagic's words."""
from __future__ import annotations

import gzip
import io
import zipfile

import pytest

from filters.app.magic import detect

EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"


def _zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("a.txt", "hello")
    return buf.getvalue()


def _pe(dll: bool = False, plus: bool = False) -> bytes:
    head = bytearray(b"MZ" + b"\0" * 0x3E + b"\0" * 64)
    head[0x3C:0x40] = (0x80).to_bytes(4, "little")
    pe = b"PE\0\0" + b"\0" * 18 + (0x2000 if dll else 0x0102).to_bytes(2, "little") + (b"\x0b\x02" if plus else b"\x0b\x01")
    return bytes(head) + pe + b"\0" * 200


@pytest.mark.parametrize("data, want", [
    (EICAR, "EICAR virus test files"),
    (_zip(), "Zip archive data"),
    (gzip.compress(b"x"), "gzip compressed data"),
    (b"%PDF-1.7\n...", "PDF document"),
    (_pe(), "PE32 executable, for MS Windows"),
    (_pe(dll=True, plus=True), "PE32+ (DLL), for MS Windows"),
    (b"MZ\x90\0", "MS-DOS executable"),
    (b"\x7fELF\x02\x01", "ELF"),
    (b"  <!DOCTYPE html><html>", "HTML document text"),
    (b"hello world\n", "ASCII text"),
    ("こんにちは".encode(), "UTF-8 Unicode text"),
    (b"\x00\x01\x02\xff", "data"),
    (b"", ""),
    (b"\0" * 257 + b"ustar\x0000", "POSIX tar archive"),
])
def test_detect(data: bytes, want: str):
    assert detect(data) == want
