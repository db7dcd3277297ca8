"""Capture-file reading: classic pcap and pcapng records, and parsed Packets from them.

``PcapReader`` reads classic pcap (either byte order, microsecond or nanosecond magic) and pcapng
(any number of sections, either byte order; Enhanced, Simple and obsolete Packet blocks; per-
interface link type, ``if_tsresol`` and ``if_tsoffset``; unknown blocks are skipped). A file that
is not a capture (bad file header, bad first section header) raises ``PcapError`` naming the file
offset; a file that ends inside its last record stops the iteration and sets ``reader.truncated``.

A bad record inside a readable capture does not end the run (as a capture tool that skips what it
cannot read, rather than giving up on the packets after it): a record longer than ``MAX_RECORD``
is skipped whole; a pcapng block whose length cannot be trusted (too short, not a multiple of 4,
larger than the file, trailing length different) is skipped by finding the next block whose
leading and trailing lengths agree; a packet block that names an unknown interface or claims more
bytes than it holds is skipped. Each is counted in ``reader.anomalies`` (by code) and listed in
``reader.problems`` (offset, code, detail; the first ``MAX_PROBLEMS``); ``take_problems`` hands
out the ones not taken yet, for the caller to report (``vcr-agent pcap`` writes EVE anomaly
records). Codes: pcap.record_too_large, pcap.bad_block_length, pcap.bad_block_trailer,
pcap.bad_packet_block, pcap.unknown_interface, pcap.bad_interface_block, pcap.bad_section_header,
pcap.unreadable_tail.
"""
from __future__ import annotations

import logging
import os
import struct
from dataclasses import dataclass
from typing import BinaryIO, Iterator

from filters.packet import Packet, Side, parse_linktype

log = logging.getLogger(__name__)

MAX_RECORD = 16 * 1024 * 1024  # largest record/block accepted; anything bigger is a corrupt length
MAX_OPTIONS = 256  # options parsed per pcapng block
MAX_PROBLEMS = 100  # problems listed (all are counted)
RESYNC_WINDOW = 64 * 1024 * 1024  # bytes searched for the next good pcapng block after a bad one
_KNOWN_BLOCKS = frozenset({1, 2, 3, 4, 5, 6, 7, 9, 10, 0x0A0D0D0A, 0x00000BAD, 0x40000BAD})

_PCAP_MAGIC_US = 0xA1B2C3D4
_PCAP_MAGIC_NS = 0xA1B23C4D
_PCAPNG_SHB = 0x0A0D0D0A  # a byte palindrome: readable before the byte order is known
_PCAPNG_BOM = 0x1A2B3C4D
_BT_IDB, _BT_PB, _BT_SPB, _BT_EPB = 1, 2, 3, 6
_OPT_END, _OPT_IF_TSRESOL, _OPT_IF_TSOFFSET = 0, 9, 14

_U32 = {e: struct.Struct(e + "I") for e in "<>"}
_PCAP_HDR = {e: struct.Struct(e + "IHHiIII") for e in "<>"}  # magic major minor zone sigfigs snaplen network
_PCAP_REC = {e: struct.Struct(e + "IIII") for e in "<>"}  # ts_sec ts_frac incl_len orig_len
_BLOCK_HDR = {e: struct.Struct(e + "II") for e in "<>"}  # type, total length
_SHB = {e: struct.Struct(e + "HHq") for e in "<>"}  # major minor section_length (after the BOM)
_IDB = {e: struct.Struct(e + "HHI") for e in "<>"}  # linktype reserved snaplen
_EPB = {e: struct.Struct(e + "IIIII") for e in "<>"}  # if_id ts_high ts_low cap_len orig_len
_PB = {e: struct.Struct(e + "HHIIII") for e in "<>"}  # if_id drops ts_high ts_low cap_len orig_len
_OPT = {e: struct.Struct(e + "HH") for e in "<>"}
_I64 = {e: struct.Struct(e + "q") for e in "<>"}


class PcapError(ValueError):
    """The file is not a readable pcap/pcapng capture (bad file or first section header)."""


class _Resynced(Exception):
    """A bad block was skipped and the file is positioned at the next good one."""


