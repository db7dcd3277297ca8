"""The compiled rule set: rules sorted into inspection groups with their hyperscan prefilters.

A ``Detector`` is built once from loaded rules and never changes (a reload builds a new one).
Groups, as Suricata inspects them:

* ``iponly``  rules with addresses/protocol only (any ports, no payload, flow or packet keywords):
  matched on the first packet of each direction of a flow;
* ``packet``  per-packet rules: header checks (dsize, flags, itype...), payload rules on
  non-TCP packets or TCP rules bound to packets, and app-protocol-only rules;
* ``stream``  TCP payload rules, matched on the reassembled stream of each direction;
* ``app``     rules on app-layer buffers (http.*, file.data, tls.*, dns.query), once per transaction.
"""
from __future__ import annotations

import bisect
import logging
from dataclasses import dataclass, field
from typing import AbstractSet, Any, Callable, Iterable, Sequence

from filters.ips.addrindex import AddressIndex
from filters.ips.buffer_match import apply_transforms
from filters.ips.netspec import PortSpec
from filters.ips.packet_match import bits_match
from filters.ips.rule import (
    BUFFERS,
    PKT,
    Action,
    Base64Decode,
    BufDir,
    ContentMatch,
    FieldCheck,
    FlagsCheck,
    IntOp,
    PacketField,
    PayloadMode,
    Rule,
    SameIpCheck,
    Transform,
)

log = logging.getLogger(__name__)

ACTION_ORDER = {Action.PASS: 0, Action.DROP: 1, Action.REJECT: 2, Action.REJECTSRC: 2, Action.REJECTDST: 2,
                Action.REJECTBOTH: 2, Action.ALERT: 3}


@dataclass(frozen=True, slots=True)
class RuleInfo:
    """A rule with what the engine precomputes about it."""

    idx: int
    rule: Rule
    group: str  # iponly | packet | stream | app
    app_proto: str | None
    dirs: frozenset[bool]  # directions (True = to_server) an app rule is inspected in
    app_buffers: frozenset[str]
    has_pkt: bool
    order: tuple[int, int, int]  # evaluation order: action, flowbit setters first, sid
    needs_payload: bool = False  # Suricata's SIG_MASK_REQUIRE_PAYLOAD from dsize
    # per app buffer section: a content the rule cannot match without, (buffer, bytes, nocase)
    required: tuple[tuple[str, bytes, bool], ...] = ()

    @property
    def sets_bits(self) -> bool:
        return any(not op.cmd.is_check for op in self.rule.flowbits)


PrefilterKey = tuple[str, tuple[Transform, ...], "bool | None"]  # buffer, transforms, direction (True: to_server)


def evaluation_order(info: RuleInfo) -> tuple[int, int, int]:
    """The sort key of candidate rules (RuleInfo.order)."""
    return info.order


def _hs_escape(pattern: bytes) -> bytes:
    """A byte string as a hyperscan regex matching exactly it (every byte as \\xHH)."""
    return b"".join(b"\\x%02x" % c for c in pattern)


def _add_hit(rule_id: int, start: int, end: int, flags: int, hits: set[int]) -> None:
    """hyperscan's match handler: the scan's context is the set of hits (no closure per scan)."""
    hits.add(rule_id)


_NO_HITS: frozenset[int] = frozenset()

# The buffers whose prefilter answers are kept by bytes (ScanCache): header fields a browser and a
# server repeat on every request and answer (host, user agent, accept..., status, server, content
# type), the header names, TLS names and DNS queries. Those that differ on almost every event (the
# URI, request line, whole header blocks, cookies, bodies, the packet) would only fill the cache
# (the bench's offline capture: cookies 0 hits in 660, the fields above 99%).
CACHED_BUFFERS = frozenset({
    "http.method", "http.host", "http.host.raw", "http.user_agent", "http.accept", "http.accept_enc",
    "http.accept_lang", "http.content_type", "http.content_len", "http.connection", "http.server",
    "http.protocol", "http.stat_code", "http.stat_msg", "http.response_line", "http.header_names",
    "http.referer", "http.location",
    "tls.sni", "tls.cert_subject", "tls.cert_issuer", "ja3.hash", "ja3s.hash", "ja4.hash", "dns.query",
})


