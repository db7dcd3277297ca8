"""Address index over rule headers: which rules could match a packet's addresses, by lookup.

Suricata keeps IP-only rules in a radix tree for the same reason: ET Open carries a thousand
reputation rules with long address lists, and testing each header on every flow is too slow.
Each rule is indexed on its narrower side (source or destination, per address family); rules
wide on both sides (``any -> any``) are always candidates.
"""
from __future__ import annotations

import bisect
from typing import Iterable, Sequence

from filters.ips.netspec import AddrSpec

WIDE = {4: 1 << 24, 6: 1 << 96}  # more addresses than this on a side: not worth indexing on it


def _size(ranges: Sequence[tuple[int, int]]) -> int:
    return sum(hi - lo + 1 for lo, hi in ranges)


class Segments:
    """Disjoint segments of an integer line, each with the ids whose ranges cover it."""

    def __init__(self, ranges: Iterable[tuple[int, int, int]]) -> None:
        events: list[tuple[int, int, int]] = []
        for lo, hi, ident in ranges:
            events.append((lo, 1, ident))
            events.append((hi + 1, -1, ident))
        events.sort()
        self.starts: list[int] = []
        self.sets: list[frozenset[int]] = []
        active: dict[int, int] = {}
        interned: dict[frozenset[int], frozenset[int]] = {}
        i = 0
        while i < len(events):
            point = events[i][0]
            while i < len(events) and events[i][0] == point:
                _, delta, ident = events[i]
                count = active.get(ident, 0) + delta
                if count:
                    active[ident] = count
                else:
                    active.pop(ident, None)
                i += 1
            current = frozenset(active)
            current = interned.setdefault(current, current)
            if self.sets and self.sets[-1] is current:
                continue
            self.starts.append(point)
            self.sets.append(current)

    def at(self, value: int) -> frozenset[int]:
        i = bisect.bisect_right(self.starts, value) - 1
        return self.sets[i] if i >= 0 else frozenset()


class AddressIndex:
    """Candidate rule ids for a (src, dst) address pair, in either orientation."""

    def __init__(self, headers: Iterable[tuple[int, AddrSpec, AddrSpec]]) -> None:
        wide: set[int] = set()
        by_side: dict[tuple[str, int], list[tuple[int, int, int]]] = {(s, f): [] for s in ("src", "dst") for f in (4, 6)}
        for ident, src, dst in headers:
            for fam in (4, 6):
                s_r, d_r = (src.v4, dst.v4) if fam == 4 else (src.v6, dst.v6)
                if src.any or dst.any:
                    s_r = s_r if not src.any else ((0, (1 << (32 if fam == 4 else 128)) - 1),)
                    d_r = d_r if not dst.any else ((0, (1 << (32 if fam == 4 else 128)) - 1),)
                if not s_r or not d_r:
                    continue  # the rule cannot match this family
                s_size, d_size = _size(s_r), _size(d_r)
                if min(s_size, d_size) > WIDE[fam]:
                    wide.add(ident)
                    continue
                side, ranges = ("src", s_r) if s_size <= d_size else ("dst", d_r)
                by_side[(side, fam)] += [(lo, hi, ident) for lo, hi in ranges]
        self.wide = frozenset(wide)
        self.segments = {key: Segments(ranges) for key, ranges in by_side.items()}

    def lookup(self, a: bytes, b: bytes) -> set[int]:
        """Rules whose indexed side contains ``a`` or ``b`` (plus the wide ones)."""
        fam = 4 if len(a) == 4 else 6
        x, y = int.from_bytes(a, "big"), int.from_bytes(b, "big")
        src, dst = self.segments[("src", fam)], self.segments[("dst", fam)]
        out = set(self.wide)
        out |= src.at(x)
        out |= src.at(y)
        out |= dst.at(x)
        out |= dst.at(y)
        return out
