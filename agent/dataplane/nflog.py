"""Reader for NFLOG (nfnetlink_log) messages: turns kernel firewall log packets into NflogRecords."""

from __future__ import annotations

import collections
import errno
import logging
import os
import socket
import struct
import time
from dataclasses import dataclass

log = logging.getLogger(__name__)

NETLINK_NETFILTER = 12
NFNL_SUBSYS_ULOG = 4
NFULNL_MSG_PACKET = 0
NFULNL_MSG_CONFIG = 1
MSG_PACKET_TYPE = (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET
MSG_CONFIG_TYPE = (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG

NLMSG_NOOP = 1
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLMSG_OVERRUN = 4
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLA_TYPE_MASK = 0x3FFF
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)

NFULA_CFG_CMD = 1
NFULA_CFG_MODE = 2
NFULA_CFG_NLBUFSIZ = 3
NFULA_CFG_TIMEOUT = 4
NFULA_CFG_QTHRESH = 5
NFULA_CFG_FLAGS = 6
NFULNL_CFG_CMD_BIND = 1
NFULNL_COPY_PACKET = 2
NFULNL_COPY_RANGE_MAX = 0xFFFF

NFULA_PACKET_HDR = 1
NFULA_MARK = 2
NFULA_TIMESTAMP = 3
NFULA_IFINDEX_INDEV = 4
NFULA_IFINDEX_OUTDEV = 5
NFULA_IFINDEX_PHYSINDEV = 6
NFULA_IFINDEX_PHYSOUTDEV = 7
NFULA_PAYLOAD = 9
NFULA_PREFIX = 10

NLMSGHDR = struct.Struct("=IHHII")
NFGENMSG = struct.Struct("!BBH")
NLATTR = struct.Struct("=HH")
NLMSGERR = struct.Struct("=i")
PACKET_HDR = struct.Struct("!HB")
U32_BE = struct.Struct("!I")
U16_BE = struct.Struct("!H")
TIMESTAMP = struct.Struct("!QQ")
CFG_MODE = struct.Struct("!IBx")

MAX_MSGS_PER_DATAGRAM = 4096
MAX_ATTRS_PER_MSG = 64
RECV_BUFSIZE = 1 << 18
ACK_TIMEOUT = 2.0


class NflogError(Exception):
    """Binding or configuring the NFLOG group failed."""


@dataclass(frozen=True, slots=True)
class NflogRecord:
    """One packet logged by the kernel with an NFLOG target."""

    prefix: str
    payload: bytes
    hw_protocol: int
    indev: int
    outdev: int
    physindev: int
    physoutdev: int
    mark: int
    ts: float
    hook: int = -1
    group: int = -1


@dataclass(slots=True)
class NflogStats:
    """Counters of what a reader saw; overflow and garbage are counted, never raised."""

    records: int = 0
    overruns: int = 0
    malformed: int = 0
    truncated: int = 0
    errors: int = 0


def _align4(n: int) -> int:
    return (n + 3) & ~3


def attr(atype: int, data: bytes) -> bytes:
    """One netlink attribute, padded to 4 bytes (also the NFQUEUE settings' builder, agent/dataplane/nfq.py)."""
    length = NLATTR.size + len(data)
    return NLATTR.pack(length, atype) + data + b"\0" * (_align4(length) - length)


def build_config_message(group: int, seq: int, attrs: bytes) -> bytes:
    """Build one NFULNL_MSG_CONFIG request (with ACK) for `group` carrying the given attributes."""
    body = NFGENMSG.pack(socket.AF_UNSPEC, 0, group) + attrs
    header = NLMSGHDR.pack(NLMSGHDR.size + len(body), MSG_CONFIG_TYPE, NLM_F_REQUEST | NLM_F_ACK, seq, 0)
    return header + body


def parse_attrs(data: bytes | memoryview, start: int, end: int) -> dict[int, bytes] | None:
    """Return {attr type: value} of the attributes in data[start:end], or None when malformed.
    The values are slices of ``data``: of a memoryview, they copy nothing."""
    attrs: dict[int, bytes] = {}
    off = start
    count = 0
    while off + NLATTR.size <= end:
        count += 1
        if count > MAX_ATTRS_PER_MSG:
            return None
        nla_len, nla_type = NLATTR.unpack_from(data, off)
        if nla_len < NLATTR.size or off + nla_len > end:
            return None
        attrs.setdefault(nla_type & NLA_TYPE_MASK, data[off + NLATTR.size : off + nla_len])
        off += _align4(nla_len)
    return attrs


def _u32(attrs: dict[int, bytes], atype: int) -> int:
    value = attrs.get(atype)
    if value is None:
        return 0
    if len(value) < U32_BE.size:
        raise ValueError(f"attribute {atype} too short")
    return U32_BE.unpack_from(value)[0]


def record_from_attrs(attrs: dict[int, bytes], group: int) -> NflogRecord:
    """Build a record from parsed NFULNL_MSG_PACKET attributes; ValueError when they are malformed."""
    hdr = attrs.get(NFULA_PACKET_HDR)
    if hdr is None or len(hdr) < PACKET_HDR.size:
        raise ValueError("missing or short NFULA_PACKET_HDR")
    hw_protocol, hook = PACKET_HDR.unpack_from(hdr)
    ts_raw = attrs.get(NFULA_TIMESTAMP)
    if ts_raw is not None and len(ts_raw) >= TIMESTAMP.size:
        sec, usec = TIMESTAMP.unpack_from(ts_raw)
        ts = sec + usec / 1e6
    else:
        ts = time.time()
    prefix = attrs.get(NFULA_PREFIX, b"").split(b"\0", 1)[0].decode("utf-8", "replace")
    return NflogRecord(
        prefix=prefix,
        payload=attrs.get(NFULA_PAYLOAD, b""),
        hw_protocol=hw_protocol,
        indev=_u32(attrs, NFULA_IFINDEX_INDEV),
        outdev=_u32(attrs, NFULA_IFINDEX_OUTDEV),
        physindev=_u32(attrs, NFULA_IFINDEX_PHYSINDEV),
        physoutdev=_u32(attrs, NFULA_IFINDEX_PHYSOUTDEV),
        mark=_u32(attrs, NFULA_MARK),
        ts=ts,
        hook=hook,
        group=group,
    )


@dataclass(slots=True)
class ParseResult:
    """What one netlink datagram held: packet records, ACK/error replies (seq -> errno) and garbage."""

    records: list[NflogRecord]
    acks: dict[int, int]
    malformed: int = 0


def parse_datagram(data: bytes) -> ParseResult:
    """Parse every netlink message in one datagram; never raises on hostile or truncated input."""
    result = ParseResult(records=[], acks={})
    off = 0
    for _ in range(MAX_MSGS_PER_DATAGRAM):
        if off + NLMSGHDR.size > len(data):
            break
        msg_len, msg_type, _flags, seq, _pid = NLMSGHDR.unpack_from(data, off)
        if msg_len < NLMSGHDR.size or off + msg_len > len(data):
            result.malformed += 1
            break
        body = off + NLMSGHDR.size
        end = off + msg_len
        if msg_type == NLMSG_ERROR:
            if end - body >= NLMSGERR.size:
                result.acks[seq] = -NLMSGERR.unpack_from(data, body)[0]
            else:
                result.malformed += 1
        elif msg_type == MSG_PACKET_TYPE:
            _parse_packet_msg(data, body, end, result)
        elif msg_type not in (NLMSG_NOOP, NLMSG_DONE):
            result.malformed += 1
        off += _align4(msg_len)
    else:
        result.malformed += 1
    if 0 < len(data) - off < NLMSGHDR.size:
        result.malformed += 1
    return result


def _parse_packet_msg(data: bytes, body: int, end: int, result: ParseResult) -> None:
    if end - body < NFGENMSG.size:
        result.malformed += 1
        return
    _family, _version, group = NFGENMSG.unpack_from(data, body)
    attrs = parse_attrs(data, body + NFGENMSG.size, end)
    if attrs is None:
        result.malformed += 1
        return
    try:
        result.records.append(record_from_attrs(attrs, group))
    except ValueError:
        result.malformed += 1


class NflogReader:
    """A netlink socket bound to one NFLOG group in the current network namespace."""

    def __init__(
        self,
        group: int,
        *,
        copy_range: int = 256,
        qthresh: int = 1,
        flush_timeout: float = 0.1,
        rcvbuf: int = 4 << 20,
    ) -> None:
        if not 0 <= group <= 0xFFFF:
            raise ValueError(f"NFLOG group must be 0..65535, got {group}")
        self.group = group
        self.stats = NflogStats()
        self._pending: collections.deque[NflogRecord] = collections.deque()
        self._seq = 0
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        try:
            self._set_rcvbuf(rcvbuf)
            self._sock.bind((0, 0))
            self._configure(copy_range, qthresh, flush_timeout)
            self._sock.setblocking(False)
        except BaseException:
            self._sock.close()
            raise

    def _set_rcvbuf(self, size: int) -> None:
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, size)
        except OSError:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)

    def _configure(self, copy_range: int, qthresh: int, flush_timeout: float) -> None:
        copy_range = max(0, min(copy_range, NFULNL_COPY_RANGE_MAX))
        self._request(attr(NFULA_CFG_CMD, bytes([NFULNL_CFG_CMD_BIND])), "bind")
        self._request(attr(NFULA_CFG_MODE, CFG_MODE.pack(copy_range, NFULNL_COPY_PACKET)), "set mode")
        self._request(attr(NFULA_CFG_QTHRESH, U32_BE.pack(max(1, qthresh))), "set queue threshold")
        timeout_cs = max(0, round(flush_timeout * 100))
        self._request(attr(NFULA_CFG_TIMEOUT, U32_BE.pack(timeout_cs)), "set flush timeout")

    def _request(self, attrs: bytes, what: str) -> None:
        """Send one config request and wait for its ACK, keeping any packet that arrives meanwhile."""
        self._seq += 1
        seq = self._seq
        self._sock.sendto(build_config_message(self.group, seq, attrs), (0, 0))
        deadline = time.monotonic() + ACK_TIMEOUT
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise NflogError(f"NFLOG group {self.group}: no answer from the kernel to {what}")
            self._sock.settimeout(remaining)
            try:
                data = self._sock.recv(RECV_BUFSIZE)
            except socket.timeout:
                continue
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    self.stats.overruns += 1
                    continue
                raise
            err = self._absorb(parse_datagram(data)).get(seq)
            if err is None:
                continue
            if err:
                hint = " (group bound by another socket, or no CAP_NET_ADMIN?)" if err == errno.EPERM else ""
                raise NflogError(
                    f"NFLOG group {self.group}: {what} failed: {errno.errorcode.get(err, err)}"
                    f" {os.strerror(err)}{hint}"
                )
            return

    def _absorb(self, result: ParseResult) -> dict[int, int]:
        self.stats.malformed += result.malformed
        self.stats.records += len(result.records)
        self._pending.extend(result.records)
        return result.acks

    def fileno(self) -> int:
        """The socket's file descriptor, for select/poll/selectors."""
        return self._sock.fileno()

    def read(self, max_msgs: int = 256) -> list[NflogRecord]:
        """Return up to max_msgs records that are ready now; [] when none. Never blocks, never raises."""
        for _ in range(max_msgs + 16):
            if len(self._pending) >= max_msgs or not self._recv_once():
                break
        out: list[NflogRecord] = []
        while self._pending and len(out) < max_msgs:
            out.append(self._pending.popleft())
        return out

    def _recv_once(self) -> bool:
        """Receive one datagram into the pending queue; False when nothing more is ready."""
        try:
            data, _anc, flags, _addr = self._sock.recvmsg(RECV_BUFSIZE)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError as exc:
            if exc.errno == errno.ENOBUFS:
                self.stats.overruns += 1
                log.warning("NFLOG group %d: receive buffer overrun, log messages lost", self.group)
                return True
            if exc.errno == errno.EBADF:
                return False
            self.stats.errors += 1
            log.error("NFLOG group %d: recv failed: %s", self.group, exc)
            return False
        if flags & socket.MSG_TRUNC:
            self.stats.truncated += 1
        for seq, err in self._absorb(parse_datagram(data)).items():
            if err:
                self.stats.errors += 1
                log.warning("NFLOG group %d: kernel error %d for seq %d", self.group, err, seq)
        return bool(data)

    def close(self) -> None:
        """Close the socket; the kernel unbinds the group."""
        self._sock.close()

    def __enter__(self) -> NflogReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
