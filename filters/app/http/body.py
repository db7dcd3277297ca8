"""HTTP message bodies: one direction's body of a transaction, through its decoding chain, under the body limit and bomb caps."""
from __future__ import annotations

from typing import TYPE_CHECKING

from filters.app.events import FileTail
from filters.app.http.decoding import CodingLayer, Sink

if TYPE_CHECKING:  # pragma: no cover
    from filters.app.events import HttpTransaction
    from filters.app.http.parser import HttpParser


class Body:
    """One direction's body of one transaction: decoding chain, body limit and bomb caps.

    It is also the innermost sink of its decoding chain. When the file engines need more than the
    body limit (``parser.file_depth``), the bytes past the limit go on to a ``FileTail`` (hashed,
    handed out once, not kept) up to ``file_depth``; the kept body (the IPS's buffer) stays at the
    limit and is marked truncated as before."""

    __slots__ = ("parser", "tx", "response", "limit", "data", "chain", "wire", "decoded", "stop", "finished",
                 "complete", "file", "over")

    def __init__(self, parser: HttpParser, tx: HttpTransaction, response: bool, codings: list[str]) -> None:
        self.parser = parser
        self.tx = tx
        self.response = response
        self.limit = parser.response_body_limit if response else parser.request_body_limit
        self.data = bytearray()
        self.wire = 0  # bytes in, after de-chunking
        self.decoded = 0  # bytes out of the decoders
        self.stop = False  # nothing more will be stored
        self.finished = False
        self.complete = False  # its message is complete: the data goes once handed out (HttpParser.release)
        self.over = False  # past the body limit (only with a FileTail: otherwise ``stop``)
        self.file: FileTail | None = None
        depth = getattr(parser, "file_depth", 0)
        if response and self.limit and depth > self.limit:  # downloads (uploads: later work)
            self.file = FileTail()
            tx.response_file = self.file
        head: Sink = self
        for coding in codings:
            head = CodingLayer(coding, head, self.stopped)
        self.chain: Sink | None = head if codings else None

    def stopped(self) -> bool:
        return self.stop

    def set_passthrough(self) -> None:
        pass

    def finish(self) -> None:
        pass

    def feed(self, data: bytes) -> None:
        """Body bytes as the peer sent them (de-chunked)."""
        if not data or self.stop:
            return
        self.wire += len(data)
        if self.chain is None:
            self.write(data)
        elif not self.finished:
            self.chain.write(data)
        else:
            self.parser._anomaly(self.tx, "http.body_after_decoding_ended")

    def end(self) -> None:
        if self.chain is not None and not self.finished:
            self.finished = True
            self.chain.finish()

    def gap(self) -> None:
        self.parser._anomaly(self.tx, "http.body_gap")
        self.lost()
        self.end()

    def lost(self) -> None:
        """Bytes of this body will never arrive (a stream gap, or the flow ended in the middle of it)."""
        if self.response:
            self.tx.response_body_incomplete = True
        else:
            self.tx.request_body_incomplete = True

    def write(self, data: bytes) -> None:
        """Decoded bytes: store up to the body limit, stop at a decompression bomb."""
        if self.stop or not data:
            return
        parser = self.parser
        self.decoded += len(data)
        if self.chain is not None and self.decoded > parser.max_decompressed and \
                self.decoded > parser.decompress_ratio * max(self.wire, 1):
            self._truncate("http.decompression_bomb")
            return
        rest = b""
        room = self.limit - len(self.data) if self.limit else len(data)
        if room < len(data):
            data, rest = data[:max(room, 0)], data[max(room, 0):]
            if self.file is None:
                self._truncate("http.body_limit")
            elif not self.over:  # the IPS's buffer ends here; the file goes on (FileTail)
                self.over = True
                self._mark_truncated("http.body_limit")
        if data and parser.body_memcap and parser.body_held + len(data) > parser.body_memcap:
            # the flow's bodies held at once (pipelined messages in one feed): the rest of this one goes
            data = data[:max(parser.body_memcap - parser.body_held, 0)]
            self._truncate("http.body_memcap")
            rest = b""
        if data:
            self.data += data
            parser.body_held += len(data)
            parser._live[id(self)] = self
            parser._body_added(self)
            if self.file is not None:
                self.file.add_head(data)
        if rest and self.file is not None and not self.stop:
            keep = parser.file_depth - self.file.size
            if len(rest) > keep:
                rest = rest[:max(keep, 0)]
                self.file.cut = True
                self.stop = True
            if rest:
                self.file.add(rest)
                parser._tail_added(self)

    def _truncate(self, anomaly: str) -> None:
        self.stop = True
        if self.file is not None:
            self.file.cut = True
        self._mark_truncated(anomaly)

    def _mark_truncated(self, anomaly: str) -> None:
        if self.response:
            self.tx.response_body_truncated = True
        else:
            self.tx.request_body_truncated = True
        self.parser._anomaly(self.tx, anomaly)

    def release(self) -> None:
        """Drop the decoded bytes (the message was inspected): the transaction's body becomes empty."""
        self.parser.body_held -= len(self.data)
        self.data = bytearray()
        if self.response:
            self.tx.response_body = b""
        else:
            self.tx.request_body = b""

    def held_bytes(self) -> int:
        """Memory held: the decoded bytes twice (the buffer and the transaction's copy), decoder state."""
        n = 2 * len(self.data) + (self.file.pending if self.file is not None else 0)
        layer = self.chain
        while isinstance(layer, CodingLayer):
            n += layer.held_bytes()
            layer = layer.inner
        return n

    def publish(self) -> None:
        """The transaction's body is this buffer from now on (its bytes are made when read)."""
        kept = self.tx._response_body if self.response else self.tx._request_body
        if len(kept) != len(self.data):
            kept = b""
        self.tx._set_body(self.response, kept, self.data)
