"""Rule-header address and port specs (any, CIDRs, ranges, nested lists, negation, $VARS), precompiled to sorted ranges."""
from __future__ import annotations

import bisect
import ipaddress
import logging
import socket
from dataclasses import dataclass, field
from typing import Mapping

log = logging.getLogger(__name__)

MAX_SPEC_CHARS = 1 << 20  # one address/port spec, after variable expansion
MAX_NESTING = 16  # bracket nesting and variable indirection depth
MAX_ITEMS = 1 << 16  # items in one (expanded) list
MAX_CACHE = 4096  # resolved specs kept per Variables object

V4_MAX = (1 << 32) - 1
V6_MAX = (1 << 128) - 1
PORT_MAX = 65535

Ranges = tuple[tuple[int, int], ...]  # sorted, merged, inclusive (lo, hi)


class SpecError(ValueError):
    """A malformed address or port spec (the message says which part and why)."""


# -- range sets -------------------------------------------------------------------------------------


def _merge(ranges: list[tuple[int, int]]) -> Ranges:
    if not ranges:
        return ()
    ranges.sort()
    out = [ranges[0]]
    for lo, hi in ranges[1:]:
        plo, phi = out[-1]
        if lo <= phi + 1:
            if hi > phi:
                out[-1] = (plo, hi)
        else:
            out.append((lo, hi))
    return tuple(out)


def _subtract(base: Ranges, cut: Ranges) -> Ranges:
    """``base`` minus ``cut`` (both sorted and merged)."""
    out: list[tuple[int, int]] = []
    j = 0
    for lo, hi in base:
        while j < len(cut) and cut[j][1] < lo:
            j += 1
        k = j
        cur = lo
        while k < len(cut) and cut[k][0] <= hi:
            clo, chi = cut[k]
            if clo > cur:
                out.append((cur, clo - 1))
            cur = max(cur, chi + 1)
            k += 1
        if cur <= hi:
            out.append((cur, hi))
    return tuple(out)


def _contains(ranges: Ranges, starts: tuple[int, ...], value: int) -> bool:
    i = bisect.bisect_right(starts, value) - 1
    return i >= 0 and value <= ranges[i][1]


# -- specs ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AddrSpec:
    """A compiled address spec. ``matches(addr)`` takes a packed 4- or 16-byte address.

    ``v4``/``v6`` are sorted, merged, inclusive integer ranges; ``any`` is True when the spec
    covers every IPv4 and IPv6 address (then the ranges are not consulted).
    """

    text: str
    v4: Ranges
    v6: Ranges
    any: bool = False
    _v4_starts: tuple[int, ...] = field(default=(), repr=False, compare=False)
    _v6_starts: tuple[int, ...] = field(default=(), repr=False, compare=False)

    @classmethod
    def build(cls, text: str, v4: Ranges, v6: Ranges) -> "AddrSpec":
        full = v4 == ((0, V4_MAX),) and v6 == ((0, V6_MAX),)
        return cls(text, v4, v6, full, tuple(r[0] for r in v4), tuple(r[0] for r in v6))

    def matches(self, addr: bytes) -> bool:
        if self.any:
            return True
        n = len(addr)
        if n == 4:
            return _contains(self.v4, self._v4_starts, int.from_bytes(addr, "big"))
        if n == 16:
            return _contains(self.v6, self._v6_starts, int.from_bytes(addr, "big"))
        return False


@dataclass(frozen=True, slots=True)
class PortSpec:
    """A compiled port spec: sorted, merged, inclusive ranges within 0..65535."""

    text: str
    ranges: Ranges
    any: bool = False
    _starts: tuple[int, ...] = field(default=(), repr=False, compare=False)

    @classmethod
    def build(cls, text: str, ranges: Ranges) -> "PortSpec":
        return cls(text, ranges, ranges == ((0, PORT_MAX),), tuple(r[0] for r in ranges))

    def matches(self, port: int) -> bool:
        if self.any:
            return True
        return _contains(self.ranges, self._starts, port)


ANY_ADDR = AddrSpec.build("any", ((0, V4_MAX),), ((0, V6_MAX),))
ANY_PORT = PortSpec.build("any", ((0, PORT_MAX),))


# -- variables --------------------------------------------------------------------------------------

