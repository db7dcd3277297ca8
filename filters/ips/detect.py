"""The compiled rule set: rules sorted into inspection groups, hyperscan prefilters, buffer access.

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

import hashlib
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable

from filters.ips.addrindex import AddressIndex
from filters.ips.model import (
    BUFFERS,
    PKT,
    Action,
    BufDir,
    Direction,
    FieldCheck,
    IntOp,
    PacketField,
    PayloadMode,
    Rule,
    Transform,
)
from filters.ips.match import apply_transforms

if TYPE_CHECKING:  # pragma: no cover
    from filters.app import DnsMessage, HttpTransaction, TlsHello

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

    @property
    def sets_bits(self) -> bool:
        return any(not op.cmd.is_check for op in self.rule.flowbits)


def _hs_escape(pattern: bytes) -> bytes:
    """A byte string as a hyperscan regex matching exactly it (every byte as \\xHH)."""
    return b"".join(b"\\x%02x" % c for c in pattern)


class Prefilter:
    """Multi-pattern search of fast patterns (hyperscan; a plain search without it)."""

    def __init__(self, patterns: list[tuple[int, bytes, bool]]) -> None:
        self.count = len(patterns)
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

    def scan(self, data: bytes, out: set[int]) -> None:
        if not data or not self.count:
            return
        if self._db is not None:
            def on_match(rule_id: int, start: int, end: int, flags: int, ctx: Any) -> None:
                out.add(rule_id)

            self._db.scan(data, match_event_handler=on_match)
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
    prefilters: dict[tuple[str, tuple[Transform, ...]], Prefilter] = field(default_factory=dict)
    always: list[int] = field(default_factory=list)
    index: AddressIndex | None = None  # over the rules without a fast pattern

    def finish(self, infos: list[RuleInfo]) -> None:
        self.index = AddressIndex((i, infos[i].rule.src, infos[i].rule.dst) for i in self.always)

    def candidates(self, buffers: Callable[[str], Iterable[bytes]], infos: list[RuleInfo],
                   addrs: tuple[bytes, bytes] | None = None,
                   memo: dict[Any, Any] | None = None,
                   base: Iterable[int] | None = None, changing: frozenset[str] | None = None) -> list[RuleInfo]:
        """Rules worth a full evaluation: prefilter hits, and the unprefiltered rules whose
        addresses could match ``addrs`` (all of them when no addresses are given).

        ``memo`` (one per app-layer transaction) keeps each prefilter's last buffer and hits: a
        buffer unchanged since is not scanned again, and a grown one (a body in progress) only
        from where the last scan ended, less the longest pattern. The hits are the same as a scan
        of every whole buffer. ``changing``: with ``memo``, only these buffers can have changed
        since the last call; the hits of the others are united once and kept in ``memo`` (the
        caller drops that entry, ``("static", changing)``, when the others may change).
        ``base``: the unprefiltered candidates, already worked out (per flow)."""
        if base is not None:
            found = set(base)
        elif addrs is not None and self.index is not None:
            found = self.index.lookup(*addrs)
        else:
            found = set(self.always)
        if changing is not None and memo is not None:
            static_key = ("static", changing)
            static = memo.get(static_key)
            if static is None:
                static = set()
                for key, pf in self.prefilters.items():
                    if key[0] not in changing:
                        self._prefilter(key, pf, buffers, memo, static)
                memo[static_key] = static
            found |= static
            for key, pf in self.prefilters.items():
                if key[0] in changing:
                    self._prefilter(key, pf, buffers, memo, found)
        else:
            for key, pf in self.prefilters.items():
                self._prefilter(key, pf, buffers, memo, found)
        out = [infos[i] for i in found]
        out.sort(key=lambda r: r.order)
        return out

    @staticmethod
    def _prefilter(key: tuple[str, tuple[Transform, ...]], pf: Prefilter, buffers: Callable[[str], Iterable[bytes]],
                   memo: dict[Any, Any] | None, found: set[int]) -> None:
        name, transforms = key
        datas = list(buffers(name))
        if memo is None or transforms or len(datas) != 1:
            for data in datas:
                pf.scan(apply_transforms(transforms, data) if transforms else data, found)
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
        hits = set()
        pf.scan(data, hits)
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
    """App protocols some rule inspects ("*" when a rule's buffers fit any, e.g. bare file.data)."""
    out = set()
    for info in infos:
        name = info.app_proto or "*"
        out |= {"http", "http1"} if name in ("http", "http1") else {name}
    return out


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
        needs_payload=_dsize_needs_payload(rule),
    )


