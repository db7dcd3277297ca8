"""HTTP/2 framing constants (RFC 9113 section 6) and small frame-payload helpers."""
from __future__ import annotations

import base64
import binascii

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"  # the client connection preface (RFC 9113 3.4)
FRAME_HEADER = 9

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
FRAME_NAMES = ("data", "headers", "priority", "rst_stream", "settings", "push_promise", "ping", "goaway",
               "window_update", "continuation")

END_STREAM = 0x1  # DATA, HEADERS (ACK on SETTINGS and PING)
ACK = 0x1
END_HEADERS = 0x4  # HEADERS, PUSH_PROMISE, CONTINUATION
PADDED = 0x8  # DATA, HEADERS, PUSH_PROMISE
PRIORITY_FLAG = 0x20  # HEADERS

# SETTINGS identifiers
SETTINGS_HEADER_TABLE_SIZE = 0x1
SETTINGS_ENABLE_PUSH = 0x2
SETTINGS_MAX_CONCURRENT_STREAMS = 0x3
SETTINGS_INITIAL_WINDOW_SIZE = 0x4
SETTINGS_MAX_FRAME_SIZE = 0x5
SETTINGS_MAX_HEADER_LIST_SIZE = 0x6

DEFAULT_MAX_FRAME_SIZE = 16384  # until the receiver's SETTINGS say otherwise
MAX_FRAME_SIZE_LIMIT = (1 << 24) - 1
MAX_WINDOW = (1 << 31) - 1

# Fields RFC 9113 8.2.2 forbids (connection-specific), and the pseudo-headers of each side (8.3).
CONNECTION_SPECIFIC = frozenset({b"connection", b"proxy-connection", b"keep-alive", b"transfer-encoding", b"upgrade"})
REQUEST_PSEUDO = frozenset({b":method", b":scheme", b":authority", b":path", b":protocol"})
RESPONSE_PSEUDO = frozenset({b":status"})


def fixed_length_ok(ftype: int, length: int) -> bool:
    """Whether a control frame's payload length fits its type (RFC 9113 section 6)."""
    if ftype == PRIORITY:
        return length == 5
    if ftype in (RST_STREAM, WINDOW_UPDATE):
        return length == 4
    if ftype == PING:
        return length == 8
    if ftype == SETTINGS:
        return length % 6 == 0
    if ftype == GOAWAY:
        return length >= 8
    return True


def parse_settings(payload: bytes) -> list[tuple[int, int]]:
    """(identifier, value) pairs of a SETTINGS payload (a multiple of 6 bytes)."""
    return [(int.from_bytes(payload[i:i + 2], "big"), int.from_bytes(payload[i + 2:i + 6], "big"))
            for i in range(0, len(payload) - len(payload) % 6, 6)]


def settings_problem(ident: int, value: int) -> bool:
    """A setting value RFC 9113 6.5.2 calls a connection error."""
    if ident == SETTINGS_ENABLE_PUSH:
        return value > 1
    if ident == SETTINGS_INITIAL_WINDOW_SIZE:
        return value > MAX_WINDOW
    if ident == SETTINGS_MAX_FRAME_SIZE:
        return not DEFAULT_MAX_FRAME_SIZE <= value <= MAX_FRAME_SIZE_LIMIT
    return False


def http1_settings(value: bytes) -> bytes | None:
    """The SETTINGS payload of an ``HTTP2-Settings`` header (base64url, padding optional), None if invalid."""
    v = value.strip()
    if not v or len(v) > 4096:
        return None
    try:
        payload = base64.b64decode(v + b"=" * (-len(v) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(payload) % 6:
        return None
    return payload
