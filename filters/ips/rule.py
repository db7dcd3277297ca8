"""The IPS rule model: frozen, slotted dataclasses the rule parser builds and the matcher evaluates.

Conventions shared by every match item:

* A buffer's items form one chain evaluated left to right with a cursor (Suricata's
  ``buffer_offset``): content, pcre, byte_jump and byte_extract move it when they match;
  everything marked ``relative`` works from it.
* ``int | str`` fields hold either a number or the name of a ``byte_extract`` variable, resolved
  at match time from ``MatchContext.vars``.
* All offsets are byte offsets into the (transformed) buffer.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Mapping, Union

from filters.ips.netspec import AddrSpec, PortSpec

PKT = "pkt"  # the packet payload / reassembled stream (Suricata's "payload" list)
BASE64_DATA = "base64_data"  # the output of base64_decode (only inside Base64Decode.data)

Num = Union[int, str]  # literal, or byte_extract variable name


class Action(enum.Enum):
    ALERT = "alert"
    DROP = "drop"
    REJECT = "reject"
    REJECTSRC = "rejectsrc"
    REJECTDST = "rejectdst"
    REJECTBOTH = "rejectboth"
    PASS = "pass"


class Direction(enum.Enum):
    TO = "->"  # src/sport -> dst/dport
    BOTH = "<>"  # either way round


class PayloadMode(enum.Enum):
    """Which TCP payload the ``pkt`` buffer means for this rule."""

    ANY = "any"  # packet payload and reassembled stream (Suricata default)
    PACKET = "packet"  # packets only: header proto tcp-pkt, or flow:no_stream
    STREAM = "stream"  # reassembled stream only: tcp-stream, or flow:only_stream


class Track(enum.Enum):
    BY_SRC = "by_src"
    BY_DST = "by_dst"
    BY_RULE = "by_rule"
    BY_BOTH = "by_both"
    BY_FLOW = "by_flow"


class ThresholdType(enum.Enum):
    LIMIT = "limit"  # alert at most count times per seconds
    THRESHOLD = "threshold"  # alert every count-th match within seconds
    BOTH = "both"  # alert once per seconds after count matches
    BACKOFF = "backoff"  # alert on the 1st, then every count-th, count multiplied each time


class IntOp(enum.Enum):
    """Suricata's integer comparison modes (ranges are exclusive)."""

    EQ = "="
    NE = "!="
    LT = "<"
    LE = "<="
    GT = ">"
    GE = ">="
    RANGE = "<>"  # a < x < b
    NOT_RANGE = "!<>"  # x <= a or x >= b
    MASK_EQ = "&="  # (x & a) == b
    MASK_NE = "&!="  # (x & a) != b


# The keyword dataclasses below are declarations: several have the same fields (a ``test`` IntMatch,
# a ``negated`` flag) and stay apart, one type per keyword, as the matcher dispatches on the type.
@dataclass(frozen=True, slots=True)
class IntMatch:
    """One integer test (dsize, bsize, urilen, ttl, itype, ...)."""

    op: IntOp
    a: int
    b: int = 0

    def __call__(self, x: int) -> bool:
        op = self.op
        if op is IntOp.EQ:
            return x == self.a
        if op is IntOp.LT:
            return x < self.a
        if op is IntOp.GT:
            return x > self.a
        if op is IntOp.RANGE:
            return self.a < x < self.b
        if op is IntOp.NE:
            return x != self.a
        if op is IntOp.LE:
            return x <= self.a
        if op is IntOp.GE:
            return x >= self.a
        if op is IntOp.NOT_RANGE:
            return x <= self.a or x >= self.b
        if op is IntOp.MASK_EQ:
            return (x & self.a) == self.b
        return (x & self.a) != self.b


