"""Suricata/Snort rule parsing and rule-file loading: header, meta/flow/packet keywords, payload sections, fast pattern; skip-and-count of unsupported rules.

Public API (the rule model lives in ``filters.ips.rule`` and is re-exported here):

* ``parse_rule(text, *, vars, file="", line=0, classification=None) -> Rule`` raises ``RuleError``.
* ``load_text(text, vars, file="<text>", *, classification=None) -> LoadResult``.
* ``load_files(paths, vars, *, classification=None) -> LoadResult``.
* ``load_classification(path)`` / ``parse_classification(text)`` -> ``{name: (description, priority)}``.
* ``Variables.suricata_defaults()`` for ``$HOME_NET`` & co.
"""
from __future__ import annotations

import logging
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping

from filters.ips.netspec import SpecError, Variables
from filters.ips.payload_parser import PayloadBuilder, PayloadError, select_fast_pattern
from filters.ips.rule import (  # noqa: F401  (re-exported API)
    BUFFERS,
    PKT,
    Action,
    AddrSpec,
    AppLayerProtocol,
    Base64Decode,
    Bsize,
    BufferInfo,
    BufferSection,
    ByteExtract,
    ByteJump,
    ByteTest,
    ContentMatch,
    Direction,
    Endian,
    FastPattern,
    FieldCheck,
    FlagMode,
    FlagsCheck,
    FlowbitCmd,
    FlowbitOp,
    FlowintOp,
    FlowSpec,
    FragbitsCheck,
    IntMatch,
    IntOp,
    IpOptsCheck,
    IsDataAt,
    MatchItem,
    PacketCheck,
    PacketField,
    PayloadMode,
    PcreMatch,
    PortSpec,
    Reference,
    Rule,
    SameIpCheck,
    StreamSize,
    Tag,
    Threshold,
    ThresholdType,
    Track,
    Transform,
    UriLen,
    XbitOp,
    XbitTrack,
)
from filters.ips.rule_lexer import (
    MAX_RULE_CHARS,
    LexError,
    parse_int,
    parse_intmatch,
    split_args,
    split_options,
    split_rule,
    unescape_text,
    unquote,
)

log = logging.getLogger(__name__)

__all__ = [
    "RuleError", "LoadResult", "Variables", "parse_rule", "load_text", "load_files", "load_classification",
    "parse_classification", "Rule", "BufferSection", "ContentMatch", "PcreMatch", "ByteTest", "ByteJump",
    "ByteExtract", "IsDataAt", "Bsize", "UriLen", "Base64Decode", "FastPattern", "FlowSpec", "FlowbitOp",
    "Threshold", "AddrSpec", "PortSpec", "BUFFERS", "PKT",
]

MAX_CONTINUATION_LINES = 256
MAX_METADATA_ITEMS = 256
MAX_NAME_CHARS = 256  # flowbit / flowint / xbit names

Classification = Mapping[str, tuple[str, int]]


class RuleError(ValueError):
    """A rule that cannot be loaded. ``unsupported`` True: the syntax is fine but a keyword or
    feature is not supported (the rule is skipped and counted by ``reason``); False: bad syntax."""

    def __init__(self, file: str, line: int, reason: str, unsupported: bool = False, sid: int | None = None) -> None:
        self.file = file
        self.line = line
        self.reason = reason
        self.unsupported = unsupported
        self.sid = sid
        where = f"{file}:{line}" if file or line else "rule"
        super().__init__(f"{where}: {'unsupported: ' if unsupported else ''}{reason}")


