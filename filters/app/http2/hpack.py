"""HPACK (RFC 7541) decoding for a passive observer: one ``HpackStream`` per direction of a flow.

The static and dynamic tables and the Huffman code are the ``hpack`` package's (``HeaderTable``,
``decode_huffman``); the field-representation loop is ours because ``hpack.Decoder.decode`` wants
a whole header block and either returns every header or raises. An observer needs more:

* **streaming**: a header block is decoded as its HEADERS/CONTINUATION fragments arrive. Only the
  representation cut by a fragment boundary is buffered, so a CONTINUATION flood costs no memory
  (``hpack.Decoder`` would need the whole block buffered first);
* **partial results**: past the header-list limit the fields decoded so far are kept (the pseudo
  headers come first), and decoding goes on for the dynamic table's sake without storing fields;
* **no desynchronisation**: a string longer than the limit is skipped as it streams by, and a
  literal with incremental indexing of that size empties the dynamic table exactly as the peer's
  decoder does (an entry larger than the table), so the next blocks still decode right. A bad
  table index or a bad Huffman string spoils one field, not the block: field boundaries are known.
  Only an integer overflow (or a truncated block) loses the field boundaries of the rest of the block.

Errors are reported as Suricata's app-layer event names: ``http2.invalid_header`` (bad index,
Huffman or table size update) and ``http2.header_integer_overflow``.
"""
from __future__ import annotations

from hpack.exceptions import HPACKDecodingError
from hpack.huffman_table import decode_huffman
from hpack.table import HeaderTable

MAX_INT_SHIFT = 28  # an integer of more than 5 bytes (>= 2**32 or so) is an overflow
ENTRY_OVERHEAD = 32  # RFC 7541 entry size overhead, also used for the header-list size (as hpack does)
PY_FIELD_OVERHEAD = 96  # a decoded field in a list: a tuple and two bytes objects (HTTP/1's HEADER_OVERHEAD)
PY_ENTRY_OVERHEAD = 120  # what a dynamic-table entry costs in Python beyond its RFC size (tuple, bytes objects)


class _NeedMore(Exception):
    """The representation at the read position is cut by the end of the fragment."""


class _Overflow(Exception):
    """An HPACK integer longer than any sane value: field boundaries are lost."""