# -- payload match items ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ContentMatch:
    """``content`` with its modifiers.

    Absolute (no distance/within): the match must lie in ``[offset, offset + depth)``
    (``depth`` None = to the end). Relative: the match must start at or after
    ``cursor + distance`` and end by ``cursor + distance + within``. ``startswith`` is stored as
    offset 0 / depth len(pattern); ``endswith`` requires the match to end at the buffer end.
    ``retry`` mirrors Suricata's WITHIN_NEXT flag: when a later item fails, search the next
    occurrence of this content and try again.
    """

    pattern: bytes
    negated: bool = False
    nocase: bool = False
    offset: Num = 0
    depth: Num | None = None
    distance: Num | None = None
    within: Num | None = None
    startswith: bool = False
    endswith: bool = False
    fast_pattern: bool = False
    fast_pattern_only: bool = False
    fast_pattern_chop: tuple[int, int] | None = None  # (offset, length) into pattern
    retry: bool = False
    folded: bytes = b""  # pattern.lower() when nocase, else pattern

    @property
    def relative(self) -> bool:
        return self.distance is not None or self.within is not None


@dataclass(frozen=True, slots=True)
class PcreMatch:
    """``pcre`` compiled with PCRE2 under match limits (``filters.ips.pcre.Regex``).

    ``source`` is the rule's ``/regex/flags`` text, ``flags`` the modifier letters as written.
    ``anchored`` is /A; ``relative`` is /R (the subject starts at the cursor, so ``^`` and
    lookbehinds see the cursor as the start). A match moves the cursor to its end.
    """

    source: str
    flags: str
    regex: Any  # filters.ips.pcre.Regex: search/match raise RegexLimit when a bound is hit
    negated: bool = False
    relative: bool = False
    anchored: bool = False
    retry: bool = False


class Endian(enum.Enum):
    BIG = "big"
    LITTLE = "little"
    DCE = "dce"  # endianness from the DCE/RPC header; evaluated as big endian here


@dataclass(frozen=True, slots=True)
class ByteTest:
    """``byte_test``: read ``nbytes`` at ``offset`` (from the cursor when relative) and compare.

    ``op`` is one of ``< > = <= >= & ^``; ``negated`` is the ``!`` prefix. ``base`` is 10/16/8
    for ``string`` numbers, None for binary. ``nbytes`` 0 with a string base means "as many
    digits as there are".
    """

    nbytes: Num
    op: str
    value: Num
    offset: Num
    negated: bool = False
    relative: bool = False
    endian: Endian = Endian.BIG
    base: int | None = None
    bitmask: int | None = None


@dataclass(frozen=True, slots=True)
class ByteJump:
    """``byte_jump``: read a number and move the cursor by it (see Suricata's payload keywords)."""

    nbytes: Num
    offset: Num
    relative: bool = False
    multiplier: int = 1
    endian: Endian = Endian.BIG
    base: int | None = None
    align: bool = False
    from_beginning: bool = False
    from_end: bool = False
    post_offset: int = 0
    bitmask: int | None = None


@dataclass(frozen=True, slots=True)
class ByteExtract:
    """``byte_extract``: read a number into variable ``name`` and move the cursor past it."""

    nbytes: int
    offset: int
    name: str
    relative: bool = False
    multiplier: int = 1
    endian: Endian = Endian.BIG
    base: int | None = None
    align: int = 0
    bitmask: int | None = None


@dataclass(frozen=True, slots=True)
class IsDataAt:
    """``isdataat``: absolute: byte ``value`` exists; relative: ``value`` bytes remain after the cursor."""

    value: Num
    relative: bool = False
    negated: bool = False


@dataclass(frozen=True, slots=True)
class Bsize:
    """``bsize``: the buffer length passes ``test``."""

    test: IntMatch


@dataclass(frozen=True, slots=True)
class UriLen:
    """``urilen``: the URI length passes ``test`` (lives in the http.uri or http.uri.raw section)."""

    test: IntMatch
    raw: bool = False


@dataclass(frozen=True, slots=True)
class Base64Decode:
    """``base64_decode`` plus the ``base64_data`` items run on the decoded bytes.

    Decodes ``nbytes`` (None = the rest) starting at ``offset`` (from the cursor when relative).
    If ``data`` matches the decoded bytes the whole section matches at once (Suricata treats
    base64_data as a terminal list); without ``data`` the item never matches.
    """

    nbytes: int | None = None
    offset: int = 0
    relative: bool = False
    data: "BufferSection | None" = None


MatchItem = Union[ContentMatch, PcreMatch, ByteTest, ByteJump, ByteExtract, IsDataAt, Bsize, UriLen, Base64Decode]