class Detector:
    """An immutable compiled rule set."""

    def __init__(self, rules: list[Rule]) -> None:
        self.infos = [classify(i, r) for i, r in enumerate(rules)]
        self.groups = {name: Group(name) for name in ("iponly", "packet", "stream", "app")}
        pf_patterns: dict[tuple[str, str, tuple[Transform, ...]], list[tuple[int, bytes, bool]]] = {}
        for info in self.infos:
            g = self.groups[info.group]
            g.rules.append(info)
            fp = info.rule.fast_pattern
            if fp is None or not fp.pattern or info.group == "iponly":
                g.always.append(info.idx)
                continue
            pf_patterns.setdefault((info.group, fp.buffer, fp.transforms), []).append((info.idx, fp.pattern, fp.nocase))
        for (group, buf, transforms), pats in pf_patterns.items():
            self.groups[group].prefilters[(buf, transforms)] = Prefilter(pats)
        for g in self.groups.values():
            g.finish(self.infos)
        self.headers = {name: _distinct_headers(g.rules) for name, g in self.groups.items()}
        self.app_protos = _app_protos(self.groups["app"].rules) | _app_protos(
            [i for i in self.groups["packet"].rules if i.app_proto is not None])
        self.counts = {name: len(g.rules) for name, g in self.groups.items()}
        self.counts["prefiltered"] = sum(len(p) for p in pf_patterns.values())

    def __len__(self) -> int:
        return len(self.infos)

    def could_apply(self, group: str, flow: Any) -> bool:
        """Could any rule of ``group`` match some packet of ``flow`` (either direction), judging by
        protocol, addresses and ports alone? App-protocol-bound rules are left out (see app_protos)."""
        proto, has_ports = flow.proto, flow.proto in (6, 17)
        c, cp, srv, sp = flow.client_addr, flow.client_port, flow.server_addr, flow.server_port
        headers = self.headers[group]
        if group == "iponly":  # thousands of address lists: look them up
            headers = [self.infos[i].rule for i in self.groups["iponly"].index.lookup(c, srv)]  # type: ignore[union-attr]
        for rule in headers:
            if header_matches(rule, proto, c, cp, srv, sp, has_ports) or header_matches(rule, proto, srv, sp, c, cp, has_ports):
                return True
        return False


# -- header and flow checks -------------------------------------------------------------------------


def header_matches(rule: Rule, proto: int, src: bytes, sport: int, dst: bytes, dport: int, has_ports: bool) -> bool:
    if rule.ip_protos and proto not in rule.ip_protos:
        return False
    if rule.ip_version and (4 if len(src) == 4 else 6) != rule.ip_version:
        return False
    if _one_way(rule, src, sport, dst, dport, has_ports):
        return True
    return rule.direction is Direction.BOTH and _one_way(rule, dst, dport, src, sport, has_ports)


def _one_way(rule: Rule, src: bytes, sport: int, dst: bytes, dport: int, has_ports: bool) -> bool:
    if not (rule.src.matches(src) and rule.dst.matches(dst)):
        return False
    if not has_ports:
        return rule.sport.any and rule.dport.any
    return rule.sport.matches(sport) and rule.dport.matches(dport)


# -- app-layer buffers ------------------------------------------------------------------------------


def _header_block(headers: list[tuple[bytes, bytes]], skip: tuple[bytes, ...] = ()) -> bytes:
    return b"".join(k + b": " + v + b"\r\n" for k, v in headers if k.lower() not in skip)