class _KwError(ValueError):
    def __init__(self, reason: str, unsupported: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.unsupported = unsupported


# -- classification ------------------------------------------------------------------------------------

_CLASS_RE = re.compile(r"^\s*config\s+classification\s*:\s*([^,]+),([^,]*),\s*(\d+)\s*$")


def parse_classification(text: str) -> dict[str, tuple[str, int]]:
    """``config classification: name,description,priority`` lines -> {name: (description, priority)}."""
    out: dict[str, tuple[str, int]] = {}
    for raw in text.splitlines():
        m = _CLASS_RE.match(raw)
        if m:
            out[m.group(1).strip()] = (m.group(2).strip(), int(m.group(3)))
        elif raw.strip() and not raw.lstrip().startswith("#"):
            log.warning("classification: ignoring malformed line %r", raw[:80])
    return out


def load_classification(path: Path | str) -> dict[str, tuple[str, int]]:
    return parse_classification(Path(path).read_text(encoding="utf-8", errors="replace"))


# -- header --------------------------------------------------------------------------------------------

_ACTIONS = {a.value: a for a in Action}
# header protocol -> (IP protocol numbers, ip version, payload mode)
_L4: dict[str, tuple[tuple[int, ...], int, PayloadMode]] = {
    "ip": ((), 0, PayloadMode.ANY),
    "pkthdr": ((), 0, PayloadMode.ANY),
    "ipv4": ((), 4, PayloadMode.ANY),
    "ip4": ((), 4, PayloadMode.ANY),
    "ipv6": ((), 6, PayloadMode.ANY),
    "ip6": ((), 6, PayloadMode.ANY),
    "tcp": ((6,), 0, PayloadMode.ANY),
    "tcp-pkt": ((6,), 0, PayloadMode.PACKET),
    "tcp-stream": ((6,), 0, PayloadMode.STREAM),
    "udp": ((17,), 0, PayloadMode.ANY),
    "icmp": ((1, 58), 0, PayloadMode.ANY),
    "icmpv4": ((1,), 0, PayloadMode.ANY),
    "icmpv6": ((58,), 0, PayloadMode.ANY),
    "sctp": ((132,), 0, PayloadMode.ANY),
}
# app-layer protocol -> IP protocols it runs over
APP_PROTOS: dict[str, tuple[int, ...]] = {
    "http": (6,), "http1": (6,), "http2": (6,), "tls": (6,), "dns": (6, 17), "smtp": (6,), "ftp": (6,),
    "ftp-data": (6,), "ssh": (6,), "smb": (6,), "dcerpc": (6, 17), "dhcp": (17,), "dnp3": (6,),
    "enip": (6, 17), "nfs": (6, 17), "ntp": (17,), "tftp": (17,), "ike": (17,), "ikev2": (17,),
    "krb5": (6, 17), "snmp": (17,), "sip": (6, 17), "rfb": (6,), "mqtt": (6,), "rdp": (6,), "modbus": (6,),
    "quic": (17,), "pop3": (6,), "imap": (6,), "ldap": (6, 17), "websocket": (6,), "pgsql": (6,),
    "telnet": (6,), "bittorrent-dht": (17,), "mdns": (17,), "irc": (6,),
}
_APP_FAMILY = {"http1": "http", "http2": "http"}
_FROZEN = {t: frozenset(t) for t in {*APP_PROTOS.values(), *(v[0] for v in _L4.values())}}  # shared sets


def _parse_header(fields: list[str], variables: Variables) -> dict:
    action_s, proto_s, src_s, sport_s, dir_s, dst_s, dport_s = fields
    action = _ACTIONS.get(action_s.lower())
    if action is None:
        raise _KwError(f"unknown action {action_s!r}")
    proto = proto_s.lower()
    if proto not in _L4 and proto not in APP_PROTOS:
        raise _KwError(f"unsupported protocol: {proto}", unsupported=True)
    if dir_s not in ("->", "<>"):
        if dir_s == "=>":
            raise _KwError("unsupported direction: =>", unsupported=True)
        raise _KwError(f"bad direction {dir_s!r}")
    try:
        src, dst = variables.address(src_s), variables.address(dst_s)
        sport, dport = variables.ports(sport_s), variables.ports(dport_s)
    except SpecError as exc:
        raise _KwError(str(exc)) from None
    return {"action": action, "proto": proto, "src": src, "sport": sport, "direction": Direction(dir_s),
            "dst": dst, "dport": dport}


# -- option builder ------------------------------------------------------------------------------------


@dataclass
class _Builder:
    """Mutable state while one rule's options are applied in order."""

    classification: Classification | None
    payload: PayloadBuilder = field(default_factory=PayloadBuilder)
    sid: int | None = None
    gid: int = 1
    rev: int = 0
    msg: str = ""
    classtype: str | None = None
    priority: int | None = None
    metadata: list[str] = field(default_factory=list)
    metadata_items: int = 0
    references: list[Reference] = field(default_factory=list)
    target: str | None = None
    flow: dict[str, bool] | None = None
    flowbits: list[FlowbitOp] = field(default_factory=list)
    flowints: list[FlowintOp] = field(default_factory=list)
    xbits: list[XbitOp] = field(default_factory=list)
    threshold: Threshold | None = None
    detection_filter: Threshold | None = None
    packet_checks: list[PacketCheck] = field(default_factory=list)
    stream_size: list[StreamSize] = field(default_factory=list)
    app_layer_protocol: AppLayerProtocol | None = None
    noalert: bool = False
    tags: list[Tag] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)

    def apply(self, name: str, value: str | None) -> None:
        handler = _META.get(name)
        if handler is not None:
            if name in _ONCE and name in self.seen:
                raise _KwError(f"duplicate {name}")
            self.seen.add(name)
            handler(self, value or "")
            return
        if name in _PACKET:
            field_, bits = _PACKET[name]
            self.packet_checks.append(FieldCheck(field_, parse_intmatch(_need(name, value), name, bits)))
            return
        if self.payload.handles(name):
            self.payload.apply(name, value)
            return
        raise _KwError(f"unsupported keyword: {name}", unsupported=True)


