"""Which files carry code, from their bytes (``filters.app.magic``) and, for text, their name.

Kinds: ``pe`` (Windows executables and DLLs), ``elf``, ``macho``, ``office`` (OLE or OOXML documents
with VBA macros), ``pdf`` (with JavaScript or a launch action), ``script`` (``#!`` scripts; text
files named .ps1, .vbs, .js, .bat, .cmd, .hta, .wsf, .jse, .vbe, .sh), ``archive`` (zip, 7z, RAR,
cab, gzip/tar holding any of these: a zip is looked into, the others are taken as they are).
Pure and bounded: at most ``ZIP_MEMBERS`` names of a zip are read, nothing is decompressed.
"""
from __future__ import annotations

import io
import re
import zipfile

KINDS = ("pe", "elf", "macho", "office", "pdf", "script", "archive")
ZIP_MEMBERS = 512
SCRIPT_EXT = (b".ps1", b".psm1", b".vbs", b".vbe", b".js", b".jse", b".bat", b".cmd", b".hta", b".wsf", b".sh",
              b".scr", b".lnk")
CODE_EXT = (b".exe", b".dll", b".scr", b".com", b".msi", b".sys", b".cpl", b".elf", b".so", b".jar", b".apk",
            b".dmg", b".pkg", b".app", b".docm", b".xlsm", b".pptm", b".dotm") + SCRIPT_EXT
_MACHO = (b"\xfe\xed\xfa\xce", b"\xce\xfa\xed\xfe", b"\xfe\xed\xfa\xcf", b"\xcf\xfa\xed\xfe", b"\xca\xfe\xba\xbe")
_PDF_CODE = re.compile(rb"/(JavaScript|JS|Launch)\b")
_OLE_VBA = (b"_VBA_PROJECT", "_VBA_PROJECT".encode("utf-16-le"), b"V\x00B\x00A\x00")


def _zip_kind(data: bytes) -> str | None:
    try:
        names = [i.filename.encode("utf-8", "replace").lower()
                 for i in zipfile.ZipFile(io.BytesIO(data)).infolist()[:ZIP_MEMBERS]]
    except Exception:  # corrupt or cut short: judged by its name list alone when readable, else not code
        return None
    if any(n.endswith(b"vbaproject.bin") for n in names):
        return "office"
    if any(n.endswith(CODE_EXT) for n in names):
        return "archive"
    return None


def code_kind(data: bytes, magic: str, name: bytes = b"") -> str | None:
    """The kind of code ``data`` carries, or None (not a type the sandbox looks at)."""
    if magic.startswith(("PE32", "MS-DOS executable")):
        return "pe"
    if magic == "ELF":
        return "elf"
    if magic.startswith("Mach-O") or data[:4] in _MACHO:
        return "macho"
    if magic.startswith("Composite Document File"):
        return "office" if any(v in data for v in _OLE_VBA) else None
    if magic == "PDF document":
        return "pdf" if _PDF_CODE.search(data) else None
    if magic.startswith("Zip archive"):
        return _zip_kind(data)
    if magic.startswith(("7-zip", "RAR archive", "Microsoft Cabinet", "gzip", "POSIX tar", "XZ", "bzip2")):
        return "archive"  # not looked into (that would mean decompressing on the packet path): all count
    if magic == "script text executable":
        return "script"
    if magic in ("ASCII text", "UTF-8 Unicode text") and name.lower().endswith(SCRIPT_EXT):
        return "script"
    return None