class ScanCache:
    """Prefilter answers by buffer bytes, shared by a Detector's prefilters (each keeps its own
    table; the bounds are over all of them). A browser and a server repeat most header values on
    every request and answer; a scan's hits are a function of the database and the bytes alone, so
    an answer kept is the answer a scan would give. Only buffers of at most ``max_len`` bytes are
    kept; past ``max_entries`` entries or ``max_bytes`` bytes of keys every table is emptied (a flood
    of distinct values costs a miss each, nothing more). A reload builds new prefilters and with
    them a new cache. ``counters``: where hits, misses and clears are counted (the engine's)."""

    def __init__(self, max_entries: int = 4096, max_bytes: int = 256 * 1024, max_len: int = 256,
                 counters: dict[str, int] | None = None) -> None:
        self.max_entries, self.max_bytes, self.max_len = max_entries, max_bytes, max_len
        self.entries = 0
        self.bytes = 0
        self._tables: list[dict[bytes, frozenset[int]]] = []
        self.counters: dict[str, int] = {}
        self.attach(counters if counters is not None else {})

    def attach(self, counters: dict[str, int]) -> None:
        for key in ("prefilter_cache.hits", "prefilter_cache.misses", "prefilter_cache.clears"):
            counters.setdefault(key, 0)
        self.counters = counters

    def table(self) -> dict[bytes, frozenset[int]]:
        t: dict[bytes, frozenset[int]] = {}
        self._tables.append(t)
        return t

    def add(self, table: dict[bytes, frozenset[int]], data: bytes, hits: frozenset[int]) -> None:
        if self.entries >= self.max_entries or self.bytes + len(data) > self.max_bytes:
            for t in self._tables:
                t.clear()
            self.entries = self.bytes = 0
            self.counters["prefilter_cache.clears"] += 1
        table[data] = hits
        self.entries += 1
        self.bytes += len(data)


class Prefilter:
    """Multi-pattern search of fast patterns (hyperscan; a plain search without it)."""

    def __init__(self, patterns: list[tuple[int, bytes, bool]], cache: ScanCache | None = None) -> None:
        self.count = len(patterns)
        self._cache = cache if patterns else None
        self._seen: dict[bytes, frozenset[int]] = cache.table() if cache is not None and patterns else {}
        self.max_len = max((len(p) for _, p, _ in patterns), default=0)  # overlap of an incremental scan
        self._db: Any = None
        self._plain: list[tuple[int, bytes, bool]] = []
        if not patterns:
            return
        try:
            import hyperscan as hs
        except ImportError:  # pragma: no cover - hyperscan is a dependency
            log.warning("hyperscan not available: using a slow plain search for %d patterns", len(patterns))
            self._plain = [(i, p.lower() if nc else p, nc) for i, p, nc in patterns]
            return
        db = hs.Database(mode=hs.HS_MODE_BLOCK)
        flags = [hs.HS_FLAG_SINGLEMATCH | (hs.HS_FLAG_CASELESS if nc else 0) for _, _, nc in patterns]
        # Escaped regexes rather than the literal API: the binding passes C strings, so a NUL
        # byte would end a literal early.
        db.compile(expressions=[_hs_escape(p) for _, p, _ in patterns], ids=[i for i, _, _ in patterns],
                   elements=len(patterns), flags=flags)
        self._db = db

    def hits(self, data: bytes) -> AbstractSet[int]:
        """The ids whose pattern is in ``data``, as ``scan`` finds them (not to be changed: an
        answer may be kept), by bytes (ScanCache) for a prefilter of a cached buffer."""
        cache = self._cache
        if cache is None or len(data) > cache.max_len:
            found: set[int] = set()
            self.scan(data, found)
            return found
        got = self._seen.get(data)
        if got is not None:
            cache.counters["prefilter_cache.hits"] += 1
            return got
        cache.counters["prefilter_cache.misses"] += 1
        found = set()
        self.scan(data, found)
        got = frozenset(found) if found else _NO_HITS
        cache.add(self._seen, data, got)
        return got

    def scan(self, data: bytes, out: set[int]) -> None:
        if not data or not self.count:
            return
        if self._db is not None:
            self._db.scan(data, match_event_handler=_add_hit, context=out)
            return
        low = data.lower()
        for i, p, nc in self._plain:
            if p in (low if nc else data):
                out.add(i)