def _need(name: str, value: str | None) -> str:
    if value is None or not value.strip():
        raise _KwError(f"{name} needs a value")
    return value


def _sid(b: _Builder, v: str) -> None:
    b.sid = parse_int(v, "sid", 1, 0xFFFFFFFF)


def _rev(b: _Builder, v: str) -> None:
    b.rev = parse_int(v, "rev", 0, 0xFFFFFFFF)


def _gid(b: _Builder, v: str) -> None:
    b.gid = parse_int(v, "gid", 0, 0xFFFFFFFF)


def _msg(b: _Builder, v: str) -> None:
    b.msg = unescape_text(unquote(v.strip(), "msg"))


def _classtype(b: _Builder, v: str) -> None:
    name = v.strip()
    if not name:
        raise _KwError("classtype needs a value")
    if b.classification is not None and name not in b.classification:
        raise _KwError(f"unknown classtype: {name}")
    b.classtype = name


def _priority(b: _Builder, v: str) -> None:
    b.priority = parse_int(v, "priority", 1, 255)


def _metadata(b: _Builder, v: str) -> None:
    items = split_args(v)
    b.metadata_items += len(items)
    if b.metadata_items > MAX_METADATA_ITEMS:
        raise _KwError("too many metadata items")
    if any(not item.partition(" ")[0] for item in items):
        raise _KwError(f"bad metadata {v[:60]!r}")
    b.metadata.append(v)


def _reference(b: _Builder, v: str) -> None:
    kind, sep, value = v.partition(",")
    if not sep or not kind.strip():
        raise _KwError(f"bad reference {v[:60]!r}")
    b.references.append(Reference(sys.intern(kind.strip()), value.strip()))


def _target(b: _Builder, v: str) -> None:
    if v.strip() not in ("src_ip", "dest_ip"):
        raise _KwError(f"target must be src_ip or dest_ip, got {v!r}")
    b.target = v.strip()


_FLOW_WORDS = {
    "to_server": "to_server", "from_client": "to_server", "to_client": "to_client",
    "from_server": "to_client", "established": "established", "not_established": "not_established",
    "stateless": "stateless", "only_stream": "only_stream", "no_stream": "no_stream",
    "only_frag": "only_frag", "no_frag": "no_frag",
}
_FLOW_CONFLICTS = (("to_server", "to_client"), ("established", "not_established"),
                   ("only_stream", "no_stream"), ("only_frag", "no_frag"), ("established", "stateless"))


