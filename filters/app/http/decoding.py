"""HTTP content decoding: Content-Encoding layers (gzip, deflate, zlib, lzma) with libhtp's recovery."""
from __future__ import annotations

import lzma
import re
import zlib
from typing import Callable, Protocol

from filters.app.http.values import nozero_lower

MAX_LAYERS_HARD = 8  # decompress_layers=0 means libhtp's "no limit", still capped here
LZMA_DICT_MAX = 1 << 20  # libhtp's lzma memlimit: a larger dictionary in the header is clamped to this
_STEP = 64 * 1024  # decompression output per zlib call
REPLAY_LIMIT = 64 * 1024  # input kept for a decoder retry while it has produced nothing
ZLIB_STATE = 48 * 1024  # what a live zlib inflater holds (32 KiB window, ~7 KiB state, output slack)
LZMA_STATE = 2 * LZMA_DICT_MAX + 64 * 1024  # a live lzma decoder: at most its memlimit
_NEXT_CODING = {"gzip": "deflate", "deflate": "zlib", "zlib": "gzip", "lzma": "deflate"}


class Sink(Protocol):
    def write(self, data: bytes) -> None: ...

    def finish(self) -> None: ...

    def set_passthrough(self) -> None: ...


class _Corrupt(Exception):
    """A decoder rejected its input; ``remaining`` is the input of the failing step."""

    def __init__(self, remaining: bytes) -> None:
        super().__init__("corrupt")
        self.remaining = remaining


class CodingLayer:
    """One content-coding layer, with libhtp's recovery: a decode error before any output retries
    the input as the next of gzip/deflate/zlib (three times), then passes it through raw. An error
    after output keeps that output and ends the layer (a truncated stream). Until the first output
    the input is kept (up to ``REPLAY_LIMIT``) so a retry sees the same bytes however they were split.

    A headerless stream (deflate, lzma) proves nothing by decoding a few bytes: random bytes often
    do before they fail. Its first output is held back (up to ``_STEP`` bytes, as much as one
    decoder call gives) until the stream ends, the hold fills or the input outgrows the replay:
    an error meanwhile discards it and retries, as when the same bytes come in one piece. The
    result does not depend on how the body was cut into segments."""

    __slots__ = ("coding", "inner", "stopped", "restarts", "passthrough", "dead", "obj", "gz", "gz_buf",
                 "gz_flags", "gz_left", "replay", "produced", "held")

    def __init__(self, coding: str, inner: Sink, stopped: Callable[[], bool]) -> None:
        self.coding = coding
        self.inner = inner
        self.stopped = stopped
        self.restarts = 0
        self.passthrough = False
        self.dead = False
        self._reset()

    def _reset(self) -> None:
        self.gz = 0  # header state: gzip 0 fixed, 1 xlen, 2 extra, 3 name, 4 comment, 5 crc; 6 done (also lzma)
        self.gz_buf = b""
        self.gz_flags = 0
        self.gz_left = 0
        self.replay: bytearray | None = bytearray()  # input since the (re)start, while nothing came out
        self.produced = False
        self.held: bytearray | None = bytearray() if self.coding in ("deflate", "lzma") else None
        if self.coding == "zlib":
            self.obj: object = zlib.decompressobj(15)
        elif self.coding == "lzma":
            self.obj = lzma.LZMADecompressor(format=lzma.FORMAT_ALONE, memlimit=2 * LZMA_DICT_MAX)
        else:
            self.obj = zlib.decompressobj(-15)

    def set_passthrough(self) -> None:
        self.passthrough = True
        self.inner.set_passthrough()

    def _out(self, data: bytes) -> None:
        if self.held is not None:
            self.held += data
            if len(self.held) < _STEP and self.replay is not None:
                return
        self._commit(data)

    def _commit(self, data: bytes = b"") -> None:
        """Output is trusted from here on: hand on what was held back and ``data``."""
        if self.held is not None:
            data, self.held = bytes(self.held), None
        self.produced = True
        self.replay = None
        if data:
            self.inner.write(data)

    def write(self, data: bytes) -> None:
        if self.dead or not data:
            return
        if self.passthrough:
            self.inner.write(data)
            return
        if self.replay is not None:
            if len(self.replay) + len(data) > REPLAY_LIMIT:
                self.replay = None
                if self.held:  # no retry possible any more: what decoded so far stands
                    self._commit()
            else:
                self.replay += data
        try:
            if self.coding == "gzip" and self.gz < 6:
                data = self._gzip_header(data)
                if not data:
                    return
            if self.coding == "lzma":
                if self.gz < 6:
                    data = self._lzma_header(data)
                    if not data:
                        return
                self._unlzma(data)
            else:
                self._inflate(data)
        except _Corrupt as exc:
            self._failed(exc.remaining)

    def _failed(self, remaining: bytes) -> None:
        if self.produced:
            self.dead = True
            return
        again = bytes(self.replay) if self.replay is not None else remaining
        if self.restarts < 3:
            self.restarts += 1
            self.coding = _NEXT_CODING[self.coding]
            self._reset()
            self.write(again)
        else:
            self.set_passthrough()
            self.inner.write(again)

    def _gzip_header(self, data: bytes) -> bytes:
        """Skip a gzip header leniently (flags honoured, header CRC and reserved bits ignored)."""
        while data and self.gz < 6:
            if self.gz == 0:
                head = self.gz_buf + data
                if head[:3] != b"\x1f\x8b\x08"[:len(head[:3])]:
                    raise _Corrupt(data)
                if len(head) < 10:
                    self.gz_buf = head
                    return b""
                self.gz_flags, self.gz_buf, data, self.gz = head[3], b"", head[10:], 1
            elif self.gz in (1, 5):
                if not self.gz_flags & (0x04 if self.gz == 1 else 0x02):
                    self.gz += 1
                    continue
                head = self.gz_buf + data
                if len(head) < 2:
                    self.gz_buf = head
                    return b""
                self.gz_left = int.from_bytes(head[:2], "little") if self.gz == 1 else 0
                self.gz_buf, data, self.gz = b"", head[2:], self.gz + 1
            elif self.gz == 2:
                n = min(self.gz_left, len(data))
                data, self.gz_left = data[n:], self.gz_left - n
                if not self.gz_left:
                    self.gz = 3
            else:
                if self.gz_flags & (0x08 if self.gz == 3 else 0x10):
                    z = data.find(b"\x00")
                    if z < 0:
                        return b""
                    data = data[z + 1:]
                self.gz += 1
        if self.gz == 6 and self.replay is not None:
            self.replay = bytearray(data)  # libhtp retries a failing gzip body without its header
        return data

    def _lzma_header(self, data: bytes) -> bytes:
        """The 13-byte LZMA-alone header with its dictionary size clamped: liblzma would reserve it
        up front, lzma-rs (libhtp) grows it as output comes, up to the same 1 MiB limit."""
        head = self.gz_buf + data
        if len(head) < 13:
            self.gz_buf = head
            return b""
        self.gz, self.gz_buf = 6, b""
        if int.from_bytes(head[1:5], "little") > LZMA_DICT_MAX:
            head = head[:1] + LZMA_DICT_MAX.to_bytes(4, "little") + head[5:]
        return head

    def _inflate(self, data: bytes) -> None:
        obj = self.obj
        pending = data
        while not obj.eof and not self.stopped():  # type: ignore[attr-defined]
            snapshot = obj.copy()  # type: ignore[attr-defined]
            try:
                out = obj.decompress(pending, _STEP)  # type: ignore[attr-defined]
            except zlib.error:
                # A real compressed stream (output already handed on, or a valid gzip/zlib header)
                # keeps what still decodes. Headerless deflate failing before any output (e.g.
                # "Content-Encoding: gzip" on a plain body) retries the next format, then raw.
                trusted = self.produced or self.coding == "zlib" or (self.coding == "gzip" and self.gz == 6)
                partial = _salvage(snapshot, pending) if trusted else b""
                if partial:
                    self._out(partial)
                raise _Corrupt(pending) from None
            if out:
                self._out(out)
            pending = obj.unconsumed_tail  # type: ignore[attr-defined]
            if not pending and len(out) < _STEP:
                break
        if obj.eof and self.held:  # type: ignore[attr-defined]
            self._commit()  # a complete stream

    def _unlzma(self, data: bytes) -> None:
        obj = self.obj
        pending = data
        while not obj.eof and not self.stopped():  # type: ignore[attr-defined]
            try:
                out = obj.decompress(pending, _STEP)  # type: ignore[attr-defined]
            except (lzma.LZMAError, EOFError):
                raise _Corrupt(pending) from None
            if out:
                self._out(out)
            pending = b""
            if obj.needs_input:  # type: ignore[attr-defined]
                break
        if obj.eof and self.held:  # type: ignore[attr-defined]
            self._commit()  # a complete stream

    def finish(self) -> None:
        if self.held and not (self.dead or self.passthrough):
            self._commit()  # the body ended without an error: what decoded stands
        if not (self.dead or self.passthrough) and self.coding != "lzma" and not self.stopped():
            try:
                tail = self.obj.flush()  # type: ignore[attr-defined]
            except zlib.error:
                tail = b""
            if tail:
                self._out(tail)
        self.dead = True
        self.obj = None  # the decoder's window and state are not needed any more
        self.replay = None
        self.inner.finish()

    def held_bytes(self) -> int:
        """Memory this layer holds: decoder state (zlib's window, lzma's dictionary) and replay input."""
        if self.dead or self.passthrough:
            return 0
        state = LZMA_STATE if self.coding == "lzma" else ZLIB_STATE
        return state + (len(self.replay) if self.replay is not None else 0) + len(self.gz_buf)


