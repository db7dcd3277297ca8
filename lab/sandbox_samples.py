"""Harmless test files for the sandbox: small, valid executables built here, never live malware.

``pe(marker=True)`` is a Windows PE32 whose code is ``xor eax, eax; ret`` (it does nothing) and
whose data holds the marker string the shipped YARA rule ``VCR_Sandbox_Test_Marker`` flags, so the
center judges it malicious; ``pe(imports=...)`` adds an import table (pefile reads it) to exercise
the import checks. ``elf()`` is a minimal x86-64 ELF that exits 0. ``salt`` makes each build a new
file (a new SHA-256), so a lab run always starts with a file the center has never seen.
"""
from __future__ import annotations

import struct

MARKER = b"VCR-SANDBOX-TEST-MALWARE-7f3c2a"


def _align(n: int, a: int) -> int:
    return (n + a - 1) // a * a


def pe(*, marker: bool = True, imports: dict[str, list[str]] | None = None, salt: bytes = b"",
       extra: bytes = b"") -> bytes:
    imports = imports or {}
    rdata_rva, text_rva = 0x2000, 0x1000
    # .rdata: import descriptors, then per DLL its lookup table, address table, name and hint/name entries
    ndesc = len(imports) + 1 if imports else 0
    body = bytearray(ndesc * 20)
    descs = []
    for dll, names in imports.items():
        ilt_off = len(body)
        body += b"\0" * 4 * (len(names) + 1)
        iat_off = len(body)
        body += b"\0" * 4 * (len(names) + 1)
        name_off = len(body)
        body += dll.encode() + b"\0"
        if len(body) % 2:
            body += b"\0"
        for i, n in enumerate(names):
            hn = len(body)
            body += struct.pack("<H", 0) + n.encode() + b"\0"
            if len(body) % 2:
                body += b"\0"
            struct.pack_into("<I", body, ilt_off + 4 * i, rdata_rva + hn)
            struct.pack_into("<I", body, iat_off + 4 * i, rdata_rva + hn)
        descs.append((ilt_off, name_off, iat_off))
    for i, (ilt, name, iat) in enumerate(descs):
        struct.pack_into("<IIIII", body, 20 * i, rdata_rva + ilt, 0, 0, rdata_rva + name, rdata_rva + iat)
    body += b"vcr-agent sandbox test file (harmless)\0" + (MARKER + b"\0" if marker else b"") + salt + extra
    text = b"\x31\xc0\xc3"  # xor eax, eax; ret
    text_raw = _align(len(text), 0x200)
    rdata_raw = _align(len(body), 0x200)
    size_of_image = _align(rdata_rva + len(body), 0x1000)

    dos = bytearray(0x40)
    dos[0:2] = b"MZ"
    struct.pack_into("<I", dos, 0x3C, 0x40)
    coff = struct.pack("<HHIIIHH", 0x14C, 2, 0, 0, 0, 0xE0, 0x0102)
    dirs = [(0, 0)] * 16
    if imports:
        dirs[1] = (rdata_rva, ndesc * 20)
    opt = struct.pack("<HBBIIIIIIIIIHHHHHHIIIIHHIIIIII", 0x10B, 14, 0, text_raw, rdata_raw, 0, text_rva, text_rva,
                      rdata_rva, 0x400000, 0x1000, 0x200, 6, 0, 0, 0, 6, 0, 0, size_of_image, 0x200, 0, 3, 0x8140,
                      0x100000, 0x1000, 0x100000, 0x1000, 0, 16)
    opt += b"".join(struct.pack("<II", *d) for d in dirs)
    sec_text = struct.pack("<8sIIIIIIHHI", b".text", len(text), text_rva, text_raw, 0x200, 0, 0, 0, 0, 0x60000020)
    sec_rdata = struct.pack("<8sIIIIIIHHI", b".rdata", len(body), rdata_rva, rdata_raw, 0x200 + text_raw, 0, 0, 0, 0,
                            0x40000040)
    head = bytes(dos) + b"PE\0\0" + coff + opt + sec_text + sec_rdata
    head += b"\0" * (0x200 - len(head))
    return head + text.ljust(text_raw, b"\0") + bytes(body).ljust(rdata_raw, b"\0")


def elf(*, marker: bool = True, salt: bytes = b"") -> bytes:
    """A minimal x86-64 Linux ELF executable: ``exit(0)``; the marker and salt follow the code."""
    code = b"\x31\xff\xb8\x3c\x00\x00\x00\x0f\x05"  # xor edi, edi; mov eax, 60; syscall
    tail = code + (MARKER if marker else b"") + salt
    base, hdr = 0x400000, 64 + 56
    eh = b"\x7fELF" + bytes([2, 1, 1, 0]) + b"\0" * 8
    eh += struct.pack("<HHIQQQIHHHHHH", 2, 0x3E, 1, base + hdr, 64, 0, 0, 64, 56, 1, 0, 0, 0)
    ph = struct.pack("<IIQQQQQQ", 1, 5, 0, base, base, hdr + len(tail), hdr + len(tail), 0x1000)
    return eh + ph + tail