def _flow(b: _Builder, v: str) -> None:
    words = split_args(v)
    if not words:
        raise _KwError("flow needs a value")
    flags: dict[str, bool] = {}
    for w in words:
        key = _FLOW_WORDS.get(w.lower())
        if key is None:
            raise _KwError(f"unknown flow option {w!r}")
        flags[key] = True
    for a, c in _FLOW_CONFLICTS:
        if flags.get(a) and flags.get(c):
            raise _KwError(f"flow: {a} conflicts with {c}")
    b.flow = flags


_FLOWBIT_CMDS = {c.value: c for c in FlowbitCmd}
_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-/:]+$")


def _names(text: str, what: str) -> tuple[tuple[str, ...], bool]:
    sep = "|" if "|" in text else "&"
    names = tuple(n.strip() for n in text.split(sep))
    for n in names:
        if not n or len(n) > MAX_NAME_CHARS or not _NAME_RE.match(n):
            raise _KwError(f"{what}: bad name {n!r}")
    return names, "&" not in text


def _flowbits(b: _Builder, v: str) -> None:
    cmd_s, _, rest = v.partition(",")
    cmd_s = cmd_s.strip().lower()
    if cmd_s == "noalert" and not rest.strip():
        b.noalert = True
        return
    cmd = _FLOWBIT_CMDS.get(cmd_s)
    if cmd is None:
        raise _KwError(f"flowbits: unknown command {cmd_s!r}")
    names, any_of = _names(rest, "flowbits")
    if len(names) > 1 and not cmd.is_check:
        raise _KwError("flowbits: several names are only allowed with isset/isnotset")
    b.flowbits.append(FlowbitOp(cmd, names, any_of))


_FLOWINT_OPS = frozenset({"+", "-", "=", "==", "!=", "<", ">", "<=", ">=", "isset", "notset", "isnotset"})


def _flowint(b: _Builder, v: str) -> None:
    args = split_args(v)
    if len(args) < 2 or len(args) > 3:
        raise _KwError("flowint: expected name, op[, value]")
    name, op = args[0], args[1]
    _names(name, "flowint")
    if op not in _FLOWINT_OPS:
        raise _KwError(f"flowint: unknown operator {op!r}")
    op = "notset" if op == "isnotset" else op
    if op in ("isset", "notset"):
        if len(args) == 3:
            raise _KwError(f"flowint: {op} takes no value")
        b.flowints.append(FlowintOp(name, op))
        return
    if len(args) != 3:
        raise _KwError(f"flowint: {op} needs a value")
    raw = args[2]
    value: int | str = raw if raw[:1].isalpha() else parse_int(raw, "flowint value", -(1 << 32), (1 << 32) - 1)
    b.flowints.append(FlowintOp(name, op, value))


_XBIT_TRACKS = {t.value: t for t in XbitTrack}


def _xbits(b: _Builder, v: str) -> None:
    args = split_args(v)
    if len(args) < 3:
        raise _KwError("xbits: expected cmd, name, track <...>[, expire <s>]")
    cmd = _FLOWBIT_CMDS.get(args[0].lower())
    if cmd is None:
        raise _KwError(f"xbits: unknown command {args[0]!r}")
    name = _names(args[1], "xbits")[0][0]
    track: XbitTrack | None = None
    expire: int | None = None
    for arg in args[2:]:
        word, _, rest = arg.partition(" ")
        if word == "track" and rest.strip() in _XBIT_TRACKS:
            track = _XBIT_TRACKS[rest.strip()]
        elif word == "expire":
            expire = parse_int(rest, "xbits expire", 1, 1 << 31)
        else:
            raise _KwError(f"xbits: bad option {arg!r}")
    if track is None:
        raise _KwError("xbits: track is required")
    b.xbits.append(XbitOp(cmd, name, track, expire))


_TRACKS = {t.value: t for t in Track}
_TTYPES = {t.value: t for t in ThresholdType}