@dataclass
class Group:
    """Rules inspected together: a prefilter per buffer, and rules with no fast pattern."""

    name: str
    rules: list[RuleInfo] = field(default_factory=list)
    # per (buffer, transforms, direction): the direction (True = to_server) of the events whose
    # rules it holds, None for either (the packet and stream groups)
    prefilters: dict[PrefilterKey, Prefilter] = field(default_factory=dict)
    always: list[int] = field(default_factory=list)
    index: AddressIndex | None = None  # over the rules without a fast pattern
    # per app protocol and direction: the prefilters whose buffer that protocol's events can fill
    # (others are empty) and whose rules are inspected in that direction
    by_app: dict[tuple[str | None, bool | None], list[tuple[PrefilterKey, Prefilter]]] = field(default_factory=dict)
    # the same, of the buffers that can change within a body stage (``changing`` of candidates)
    by_change: dict[tuple[str | None, bool | None, frozenset[str]], list[tuple[PrefilterKey, Prefilter]]] = field(
        default_factory=dict)

    def finish(self, infos: list[RuleInfo]) -> None:
        self.index = AddressIndex((i, infos[i].rule.src, infos[i].rule.dst) for i in self.always)

    def prefilters_for(self, app: str | None, to_server: bool | None = None) -> list[tuple[PrefilterKey, Prefilter]]:
        """The prefilters an event of ``app`` in direction ``to_server`` can hit: those of
        buffers of no app protocol (the packet, file.data) or of ``app`` itself (all of them for
        ``app`` None), of rules inspected in that direction (either for ``to_server`` None). An
        answer's prefilters leave out the request buffers' patterns (http.uri, http.host...) of
        rules inspected on requests only, so an answer builds and scans none of those buffers."""
        got = self.by_app.get((app, to_server))
        if got is None:
            got = self.by_app[(app, to_server)] = [
                (key, pf) for key, pf in self.prefilters.items()
                if (app is None or key[0] not in BUFFERS or BUFFERS[key[0]].app_proto in (None, app))
                and (to_server is None or key[2] is None or key[2] is to_server)]
        return got

    def payload_hits(self, payload: bytes) -> set[int]:
        """The rules whose fast pattern is in a packet's payload (the group's prefilters of the
        packet buffer; those of other buffers are left out: a packet has none)."""
        found: set[int] = set()
        if payload:
            for (name, transforms, _), pf in self.prefilters_for(None, None):
                if name == PKT:
                    pf.scan(apply_transforms(transforms, payload) if transforms else payload, found)
        return found

    def window_hits(self, tail: bytes, window: bytes, before: Iterable[int] | None,
                    infos: list[RuleInfo]) -> set[int] | None:
        """The rules whose fast pattern is in a stream chunk's ``window`` (the old ``tail`` and the
        chunk), the same as a scan of the whole window, without scanning the tail again: the chunk
        is scanned with the tail's last bytes that a pattern ending in the chunk can start in,
        and a pattern wholly inside the tail belongs to a rule found in the previous window
        (``before``, its answer: the tail is that window's end), looked for in the tail alone. The
        stream group scanned each chunk with its 4 KB tail again (2.8 times its bytes offline).
        None when the group's prefilters are not one over the plain payload (then scan the
        window); ``before`` None (unknown, after a reload): the whole window is scanned."""
        prefilters = self.prefilters_for(None, None)
        if len(prefilters) != 1 or prefilters[0][0] != (PKT, (), None):
            return None
        pf = prefilters[0][1]
        found: set[int] = set()
        if not tail or before is None:
            pf.scan(window, found)
            return found
        pf.scan(window[max(0, len(tail) - pf.max_len + 1):], found)  # the patterns that end in the chunk
        low = None
        for i in before:
            if i in found:
                continue
            fp = infos[i].rule.fast_pattern
            assert fp is not None
            if fp.nocase:
                if low is None:
                    low = tail.lower()
                if fp.pattern.lower() in low:
                    found.add(i)
            elif fp.pattern in tail:
                found.add(i)
        return found

    def candidates(self, buffers: Callable[[str], Sequence[bytes]], infos: list[RuleInfo],
                   addrs: tuple[bytes, bytes] | None = None,
                   memo: dict[Any, Any] | None = None,
                   base: Iterable[int] | None = None, changing: frozenset[str] | None = None,
                   app: str | None = None, to_server: bool | None = None,
                   hits: set[int] | None = None) -> list[RuleInfo]:
        """Rules worth a full evaluation: prefilter hits, and the unprefiltered rules whose
        addresses could match ``addrs`` (all of them when no addresses are given).

        ``memo`` (one per app-layer transaction) keeps each prefilter's last buffer and hits: a
        buffer unchanged since is not scanned again, and a grown one (a body in progress) only
        from where the last scan ended, less the longest pattern. The hits are the same as a scan
        of every whole buffer. ``changing``: with ``memo``, only these buffers can have changed
        since the last call; the hits of the others are united once with the unprefiltered
        candidates (the event's addresses do not change either) and kept in ``memo`` (the caller
        drops that entry, ``("static", changing)``, when the others may change).
        ``base``: the unprefiltered candidates, already worked out (per flow). ``app``: the app
        protocol whose buffers ``buffers`` gives (the buffers of other protocols are empty then).
        ``to_server``: the direction of the event (None: rules of either). ``hits``: the
        prefilter hits, already worked out (window_hits): no prefilter is scanned."""
        prefilters = self.prefilters_for(app, to_server)
        if hits is None and changing is not None and memo is not None:
            # the unprefiltered candidates (by the event's addresses) and the hits of the buffers
            # that cannot change, worked out on the stage's first event and kept for the others
            static_key = ("static", changing)
            static = memo.get(static_key)
            if static is None:
                static = self._base(base, addrs)
                for key, pf in prefilters:
                    if key[0] not in changing:
                        datas = buffers(key[0])
                        if datas:
                            self._prefilter(key, pf, datas, memo, static)
                memo[static_key] = static
            found = set(static)
            grown = self.by_change.get((app, to_server, changing))
            if grown is None:  # each event of a body in progress: only these, not a walk over all
                grown = self.by_change[(app, to_server, changing)] = [kp for kp in prefilters if kp[0][0] in changing]
            for key, pf in grown:
                datas = buffers(key[0])
                if datas:
                    self._prefilter(key, pf, datas, memo, found)
        else:
            found = self._base(base, addrs)
            if hits is not None:
                found |= hits
            else:
                prefilter = self._prefilter
                for key, pf in prefilters:
                    datas = buffers(key[0])
                    if datas:  # most of an event's buffers are absent (no body, cookie, referer...): no call
                        prefilter(key, pf, datas, memo, found)
        out = [infos[i] for i in found]
        if len(out) > 1:
            out.sort(key=evaluation_order)
        return out

    def _base(self, base: Iterable[int] | None, addrs: tuple[bytes, bytes] | None) -> set[int]:
        """The unprefiltered candidates (a new set): ``base``, or the rules without a fast pattern
        whose addresses could match ``addrs`` (all of them without addresses)."""
        if base is not None:
            return set(base)
        if not self.always:  # every rule of the group has a fast pattern (the stream group)
            return set()
        if addrs is not None and self.index is not None:
            return self.index.lookup(*addrs)
        return set(self.always)

    @staticmethod
    def _prefilter(key: PrefilterKey, pf: Prefilter, datas: Sequence[bytes],
                   memo: dict[Any, Any] | None, found: set[int]) -> None:
        """The hits of one prefilter over its buffer's ``datas`` (not empty) into ``found``."""
        transforms = key[1]
        if memo is None or transforms or len(datas) != 1:
            for data in datas:
                found |= pf.hits(apply_transforms(transforms, data) if transforms else data)
            return
        data = datas[0]
        prev = memo.get(key)
        if prev is not None:
            ref, hits = prev
            if data is ref or data == ref:
                found |= hits
                return
            if len(data) > len(ref) and data.startswith(ref):
                hits = set(hits)
                pf.scan(data[max(0, len(ref) - pf.max_len + 1):], hits)
                memo[key] = (data, hits)
                found |= hits
                return
        hits = pf.hits(data)
        memo[key] = (data, hits)
        found |= hits


