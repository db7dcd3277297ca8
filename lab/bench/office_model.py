"""The office benchmark's model, without the lab: what a page is, when pages start, the statistics of
one step and the rate search (lab/bench/office.py drives it; tests/test_bench_office.py checks it).

A *page* is one DNS look-up of the site's name, then 6 to 20 connections to it, at most
``BROWSER_PARALLEL`` at a time (what a browser opens per host), each fetching one object: HTTPS with a
full TLS handshake (``HTTPS_SHARE``) or plain HTTP. Object sizes follow ``OBJECT_SIZES``: mostly small
(icons, scripts, style sheets), some pictures, a few large ones, 2 KB to 2 MB.

Pages start at Poisson arrivals of the offered rate (open loop: a slow box makes pages overlap, it
does not slow the users down), spread over the users. A *step* is one offered rate for a fixed time;
the rate search steps the offered rate up a ladder and stops a mode at its first step that is not
sustained.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Sequence

from lab.bench.report import percentile

USERS = 50  # the office the service promises (about 50 people)
BUSY_PAGE_INTERVAL = 5.0  # seconds between page loads of one user browsing without pause (see BUSY_RATE)
BUSY_RATE = USERS / BUSY_PAGE_INTERVAL  # pages/s the 50 users generate when all of them are busy
CONNECTIONS = (6, 20)  # connections (one object each) per page, uniform
HTTPS_SHARE = 0.8  # the rest is plain HTTP
BROWSER_PARALLEL = 6  # connections a page has open at once (a browser's per-host limit)
# (bytes, weight): 2 KB to 2 MB; mean about 110 KB, a page (13 objects) about 1.4 MB
OBJECT_SIZES: tuple[tuple[int, int], ...] = (
    (2_000, 30), (8_000, 25), (32_000, 20), (128_000, 15), (512_000, 7), (2_000_000, 3),
)
SITES = 400  # distinct site names (each page looks one up)
SITE_DOMAIN = "office.example"

# what a sustained step is
MIN_COMPLETED = 0.95  # pages completed within the step and its drain time / pages offered
MAX_FAILED = 0.01  # share of the offered pages that failed (a connection error, a wrong answer, a timeout)
LAG_LIMIT_MS = 250.0  # p95 of how late the clients started pages: beyond, the client is the bottleneck
P95_RATIO = 1.5  # the rate search: agent p95 within this many times the bare bridge's at the same rate
BARE_KNEE = 8.0  # the bare bridge's ladder ends where its p95 passes this many times its p95 at the lowest rate (flat
# until the lab saturates, then steep: 30 pages/s went from 4x to 55x on the loaded 2-core machine; 4x was noise)
GOAL_RATIO = 1.2  # the goal at the busy rate: agent p95 within this many times the bare bridge's
LADDER = (5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 60.0, 80.0, 120.0)  # pages/s offered, in order


@dataclass(frozen=True)
class Fetch:
    scheme: str  # "https" | "http"
    size: int


@dataclass(frozen=True)
class Page:
    at: float  # seconds after the step's start
    user: int
    site: str
    fetches: tuple[Fetch, ...]

    @property
    def size(self) -> int:
        return sum(f.size for f in self.fetches)


def site_name(n: int) -> str:
    return f"s{n}.{SITE_DOMAIN}"


def object_size(rng: random.Random) -> int:
    return rng.choices([s for s, _ in OBJECT_SIZES], [w for _, w in OBJECT_SIZES])[0]


def mean_object_size() -> float:
    total = sum(w for _, w in OBJECT_SIZES)
    return sum(s * w for s, w in OBJECT_SIZES) / total


def page_fetches(rng: random.Random) -> tuple[Fetch, ...]:
    n = rng.randint(*CONNECTIONS)
    return tuple(Fetch("https" if rng.random() < HTTPS_SHARE else "http", object_size(rng)) for _ in range(n))


def arrivals(rate: float, seconds: float, rng: random.Random) -> list[float]:
    """Poisson arrival times (s) of ``rate`` per second over ``seconds``."""
    if rate <= 0 or seconds <= 0:
        return []
    out, t = [], rng.expovariate(rate)
    while t < seconds:
        out.append(t)
        t += rng.expovariate(rate)
    return out


def schedule(rate: float, seconds: float, seed: int, users: Sequence[int]) -> list[Page]:
    """The pages one client process loads in a step: Poisson arrivals at ``rate``, each given to the next of
    ``users`` in turn, a random site and its fetches; the same seed gives the same pages."""
    rng = random.Random(seed)
    return [Page(at, users[i % len(users)], site_name(rng.randrange(SITES)), page_fetches(rng))
            for i, at in enumerate(arrivals(rate, seconds, rng))]


# ----------------------------------------------------------------------------- one step
@dataclass
class StepResult:
    """One mode's step at one offered rate: what the clients reported, merged."""

    offered_rate: float
    seconds: float
    offered: int = 0  # pages scheduled
    times_ms: list[float] = field(default_factory=list)  # load time of each completed page
    failed: int = 0
    lags_ms: list[float] = field(default_factory=list)  # how late each page started
    problems: dict[str, int] = field(default_factory=dict)
    client_cpu_s: float = 0.0
    bytes: int = 0
    connections: int = 0

    @property
    def completed(self) -> int:
        return len(self.times_ms)

    def p(self, pct: float) -> float | None:
        return percentile(self.times_ms, pct) if self.times_ms else None

    @property
    def lag_p95(self) -> float | None:
        return percentile(self.lags_ms, 95) if self.lags_ms else None

    def add(self, part: dict) -> None:
        """Merge one client's JSON result (``office_load users``)."""
        self.offered += part["offered"]
        self.times_ms += part["times_ms"]
        self.failed += part["failed"]
        self.lags_ms += part["lags_ms"]
        for k, v in part["problems"].items():
            self.problems[k] = self.problems.get(k, 0) + v
        self.client_cpu_s += part["cpu_s"]
        self.bytes += part["bytes"]
        self.connections += part["connections"]

    def own_problem(self) -> str:
        """Why this step is not sustained by the mode on its own ("" when it is)."""
        if self.offered == 0:
            return "no page offered"
        if self.completed < MIN_COMPLETED * self.offered:
            return f"{self.completed}/{self.offered} pages completed (< {MIN_COMPLETED:.0%})"
        if self.failed > MAX_FAILED * self.offered:
            return f"{self.failed}/{self.offered} pages failed (> {MAX_FAILED:.0%})"
        return ""

    def client_limited(self) -> bool:
        """The clients started pages late: the load generator, not the path, limited this step."""
        lag = self.lag_p95
        return lag is not None and lag > LAG_LIMIT_MS


