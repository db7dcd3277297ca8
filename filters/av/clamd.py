"""clamd's protocol over its unix socket, client side: one command a connection (``zPING``,
``zVERSION``, ``zRELOAD``, ``zINSTREAM`` with 4-byte big-endian chunk lengths and a zero chunk to
end), answers NUL-terminated (``stream: OK``, ``stream: NAME FOUND``, ``... ERROR``). Standard
library only; shared by the box (agent/dataplane/clamd.py: scans, streams, reloads) and the center's
sandbox analyzer (opscenter/sandbox/analyzer.py).
"""
from __future__ import annotations

import socket
import struct
import time
from typing import Any

CHUNK = 64 * 1024


class ClamdError(Exception):
    """clamd could not be asked (down, refused, timed out) or answered an error."""


def send_chunks(s: socket.socket, data: bytes | bytearray | memoryview) -> None:
    """``data`` as INSTREAM chunks (the zero chunk that ends the stream is the caller's)."""
    view = memoryview(data)
    for i in range(0, len(view), CHUNK):
        piece = view[i:i + CHUNK]
        s.sendall(struct.pack("!I", len(piece)) + piece)


def end_stream(s: socket.socket) -> None:
    s.sendall(struct.pack("!I", 0))


ONE_SEND = 2 << 20  # payloads up to this size go to clamd in one send (command, chunks and end together)


def framed(name: bytes, data: bytes | bytearray | memoryview) -> bytes:
    """Command ``name`` with ``data`` as INSTREAM chunks and the zero chunk, as one buffer: one
    ``sendall`` instead of one per chunk. Each send returns to Python, and in a worker whose packet
    thread keeps the interpreter busy every return waits for its turn (up to the switch interval,
    agent/dataplane/worker.py ``SWITCH_INTERVAL``), while clamd scans a small file in well under a
    millisecond."""
    view = memoryview(data)
    parts = [b"z" + name + b"\0"]
    for i in range(0, len(view), CHUNK):
        piece = view[i:i + CHUNK]
        parts += (struct.pack("!I", len(piece)), piece)
    parts.append(struct.pack("!I", 0))
    return b"".join(parts)


def read_reply(s: socket.socket, deadline: float | None = None) -> str:
    """clamd's answer up to its NUL (or until it closes), as text; each read waits until ``deadline``
    (``time.monotonic()``) when given, else the socket's timeout."""
    buf = b""
    while not buf.endswith(b"\0"):
        if deadline is not None:
            s.settimeout(max(0.01, deadline - time.monotonic()))
        got = s.recv(4096)
        if not got:
            break
        buf += got
    return buf.rstrip(b"\0").decode("utf-8", "replace").strip()


def command(path: str, name: bytes, timeout: float, payload: bytes | None = None) -> str:
    """clamd's answer to command ``name`` (``payload`` streamed with INSTREAM), all within ``timeout``."""
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect(path)
            if payload is not None and len(payload) <= ONE_SEND:
                s.sendall(framed(name, payload))
            else:
                s.sendall(b"z" + name + b"\0")
                if payload is not None:
                    send_chunks(s, payload)
                    end_stream(s)
            reply = read_reply(s, deadline)
        except OSError as exc:
            raise ClamdError(f"clamd {path}: {exc}") from exc
    if not reply:
        raise ClamdError(f"clamd {path}: no answer")
    return reply


def parse_reply(reply: str) -> dict[str, Any]:
    """``stream: OK`` -> {"status": "OK"}; ``stream: Eicar-Test-Signature FOUND`` -> FOUND and the
    name; anything else is an error (``INSTREAM size limit exceeded. ERROR``...)."""
    body = reply.split(": ", 1)[1] if reply.startswith("stream: ") else reply
    if body == "OK":
        return {"status": "OK", "virus": ""}
    if body.endswith(" FOUND"):
        return {"status": "FOUND", "virus": body[: -len(" FOUND")].strip()}
    raise ClamdError(f"clamd: {reply}")


def instream(path: str, data: bytes, timeout: float) -> dict[str, Any]:
    """INSTREAM of ``data``: {"status": "OK"|"FOUND", "virus": name}; raises ClamdError."""
    return parse_reply(command(path, b"INSTREAM", timeout, data))


def ping(path: str, timeout: float = 2.0) -> bool:
    try:
        return command(path, b"PING", timeout) == "PONG"
    except ClamdError:
        return False


def version(path: str, timeout: float = 2.0) -> str:
    return command(path, b"VERSION", timeout)


def reload(path: str, timeout: float = 5.0) -> str:
    """Ask clamd to load its database again (answers ``RELOADING``; scans go on meanwhile)."""
    return command(path, b"RELOAD", timeout)