def _distinct_headers(infos: list[RuleInfo]) -> list[Rule]:
    """One rule per distinct header (protocols, addresses, ports, direction) of non-app rules."""
    seen: dict[tuple[Any, ...], Rule] = {}
    for info in infos:
        r = info.rule
        if info.app_proto is not None:
            continue
        key = (r.ip_protos, r.ip_version, r.src.text, r.sport.text, r.direction, r.dst.text, r.dport.text)
        seen.setdefault(key, r)
    return list(seen.values())


def _app_protos(infos: list[RuleInfo]) -> set[str]:
    """App protocols of the rules ("*" when a rule's buffers fit any, e.g. bare file.data). A rule
    protocol may match more than one flow protocol ("http": HTTP/1 and HTTP/2; see engine._aliases)."""
    return {info.app_proto or "*" for info in infos}


def _is_iponly(rule: Rule) -> bool:
    """Addresses and protocol only (setting flowbits is allowed, as in Suricata's IP-only rules)."""
    return (
        not rule.sections and not rule.packet_checks and rule.flow is None
        and not any(op.cmd.is_check for op in rule.flowbits)
        and not rule.flowints and not rule.xbits and rule.app_proto is None and rule.app_layer_protocol is None
        and not rule.stream_size and rule.sport.any and rule.dport.any
    )


