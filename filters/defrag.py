"""IP defragmentation (IPv4 and IPv6) before flow and stream handling, as Suricata's defrag does.

Sans-IO: ``Defragmenter.add`` takes one fragment (a parsed ``Packet``) with the driver's token and
answers with a ``DefragResult``: the fragment is held (its datagram is not complete yet), the
datagram is complete (the reassembled ``Packet`` and every held fragment, the pipeline judges the
datagram once and applies that verdict to all of them), or the datagram is given up (its
fragments are released with the pipeline's overflow policy). ``expire`` hands out trackers whose
timeout passed; their fragments never formed a datagram.

Trackers are keyed by (IP version, source, destination, identification, protocol for IPv4, VLAN
IDs), as Suricata keys them. Bounds, each counted when hit: ``max_trackers`` datagrams in
progress, ``max_frags`` fragments per datagram, ``memcap`` bytes of held fragments in all, a
reassembled datagram of at most 65535 bytes (IPv4 total length, IPv6 payload length) and
``timeout`` seconds from a datagram's first fragment, and ``MAX_TRACKER_BYTES`` held for one
datagram (overlapping copies cannot grow it without end). A datagram given up stays known (without
its bytes) until its timeout, so its later fragments get the same treatment at once.

Overlaps. Where fragments overlap, the ``policy`` decides whose bytes the datagram keeps, as the
target-based model of Novak and Sturges that Suricata implements: ``first`` (the bytes that came
first), ``last`` (the bytes that came last), ``bsd`` (the fragment that starts lower; on a tie the
one that came first), ``linux`` (as bsd, a tie to the later one), ``windows`` (the first, unless
the later one starts lower and ends higher), ``solaris`` (as windows, also when it ends at the
same place). Suricata's default, and ours, is ``bsd``. Any overlap raises ``ipv4.frag_overlap`` /
``ipv6.frag_overlap``.

Anomaly codes (Suricata's decoder event names where it has one): ipv4.frag_overlap,
ipv6.frag_overlap, ipv4.frag_pkt_too_large, ipv6.frag_pkt_too_large, ipv6.frag_invalid_length,
defrag.max_frags, defrag.memcap, defrag.tracker_memcap, defrag.max_trackers, defrag.timeout, defrag.truncated,
defrag.bad_header.
"""
from __future__ import annotations

import collections
import struct
from dataclasses import dataclass, field
from typing import Any

from filters.engine import ConfigError
from filters.packet import PROTO_AH, PROTO_IPV6_FRAG, Packet, inet_checksum, parse_ip

POLICIES = ("bsd", "linux", "first", "last", "windows", "solaris")
MAX_IP_DATAGRAM = 65535
MAX_TRACKER_BYTES = 4 * MAX_IP_DATAGRAM  # held bytes of one datagram (its fragments, headers and overlaps included)
COUNTERS = (
    "fragments", "reassembled", "held", "timeouts", "overlaps", "failed", "max_frags", "memcap",
    "max_trackers", "too_large", "invalid", "truncated",
)

_IPV6_EXT_CHAIN = frozenset({0, 43, 60, PROTO_AH})  # extension headers that can precede a fragment header


def _new_wins(policy: str, old: "_Frag", new: "_Frag") -> bool:
    """Whether ``new``'s bytes replace ``old``'s where they overlap (``new`` came later)."""
    if policy == "bsd":
        return new.offset < old.offset
    if policy == "linux":
        return new.offset <= old.offset
    if policy == "first":
        return False
    if policy == "last":
        return True
    if policy == "windows":
        return new.offset < old.offset and new.end > old.end
    return new.offset < old.offset and new.end >= old.end  # solaris


@dataclass(frozen=True, slots=True)
class DefragSettings:
    policy: str = "bsd"
    timeout: float = 60.0  # Suricata's defrag.timeout
    max_trackers: int = 16384  # datagrams being reassembled at once
    max_frags: int = 256  # fragments of one datagram
    memcap: int = 32 << 20  # held fragment bytes in all (Suricata's defrag.memcap)

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ConfigError(f"unknown overlap policy {self.policy!r} (expected one of {', '.join(POLICIES)})", key="policy")
        if not self.timeout > 0:
            raise ConfigError("must be a positive number of seconds", key="timeout")
        for name in ("max_trackers", "max_frags", "memcap"):
            if getattr(self, name) < 1:
                raise ConfigError("must be at least 1", key=name)


