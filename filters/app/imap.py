"""IMAP4rev1 (RFC 3501) for the mail proxy: server responses cut into units with their literals,
which literal is a whole message (``BODY[]``, ``RFC822``, ``BINARY[]``), a part or section, or a
partial fetch; client commands scanned for STARTTLS and COMPRESS (after which the stream cannot be
read) without mistaking literal data for commands. Sans-IO."""
from __future__ import annotations

import re
from dataclasses import dataclass, field

MAX_LINE = 64 * 1024  # a response line longer than this is passed through unparsed

_LITERAL = re.compile(rb"(~?)\{(\d{1,12})(\+?)\}\r?\n$")
_ITEM = re.compile(rb"(BODY|BINARY|RFC822(?:\.TEXT|\.HEADER)?)(\[[^\]]*\])?(<\d+>)?\s*~?\{\d+\+?\}\r?\n$",
                   re.IGNORECASE)


def literal_kind(text: bytes) -> str:
    """What the literal that ``text`` (the line up to and including ``{N}\\r\\n``) announces:
    "message" (a whole message), "partial" (a byte range of something), "section" (a part,
    BODY[TEXT], RFC822.TEXT: content without the message's headers), "header", or "other"."""
    m = _ITEM.search(text)
    if not m:
        return "other"
    item, section, partial = m.group(1).upper(), (m.group(2) or b"").upper(), m.group(3)
    if item == b"RFC822.HEADER" or b"HEADER" in section or b"MIME" in section:
        return "header"
    if partial:
        return "partial"
    if item == b"RFC822" or section == b"[]":
        return "message"
    return "section"


@dataclass
class Unit:
    """One server response: ``segments`` [(text, literal or None)], the text of the last ending in CRLF."""

    segments: list[tuple[bytes, bytes | None]] = field(default_factory=list)

    def encode(self) -> bytes:
        out = bytearray()
        for text, literal in self.segments:
            out += text
            if literal is not None:
                out += literal
        return bytes(out)


def with_literal(text: bytes, literal: bytes) -> bytes:
    """``text`` with its literal count set to ``len(literal)`` (``~`` and a non-synchronizing ``+`` kept)."""
    return _LITERAL.sub(lambda m: m.group(1) + b"{%d%s}" % (len(literal), m.group(3))
                        + (b"\r\n" if m.group(0).endswith(b"\r\n") else b"\n"), text, count=1)


class ResponseReader:
    """Server bytes in, output items out: ``("unit", Unit)`` for a complete response, or ``("raw",
    bytes)`` for bytes passed through unparsed (a literal larger than ``max_literal``, an overlong
    line)."""

    def __init__(self, max_literal: int) -> None:
        self.max_literal = max_literal
        self._buf = bytearray()
        self._unit = Unit()
        self._text = b""
        self._need = -1  # literal bytes still wanted (-1: reading a line)
        self._raw_left = 0  # bytes of an oversize literal still to pass through

    def feed(self, data: bytes) -> list[tuple[str, object]]:
        out: list[tuple[str, object]] = []
        self._buf += data
        while self._buf:
            if self._raw_left:
                take = min(self._raw_left, len(self._buf))
                out.append(("raw", bytes(self._buf[:take])))
                del self._buf[:take]
                self._raw_left -= take
                continue
            if self._need >= 0:
                if len(self._buf) < self._need:
                    break
                literal = bytes(self._buf[:self._need])
                del self._buf[:self._need]
                self._unit.segments.append((self._text, literal))
                self._need = -1
                continue
            nl = self._buf.find(b"\n")
            if nl < 0:
                if len(self._buf) > MAX_LINE:  # not IMAP as we know it: pass what we have
                    out.extend(self._flush())
                    out.append(("raw", bytes(self._buf)))
                    self._buf.clear()
                break
            line = bytes(self._buf[:nl + 1])
            del self._buf[:nl + 1]
            m = _LITERAL.search(line)
            if m is None:
                self._unit.segments.append((line, None))
                out.append(("unit", self._unit))
                self._unit = Unit()
                continue
            size = int(m.group(2))
            if size > self.max_literal:
                out.extend(self._flush())
                out.append(("raw", line))
                out.append(("oversize", literal_kind(line)))
                self._raw_left = size
                continue
            self._text, self._need = line, size
        return out

    def _flush(self) -> list[tuple[str, object]]:
        """The unit so far as raw bytes (it will not be rewritten)."""
        if not self._unit.segments:
            return []
        data = self._unit.encode()
        self._unit = Unit()
        return [("raw", data)]