def _integer(buf: bytes | bytearray, pos: int, prefix: int) -> tuple[int, int]:
    """(value, position after it) of the integer with a ``prefix``-bit prefix at ``pos``."""
    if pos >= len(buf):
        raise _NeedMore
    mask = (1 << prefix) - 1
    value = buf[pos] & mask
    pos += 1
    if value < mask:
        return value, pos
    shift = 0
    while True:
        if pos >= len(buf):
            raise _NeedMore
        b = buf[pos]
        pos += 1
        value += (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7
        if shift > MAX_INT_SHIFT:
            raise _Overflow


class HpackStream:
    """The HPACK decoding context of one direction (its dynamic table) and the header block in progress.

    ``begin()`` starts a block, ``feed(fragment)`` decodes what it can, ``end()`` closes the block and
    returns its fields. ``errors`` collects the anomaly names of the current block. Fields past
    ``max_list_size`` (RFC 7541 sizes: name + value + 32 per field) are not stored (``oversize``);
    ``max_table_size`` bounds what a dynamic table size update may ask for (Suricata's
    ``max-table-size``).
    """

    __slots__ = ("table", "max_table_size", "max_list_size", "buf", "headers", "size", "kept", "oversize", "errors",
                 "skip", "pending", "broken", "fields", "in_block")

    def __init__(self, max_table_size: int = 65536, max_list_size: int = 65536) -> None:
        self.table = HeaderTable()
        self.max_table_size = max_table_size
        self.max_list_size = max_list_size
        self.buf = bytearray()  # the representation cut by the last fragment boundary
        self.headers: list[tuple[bytes, bytes]] = []
        self.size = 0  # RFC 7541 size of the fields decoded in this block (stored or not)
        self.kept = 0  # bytes of the fields stored (names, values, HEADER_OVERHEAD each)
        self.oversize = False
        self.errors: list[str] = []
        self.skip = 0  # bytes of an oversized string still to skip
        self.pending: tuple[str, bool] | None = None  # after the skip: ("value" | "end", incremental indexing)
        self.broken = False  # field boundaries lost for the rest of this block
        self.fields = 0  # representations decoded in this block (a size update must come first)
        self.in_block = False

    # -- block API -----------------------------------------------------------------------------
    def begin(self) -> None:
        self.buf = bytearray()
        self.headers = []
        self.size = 0
        self.kept = 0
        self.oversize = False
        self.errors = []
        self.skip = 0
        self.pending = None
        self.broken = False
        self.fields = 0
        self.in_block = True

    def feed(self, fragment: bytes) -> None:
        if self.broken or not fragment:
            return
        if self.skip:
            n = min(self.skip, len(fragment))
            self.skip -= n
            fragment = fragment[n:]
            if self.skip:
                return
            self._after_skip()
        if self.buf:  # appended in place: a field cut into many tiny fragments costs no copies
            buf = self.buf
            buf += fragment
            pos = self._decode(buf)
            if self.broken or self.skip:
                self.buf = bytearray()
            elif pos:
                del buf[:pos]
            return
        pos = self._decode(fragment)
        if pos < len(fragment) and not self.broken and not self.skip:
            self.buf = bytearray(fragment[pos:])

    def end(self) -> list[tuple[bytes, bytes]]:
        """The block is complete: its fields (those stored); a cut representation is an error."""
        if (self.buf or self.skip or self.pending is not None) and not self.broken:
            self._error("http2.invalid_header")
        headers = self.headers
        self.buf = bytearray()
        self.headers = []
        self.skip = 0
        self.pending = None
        self.in_block = False
        return headers

    def held_bytes(self) -> int:
        table = self.table
        n = getattr(table, "_current_size", table.maxsize) + PY_ENTRY_OVERHEAD * len(table.dynamic_entries)
        return n + len(self.buf) + (self.kept if self.in_block else 0)

    # -- decoding --------------------------------------------------------------------------------
    def _error(self, name: str) -> None:
        if name not in self.errors:
            self.errors.append(name)

    def _field(self, name: bytes, value: bytes) -> None:
        self.fields += 1
        self.size += len(name) + len(value) + ENTRY_OVERHEAD
        if self.size > self.max_list_size:
            self.oversize = True
            return
        self.kept += len(name) + len(value) + PY_FIELD_OVERHEAD
        self.headers.append((name, value))

    def _string(self, buf: bytes | bytearray, pos: int) -> tuple[bytes | None, int, int]:
        """(string or None when too long to keep, position after it or after its length, length)."""
        if pos >= len(buf):
            raise _NeedMore
        huffman = buf[pos] & 0x80
        length, pos = _integer(buf, pos, 7)
        if length > self._string_cap():
            return None, pos, length
        end = pos + length
        if end > len(buf):
            raise _NeedMore
        raw = bytes(buf[pos:end])
        if huffman:
            try:
                raw = decode_huffman(raw)
            except HPACKDecodingError:
                self._error("http2.invalid_header")
                raw = b""
        return raw, end, length

    def _string_cap(self) -> int:
        # at least the largest table, so that a skipped literal with indexing always empties it
        return max(self.max_list_size, self.max_table_size)

    def _start_skip(self, buf: bytes | bytearray, pos: int, length: int, then: str, index: bool) -> int:
        """Skip a string too long to keep; returns the position reached in ``buf``."""
        self.oversize = True
        self.fields += 1
        avail = min(length, len(buf) - pos)
        self.skip = length - avail
        self.pending = (then, index)
        if not self.skip:
            self._after_skip()
        return pos + avail

    def _after_skip(self) -> None:
        """An oversized string was skipped: a value string may follow, then the field ends."""
        assert self.pending is not None
        then, index = self.pending
        if then == "value":
            self.pending = ("value_next", index)  # the value string is parsed by _decode
            return
        self.pending = None
        self._finish_dropped(index)

    def _finish_dropped(self, index: bool) -> None:
        if index:  # the entry is larger than any table: adding it empties the dynamic table (RFC 7541 4.4)
            size = self.table.maxsize
            self.table.maxsize = 0
            self.table.maxsize = size

    def _decode(self, buf: bytes | bytearray) -> int:
        """Decode complete representations from ``buf``; returns the position of the first incomplete one."""
        pos = 0
        end = len(buf)
        table = self.table
        while pos < end:
            start = pos
            try:
                if self.pending is not None:  # the value string of a field whose name was skipped
                    _, index = self.pending
                    # (this read-or-skip step stands three times: kept inline, it returns or continues the loop)
                    value, pos, length = self._string(buf, pos)
                    if value is None:
                        pos = self._start_skip(buf, pos, length, "end", index)
                        if self.skip:
                            return pos
                        continue
                    self.pending = None
                    self._finish_dropped(index)
                    continue
                first = buf[pos]
                if first & 0x80:  # indexed field
                    idx, pos = _integer(buf, pos, 7)
                    try:
                        name, value = table.get_by_index(idx) if idx else (b"", b"")
                    except HPACKDecodingError:  # hpack's InvalidTableIndexError
                        idx = 0
                    if not idx:
                        self._error("http2.invalid_header")
                        self.fields += 1
                        continue
                    self._field(name, value)
                    continue
                if first & 0xE0 == 0x20:  # dynamic table size update
                    size, pos = _integer(buf, pos, 5)
                    if self.fields or size > self.max_table_size:
                        self._error("http2.invalid_header")
                    table.maxsize = min(size, self.max_table_size)
                    continue
                index = bool(first & 0x40)
                idx, pos = _integer(buf, pos, 6 if index else 4)
                if idx:
                    try:
                        name = table.get_by_index(idx)[0]
                    except HPACKDecodingError:
                        self._error("http2.invalid_header")
                        name = b""
                else:
                    raw_name, pos, length = self._string(buf, pos)
                    if raw_name is None:
                        pos = self._start_skip(buf, pos, length, "value", index)
                        if self.skip:
                            return pos
                        continue
                    name = raw_name
                value, pos, length = self._string(buf, pos)
                if value is None:
                    pos = self._start_skip(buf, pos, length, "end", index)
                    if self.skip:
                        return pos
                    continue
                if index:
                    table.add(name, value)
                self._field(name, value)
            except _NeedMore:
                return start
            except _Overflow:
                self._error("http2.header_integer_overflow")
                self.broken = True
                return end
        return pos