class Transform(enum.Enum):
    """Buffer transforms (applied in order to the whole buffer before the section's items)."""

    DOTPREFIX = "dotprefix"
    TO_LOWERCASE = "to_lowercase"
    TO_UPPERCASE = "to_uppercase"
    STRIP_WHITESPACE = "strip_whitespace"
    COMPRESS_WHITESPACE = "compress_whitespace"
    URL_DECODE = "url_decode"
    TO_MD5 = "to_md5"
    TO_SHA1 = "to_sha1"
    TO_SHA256 = "to_sha256"


@dataclass(frozen=True, slots=True)
class BufferSection:
    """The rule's items for one buffer, in Suricata's evaluation order (one relative chain).

    ``buffer`` is a canonical name from ``BUFFERS`` (``"pkt"`` for the packet/stream payload).
    The engine supplies that buffer's bytes, applies ``transforms`` (see
    ``filters.ips.buffer_match.apply_transforms``) and calls ``match_section``.
    """

    buffer: str
    items: tuple[MatchItem, ...]
    transforms: tuple[Transform, ...] = ()


# -- non-payload parts ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FlowSpec:
    """``flow``: direction and state constraints (all that were given must hold)."""

    to_server: bool = False  # to_server / from_client
    to_client: bool = False  # to_client / from_server
    established: bool = False
    not_established: bool = False
    stateless: bool = False
    only_stream: bool = False
    no_stream: bool = False
    only_frag: bool = False
    no_frag: bool = False


class FlowbitCmd(enum.Enum):
    SET = "set"
    UNSET = "unset"
    TOGGLE = "toggle"
    ISSET = "isset"
    ISNOTSET = "isnotset"

    @property
    def is_check(self) -> bool:
        return self in (FlowbitCmd.ISSET, FlowbitCmd.ISNOTSET)


@dataclass(frozen=True, slots=True)
class FlowbitOp:
    """One ``flowbits`` command. For checks with several names, ``any_of`` True means the
    names were joined with ``|`` (the check holds if it holds for any name), False means ``&``
    (it must hold for every name). Set/unset/toggle apply to every name."""

    cmd: FlowbitCmd
    names: tuple[str, ...]
    any_of: bool = True


@dataclass(frozen=True, slots=True)
class FlowintOp:
    """``flowint: name, op[, value]``. ``op`` is one of ``+ - = == != < > <= >= isset notset``
    (``isnotset`` is stored as ``notset``); ``value`` is an int, another flowint name, or None."""

    name: str
    op: str
    value: int | str | None = None

    @property
    def is_check(self) -> bool:
        return self.op not in ("+", "-", "=")


class XbitTrack(enum.Enum):
    IP_SRC = "ip_src"
    IP_DST = "ip_dst"
    IP_PAIR = "ip_pair"
    TX = "tx"


@dataclass(frozen=True, slots=True)
class XbitOp:
    """``xbits: cmd, name, track <ip_src|ip_dst|ip_pair|tx>[, expire <seconds>]``."""

    cmd: FlowbitCmd
    name: str
    track: XbitTrack
    expire: int | None = None


@dataclass(frozen=True, slots=True)
class Threshold:
    """``threshold`` (or a ``detection_filter`` when ``detection_filter`` is True: alert on every
    match after the first ``count`` within ``seconds``). ``multiplier`` is for backoff."""

    type: ThresholdType
    track: Track
    count: int
    seconds: int
    multiplier: int = 0
    detection_filter: bool = False


@dataclass(frozen=True, slots=True)
class Reference:
    kind: str  # url, cve, md5, bugtraq, ...
    value: str


@dataclass(frozen=True, slots=True)
class Tag:
    """``tag`` (parsed for completeness; the engine may ignore it)."""

    kind: str  # session | host
    count: int = 0
    metric: str = ""  # packets | seconds | bytes
    direction: str = ""  # src | dst (host tags)


class PacketField(enum.Enum):
    """Header fields an ``IntMatch`` can test (see match.match_packet_checks)."""

    DSIZE = "dsize"
    TTL = "ttl"
    ITYPE = "itype"
    ICODE = "icode"
    ICMP_ID = "icmp_id"
    ICMP_SEQ = "icmp_seq"
    IP_PROTO = "ip_proto"
    IP_ID = "id"
    TCP_ACK = "ack"
    TCP_SEQ = "seq"
    TCP_WINDOW = "window"
    FRAGOFFSET = "fragoffset"
    TCP_MSS = "tcp.mss"