class _BadBlock(Exception):
    """A pcapng block that cannot be read (skipped and counted, see ``PcapReader._resync``)."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code, self.detail = code, detail


@dataclass(frozen=True, slots=True)
class PcapRecord:
    """One captured frame: timestamp (seconds), link type, captured bytes and original length."""

    ts: float
    linktype: int
    data: bytes
    orig_len: int


@dataclass(slots=True)
class _Interface:
    linktype: int
    snaplen: int
    ts_div: int = 1_000_000  # timestamp units per second
    ts_offset: int = 0  # seconds added to every timestamp


class PcapReader:
    """Iterate the records of a pcap or pcapng file: ``with PcapReader(p) as r: for rec in r``."""

    def __init__(self, source: str | os.PathLike[str] | BinaryIO) -> None:
        if isinstance(source, (str, os.PathLike)):
            self.name = os.fspath(source)
            self._file: BinaryIO = open(source, "rb")
            self._owned = True
        else:
            self.name = getattr(source, "name", "<stream>")
            self._file = source
            self._owned = False
        self._offset = 0
        self.truncated = False  # the file ended inside a record
        self.anomalies: dict[str, int] = {}  # bad records skipped, by code
        self.problems: list[tuple[int, str, str]] = []  # (offset, code, detail), the first MAX_PROBLEMS
        self._taken = 0
        self.format = ""  # "pcap" or "pcapng"
        self.linktype: int | None = None  # classic pcap only; pcapng has one per interface
        self.snaplen = 0  # classic pcap only
        self._endian = "<"
        self._ts_div = 1_000_000
        self._interfaces: list[_Interface] = []
        try:
            self._read_file_header()
        except BaseException:
            self.close()
            raise

    # -- context manager / iteration ------------------------------------------------------------

    def __enter__(self) -> PcapReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._owned:
            self._file.close()

    def __iter__(self) -> Iterator[PcapRecord]:
        if self.format == "pcap":
            return self._iter_pcap()
        return self._iter_pcapng()

    # -- helpers -------------------------------------------------------------------------------

    def _read(self, n: int) -> bytes:
        data = self._file.read(n)
        self._offset += len(data)
        return data

    def _error(self, offset: int, problem: str) -> PcapError:
        return PcapError(f"{self.name}: offset {offset}: {problem}")

    def _problem(self, offset: int, code: str, detail: str) -> None:
        """A bad record was skipped: count it, list it, go on."""
        log.warning("%s: offset %d: %s (skipped)", self.name, offset, detail)
        self.anomalies[code] = self.anomalies.get(code, 0) + 1
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append((offset, code, detail))

    def take_problems(self) -> list[tuple[int, str, str]]:
        """The problems listed since the last call."""
        out = self.problems[self._taken :]
        self._taken = len(self.problems)
        return out

    def _skip(self, n: int) -> bool:
        """Pass over ``n`` bytes; False (and nothing consumed) if the file does not hold them."""
        f = self._file
        try:
            if f.seekable():
                here = f.tell()
                end = f.seek(0, os.SEEK_END)
                if end - here < n:
                    f.seek(here)
                    return False
                f.seek(here + n)
                self._offset += n
                return True
        except (OSError, ValueError):
            pass
        left = n  # not seekable: read through (the bytes are gone either way)
        while left:
            chunk = f.read(min(left, 1 << 20))
            if not chunk:
                self._offset += n - left
                return False
            left -= len(chunk)
        self._offset += n
        return True

    def _read_file_header(self) -> None:
        head = self._read(4)
        if len(head) < 4:
            raise self._error(0, f"file too short for a capture header ({len(head)} bytes)")
        for endian in "<>":
            magic = _U32[endian].unpack(head)[0]
            if magic in (_PCAP_MAGIC_US, _PCAP_MAGIC_NS):
                self._endian = endian
                self._read_pcap_header(head, magic)
                return
        if _U32["<"].unpack(head)[0] == _PCAPNG_SHB:
            self.format = "pcapng"
            self._read_shb(0, head + self._read(4))
            return
        raise self._error(0, f"not a pcap or pcapng file (magic {head.hex()})")

    # -- classic pcap ----------------------------------------------------------------------------

    def _read_pcap_header(self, head: bytes, magic: int) -> None:
        rest = self._read(20)
        if len(rest) < 20:
            raise self._error(0, "truncated pcap file header")
        _, major, _, _, _, snaplen, network = _PCAP_HDR[self._endian].unpack(head + rest)
        if major != 2:
            raise self._error(4, f"unsupported pcap version {major}")
        self.format = "pcap"
        self.snaplen = snaplen
        self.linktype = network & 0xFFFF  # upper bits: FCS length flags
        self._ts_div = 1_000_000_000 if magic == _PCAP_MAGIC_NS else 1_000_000

    def _iter_pcap(self) -> Iterator[PcapRecord]:
        rec = _PCAP_REC[self._endian]
        div = self._ts_div
        linktype = self.linktype or 0
        read = self._file.read  # _read inline (the per-record path): self._offset kept up to date here
        while True:
            start = self._offset
            hdr = read(16)
            self._offset = start + len(hdr)
            if not hdr:
                return
            if len(hdr) < 16:
                self._truncate(start, "record header")
                return
            sec, frac, incl, orig = rec.unpack(hdr)
            if incl > MAX_RECORD:
                self._problem(start, "pcap.record_too_large", f"record captured length {incl} exceeds {MAX_RECORD}")
                if not self._skip(incl):
                    self._truncate(start, "oversized record")
                    return
                continue
            data = read(incl)
            self._offset += len(data)
            if len(data) < incl:
                self._truncate(start, "record data")
                return
            yield PcapRecord(sec + frac / div, linktype, data, orig)

    def _truncate(self, offset: int, what: str) -> None:
        log.debug("%s: truncated %s at offset %d", self.name, what, offset)
        self.truncated = True

    # -- pcapng ----------------------------------------------------------------------------------

    def _read_shb(self, start: int, head: bytes) -> bool:
        """Read a Section Header Block whose first 8 bytes (type, length) are ``head``; it sets
        the byte order for its section. False if the file ends inside it."""
        bom = self._read(4)
        if len(head) < 8 or len(bom) < 4:
            if start == 0:
                raise self._error(start, "truncated pcapng section header")
            self._truncate(start, "section header")
            return False
        if bom == b"\x1a\x2b\x3c\x4d":
            endian = ">"
        elif bom == b"\x4d\x3c\x2b\x1a":
            endian = "<"
        else:
            if start == 0:
                raise self._error(start + 8, f"bad pcapng byte-order magic {bom.hex()}")
            raise _BadBlock("pcap.bad_section_header", f"bad pcapng byte-order magic {bom.hex()}")
        length = _U32[endian].unpack_from(head, 4)[0]
        if length < 28 or length % 4 or length > MAX_RECORD:
            if start == 0:
                raise self._error(start + 4, f"bad section header block length {length}")
            raise _BadBlock("pcap.bad_section_header", f"bad section header block length {length}")
        self._endian = endian
        body = self._read_block_rest(start, length, 12)
        if body is None:
            return False
        major, _, _ = _SHB[self._endian].unpack_from(body)
        if major != 1:
            if start == 0:
                raise self._error(start + 12, f"unsupported pcapng version {major}")
            raise _BadBlock("pcap.bad_section_header", f"unsupported pcapng version {major}")
        self._interfaces = []
        return True

    def _read_block_rest(self, start: int, length: int, consumed: int) -> bytes | None:
        """Read the rest of a block (``consumed`` bytes of it already read) and check the trailing
        length. Returns the body after the consumed bytes, or None when the file ends."""
        rest = self._read(length - consumed)
        if len(rest) < length - consumed:
            if start == 0:
                raise self._error(start, "truncated pcapng section header")
            self._truncate(start, "block")
            if self._resync(start, quiet=True):  # a bogus length, not the end of the file
                self.truncated = False
                self._problem(start, "pcap.bad_block_length", f"block length {length} runs past the end of the file")
                raise _Resynced()
            return None
        trailer = _U32[self._endian].unpack_from(rest, len(rest) - 4)[0]
        if trailer != length:
            if start == 0:
                raise self._error(start + length - 4, f"block trailing length {trailer} != {length}")
            raise _BadBlock("pcap.bad_block_trailer", f"block trailing length {trailer} != {length}")
        return rest[:-4]

    def _iter_pcapng(self) -> Iterator[PcapRecord]:
        while True:
            start = self._offset
            head = self._read(8)
            if not head:
                return
            if len(head) < 8:
                self._truncate(start, "block header")
                return
            btype, length = _BLOCK_HDR[self._endian].unpack(head)
            try:
                if btype == _PCAPNG_SHB:
                    if not self._read_shb(start, head):
                        return
                    continue
                if length < 12 or length % 4 or length > MAX_RECORD:
                    raise _BadBlock("pcap.bad_block_length", f"bad block length {length} (block type {btype:#x})")
                body = self._read_block_rest(start, length, 8)
                if body is None:
                    return
                if btype == _BT_IDB:
                    self._interfaces.append(self._parse_idb(start, body))
                elif btype in (_BT_EPB, _BT_PB, _BT_SPB):
                    rec = self._packet_block(start, btype, body)
                    if rec is not None:
                        yield rec
            except _BadBlock as bad:
                self._problem(start, bad.code, bad.detail)
                if not self._resync(start):
                    return
            except _Resynced:
                continue

    def _resync(self, start: int, quiet: bool = False) -> bool:
        """After a block whose length cannot be trusted: go to the next offset (4-byte steps from
        ``start``) where a known block type has leading and trailing lengths that agree. False
        (the rest is unreadable) if there is none within RESYNC_WINDOW."""
        f = self._file
        try:
            f.seek(start + 4)
            window = f.read(RESYNC_WINDOW)
        except (OSError, ValueError):
            self._problem(start, "pcap.unreadable_tail", "cannot search a stream for the next block")
            return False
        hdr, u32 = _BLOCK_HDR[self._endian], _U32[self._endian]
        for at in range(0, len(window) - 11, 4):
            btype, length = hdr.unpack_from(window, at)
            if btype not in _KNOWN_BLOCKS or length < 12 or length % 4 or length > MAX_RECORD:
                continue
            if btype == _PCAPNG_SHB:  # its length is in the byte order it announces
                bom = window[at + 8 : at + 12]
                endian = ">" if bom == b"\x1a\x2b\x3c\x4d" else "<" if bom == b"\x4d\x3c\x2b\x1a" else ""
                if not endian:
                    continue
                length = _U32[endian].unpack_from(window, at + 4)[0]
                if length < 28 or length % 4 or length > MAX_RECORD or at + length > len(window):
                    continue
                if _U32[endian].unpack_from(window, at + length - 4)[0] != length:
                    continue
            elif at + length > len(window) or u32.unpack_from(window, at + length - 4)[0] != length:
                continue
            f.seek(start + 4 + at)
            self._offset = start + 4 + at
            return True
        if not quiet:
            self._problem(start, "pcap.unreadable_tail", "no readable block follows")
        self.truncated = True
        return False

    def _parse_idb(self, start: int, body: bytes) -> _Interface:
        if len(body) < 8:  # keep the interface numbering: later blocks name interfaces by index
            self._problem(start, "pcap.bad_interface_block", "interface description block too short")
            return _Interface(-1, 0)
        linktype, _, snaplen = _IDB[self._endian].unpack_from(body)
        iface = _Interface(linktype, snaplen)
        for code, value in self._options(body, 8):
            if code == _OPT_IF_TSRESOL and value:
                v = value[0]
                iface.ts_div = 2 ** (v & 0x7F) if v & 0x80 else 10**v
            elif code == _OPT_IF_TSOFFSET and len(value) >= 8:
                iface.ts_offset = _I64[self._endian].unpack_from(value)[0]
        return iface

    def _options(self, body: bytes, pos: int) -> Iterator[tuple[int, bytes]]:
        opt = _OPT[self._endian]
        for _ in range(MAX_OPTIONS):
            if pos + 4 > len(body):
                return
            code, olen = opt.unpack_from(body, pos)
            if code == _OPT_END:
                return
            yield code, body[pos + 4 : pos + 4 + olen]
            pos += 4 + ((olen + 3) & ~3)

    def _packet_block(self, start: int, btype: int, body: bytes) -> PcapRecord | None:
        """The record of a packet block, or None (counted) when the block is unusable."""
        e = self._endian
        if btype == _BT_SPB:
            if len(body) < 4:
                self._problem(start, "pcap.bad_packet_block", "simple packet block too short")
                return None
            iface = self._interface(start, 0)
            if iface is None:
                return None
            orig = _U32[e].unpack_from(body)[0]
            cap = min(orig, len(body) - 4)
            if iface.snaplen:
                cap = min(cap, iface.snaplen)
            return PcapRecord(0.0, iface.linktype, body[4 : 4 + cap], orig)  # SPB has no timestamp
        if len(body) < 20:  # EPB and PB: 20 bytes of fixed fields
            self._problem(start, "pcap.bad_packet_block", f"packet block (type {btype}) too short")
            return None
        if btype == _BT_EPB:
            if_id, hi, lo, cap, orig = _EPB[e].unpack_from(body)
        else:
            if_id, _, hi, lo, cap, orig = _PB[e].unpack_from(body)
        if cap > len(body) - 20:
            self._problem(start, "pcap.bad_packet_block",
                          f"packet block (type {btype}) captured length {cap} exceeds the block")
            return None
        iface = self._interface(start, if_id)
        if iface is None:
            return None
        sec, frac = divmod((hi << 32) | lo, iface.ts_div)
        ts = sec + iface.ts_offset + frac / iface.ts_div
        return PcapRecord(ts, iface.linktype, body[20 : 20 + cap], orig)

    def _interface(self, start: int, if_id: int) -> _Interface | None:
        if if_id >= len(self._interfaces):
            self._problem(start, "pcap.unknown_interface",
                          f"packet block names interface {if_id}, only {len(self._interfaces)} described")
            return None
        return self._interfaces[if_id]


def open_packets(path: str | os.PathLike[str], side: Side = Side.UNKNOWN) -> Iterator[Packet]:
    """Parse every record of a capture file into a Packet (ts from the record)."""
    with PcapReader(path) as reader:
        for rec in reader:
            yield parse_linktype(rec.data, rec.linktype, rec.ts, side)