def _app_dirs(rule: Rule, app_buffers: frozenset[str]) -> frozenset[bool]:
    if rule.flow is not None and rule.flow.to_server:
        return frozenset({True})
    if rule.flow is not None and rule.flow.to_client:
        return frozenset({False})
    dirs = {BUFFERS[b].direction for b in app_buffers if b in BUFFERS}
    if BufDir.TO_CLIENT in dirs:
        return frozenset({False})
    if BufDir.TO_SERVER in dirs:
        return frozenset({True})
    return frozenset({True, False})


def _dsize_needs_payload(rule: Rule) -> bool:
    """dsize >, >=, !=, a range or = N>0 only matches packets with payload (as Suricata's sig mask)."""
    for c in rule.packet_checks:
        if isinstance(c, FieldCheck) and c.field is PacketField.DSIZE:
            op = c.test.op
            if op in (IntOp.GT, IntOp.GE, IntOp.NE, IntOp.RANGE) or (op is IntOp.EQ and c.test.a > 0):
                return True
    return False


# The TCP flags of the packets the kernel may keep from the workers as "empty ACKs"
# (agent/dataplane/ruleset.py): ACK set, SYN/FIN/RST clear, PSH/URG/ECE/CWR either way.
_EMPTY_ACK_FLAGS = tuple(0x10 | extra for extra in range(0, 0x100, 0x08) if not extra & 0x17)
# ... and those of a SYN+ACK the kernel may keep (the handshake skip): SYN and ACK set, FIN/RST clear
_SYNACK_FLAGS = tuple(0x12 | extra for extra in range(0, 0x100, 0x08) if not extra & 0x17)
# Header fields a TCP packet without payload and options cannot make a check of true: dsize is 0,
# the ICMP fields are absent (the check fails), ip_proto is 6.
_ICMP_FIELDS = frozenset({PacketField.ITYPE, PacketField.ICODE, PacketField.ICMP_ID, PacketField.ICMP_SEQ})


_TCP_FIELDS = frozenset({PacketField.TCP_ACK, PacketField.TCP_SEQ, PacketField.TCP_WINDOW, PacketField.TCP_MSS})


def could_hold(rule: Rule, proto: int, same_ip: bool) -> bool:
    """Could the rule's packet checks hold for some packet of a flow of IP protocol ``proto``
    between two addresses that are the same (``same_ip``) or not? No when one of them tests what
    such a packet cannot have: ``ip_proto`` another protocol, ICMP fields (itype, icode, icmp_id,
    icmp_seq) outside ICMP, TCP fields or flags outside TCP, ``sameip`` between two addresses. A
    UDP or ICMP packet of a flow then skips such rules without evaluating them (packet_match gives
    False for each of these checks)."""
    for check in rule.packet_checks:
        if isinstance(check, FieldCheck):
            f = check.field
            if (f is PacketField.IP_PROTO and not check.test(proto) or f in _ICMP_FIELDS and proto not in (1, 58)
                    or f in _TCP_FIELDS and proto != 6):
                return False
        elif isinstance(check, FlagsCheck):
            if proto != 6:
                return False
        elif isinstance(check, SameIpCheck) and not same_ip:
            return False
    return True