def _header_names(headers: list[tuple[bytes, bytes]]) -> bytes:
    return b"\r\n" + b"".join(k + b"\r\n" for k, _ in headers) + b"\r\n"


def _request_file(tx: "HttpTransaction") -> bytes:
    """A request body is file data (uploads, raw POST/PUT bodies) unless it is a plain form."""
    ctype = (tx.header(b"content-type") or b"").lower()
    return b"" if ctype.startswith(b"application/x-www-form-urlencoded") else tx.request_body


_HTTP_SIMPLE: dict[str, Callable[[Any, bool], bytes | None]] = {
    "http.uri": lambda tx, req: tx.uri if tx.request_line else None,
    "http.uri.raw": lambda tx, req: tx.uri_raw if tx.request_line else None,
    "http.method": lambda tx, req: tx.method or None,
    "http.request_line": lambda tx, req: tx.request_line or None,
    "http.request_body": lambda tx, req: tx.request_body or None,
    "http.host": lambda tx, req: tx.host or None,
    "http.host.raw": lambda tx, req: tx.host_raw or None,
    "http.user_agent": lambda tx, req: tx.user_agent or None,
    "http.stat_code": lambda tx, req: tx.status_code or None,
    "http.stat_msg": lambda tx, req: tx.status_msg or None,
    "http.response_line": lambda tx, req: tx.status_line or None,
    "http.response_body": lambda tx, req: tx.response_body or None,
    "file.data": lambda tx, req: (_request_file(tx) if req else tx.response_body) or None,
    "http.protocol": lambda tx, req: (tx.protocol if req else tx.response_protocol) or None,
}
_HTTP_NAMED = {
    "http.accept": b"accept", "http.accept_enc": b"accept-encoding", "http.accept_lang": b"accept-language",
    "http.referer": b"referer", "http.content_type": b"content-type", "http.content_len": b"content-length",
    "http.connection": b"connection", "http.server": b"server", "http.location": b"location",
}


def http_buffer(tx: "HttpTransaction", name: str, to_server: bool) -> bytes | None:
    """One HTTP sticky buffer of a transaction for the side being inspected (None: not there)."""
    req = to_server
    simple = _HTTP_SIMPLE.get(name)
    if simple is not None:
        return simple(tx, req)
    if not (tx.request_headers_done if req else tx.response_headers_done):
        return None
    header = _HTTP_NAMED.get(name)
    if header is not None:
        return tx.header(header, response=not req)
    headers = tx.request_headers if req else tx.response_headers
    if name == "http.cookie":
        return tx.header(b"cookie" if req else b"set-cookie", response=not req)
    if name == "http.header":
        return _header_block(headers, (b"cookie", b"set-cookie")) or None
    if name == "http.header.raw":
        return (tx.request_headers_raw if req else tx.response_headers_raw) or None
    if name == "http.header_names":
        return _header_names(headers)
    if name == "http.start":
        line = tx.request_line if req else tx.status_line
        return line + b"\r\n" + _header_block(headers) + b"\r\n"
    return None


def tls_buffers(hello: "TlsHello", name: str) -> list[bytes]:
    if name == "tls.sni":
        return [hello.sni] if hello.sni else []
    if name == "tls.cert_subject":
        return [hello.cert_subject] if hello.cert_subject else []
    if name == "tls.cert_issuer":
        return [hello.cert_issuer] if hello.cert_issuer else []
    if name == "tls.cert_serial":
        return [hello.cert_serial] if hello.cert_serial else []
    if name == "tls.certs":
        return list(hello.certs)
    if name == "tls.cert_fingerprint" and hello.certs:
        digest = hashlib.sha1(hello.certs[0]).hexdigest()
        return [":".join(digest[i:i + 2] for i in range(0, 40, 2)).encode()]
    return []


def dns_buffers(msg: "DnsMessage", name: str) -> list[bytes]:
    if name == "dns.query":
        return [q.name for q in msg.questions]
    return []
