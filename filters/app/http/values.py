"""Small HTTP value parsers, lenient like libhtp: Content-Length, chunk lengths, status codes, protocol versions."""
from __future__ import annotations

import re

_CHUNK_LEN = re.compile(rb"[ \t]*([0-9a-fA-F]*)[ \t]*")
_DIGITS = re.compile(rb"[0-9]+")
_PROTOCOL = re.compile(rb"\s*HTTP\s*/[\s0]*(\.9|1\.0|1\.1)\s*\Z", re.IGNORECASE)


def parse_content_length(value: bytes) -> int | None:
    """libhtp: the first run of digits, junk before and after allowed; None without digits."""
    m = _DIGITS.search(value)
    if m is None or len(m.group()) > 19:
        return None
    return int(m.group())


def parse_chunk_length(line: bytes) -> int | None:
    """Hex length after leading control characters; -1 when the line carries no length at all."""
    s = line.lstrip(b"\r\n \t\x0b\x0c")
    m = _CHUNK_LEN.match(s)
    digits = m.group(1) if m else b""
    if not digits:
        return -1 if not s[m.end():] else None
    if len(digits) > 16:
        return None
    n = int(digits, 16)
    return -1 if n > 0x7FFFFFFF else n


def parse_status(status: bytes) -> int | None:
    if not status or not status.isdigit() or len(status) > 5:
        return None
    n = int(status)
    return n if 100 <= n <= 999 else None


def protocol_ok(protocol: bytes) -> bool:
    return _PROTOCOL.match(protocol) is not None


def protocol_at_least_11(protocol: bytes) -> bool:
    m = _PROTOCOL.match(protocol)
    return m is not None and m.group(1) == b"1.1"


def looks_like_status_line(line: bytes) -> bool:
    """Browsers read anything starting with optional whitespace/NUL then "http" as a status line."""
    s = line.lstrip(b" \t\r\n\x0b\x0c\x00")
    return s[:4].lower() == b"http"


def nozero_lower(b: bytes) -> bytes:
    return b.replace(b"\x00", b"").lower()