@dataclass(frozen=True, slots=True)
class FieldCheck:
    field: PacketField
    test: IntMatch


class FlagMode(enum.Enum):
    EXACT = ""  # exactly these (after removing the ignore mask)
    PLUS = "+"  # at least these
    ANY = "*"  # any of these
    NOT = "!"  # not all of these


@dataclass(frozen=True, slots=True)
class FlagsCheck:
    """``flags`` on TCP packets: bits as in the TCP header byte; ``ignore`` is the mask."""

    flags: int
    mode: FlagMode = FlagMode.EXACT
    ignore: int = 0


@dataclass(frozen=True, slots=True)
class FragbitsCheck:
    """``fragbits``: bits 0x8000 reserved, 0x4000 don't fragment, 0x2000 more fragments."""

    bits: int
    mode: FlagMode = FlagMode.EXACT


@dataclass(frozen=True, slots=True)
class SameIpCheck:
    pass


@dataclass(frozen=True, slots=True)
class IpOptsCheck:
    """``ipopts``: the IPv4 header carries option ``option`` (an IPv4 option type, -1 = any)."""

    option: int


PacketCheck = Union[FieldCheck, FlagsCheck, FragbitsCheck, SameIpCheck, IpOptsCheck]


@dataclass(frozen=True, slots=True)
class StreamSize:
    """``stream_size: side, op, bytes`` with side server|client|both|either (engine-evaluated)."""

    side: str
    test: IntMatch


@dataclass(frozen=True, slots=True)
class AppLayerProtocol:
    """``app-layer-protocol:[!]name`` (engine-evaluated)."""

    name: str
    negated: bool = False


@dataclass(frozen=True, slots=True)
class FastPattern:
    """The content to feed the multi-pattern prefilter, chosen as Suricata does.

    ``pattern`` is the (chopped) content; ``nocase`` means match it case-insensitively;
    ``only`` is the rule's explicit ``fast_pattern:only``. The pattern must be searched in
    ``buffer`` after ``transforms``. ``offset``/``depth`` are hints for an absolute content
    (match start >= offset, match end <= depth) and are 0/None otherwise.
    """

    buffer: str
    pattern: bytes
    nocase: bool
    only: bool = False
    transforms: tuple[Transform, ...] = ()
    section: int = 0  # index into Rule.sections
    item: int = 0  # index into that section's items
    explicit: bool = False  # chosen by a fast_pattern keyword
    offset: int = 0
    depth: int | None = None


@dataclass(frozen=True, slots=True)
class Rule:
    """One parsed rule. ``ip_protos`` empty means any IP protocol; ``app_proto`` is the header
    app-layer protocol (or the one the rule's buffers imply), None for plain ip/tcp/udp/icmp."""

    action: Action
    proto: str
    ip_protos: frozenset[int]
    app_proto: str | None
    src: AddrSpec
    sport: PortSpec
    direction: Direction
    dst: AddrSpec
    dport: PortSpec
    sid: int
    gid: int = 1
    rev: int = 0
    msg: str = ""
    classtype: str | None = None
    category: str = ""
    severity: int = 3
    metadata_raw: tuple[str, ...] = ()  # the rule's metadata option values; see ``metadata``
    references: tuple[Reference, ...] = ()
    target: str | None = None
    ip_version: int = 0  # 4 or 6 for ipv4/ipv6 headers, 0 = either
    payload_mode: PayloadMode = PayloadMode.ANY
    flow: FlowSpec | None = None
    flowbits: tuple[FlowbitOp, ...] = ()
    flowints: tuple[FlowintOp, ...] = ()
    xbits: tuple[XbitOp, ...] = ()
    threshold: Threshold | None = None
    detection_filter: Threshold | None = None
    packet_checks: tuple[PacketCheck, ...] = ()
    stream_size: tuple[StreamSize, ...] = ()
    app_layer_protocol: AppLayerProtocol | None = None
    sections: tuple[BufferSection, ...] = ()
    fast_pattern: FastPattern | None = None
    noalert: bool = False
    tags: tuple[Tag, ...] = ()
    notes: tuple[str, ...] = ()  # keywords accepted but without effect (e.g. "tag ignored")
    file: str = ""
    line: int = 0
    text: str = ""

    @property
    def metadata(self) -> dict[str, tuple[str, ...]]:
        """``metadata: key value, key value`` as {key: values in rule order}, parsed on access
        (keeping only the text saves ~20 MB on ET Open)."""
        return parse_metadata(self.metadata_raw)

    @property
    def buffers(self) -> frozenset[str]:
        """Canonical names of every buffer the rule inspects."""
        return frozenset(s.buffer for s in self.sections)

    def section(self, buffer: str) -> BufferSection | None:
        """The first section for ``buffer`` (a rule may have several with different transforms)."""
        for s in self.sections:
            if s.buffer == buffer:
                return s
        return None