def pooled(a: StepResult, b: StepResult) -> StepResult:
    """Two steps at the same rate (the bare bridge before and after the agents) as one: their pages together."""
    out = StepResult(a.offered_rate, a.seconds + b.seconds)
    for s in (a, b):
        out.add({"offered": s.offered, "times_ms": s.times_ms, "failed": s.failed, "lags_ms": s.lags_ms,
                 "problems": s.problems, "cpu_s": s.client_cpu_s, "bytes": s.bytes, "connections": s.connections})
    return out


def reference(first: dict[float, StepResult], again: dict[float, StepResult]) -> dict[float, StepResult]:
    """The bare bridge's steps the agent is judged against: each rate's steps of both bare ladders pooled (the
    load of a shared machine drifts over the run), or the one there is."""
    return {r: pooled(first[r], again[r]) if r in first and r in again else first.get(r) or again[r]
            for r in sorted({*first, *again})}


def p95_ratio(agent: StepResult, bare: StepResult) -> float | None:
    a, b = agent.p(95), bare.p(95)
    return None if a is None or b is None or b <= 0 else a / b


def step_verdict(agent: StepResult, bare: StepResult | None, limit: float = P95_RATIO) -> str:
    """"" when the agent sustains this step (its own checks, and p95 within ``limit``× the bare bridge's at the
    same rate); else why not. Without a bare step at this rate the agent cannot be judged."""
    own = agent.own_problem()
    if own:
        return own
    if bare is None or bare.own_problem():
        return "no bare-bridge reference at this rate"
    r = p95_ratio(agent, bare)
    if r is None:
        return "no p95"
    if r > limit:
        return f"p95 {r:.2f}× bare (> {limit:g}×)"
    return ""


def highest_sustained(agent: dict[float, StepResult], bare: dict[float, StepResult],
                      limit: float = P95_RATIO) -> tuple[float | None, str]:
    """The highest rate of the ladder the agent sustains at every step up to it (the search stops at the first
    failure, and at the bare bridge's own ceiling: beyond it there is no reference), and why the next one failed
    ("" when every step up to the ceiling passed)."""
    best: float | None = None
    ceiling, _ = bare_ceiling(bare)
    for rate in sorted(agent):
        if ceiling is None or rate > ceiling:
            break
        why = step_verdict(agent[rate], bare.get(rate), limit)
        if why:
            return best, f"{rate:g} pages/s: {why}"
        best = rate
    return best, ""


def bare_problem(step: StepResult, first: StepResult | None) -> str:
    """Why the bare bridge (with the lab's clients and servers) does not sustain this step ("" when it does): its
    own checks, clients that started pages late, or a p95 past ``BARE_KNEE``× its p95 at the lowest rate (``first``):
    the lab itself is saturated there (it shares the CPUs), and comparing the agent with a saturated baseline
    would say nothing about the box."""
    why = step.own_problem()
    if why:
        return why
    if step.client_limited():
        return f"clients late (start lag p95 {step.lag_p95:.0f} ms)"
    p95, low = step.p(95), first.p(95) if first is not None else None
    if p95 is not None and low and p95 > BARE_KNEE * low:
        return f"p95 {p95:,.0f} ms > {BARE_KNEE:g}× its p95 at the lowest rate ({low:,.0f} ms): the lab is saturated"
    return ""


def bare_ceiling(bare: dict[float, StepResult]) -> tuple[float | None, str]:
    """The highest rate the bare bridge (and the lab with it) sustains (``bare_problem``), and why the next failed."""
    best: float | None = None
    rates = sorted(bare)
    for rate in rates:
        why = bare_problem(bare[rate], bare[rates[0]])
        if why:
            return best, f"{rate:g} pages/s: {why}"
        best = rate
    return best, ""


def keep_climbing(step: StepResult, bare: StepResult | None, limit: float = P95_RATIO,
                  first: StepResult | None = None) -> bool:
    """Whether the ladder goes on after this step: the bare bridge (``bare`` None; ``first`` its lowest step) while
    ``bare_problem`` finds nothing, the agent while it meets ``step_verdict`` (one failed step ends a ladder)."""
    if bare is None:
        return not bare_problem(step, first)
    return not step_verdict(step, bare, limit)


def margin(best: float | None, need: float) -> str:
    """``best`` against the rate needed: "3.0× (+20 pages/s)" or a dash."""
    if best is None or need <= 0:
        return "—"
    return f"{best / need:.1f}× ({best - need:+g} pages/s)"