def _check_allows_empty_ack(check: Any, flag_sets: tuple[int, ...] = _EMPTY_ACK_FLAGS) -> bool:
    """Could this packet check hold for an empty ACK (a TCP packet without payload with one of
    ``flag_sets``)? Unknown kinds: yes."""
    if isinstance(check, FlagsCheck):
        return any(bits_match(f & ~check.ignore & 0xFF, check.flags, check.mode) for f in flag_sets)
    if isinstance(check, FieldCheck):
        if check.field is PacketField.DSIZE:
            return check.test(0)
        if check.field is PacketField.IP_PROTO:
            return check.test(6)
        return check.field not in _ICMP_FIELDS
    return True


def could_match_empty_ack(info: RuleInfo) -> bool:
    """Could the rule match a TCP packet with no payload and only ACK among SYN/FIN/RST/ACK (an
    "empty ACK") of a connection whose SYN, SYN+ACK and first such ACK the engine saw?

    Conservative: True unless the rule provably cannot. App-buffer rules are inspected on app-layer
    events and stream rules on reassembled bytes, which an empty ACK does not carry; IP-only rules
    are matched on the first packet of each direction (the SYN and the SYN+ACK). A packet rule
    cannot when it is not for TCP, when it inspects the payload (content, pcre, byte_*, isdataat...:
    an empty packet has no payload buffer) or needs one (dsize), or when one of its header checks
    cannot hold (flags needing SYN, FIN or RST or excluding ACK, dsize not allowing 0, ICMP fields).
    Anything else (flags:A, ack/seq/window/ttl checks, app-protocol-only rules, flowbits, stream_size,
    thresholds on such rules...) could."""
    return _could_match_empty(info, _EMPTY_ACK_FLAGS)


def could_match_synack(info: RuleInfo) -> bool:
    """Could the rule match a connection's SYN+ACK without payload (the handshake skip,
    Ips.needs_handshake)? As could_match_empty_ack, with the flags of a SYN+ACK (a rule with
    ``flags:SA`` or no flags check at all, ``tcp.mss`` or ``window`` could). IP-only rules are
    judged apart, by the flow's addresses."""
    return _could_match_empty(info, _SYNACK_FLAGS)


def _could_match_empty(info: RuleInfo, flag_sets: tuple[int, ...]) -> bool:
    if info.group != "packet":
        return False
    r = info.rule
    if r.ip_protos and 6 not in r.ip_protos:
        return False
    if r.sections or info.needs_payload:
        return False
    return all(_check_allows_empty_ack(c, flag_sets) for c in r.packet_checks)


def _required(rule: Rule) -> tuple[tuple[str, bytes, bool], ...]:
    """Per app-buffer section without transforms, its longest content that must be in the
    buffer for the section to match (any non-negated content before a base64_decode, wherever
    its offset or distance puts it), the fast pattern left out (the prefilter found it already).
    A body in progress re-runs its rules at every event; a rule whose content is still missing
    from the grown buffer is skipped after a search of the new bytes alone (engine._still_absent)."""
    fp = rule.fast_pattern
    out = []
    for sec in rule.sections:
        if sec.buffer == PKT or sec.transforms:
            continue
        best: ContentMatch | None = None
        for item in sec.items:
            if isinstance(item, Base64Decode):
                break
            if (isinstance(item, ContentMatch) and not item.negated and item.pattern and not item.fast_pattern
                    and not (fp is not None and fp.buffer == sec.buffer and fp.pattern in (item.pattern, item.folded))
                    and (best is None or len(item.pattern) > len(best.pattern))):
                best = item
        if best is not None:
            out.append((sec.buffer, best.folded, best.nocase))
    return tuple(out)