def _salvage(snapshot: object, data: bytes) -> bytes:
    """What zlib had decoded before the error: output of the longest prefix that still decodes."""
    lo, hi, best = 0, len(data), b""
    while hi - lo > 1:
        mid = (lo + hi) // 2
        trial = snapshot.copy()  # type: ignore[attr-defined]
        try:
            out = trial.decompress(data[:mid], _STEP)
        except zlib.error:
            hi = mid
            continue
        lo, best = mid, out
    return best


def codings_for(value: bytes | None, layer_limit: int) -> tuple[list[str], bool]:
    """Decoders for a Content-Encoding value, innermost first, and whether layers were dropped."""
    if value is None:
        return [], False
    exact = nozero_lower(value)
    if exact in (b"gzip", b"x-gzip"):
        return ["gzip"], False
    if exact in (b"deflate", b"x-deflate"):
        return ["deflate"], False
    if exact == b"lzma":
        return ["lzma"], False
    if exact in (b"inflate", b"none", b""):
        return [], False
    limit = layer_limit if 0 < layer_limit < MAX_LAYERS_HARD else MAX_LAYERS_HARD
    out: list[str] = []
    layers = lzma_layers = 0
    for token in re.split(rb"[, ]", value):
        if not token:
            continue
        layers += 1
        if layers > limit:
            return out, True
        low = token.lower()
        if b"gzip" in low:
            out.append("gzip")
        elif b"deflate" in low:
            out.append("deflate")
        elif token == b"lzma":
            lzma_layers += 1
            if lzma_layers > 1:
                return out, True
            out.append("lzma")
    return out, False