@dataclass(slots=True, eq=False)
class _Frag:
    offset: int
    end: int
    data: bytes
    seq: int  # arrival order within the tracker
    pkt: Packet


@dataclass(slots=True, eq=False)
class _Tracker:
    key: tuple
    version: int
    deadline: float
    frags: list[_Frag] = field(default_factory=list)
    segs: list[list[int]] = field(default_factory=list)  # sorted, disjoint [start, end, frag index]
    members: list[tuple[Any, Packet]] = field(default_factory=list)  # held (token, fragment)
    total: int | None = None  # datagram data length, once the last fragment came
    held_bytes: int = 0
    overlapped: bool = False
    failed: str | None = None  # why the datagram was given up (its fragments are no longer kept)


@dataclass(slots=True)
class DefragResult:
    """What became of a fragment handed to ``Defragmenter.add``.

    ``datagram``: the reassembled packet, when this fragment completed it; ``members`` then holds
    every fragment of it (tokens and packets, this one included), to be judged with it.
    ``failed``: the datagram was given up (a bound was hit); ``members`` holds the fragments to
    release now (this one included). Neither: the fragment is held, ``members`` is empty.
    ``anomalies``: anomaly codes raised by this fragment."""

    datagram: Packet | None = None
    members: list[tuple[Any, Packet]] = field(default_factory=list)
    failed: str | None = None
    anomalies: list[str] = field(default_factory=list)