def classify(idx: int, rule: Rule) -> RuleInfo:
    app_buffers = frozenset(b for b in rule.buffers if b != PKT)
    has_pkt = PKT in rule.buffers
    if app_buffers:
        group = "app"
    elif _is_iponly(rule):
        group = "iponly"
    elif (has_pkt and 6 in rule.ip_protos and len(rule.ip_protos) == 1 and rule.payload_mode is not PayloadMode.PACKET
          and not rule.packet_checks and rule.app_proto is None):
        group = "stream"
    else:
        group = "packet"
    setter = 0 if any(not op.cmd.is_check for op in rule.flowbits) else 1
    return RuleInfo(
        idx=idx, rule=rule, group=group, app_proto=rule.app_proto,
        dirs=_app_dirs(rule, app_buffers) if app_buffers else frozenset({True, False}),
        app_buffers=app_buffers, has_pkt=has_pkt, order=(ACTION_ORDER.get(rule.action, 3), setter, rule.sid),
        needs_payload=_dsize_needs_payload(rule), required=_required(rule) if app_buffers else (),
    )


class PortClasses:
    """Ports sorted by which of some port specs hold them: two ports of one class are in the same
    of those specs, so the same rule headers (of rules with those specs) fit them. Ports within
    one elementary interval between the specs' bounds always share a class; the intervals whose
    ports are in the same specs share one too (a client's ephemeral ports mostly fall in one), so
    a cache by class serves many flows."""

    def __init__(self, specs: Iterable[PortSpec]) -> None:
        distinct = list(dict.fromkeys(spec.ranges for spec in specs if not spec.any))
        bounds = sorted({0} | {b for ranges in distinct for lo, hi in ranges for b in (lo, hi + 1) if b <= 65535})
        ids: dict[int, int] = {}
        classes = []
        for start in bounds:
            bits = sum(1 << n for n, ranges in enumerate(distinct) if any(lo <= start <= hi for lo, hi in ranges))
            classes.append(ids.setdefault(bits, len(ids)))
        self._starts = tuple(bounds)
        self._classes = tuple(classes)
        self.count = len(ids)

    def of(self, port: int) -> int:
        return self._classes[bisect.bisect_right(self._starts, port) - 1]


class Detector:
    """An immutable compiled rule set."""

    def __init__(self, rules: list[Rule], scan_cache: ScanCache | None = None) -> None:
        self.infos = [classify(i, r) for i, r in enumerate(rules)]
        self.groups = {name: Group(name) for name in ("iponly", "packet", "stream", "app")}
        pf_patterns: dict[tuple[str, str, tuple[Transform, ...], bool | None], list[tuple[int, bytes, bool]]] = {}
        prefiltered = 0
        for info in self.infos:
            g = self.groups[info.group]
            g.rules.append(info)
            fp = info.rule.fast_pattern
            if fp is None or not fp.pattern or info.group == "iponly":
                g.always.append(info.idx)
                continue
            # app rules: a prefilter per direction the rule is inspected in (few rules are in both)
            for to_server in sorted(info.dirs) if info.group == "app" else (None,):
                pf_patterns.setdefault((info.group, fp.buffer, fp.transforms, to_server), []).append(
                    (info.idx, fp.pattern, fp.nocase))
            prefiltered += 1
        # app buffers that repeat from one event to the next (CACHED_BUFFERS): answers kept by bytes
        self.scan_cache = scan_cache if scan_cache is not None else ScanCache()
        for (group, buf, transforms, to_server), pats in pf_patterns.items():
            cache = self.scan_cache if group == "app" and buf in CACHED_BUFFERS else None
            self.groups[group].prefilters[(buf, transforms, to_server)] = Prefilter(pats, cache)
        for g in self.groups.values():
            g.finish(self.infos)
        # Ports by the packet rules' port specs that hold them (Ips._header_class caches by
        # address and port class).
        self.port_classes = PortClasses(spec for info in self.groups["packet"].rules
                                        for spec in (info.rule.sport, info.rule.dport))
        self.app_protos = _app_protos(self.groups["app"].rules) | _app_protos(
            [i for i in self.groups["packet"].rules if i.app_proto is not None])
        self.counts = {name: len(g.rules) for name, g in self.groups.items()}
        # The rules an empty TCP ACK could match (see could_match_empty_ack): while there is one,
        # the kernel must hand such packets to the workers.
        self.empty_ack_rules = tuple(i.rule.sid for i in self.infos if could_match_empty_ack(i))
        self.counts["prefiltered"] = prefiltered

    def __len__(self) -> int:
        return len(self.infos)

    def port_class(self, port: int) -> int:
        """Which of the packet rules' port specs hold ``port``: one number per distinct answer."""
        return self.port_classes.of(port)

