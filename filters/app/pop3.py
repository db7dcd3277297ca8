"""POP3 (RFC 1939, 2449) for the mail proxy: which replies are multi-line, dot-(un)stuffing of a
retrieved message, the octet count of a ``+OK`` to RETR. Sans-IO."""
from __future__ import annotations

import re

MULTILINE_ALWAYS = frozenset({b"RETR", b"TOP", b"CAPA"})
MULTILINE_WITHOUT_ARG = frozenset({b"LIST", b"UIDL", b"AUTH"})  # a listing without an argument
MESSAGE_COMMANDS = frozenset({b"RETR", b"TOP"})

_OCTETS = re.compile(rb"^\+OK (\d+) octets", re.IGNORECASE)


def command(line: bytes) -> tuple[bytes, bytes]:
    """(verb upper-cased, argument) of a client line (CRLF stripped)."""
    verb, _, arg = line.rstrip(b"\r\n").strip().partition(b" ")
    return verb[:16].upper(), arg.strip()


def multiline(verb: bytes, arg: bytes) -> bool:
    """True when a ``+OK`` to this command is followed by lines ending with ``.``."""
    return verb in MULTILINE_ALWAYS or (verb in MULTILINE_WITHOUT_ARG and not arg)


def unstuff(body: bytes) -> bytes:
    """The message of a multi-line reply's lines (the final ``.`` line not included): a leading
    ``..`` is one dot."""
    lines = body.split(b"\n")
    return b"\n".join(line[1:] if line.startswith(b".") else line for line in lines)


def stuff(message: bytes) -> bytes:
    """A message as multi-line reply lines, ending with CRLF (the terminating ``.`` not included)."""
    if message and not message.endswith(b"\n"):
        message += b"\r\n"
    lines = message.split(b"\n")
    return b"\n".join(b"." + line if line.startswith(b".") else line for line in lines)


def ok_line(first: bytes, size: int) -> bytes:
    """The ``+OK`` line with its octet count (``+OK 1234 octets``, Dovecot's form) set to ``size``."""
    m = _OCTETS.match(first)
    if not m:
        return first
    return first[:m.start(1)] + str(size).encode() + first[m.end(1):]