class Defragmenter:
    def __init__(self, settings: DefragSettings = DefragSettings(), counters: dict[str, int] | None = None) -> None:
        self.settings = settings
        self.counters: dict[str, int] = counters if counters is not None else {}
        for name in COUNTERS:
            self.counters.setdefault(name, 0)
        self._trackers: collections.OrderedDict[tuple, _Tracker] = collections.OrderedDict()  # by first fragment
        self._held_bytes = 0

    def __len__(self) -> int:
        return len(self._trackers)

    @property
    def held_bytes(self) -> int:
        return self._held_bytes

    @property
    def held_packets(self) -> int:
        return sum(len(t.members) for t in self._trackers.values())

    def next_deadline(self) -> float | None:
        for t in self._trackers.values():
            return t.deadline
        return None

    # -- input -------------------------------------------------------------------------------
    def add(self, pkt: Packet, token: Any, now: float) -> DefragResult:
        """Take one fragment (``pkt.is_fragment``). Never raises on bad input."""
        c = self.counters
        c["fragments"] += 1
        res = DefragResult()
        split = _split(pkt)
        if split is None:
            c["invalid"] += 1
            res.anomalies.append("defrag.bad_header")
            res.failed = "defrag.bad_header"
            res.members = [(token, pkt)]
            return res
        header_len, data = split
        if pkt.truncated:  # the capture cut the fragment: its datagram cannot be rebuilt
            c["truncated"] += 1
            res.anomalies.append("defrag.truncated")
        v6 = pkt.version == 6
        offset, more = pkt.frag_offset, pkt.more_fragments
        if v6 and more and len(data) % 8:
            c["invalid"] += 1
            res.anomalies.append("ipv6.frag_invalid_length")
            res.failed = "ipv6.frag_invalid_length"
            res.members = [(token, pkt)]
            return res
        key = (pkt.version, pkt.src_addr, pkt.dst_addr, pkt.ip_id, 0 if v6 else pkt.proto, pkt.vlan)
        tr = self._trackers.get(key)
        if tr is None:
            if len(self._trackers) >= self.settings.max_trackers:
                c["max_trackers"] += 1
                res.anomalies.append("defrag.max_trackers")
                res.failed = "defrag.max_trackers"
                res.members = [(token, pkt)]
                return res
            tr = self._trackers[key] = _Tracker(key, pkt.version, now + self.settings.timeout)
        if tr.failed is not None:
            res.failed = tr.failed
            res.members = [(token, pkt)]
            return res
        if "defrag.truncated" in res.anomalies:
            return self._fail(tr, res, token, pkt, "defrag.truncated", count=None)
        end = offset + len(data)
        limit = MAX_IP_DATAGRAM - (header_len if not v6 else header_len - 40)
        if end > limit:
            c["too_large"] += 1
            return self._fail(tr, res, token, pkt, "ipv6.frag_pkt_too_large" if v6 else "ipv4.frag_pkt_too_large")
        if len(tr.frags) >= self.settings.max_frags:
            return self._fail(tr, res, token, pkt, "defrag.max_frags", count="max_frags")
        size = len(pkt.raw)
        if self._held_bytes + size > self.settings.memcap:
            return self._fail(tr, res, token, pkt, "defrag.memcap", count="memcap")
        if tr.held_bytes + size > MAX_TRACKER_BYTES:  # overlapping copies of one datagram
            return self._fail(tr, res, token, pkt, "defrag.tracker_memcap", count="memcap")
        if not more:
            if tr.total is None:
                tr.total = end
            elif end != tr.total:  # two different ends: keep the first, flag the conflict
                tr.overlapped = True
                res.anomalies.append("ipv6.frag_overlap" if v6 else "ipv4.frag_overlap")
        if tr.total is not None and end > tr.total:
            end = max(offset, tr.total)
            data = data[: end - offset]
        frag = _Frag(offset, end, data, len(tr.frags), pkt)
        tr.frags.append(frag)
        tr.members.append((token, pkt))
        tr.held_bytes += size
        self._held_bytes += size
        if self._insert(tr, frag):
            tr.overlapped = True
            c["overlaps"] += 1
            code = "ipv6.frag_overlap" if v6 else "ipv4.frag_overlap"
            if code not in res.anomalies:
                res.anomalies.append(code)
        if self._complete(tr):
            datagram = self._reassemble(tr, pkt)
            members = tr.members
            self._drop(tr)
            if datagram is None:
                c["invalid"] += 1
                res.anomalies.append("defrag.bad_header")
                res.failed = "defrag.bad_header"
                res.members = members
                return res
            c["reassembled"] += 1
            res.datagram = datagram
            res.members = members
            return res
        c["held"] += 1
        return res

    def expire(self, now: float) -> list[tuple[str | None, list[tuple[Any, Packet]]]]:
        """Trackers whose timeout passed: ``(failure or None, held fragments)`` each; a failed
        tracker holds no fragments any more."""
        out = []
        while self._trackers:
            tr = next(iter(self._trackers.values()))
            if tr.deadline > now:
                break
            if tr.failed is None and tr.members:
                self.counters["timeouts"] += 1
            out.append((tr.failed, tr.members))
            self._drop(tr)
        return out

    # -- internals ---------------------------------------------------------------------------
    def _fail(self, tr: _Tracker, res: DefragResult, token: Any, pkt: Packet, why: str, count: str | None = "") -> DefragResult:
        if count:
            self.counters[count] += 1
        self.counters["failed"] += 1
        if why not in res.anomalies:
            res.anomalies.append(why)
        res.failed = why
        res.members = tr.members + [(token, pkt)]
        self._held_bytes -= tr.held_bytes
        tr.failed, tr.frags, tr.segs, tr.members, tr.held_bytes = why, [], [], [], 0
        return res

    def _drop(self, tr: _Tracker) -> None:
        self._held_bytes -= tr.held_bytes
        tr.held_bytes = 0
        self._trackers.pop(tr.key, None)

    def _insert(self, tr: _Tracker, new: _Frag) -> bool:
        """Merge ``new`` into the tracker's segments under the policy; True if it overlapped any."""
        if new.end <= new.offset:
            return False
        policy = self.settings.policy
        mine = [[new.offset, new.end]]  # the parts of ``new`` that survive
        out: list[list[int]] = []
        overlapped = False
        for seg in tr.segs:
            s, e, idx = seg
            lo, hi = max(s, new.offset), min(e, new.end)
            if lo >= hi:
                out.append(seg)
                continue
            overlapped = True
            if _new_wins(policy, tr.frags[idx], new):
                if s < lo:
                    out.append([s, lo, idx])
                if hi < e:
                    out.append([hi, e, idx])
            else:
                out.append(seg)
                mine = _subtract(mine, lo, hi)
        out += [[s, e, new.seq] for s, e in mine if s < e]
        out.sort()
        tr.segs = out
        return overlapped

    @staticmethod
    def _complete(tr: _Tracker) -> bool:
        if tr.total is None or not tr.segs or tr.segs[0][0] != 0:
            return False
        at = 0
        for s, e, _ in tr.segs:
            if s > at:
                return False
            at = max(at, e)
        return at >= tr.total

    def _reassemble(self, tr: _Tracker, last: Packet) -> Packet | None:
        first = tr.frags[tr.segs[0][2]].pkt  # the fragment whose bytes start the datagram
        data = b"".join(tr.frags[idx].data[s - tr.frags[idx].offset : e - tr.frags[idx].offset] for s, e, idx in tr.segs)
        data = data[: tr.total]
        if tr.version == 4:
            ihl = (first.raw[0] & 0x0F) << 2
            hdr = bytearray(first.raw[:ihl])
            struct.pack_into("!H", hdr, 2, ihl + len(data))
            struct.pack_into("!H", hdr, 6, struct.unpack_from("!H", hdr, 6)[0] & 0x4000)  # keep DF only
            struct.pack_into("!H", hdr, 10, 0)
            struct.pack_into("!H", hdr, 10, inet_checksum(bytes(hdr)))
            raw = bytes(hdr) + data
        else:
            where = _ipv6_frag_header(first.raw)
            if where is None:
                return None
            frag_off, nh_at = where
            hdr = bytearray(first.raw[:frag_off])
            hdr[nh_at] = first.raw[frag_off]  # the fragment header's next header takes its place
            struct.pack_into("!H", hdr, 4, len(hdr) - 40 + len(data))
            raw = bytes(hdr) + data
        pkt = parse_ip(raw, last.ts, last.side)
        pkt.eth_src, pkt.eth_dst, pkt.vlan, pkt.ethertype = last.eth_src, last.eth_dst, last.vlan, last.ethertype
        pkt.extra["defrag"] = len(tr.frags)
        return pkt


