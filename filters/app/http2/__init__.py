"""HTTP/2 in clear text (h2c) for the IPS: one sans-IO ``Http2Parser`` per TCP flow.

Modules:

* ``frames``  framing constants (RFC 9113), SETTINGS and ``HTTP2-Settings`` helpers;
* ``hpack``   streaming HPACK decoding per direction on the ``hpack`` package's tables and Huffman code;
* ``parser``  ``Http2Parser``: both directions' frames, streams as ``HttpTransaction``s, limits, events.

Why not the ``h2`` package: ``h2.connection.H2Connection`` is an endpoint. It validates and answers
as one side of the connection (flow-control windows, stream states, header validation that raises),
so an observer would need two of them, one per direction, and the client-side one refuses
responses on streams it did not open itself; its errors end the connection state, where an
observer must raise an anomaly and read on. The frame layer is small and ours; HPACK, where the
real complexity is (tables, Huffman), is the ``hpack`` package's.
"""
from filters.app.http2.frames import PREFACE
from filters.app.http2.parser import (
    DEFAULT_MAX_CONTINUATIONS,
    DEFAULT_MAX_HEADER_BLOCK,
    DEFAULT_MAX_HEADER_LIST,
    DEFAULT_MAX_STREAMS,
    DEFAULT_MAX_TABLE_SIZE,
    Http2Parser,
)

__all__ = [
    "DEFAULT_MAX_CONTINUATIONS",
    "DEFAULT_MAX_HEADER_BLOCK",
    "DEFAULT_MAX_HEADER_LIST",
    "DEFAULT_MAX_STREAMS",
    "DEFAULT_MAX_TABLE_SIZE",
    "PREFACE",
    "Http2Parser",
    "preface_state",
]


def preface_state(data: bytes) -> bool | None:
    """Whether client bytes start with the HTTP/2 connection preface: True, False, or None while
    they are a shorter prefix of it (wait for more)."""
    if len(data) >= len(PREFACE):
        return data.startswith(PREFACE)
    return None if PREFACE.startswith(data) else False
