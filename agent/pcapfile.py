"""Capture-file reading: classic pcap and pcapng records, and parsed Packets from them.

``PcapReader`` reads classic pcap (either byte order, microsecond or nanosecond magic) and pcapng
(any number of sections, either byte order; Enhanced, Simple and obsolete Packet blocks; per-
interface link type, ``if_tsresol`` and ``if_tsoffset``; unknown blocks are skipped). A bad file
or block header raises ``PcapError`` naming the file offset; a file that ends inside its last
record stops the iteration and sets ``reader.truncated``.
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
    """The file is not a readable pcap/pcapng capture (bad file or block header)."""


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
        while True:
            start = self._offset
            hdr = self._read(16)
            if not hdr:
                return
            if len(hdr) < 16:
                self._truncate(start, "record header")
                return
            sec, frac, incl, orig = rec.unpack(hdr)
            if incl > MAX_RECORD:
                raise self._error(start, f"record captured length {incl} exceeds {MAX_RECORD}")
            data = self._read(incl)
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
            self._endian = ">"
        elif bom == b"\x4d\x3c\x2b\x1a":
            self._endian = "<"
        else:
            raise self._error(start + 8, f"bad pcapng byte-order magic {bom.hex()}")
        length = _U32[self._endian].unpack_from(head, 4)[0]
        if length < 28 or length % 4 or length > MAX_RECORD:
            raise self._error(start + 4, f"bad section header block length {length}")
        body = self._read_block_rest(start, length, 12)
        if body is None:
            return False
        major, _, _ = _SHB[self._endian].unpack_from(body)
        if major != 1:
            raise self._error(start + 12, f"unsupported pcapng version {major}")
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
            return None
        trailer = _U32[self._endian].unpack_from(rest, len(rest) - 4)[0]
        if trailer != length:
            raise self._error(start + length - 4, f"block trailing length {trailer} != {length}")
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
            if btype == _PCAPNG_SHB:
                if not self._read_shb(start, head):
                    return
                continue
            if length < 12 or length % 4 or length > MAX_RECORD:
                raise self._error(start + 4, f"bad block length {length} (block type {btype:#x})")
            body = self._read_block_rest(start, length, 8)
            if body is None:
                return
            if btype == _BT_IDB:
                self._interfaces.append(self._parse_idb(start, body))
            elif btype in (_BT_EPB, _BT_PB, _BT_SPB):
                yield self._packet_block(start, btype, body)

    def _parse_idb(self, start: int, body: bytes) -> _Interface:
        if len(body) < 8:
            raise self._error(start, "interface description block too short")
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

    def _packet_block(self, start: int, btype: int, body: bytes) -> PcapRecord:
        e = self._endian
        if btype == _BT_SPB:
            if len(body) < 4:
                raise self._error(start, "simple packet block too short")
            iface = self._interface(start, 0)
            orig = _U32[e].unpack_from(body)[0]
            cap = min(orig, len(body) - 4)
            if iface.snaplen:
                cap = min(cap, iface.snaplen)
            return PcapRecord(0.0, iface.linktype, body[4 : 4 + cap], orig)  # SPB has no timestamp
        if len(body) < 20:  # EPB and PB: 20 bytes of fixed fields
            raise self._error(start, f"packet block (type {btype}) too short")
        if btype == _BT_EPB:
            if_id, hi, lo, cap, orig = _EPB[e].unpack_from(body)
        else:
            if_id, _, hi, lo, cap, orig = _PB[e].unpack_from(body)
        if cap > len(body) - 20:
            raise self._error(start, f"packet block (type {btype}) captured length {cap} exceeds the block")
        iface = self._interface(start, if_id)
        sec, frac = divmod((hi << 32) | lo, iface.ts_div)
        ts = sec + iface.ts_offset + frac / iface.ts_div
        return PcapRecord(ts, iface.linktype, body[20 : 20 + cap], orig)

    def _interface(self, start: int, if_id: int) -> _Interface:
        if if_id >= len(self._interfaces):
            raise self._error(start, f"packet block names interface {if_id}, only {len(self._interfaces)} described")
        return self._interfaces[if_id]


def open_packets(path: str | os.PathLike[str], side: Side = Side.UNKNOWN) -> Iterator[Packet]:
    """Parse every record of a capture file into a Packet (ts from the record)."""
    with PcapReader(path) as reader:
        for rec in reader:
            yield parse_linktype(rec.data, rec.linktype, rec.ts, side)