_SURICATA_ADDRESS_GROUPS = {
    "HOME_NET": "[192.168.0.0/16,10.0.0.0/8,172.16.0.0/12]",
    "EXTERNAL_NET": "!$HOME_NET",
    "HTTP_SERVERS": "$HOME_NET",
    "SMTP_SERVERS": "$HOME_NET",
    "SQL_SERVERS": "$HOME_NET",
    "DNS_SERVERS": "$HOME_NET",
    "TELNET_SERVERS": "$HOME_NET",
    "AIM_SERVERS": "$EXTERNAL_NET",
    "DC_SERVERS": "$HOME_NET",
    "DNP3_SERVER": "$HOME_NET",
    "DNP3_CLIENT": "$HOME_NET",
    "MODBUS_CLIENT": "$HOME_NET",
    "MODBUS_SERVER": "$HOME_NET",
    "ENIP_CLIENT": "$HOME_NET",
    "ENIP_SERVER": "$HOME_NET",
}
_SURICATA_PORT_GROUPS = {
    "HTTP_PORTS": "80",
    "SHELLCODE_PORTS": "!80",
    "ORACLE_PORTS": "1521",
    "SSH_PORTS": "22",
    "DNP3_PORTS": "20000",
    "MODBUS_PORTS": "502",
    "FILE_DATA_PORTS": "[$HTTP_PORTS,110,143]",
    "FTP_PORTS": "21",
    "GENEVE_PORTS": "6081",
    "VXLAN_PORTS": "4789",
    "TEREDO_PORTS": "3544",
    "SIP_PORTS": "[5060, 5061]",
}


@dataclass(frozen=True, slots=True)
class Variables:
    """Address groups and port groups (names without ``$``) used to resolve rule headers.

    Resolved specs are memoised on the object (bounded by MAX_CACHE), so reuse one Variables for a
    whole rule load. Build variants with ``with_overrides``; the object itself never changes
    meaning.
    """

    address_groups: Mapping[str, str] = field(default_factory=dict)
    port_groups: Mapping[str, str] = field(default_factory=dict)
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def suricata_defaults(cls) -> "Variables":
        """Suricata's default ``vars`` (suricata.yaml / suricata-verify default_vars)."""
        return cls(dict(_SURICATA_ADDRESS_GROUPS), dict(_SURICATA_PORT_GROUPS))

    def with_overrides(
        self, *, address_groups: Mapping[str, str] | None = None, port_groups: Mapping[str, str] | None = None
    ) -> "Variables":
        """A copy with the given groups added or replaced (keys may carry a leading ``$``)."""
        addrs = dict(self.address_groups)
        ports = dict(self.port_groups)
        addrs.update({k.lstrip("$"): v for k, v in (address_groups or {}).items()})
        ports.update({k.lstrip("$"): v for k, v in (port_groups or {}).items()})
        return Variables(addrs, ports)

    def address(self, text: str) -> AddrSpec:
        """Resolve and compile an address spec such as ``$HOME_NET`` or ``[10.0.0.0/8,!10.1.1.1]``."""
        return self._memo(("a", text), lambda: _AddrParser(self).spec(text))

    def ports(self, text: str) -> PortSpec:
        """Resolve and compile a port spec such as ``$HTTP_PORTS``, ``[80,443]`` or ``1024:``."""
        return self._memo(("p", text), lambda: _PortParser(self).spec(text))

    def _memo(self, key: tuple[str, str], build) -> AddrSpec | PortSpec:
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        spec = build()
        if len(self._cache) < MAX_CACHE:
            self._cache[key] = spec
        return spec


# -- list syntax --------------------------------------------------------------------------------------


def _split_list(body: str, what: str) -> list[str]:
    """Split the inside of ``[...]`` on top-level commas."""
    items: list[str] = []
    depth = 0
    start = 0
    for i, ch in enumerate(body):
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
            if depth < 0:
                raise SpecError(f"unbalanced ']' in {what} list")
        elif ch == "," and depth == 0:
            items.append(body[start:i].strip())
            start = i + 1
    if depth != 0:
        raise SpecError(f"unbalanced '[' in {what} list")
    items.append(body[start:].strip())
    if len(items) > MAX_ITEMS:
        raise SpecError(f"{what} list has more than {MAX_ITEMS} items")
    if any(not it for it in items):
        raise SpecError(f"empty item in {what} list")
    return items