def parse_metadata(values: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    """Split metadata option values into {key: values}; an item without a value maps to ""."""
    out: dict[str, list[str]] = {}
    for value in values:
        for item in value.split(","):
            key, _, val = item.strip().partition(" ")
            if key:
                out.setdefault(key, []).append(val.strip())
    return {k: tuple(v) for k, v in out.items()}


# -- buffers ---------------------------------------------------------------------------------------------


class BufDir(enum.Enum):
    """Which side of the flow a buffer comes from."""

    TO_SERVER = "to_server"
    TO_CLIENT = "to_client"
    BOTH = "both"


@dataclass(frozen=True, slots=True)
class BufferInfo:
    """A sticky buffer: canonical name, the app protocol it implies (None = any), direction,
    Suricata's fast-pattern priority (lower wins) and whether it can hold the fast pattern."""

    name: str
    app_proto: str | None
    direction: BufDir
    priority: int = 2
    mpm: bool = True


def _b(name: str, app: str | None, direction: BufDir, priority: int = 2, mpm: bool = True) -> BufferInfo:
    return BufferInfo(name, app, direction, priority, mpm)


_TS, _TC, _BOTH = BufDir.TO_SERVER, BufDir.TO_CLIENT, BufDir.BOTH

BUFFERS: Mapping[str, BufferInfo] = {
    b.name: b
    for b in (
        _b(PKT, None, _BOTH, 3),
        _b(BASE64_DATA, None, _BOTH, 2, mpm=False),
        _b("file.data", None, _BOTH),
        _b("http.uri", "http", _TS),
        _b("http.uri.raw", "http", _TS),
        _b("http.method", "http", _TS, 4),
        _b("http.request_line", "http", _TS),
        _b("http.request_body", "http", _TS),
        _b("http.user_agent", "http", _TS),
        _b("http.host", "http", _TS),
        _b("http.host.raw", "http", _TS),
        _b("http.accept", "http", _TS),
        _b("http.accept_enc", "http", _TS),
        _b("http.accept_lang", "http", _TS),
        _b("http.referer", "http", _TS),
        _b("http.cookie", "http", _BOTH),
        _b("http.header", "http", _BOTH),
        _b("http.header.raw", "http", _BOTH),
        _b("http.header_names", "http", _BOTH),
        _b("http.content_type", "http", _BOTH),
        _b("http.content_len", "http", _BOTH),
        _b("http.connection", "http", _BOTH),
        _b("http.start", "http", _BOTH),
        _b("http.protocol", "http", _BOTH),
        _b("http.stat_code", "http", _TC, 4),
        _b("http.stat_msg", "http", _TC, 3),
        _b("http.response_line", "http", _TC),
        _b("http.server", "http", _TC),
        _b("http.location", "http", _TC),
        _b("tls.sni", "tls", _TS),
        _b("tls.cert_subject", "tls", _TC),
        _b("tls.cert_issuer", "tls", _TC),
        _b("tls.cert_serial", "tls", _TC),
        _b("tls.cert_fingerprint", "tls", _TC),
        _b("tls.certs", "tls", _TC),
        _b("ja3.hash", "tls", _TS),  # lower-case hex MD5 of the client JA3 string
        _b("ja3.string", "tls", _TS),
        _b("ja3s.hash", "tls", _TC),
        _b("ja3s.string", "tls", _TC),
        _b("ja4.hash", "tls", _TS),  # the JA4 fingerprint text (Suricata's ja4.hash)
        _b("dns.query", "dns", _TS),
        _b("ssh.proto", "ssh", _BOTH),
        _b("ssh.software", "ssh", _BOTH),
    )
}