def _threshold_args(v: str, what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for arg in split_args(v):
        word, _, rest = arg.strip().partition(" ")
        if word in out:
            raise _KwError(f"{what}: duplicate {word}")
        if word not in ("type", "track", "count", "seconds", "multiplier"):
            raise _KwError(f"unsupported {what} option: {word}", unsupported=word == "unique_on")
        out[word] = rest.strip()
    return out


def _threshold(b: _Builder, v: str) -> None:
    args = _threshold_args(v, "threshold")
    missing = [k for k in ("type", "track", "count", "seconds") if k not in args]
    if missing:
        raise _KwError(f"threshold: missing {', '.join(missing)}")
    ttype = _TTYPES.get(args["type"])
    track = _TRACKS.get(args["track"])
    if ttype is None or track is None:
        raise _KwError(f"threshold: bad type or track in {v!r}")
    mult = parse_int(args.get("multiplier", "0"), "threshold multiplier", 0, 1 << 31)
    b.threshold = Threshold(ttype, track, parse_int(args["count"], "threshold count", 1, 1 << 31),
                            parse_int(args["seconds"], "threshold seconds", 0, 1 << 31), mult)


def _detection_filter(b: _Builder, v: str) -> None:
    args = _threshold_args(v, "detection_filter")
    missing = [k for k in ("track", "count", "seconds") if k not in args]
    if missing or "type" in args:
        raise _KwError(f"detection_filter: expected track, count, seconds in {v!r}")
    track = _TRACKS.get(args["track"])
    if track is None:
        raise _KwError(f"detection_filter: bad track {args['track']!r}")
    b.detection_filter = Threshold(ThresholdType.THRESHOLD, track,
                                   parse_int(args["count"], "detection_filter count", 1, 1 << 31),
                                   parse_int(args["seconds"], "detection_filter seconds", 0, 1 << 31),
                                   detection_filter=True)


def _tag(b: _Builder, v: str) -> None:
    args = split_args(v)
    if not args or args[0] not in ("session", "host"):
        raise _KwError(f"tag: expected session or host, got {v!r}")
    count = parse_int(args[1], "tag count", 0, 1 << 31) if len(args) > 1 else 0
    metric = args[2] if len(args) > 2 else ""
    direction = args[3] if len(args) > 3 else ""
    b.tags.append(Tag(args[0], count, metric, direction))
    b.notes.append("tag ignored")


def _noalert(b: _Builder, v: str) -> None:
    b.noalert = True


def _stream_size(b: _Builder, v: str) -> None:
    args = split_args(v)
    if len(args) != 3 or args[0] not in ("server", "client", "both", "either"):
        raise _KwError("stream_size: expected server|client|both|either, op, bytes")
    if args[1] not in ("<", ">", "=", "!=", "<=", ">="):
        raise _KwError(f"stream_size: bad operator {args[1]!r}")
    b.stream_size.append(StreamSize(args[0], parse_intmatch(args[1] + args[2], "stream_size", 32)))


def _app_layer_protocol(b: _Builder, v: str) -> None:
    name = v.split(",")[0].strip()
    negated = name.startswith("!")
    name = name.lstrip("!").strip()
    if not name:
        raise _KwError("app-layer-protocol needs a protocol name")
    b.app_layer_protocol = AppLayerProtocol(name, negated)


# -- packet keywords -------------------------------------------------------------------------------

# keyword -> (field, bits): a declaration table (its rows are alike by design)
_PACKET: dict[str, tuple[PacketField, int]] = {
    "dsize": (PacketField.DSIZE, 16),
    "ttl": (PacketField.TTL, 8),
    "itype": (PacketField.ITYPE, 8),
    "icode": (PacketField.ICODE, 8),
    "icmp_id": (PacketField.ICMP_ID, 16),
    "icmp_seq": (PacketField.ICMP_SEQ, 16),
    "id": (PacketField.IP_ID, 32),
    "ack": (PacketField.TCP_ACK, 32),
    "seq": (PacketField.TCP_SEQ, 32),
    "window": (PacketField.TCP_WINDOW, 16),
    "fragoffset": (PacketField.FRAGOFFSET, 16),
    "tcp.mss": (PacketField.TCP_MSS, 16),
}
_TCP_FLAG_BITS = {"F": 0x01, "S": 0x02, "R": 0x04, "P": 0x08, "A": 0x10, "U": 0x20, "E": 0x40, "2": 0x40,
                  "C": 0x80, "1": 0x80}
_IP_PROTO_NAMES = {"ip": 0, "icmp": 1, "igmp": 2, "tcp": 6, "udp": 17, "ipv6": 41, "gre": 47, "esp": 50,
                   "ah": 51, "icmpv6": 58, "ipv6-icmp": 58, "sctp": 132}
_IPOPTS = {"eol": 0, "nop": 1, "rr": 7, "ts": 68, "sec": 130, "lsrr": 131, "esec": 133, "satid": 136,
           "ssrr": 137, "any": -1}


def _mode_and_bits(text: str, table: Mapping[str, int], what: str) -> tuple[FlagMode, int]:
    mode = FlagMode.EXACT
    bits = 0
    for ch in text.replace(" ", ""):
        if ch in "+*!":
            if mode is not FlagMode.EXACT:
                raise _KwError(f"{what}: more than one modifier")
            mode = FlagMode(ch)
        elif ch == "0" and what == "flags":
            continue
        elif ch.upper() in table:
            bits |= table[ch.upper()]
        else:
            raise _KwError(f"{what}: unknown flag {ch!r}")
    return mode, bits


def _flags(b: _Builder, v: str) -> None:
    spec, _, mask = v.partition(",")
    mode, bits = _mode_and_bits(spec, _TCP_FLAG_BITS, "flags")
    _, ignore = _mode_and_bits(mask, _TCP_FLAG_BITS, "flags") if mask.strip() else (FlagMode.EXACT, 0)
    b.packet_checks.append(FlagsCheck(bits, mode, ignore))


def _fragbits(b: _Builder, v: str) -> None:
    mode, bits = _mode_and_bits(v, {"M": 0x2000, "D": 0x4000, "R": 0x8000}, "fragbits")
    b.packet_checks.append(FragbitsCheck(bits, mode))


def _ip_proto(b: _Builder, v: str) -> None:
    t = v.strip()
    op = ""
    while t[:1] in ("!", "<", ">", "="):
        op, t = op + t[0], t[1:].strip()
    number = _IP_PROTO_NAMES.get(t.lower()) if not t.isdigit() else int(t)
    if number is None or not 0 <= number <= 255:
        raise _KwError(f"ip_proto: unknown protocol {t!r}")
    b.packet_checks.append(FieldCheck(PacketField.IP_PROTO, parse_intmatch(f"{op}{number}", "ip_proto", 8)))


def _sameip(b: _Builder, v: str) -> None:
    b.packet_checks.append(SameIpCheck())


def _ipopts(b: _Builder, v: str) -> None:
    opt = _IPOPTS.get(v.strip().lower())
    if opt is None:
        raise _KwError(f"ipopts: unknown option {v!r}")
    b.packet_checks.append(IpOptsCheck(opt))


_META: dict[str, Callable[[_Builder, str], None]] = {
    "sid": _sid, "rev": _rev, "gid": _gid, "msg": _msg, "classtype": _classtype, "priority": _priority,
    "metadata": _metadata, "reference": _reference, "target": _target, "flow": _flow, "flowbits": _flowbits,
    "flowint": _flowint, "xbits": _xbits, "threshold": _threshold, "detection_filter": _detection_filter,
    "tag": _tag, "noalert": _noalert, "stream_size": _stream_size, "app-layer-protocol": _app_layer_protocol,
    "flags": _flags, "fragbits": _fragbits, "ip_proto": _ip_proto, "sameip": _sameip, "ipopts": _ipopts,
}
_ONCE = frozenset({"sid", "rev", "gid", "msg", "classtype", "priority", "target", "flow", "threshold",
                   "detection_filter"})


# -- assembling the rule ------------------------------------------------------------------------------


def parse_rule(
    text: str, *, vars: Variables, file: str = "", line: int = 0, classification: Classification | None = None
) -> Rule:
    """Parse one rule (already joined if it spanned lines). Raises RuleError."""
    b = _Builder(classification)
    try:
        fields, body = split_rule(text.strip())
        header = _parse_header(fields, vars)
        for opt in split_options(body):
            b.apply(opt.name, opt.value)
        return _build(b, header, text.strip(), file, line)
    except _KwError as exc:
        raise RuleError(file, line, exc.reason, exc.unsupported, b.sid) from None
    except PayloadError as exc:
        raise RuleError(file, line, exc.reason, exc.unsupported, b.sid) from None
    except (LexError, SpecError) as exc:
        raise RuleError(file, line, str(exc), False, b.sid) from None


def _app_proto(header_proto: str, implied: set[str]) -> tuple[str | None, tuple[int, ...]]:
    """Reconcile the header protocol with the app protocols the rule's buffers imply."""
    if header_proto in APP_PROTOS:
        app = header_proto
        family = _APP_FAMILY.get(app, app)
        if implied - {family}:
            raise _KwError(f"rule keywords need {', '.join(sorted(implied))} but the header says {app}")
        return app, APP_PROTOS[app]
    if len(implied) > 1:
        raise _KwError(f"conflicting app-layer protocols: {', '.join(sorted(implied))}")
    l4 = _L4[header_proto][0]
    if not implied:
        return None, l4
    app = next(iter(implied))
    protos = tuple(p for p in APP_PROTOS[app] if not l4 or p in l4)
    if not protos:
        raise _KwError(f"{app} keywords cannot be used with protocol {header_proto}")
    return app, protos


def _payload_mode(header_proto: str, flow: dict[str, bool] | None) -> PayloadMode:
    mode = _L4[header_proto][2] if header_proto in _L4 else PayloadMode.ANY
    if flow and (flow.get("only_stream") or flow.get("no_stream")):
        want = PayloadMode.STREAM if flow.get("only_stream") else PayloadMode.PACKET
        if mode is not PayloadMode.ANY and mode is not want:
            raise _KwError(f"flow stream option conflicts with protocol {header_proto}")
        mode = want
    return mode


def _build(b: _Builder, header: dict, text: str, file: str, line: int) -> Rule:
    if b.sid is None:
        raise _KwError("missing sid")
    sections = b.payload.finish()
    proto = header["proto"]
    app_proto, ip_protos = _app_proto(proto, b.payload.app_protos)
    category, severity = "", 3
    if b.classtype is not None and b.classification is not None:
        category, severity = b.classification[b.classtype]
    if b.priority is not None:
        severity = b.priority
    return Rule(
        action=header["action"], proto=proto, ip_protos=_FROZEN.get(ip_protos) or frozenset(ip_protos),
        app_proto=app_proto,
        src=header["src"], sport=header["sport"], direction=header["direction"], dst=header["dst"],
        dport=header["dport"], sid=b.sid, gid=b.gid, rev=b.rev, msg=b.msg, classtype=b.classtype,
        category=category, severity=severity, metadata_raw=tuple(b.metadata),
        references=tuple(b.references), target=b.target,
        ip_version=_L4[proto][1] if proto in _L4 else 0, payload_mode=_payload_mode(proto, b.flow),
        flow=FlowSpec(**b.flow) if b.flow else None, flowbits=tuple(b.flowbits), flowints=tuple(b.flowints),
        xbits=tuple(b.xbits), threshold=b.threshold, detection_filter=b.detection_filter,
        packet_checks=tuple(b.packet_checks), stream_size=tuple(b.stream_size),
        app_layer_protocol=b.app_layer_protocol, sections=sections, fast_pattern=select_fast_pattern(sections),
        noalert=b.noalert, tags=tuple(b.tags), notes=tuple(dict.fromkeys(b.notes)), file=file, line=line,
        text=text,
    )


# -- loading ----------------------------------------------------------------------------------------------

_COMMENTED_RULE = re.compile(r"^#+\s*(?:alert|drop|pass|reject|rejectsrc|rejectdst|rejectboth)\s+\S+\s+\S+\s+\S+\s+\S+")


@dataclass(frozen=True, slots=True)
class LoadResult:
    """Outcome of loading rule text or files.

    ``active``: uncommented rule statements seen; ``total``: ``active`` plus commented-out rule
    lines (``# alert ...``); ``rules``: the rules that loaded; ``skipped``: unsupported reason ->
    count; ``unsupported``: those RuleErrors; ``errors``: bad-syntax RuleErrors (and duplicate
    sids). ``loaded + len(unsupported) + len(errors) == active``.
    """

    rules: list[Rule]
    skipped: Counter[str]
    errors: list[RuleError]
    total: int
    active: int
    unsupported: list[RuleError] = field(default_factory=list)

    @property
    def loaded(self) -> int:
        return len(self.rules)

    @property
    def load_rate(self) -> float:
        return self.loaded / self.active if self.active else 1.0


def iter_statements(text: str) -> Iterator[tuple[int, str | None]]:
    """Yield (first line number, rule text) per active statement and (line, None) per commented-out
    rule. Lines ending in ``\\`` continue on the next line; blank and ``#`` lines are skipped."""
    pending: list[str] = []
    start = 0
    for n, raw in enumerate(text.split("\n"), 1):
        line = raw.rstrip("\r")
        if not pending:
            stripped = line.strip()
            if not stripped:
                continue
            if stripped.startswith("#"):
                if _COMMENTED_RULE.match(stripped):
                    yield n, None
                continue
            start = n
        body = line.rstrip()
        if body.endswith("\\") and len(pending) < MAX_CONTINUATION_LINES:
            pending.append(body[:-1])
            if sum(map(len, pending)) > MAX_RULE_CHARS:
                yield start, "".join(pending)  # too long: let the parser report it
                pending = []
            continue
        pending.append(line)
        yield start, "".join(pending)
        pending = []
    if pending:
        yield start, "".join(pending)


@dataclass
class _Loader:
    variables: Variables
    classification: Classification | None
    rules: dict[tuple[int, int], Rule] = field(default_factory=dict)
    skipped: Counter[str] = field(default_factory=Counter)
    errors: list[RuleError] = field(default_factory=list)
    unsupported: list[RuleError] = field(default_factory=list)
    total: int = 0
    active: int = 0

    def feed(self, text: str, file: str) -> None:
        for line, stmt in iter_statements(text):
            self.total += 1
            if stmt is None:
                continue
            self.active += 1
            try:
                rule = parse_rule(stmt, vars=self.variables, file=file, line=line,
                                  classification=self.classification)
            except RuleError as exc:
                exc.__traceback__ = exc.__context__ = None  # keep no frames (and file text) alive
                if exc.unsupported:
                    self.skipped[exc.reason] += 1
                    self.unsupported.append(exc)
                else:
                    self.errors.append(exc)
                continue
            self._add(rule)

    def _add(self, rule: Rule) -> None:
        key = (rule.gid, rule.sid)
        old = self.rules.get(key)
        if old is not None:
            keep, drop = (rule, old) if rule.rev > old.rev else (old, rule)
            self.rules[key] = keep
            self.errors.append(RuleError(drop.file, drop.line, f"duplicate sid {rule.sid} (gid {rule.gid})",
                                         False, rule.sid))
            return
        self.rules[key] = rule

    def result(self) -> LoadResult:
        return LoadResult(list(self.rules.values()), self.skipped, self.errors, self.total, self.active,
                          self.unsupported)


def load_text(text: str, vars: Variables, file: str = "<text>", *,
              classification: Classification | None = None) -> LoadResult:
    loader = _Loader(vars, classification)
    loader.feed(text, file)
    return loader.result()


def load_files(paths: Iterable[Path | str], vars: Variables, *,
               classification: Classification | None = None) -> LoadResult:
    """Load rule files in order (a later duplicate sid with a higher rev replaces the earlier)."""
    loader = _Loader(vars, classification)
    for path in paths:
        p = Path(path)
        text = p.read_bytes().decode("utf-8-sig", "surrogateescape")  # -sig: drop a UTF-8 BOM
        loader.feed(text, str(p))
    result = loader.result()
    log.info("loaded %d of %d active rules (%d unsupported, %d errors)", result.loaded, result.active,
             len(result.unsupported), len(result.errors))
    return result