class _SetParser:
    """Shared recursive evaluation: a spec is a union of positive items minus negated items."""

    what = ""
    universe: tuple[Ranges, ...] = ()

    def __init__(self, variables: Variables) -> None:
        self.vars = variables

    def groups(self) -> Mapping[str, str]:
        raise NotImplementedError

    def atom(self, text: str) -> tuple[Ranges, ...]:
        raise NotImplementedError

    def evaluate(self, text: str, depth: int, seen: tuple[str, ...]) -> tuple[Ranges, ...]:
        text = text.strip()
        if not text:
            raise SpecError(f"empty {self.what}")
        if len(text) > MAX_SPEC_CHARS:
            raise SpecError(f"{self.what} spec too long")
        if depth > MAX_NESTING:
            raise SpecError(f"{self.what} nesting deeper than {MAX_NESTING}")
        if text.startswith("!"):
            inner = self.evaluate(text[1:], depth + 1, seen)
            if inner == self.universe:
                raise SpecError(f"negated {self.what} matches nothing: {text!r}")
            return tuple(_subtract(u, r) for u, r in zip(self.universe, inner))
        if text.startswith("["):
            if not text.endswith("]"):
                raise SpecError(f"unterminated {self.what} list: {text!r}")
            return self.list_(text[1:-1], depth, seen)
        if text.startswith("$"):
            return self.variable(text[1:], depth, seen)
        if text == "any":
            return self.universe
        return self.atom(text)

    def variable(self, name: str, depth: int, seen: tuple[str, ...]) -> tuple[Ranges, ...]:
        groups = self.groups()
        if name not in groups:
            raise SpecError(f"undefined {self.what} variable ${name}")
        if name in seen:
            raise SpecError(f"{self.what} variable ${name} refers to itself")
        return self.evaluate(groups[name], depth + 1, seen + (name,))

    def list_(self, body: str, depth: int, seen: tuple[str, ...]) -> tuple[Ranges, ...]:
        positive: list[list[tuple[int, int]]] = [[] for _ in self.universe]
        negative: list[list[tuple[int, int]]] = [[] for _ in self.universe]
        has_positive = False
        for item in _split_list(body, self.what):
            if item.startswith("!"):
                got = self.evaluate(item[1:], depth + 1, seen)
                target = negative
            else:
                got = self.evaluate(item, depth + 1, seen)
                target = positive
                has_positive = True
            for acc, ranges in zip(target, got):
                acc.extend(ranges)
        base = tuple(_merge(p) for p in positive) if has_positive else self.universe
        out = tuple(_subtract(b, _merge(n)) for b, n in zip(base, negative))
        if not any(out):
            raise SpecError(f"{self.what} list matches nothing: [{body}]")
        return out


class _AddrParser(_SetParser):
    what = "address"
    universe = (((0, V4_MAX),), ((0, V6_MAX),))

    def groups(self) -> Mapping[str, str]:
        return self.vars.address_groups

    def spec(self, text: str) -> AddrSpec:
        v4, v6 = self.evaluate(text, 0, ())
        return AddrSpec.build(text.strip(), v4, v6)

    def atom(self, text: str) -> tuple[Ranges, ...]:
        if "-" in text and "/" not in text:
            lo_s, _, hi_s = text.partition("-")
            lo, lo6 = _ip_int(lo_s.strip())
            hi, hi6 = _ip_int(hi_s.strip())
            if lo6 != hi6 or lo > hi:
                raise SpecError(f"bad address range {text!r}")
            return ((), ((lo, hi),)) if lo6 else (((lo, hi),), ())
        try:
            if ":" not in text and "/" not in text:
                value = int.from_bytes(socket.inet_aton(text), "big") if text.count(".") == 3 else None
                if value is not None:
                    return (((value, value),), ())
            net = ipaddress.ip_network(text, strict=False)
        except (OSError, ValueError):
            raise SpecError(f"bad address {text!r}") from None
        lo = int(net.network_address)
        hi = int(net.broadcast_address)
        return (((lo, hi),), ()) if net.version == 4 else ((), ((lo, hi),))


def _ip_int(text: str) -> tuple[int, bool]:
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        raise SpecError(f"bad address {text!r}") from None
    return int(addr), addr.version == 6


class _PortParser(_SetParser):
    what = "port"
    universe = (((0, PORT_MAX),),)

    def groups(self) -> Mapping[str, str]:
        return self.vars.port_groups

    def spec(self, text: str) -> PortSpec:
        (ranges,) = self.evaluate(text, 0, ())
        return PortSpec.build(text.strip(), ranges)

    def atom(self, text: str) -> tuple[Ranges, ...]:
        if ":" in text:
            lo_s, _, hi_s = text.partition(":")
            lo = _port(lo_s.strip(), text) if lo_s.strip() else 0
            hi = _port(hi_s.strip(), text) if hi_s.strip() else PORT_MAX
            if lo > hi:
                raise SpecError(f"bad port range {text!r}")
            return (((lo, hi),),)
        port = _port(text, text)
        return (((port, port),),)


def _port(text: str, whole: str) -> int:
    if not text.isdigit() or len(text) > 5 or int(text) > PORT_MAX:
        raise SpecError(f"bad port {whole!r}")
    return int(text)