class CommandScanner:
    """Client bytes in; notes the tag of a STARTTLS or COMPRESS command (after its OK the stream is
    encrypted or compressed). Literal data (APPEND) is skipped, never read as commands."""

    def __init__(self) -> None:
        self._line = bytearray()
        self._skip = 0
        self.starttls_tag: bytes | None = None
        self.compress_tag: bytes | None = None

    def feed(self, data: bytes) -> None:
        view, pos = memoryview(data), 0
        while pos < len(data):
            if self._skip:
                take = min(self._skip, len(data) - pos)
                self._skip -= take
                pos += take
                continue
            nl = data.find(b"\n", pos)
            end = len(data) if nl < 0 else nl + 1
            if len(self._line) < MAX_LINE:
                self._line += view[pos:end]
            pos = end
            if nl < 0:
                break
            line = bytes(self._line)
            self._line.clear()
            m = _LITERAL.search(line)
            if m:
                self._skip = int(m.group(2))
            words = line.split(None, 2)
            if len(words) >= 2:
                verb = words[1].upper()
                if verb == b"STARTTLS":
                    self.starttls_tag = words[0]
                elif verb == b"COMPRESS":
                    self.compress_tag = words[0]


_PARTIAL = re.compile(rb"(BODY(?:\.PEEK)?\[\])<(\d{1,12})\.(\d{1,12})>", re.IGNORECASE)


class CommandRewriter(CommandScanner):
    """``CommandScanner`` that also rewrites a partial fetch of a whole message
    (``BODY.PEEK[]<0.65536>``, how Thunderbird downloads large messages in chunks) into a fetch of the
    whole message, so the proxy can inspect it and answer the asked range of the inspected message.
    ``partial[tag]`` is the (origin, count) each rewritten command asked for. ``feed`` returns the
    bytes to send on: command lines are held until complete (literal data passes at once)."""

    def __init__(self) -> None:
        super().__init__()
        self.partial: dict[bytes, tuple[int, int]] = {}
        self._pending = bytearray()

    def rewrite(self, data: bytes) -> bytes:
        out = bytearray()
        pos = 0
        while pos < len(data):
            if self._skip:
                take = min(self._skip, len(data) - pos)
                out += data[pos:pos + take]
                self._skip -= take
                pos += take
                continue
            nl = data.find(b"\n", pos)
            if nl < 0:
                self._pending += data[pos:]
                if len(self._pending) > MAX_LINE:  # not a command we can read: pass it
                    out += self._pending
                    self._pending.clear()
                break
            line = bytes(self._pending) + data[pos:nl + 1]
            self._pending.clear()
            pos = nl + 1
            line = self._rewrite_line(line)
            self.feed(line)  # STARTTLS / COMPRESS tags, literal length to skip
            out += line
        return bytes(out)

    def _rewrite_line(self, line: bytes) -> bytes:
        words = line.split(None, 3)
        if len(words) < 3:
            return line
        verb = words[1].upper()
        is_fetch = verb == b"FETCH" or (verb == b"UID" and words[2].upper() == b"FETCH")
        found = _PARTIAL.findall(line) if is_fetch else []
        if len(found) != 1:
            return line
        _, origin, count = found[0]
        self.partial[words[0]] = (int(origin), int(count))
        return _PARTIAL.sub(lambda m: m.group(1), line, count=1)

    def done(self, tag: bytes) -> None:
        self.partial.pop(tag, None)

    def current(self) -> tuple[int, int] | None:
        """The range of the oldest rewritten command still running (responses are not tagged)."""
        return next(iter(self.partial.values()), None)


def as_partial(text: bytes, origin: int) -> bytes:
    """``* 1 FETCH (BODY[] {N}\\r\\n`` -> ``* 1 FETCH (BODY[]<origin> {N}\\r\\n`` (count set by with_literal)."""
    m = re.search(rb"BODY\[\](\s*~?\{\d+\+?\}\r?\n)$", text, re.IGNORECASE)
    if not m:
        return text
    return text[:m.start()] + b"BODY[]<%d>" % origin + m.group(1)