def _subtract(parts: list[list[int]], lo: int, hi: int) -> list[list[int]]:
    out = []
    for s, e in parts:
        if e <= lo or s >= hi:
            out.append([s, e])
            continue
        if s < lo:
            out.append([s, lo])
        if hi < e:
            out.append([hi, e])
    return out


def _ipv6_frag_header(raw: bytes) -> tuple[int, int] | None:
    """(offset of the fragment header, offset of the next-header byte that names it) in an IPv6 packet."""
    if len(raw) < 40:
        return None
    nh, nh_at, off = raw[6], 6, 40
    for _ in range(16):
        if nh == PROTO_IPV6_FRAG:
            return (off, nh_at) if off + 8 <= len(raw) else None
        if nh not in _IPV6_EXT_CHAIN or off + 8 > len(raw):
            return None
        length = (raw[off + 1] + 2) << 2 if nh == PROTO_AH else (raw[off + 1] + 1) << 3
        nh, nh_at, off = raw[off], off, off + length
    return None


def _split(pkt: Packet) -> tuple[int, bytes] | None:
    """(length of the headers kept in the datagram, fragment data) of a fragment, None if unusable."""
    raw = pkt.raw
    if pkt.version == 4:
        if len(raw) < 20:
            return None
        ihl = (raw[0] & 0x0F) << 2
        if ihl < 20 or ihl > len(raw):
            return None
        end = min(len(raw), pkt.ip_len) if pkt.ip_len >= ihl else len(raw)
        return ihl, raw[ihl:end]
    if pkt.version == 6:
        where = _ipv6_frag_header(raw)
        if where is None:
            return None
        frag_off = where[0]
        end = min(len(raw), pkt.ip_len) if pkt.ip_len > 40 else len(raw)
        return frag_off, raw[frag_off + 8 : end]
    return None
