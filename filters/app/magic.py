"""File-type detection from a file's first bytes, for ``FileEvent.magic`` and the EVE ``fileinfo``.

A documented signature table instead of libmagic: the box's filters stay pure Python (python-magic
needs libmagic and its compiled database on the box, and its output varies with the libmagic
version). The descriptions follow libmagic's wording, as Suricata writes ``fileinfo.magic``, for
the types that matter to an antivirus: executables, archives, documents, scripts. Unknown data is
``data``, printable text ``ASCII text``.
"""
from __future__ import annotations

# (offset, bytes, description), first match wins: more specific entries come first.
SIGNATURES: tuple[tuple[int, bytes, str], ...] = (
    (0, b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR", "EICAR virus test files"),
    (0, b"PK\x03\x04", "Zip archive data"),
    (0, b"PK\x05\x06", "Zip archive data (empty)"),
    (0, b"7z\xbc\xaf\x27\x1c", "7-zip archive data"),
    (0, b"Rar!\x1a\x07\x01\x00", "RAR archive data, v5"),
    (0, b"Rar!\x1a\x07\x00", "RAR archive data, v4"),
    (0, b"\x1f\x8b", "gzip compressed data"),
    (0, b"BZh", "bzip2 compressed data"),
    (0, b"\xfd7zXZ\x00", "XZ compressed data"),
    (0, b"\x28\xb5\x2f\xfd", "Zstandard compressed data"),
    (257, b"ustar", "POSIX tar archive"),
    (0, b"MSCF", "Microsoft Cabinet archive data"),
    (0, b"ISc(", "InstallShield CAB"),
    (0, b"\x60\xea", "ARJ archive data"),
    (0, b"070701", "ASCII cpio archive (SVR4 with no CRC)"),
    (0, b"070702", "ASCII cpio archive (SVR4 with CRC)"),
    (0, b"070707", "ASCII cpio archive (pre-SVR4 or odc)"),
    (0, b"\xc7\x71", "cpio archive (little-endian)"),
    (0, b"\x71\xc7", "cpio archive (big-endian)"),
    (0, b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "Composite Document File V2 Document"),
    (0, b"%PDF-", "PDF document"),
    (0, b"{\\rtf", "Rich Text Format data"),
    (0, b"ITSF", "MS Windows HtmlHelp Data"),
    (0, b"\x78\x9f\x3e\x22", "Transport Neutral Encapsulation Format"),
    (0, b"SZDD", "MS Compress archive data, SZDD variant"),
    (0, b"(This file must be converted with BinHex", "BinHex binary text"),
    (0, b"\x7fELF", "ELF"),
    (0, b"\xca\xfe\xba\xbe", "Mach-O universal binary"),
    (0, b"\xcf\xfa\xed\xfe", "Mach-O 64-bit executable"),
    (0, b"#!", "script text executable"),
    (0, b"\x89PNG\r\n\x1a\n", "PNG image data"),
    (0, b"\xff\xd8\xff", "JPEG image data"),
    (0, b"GIF8", "GIF image data"),
    (0, b"From ", "mail text"),
    (0, b"Return-Path:", "mail text"),
)
_HTML = (b"<!doctype html", b"<html", b"<head", b"<script", b"<body")


def _pe(data: bytes) -> str | None:
    """``MZ`` executables: PE32 / PE32+ (DLL or executable) when the PE header is found."""
    if not data.startswith(b"MZ"):
        return None
    if len(data) >= 0x40:
        off = int.from_bytes(data[0x3C:0x40], "little")
        if 0x40 <= off <= len(data) - 26 and data[off:off + 4] == b"PE\x00\x00":
            opt = data[off + 24:off + 26]
            chars = int.from_bytes(data[off + 22:off + 24], "little")
            kind = "PE32+" if opt == b"\x0b\x02" else "PE32"
            what = "(DLL)" if chars & 0x2000 else "executable"
            return f"{kind} {what}, for MS Windows"
    return "MS-DOS executable"


def detect(data: bytes) -> str:
    """The type of ``data`` (a file or its first bytes) in libmagic's words; ``""`` for no data."""
    if not data:
        return ""
    pe = _pe(data)
    if pe:
        return pe
    for offset, sig, desc in SIGNATURES:
        if data[offset:offset + len(sig)] == sig:
            return desc
    head = data[:512].lstrip().lower()
    if any(head.startswith(t) for t in _HTML):
        return "HTML document text"
    sample = data[:4096]
    if all(b in b"\t\n\r\x0c" or 0x20 <= b < 0x7f for b in sample):
        return "ASCII text"
    try:
        sample.decode("utf-8")
        return "UTF-8 Unicode text"
    except UnicodeDecodeError:
        pass
    return "data"
