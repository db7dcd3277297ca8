"""The benches' report model, shared by every suite: statistics, metrics and goals, rows and tables.

A ``Row`` is one metric's medians over the runs, the agent-vs-baseline comparison and the verdict
against its ``Goal``. Tables are lists of cells (a header line first), rendered as Markdown for
docs/benchmarks.md (``md_table``) or aligned plain text for the terminal (``aligned``); the
header and the closing sections of a suite's Markdown are the same for every suite.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Sequence


# ----------------------------------------------------------------------------- statistics
def percentile(values: Sequence[float], pct: float) -> float:
    """The pct-th percentile (0..100) with linear interpolation between closest ranks."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= pct <= 100:
        raise ValueError(f"percentile must be 0..100, got {pct}")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * pct / 100
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def median(values: Sequence[float]) -> float | None:
    """The median, or None when there is no value."""
    return statistics.median(values) if values else None


def ratio(agent: float | None, bare: float | None) -> float | None:
    """agent / bare, or None when either is missing or the baseline is zero."""
    if agent is None or bare is None or bare == 0:
        return None
    return agent / bare


def median_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float] | None:
    """A distribution-free interval for the median of ``values``: (low, high, its coverage).

    The sign test inverted: the k-th smallest and the k-th largest value, with the largest k whose
    coverage 1 - 2·P(Binomial(n, ½) < k) is still at least ``confidence``. It assumes nothing about
    the shape of the noise (bulk over veth has rare deep dips, not a bell curve), only that the
    values are independent. None when there are too few values for that coverage (fewer than 6 for
    95 %)."""
    n, ordered, best = len(values), sorted(values), None
    for k in range(1, n // 2 + 1):
        coverage = 1 - 2 * sum(math.comb(n, i) for i in range(k)) / 2 ** n
        if coverage < confidence:
            break
        best = (ordered[k - 1], ordered[n - k], coverage)
    return best


def interval_verdict(low: float, high: float, goal: float) -> str:
    """The verdict on "at least ``goal``" from an interval: "pass" when all of it is at or above the goal,
    "FAIL" when all of it is below, else "within noise" (the measurement cannot tell)."""
    if low >= goal:
        return "pass"
    return "FAIL" if high < goal else "within noise"


# ----------------------------------------------------------------------------- metrics, rows, verdicts
@dataclass(frozen=True)
class Goal:
    """A goal from the product issue: agent/bare at least ``value`` or agent-bare at most ``value``."""

    kind: str  # "min_ratio" | "max_delta"
    value: float
    baseline: str = "bare"  # what the agent is compared with, in the goal's text

    def describe(self, unit: str) -> str:
        if self.kind == "min_ratio":
            return f"agent ≥ {self.value:g}× {self.baseline}"
        return f"agent − bare ≤ +{self.value:g} {unit}"

    def met(self, bare: float, agent: float) -> bool:
        if self.kind == "min_ratio":
            return agent >= self.value * bare
        return agent - bare <= self.value


@dataclass(frozen=True)
class Metric:
    """One row of the report."""

    key: str
    label: str
    unit: str
    digits: int
    goal: Goal | None = None
    delta: bool = False  # compare as agent - bare (latency) instead of agent / bare
    agent_only: bool = False


@dataclass
class Row:
    """A metric's medians, comparison and verdict."""

    metric: Metric
    bare: float | None
    agent: float | None
    compare: str
    verdict: str  # "pass" | "FAIL" | "within noise" | "reported" | "error" | "skipped: ..."
    errors: list[str] = field(default_factory=list)


def paired(bare: Sequence[float], agent: Sequence[float], delta: bool) -> list[float]:
    """Per-run agent/bare ratios (or agent-bare differences), pairing the samples of the same run."""
    if delta:
        return [a - b for b, a in zip(bare, agent)]
    return [a / b for b, a in zip(bare, agent) if b]


def noise_note(metric: Metric, bare: Sequence[float], agent: Sequence[float]) -> str | None:
    """A note when the per-run comparisons fall on both sides of the goal (the verdict is noise-bound)."""
    if metric.goal is None or len(bare) != len(agent) or len(bare) < 2:
        return None
    per_run = paired(bare, agent, metric.delta)
    met = [metric.goal.met(b, a) for b, a in zip(bare, agent)]
    if all(met) or not any(met):
        return None
    shown = ", ".join(f"{v:+.3f} {metric.unit}" if metric.delta else f"{v:.2f}×" for v in per_run)
    return (f"{metric.label}: the runs disagree about the goal ({shown} per run, "
            f"{sum(met)} of {len(met)} meet it); the median verdict is within run-to-run noise.")


def fmt(value: float | None, digits: int) -> str:
    """``value`` with thousands separators and ``digits`` decimals; a dash for None."""
    return "—" if value is None else f"{value:,.{digits}f}"


def summarize(metric: Metric, bare: Sequence[float], agent: Sequence[float], errors: Sequence[str] = ()) -> Row:
    """Medians of the samples, the agent-vs-bare comparison and the verdict against the goal."""
    b, a = median(bare), median(agent)
    compare = "—"
    if metric.delta and a is not None and b is not None:
        r = ratio(a, b)
        compare = f"{a - b:+.{metric.digits}f} {metric.unit}" + (f" ({r:.2f}×)" if r is not None else "")
    elif not metric.delta and ratio(a, b) is not None:
        compare = f"{ratio(a, b):.2f}×"
    missing = a is None or (b is None and not metric.agent_only)
    if missing:
        verdict = "error"
    elif metric.goal is None or b is None:
        verdict = "reported"
    else:
        verdict = "pass" if metric.goal.met(b, a) else "FAIL"
    return Row(metric, b, a, compare, verdict, list(errors))


def verdict_ok(verdict: str) -> bool:
    """Whether a row lets the bench exit 0 (a skipped configuration does not fail it, nor a goal the
    measurement's interval cannot decide: "within noise")."""
    return verdict in ("pass", "reported", "within noise") or verdict.startswith("skipped")


# ----------------------------------------------------------------------------- tables
def table_cells(rows: Sequence[Row], headers: tuple[str, str, str] | None = None) -> list[list[str]]:
    """Header + one line per row: scenario, bare, agent, agent vs bare, goal, result."""
    base, measured, compare = headers or ("Bare bridge (median)", "Agent (median)", "Agent vs bare")
    out = [["Scenario", base, measured, compare, "Goal", "Result"]]
    for r in rows:
        m = r.metric
        unit = f" {m.unit}"
        bare = "n/a" if m.agent_only else fmt(r.bare, m.digits) + (unit if r.bare is not None else "")
        agent = fmt(r.agent, m.digits) + (unit if r.agent is not None else "")
        goal = m.goal.describe(m.unit) if m.goal else "reported"
        out.append([m.label, bare, agent, r.compare, goal, r.verdict])
    return out


def render_table(rows: Sequence[Row], headers: tuple[str, str, str] | None = None) -> str:
    """The results as an aligned plain-text table (for the terminal)."""
    return aligned(table_cells(rows, headers))


def aligned(cells: Sequence[Sequence[str]]) -> str:
    """A table as plain text in aligned columns, a rule under the header (for the terminal)."""
    widths = [max(len(line[i]) for line in cells) for i in range(len(cells[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def md_table(cells: Sequence[Sequence[str]]) -> list[str]:
    """Markdown lines of a table: the first line of ``cells`` is the header; ``|`` in a cell is escaped."""
    esc = [[c.replace("|", "\\|") for c in line] for line in cells]
    out = ["| " + " | ".join(esc[0]) + " |", "|" + "|".join("---" for _ in esc[0]) + "|"]
    return out + ["| " + " | ".join(line) + " |" for line in esc[1:]]



def compare_rows(metrics: Sequence[Metric], samples: dict[str, dict[str, list[float]]],
                 errors: dict[str, dict[str, list[str]]], base: str, mode: str) -> list[Row]:
    """One ``summarize`` row per metric: the samples of ``mode`` against those of ``base`` (each a mode key of
    ``samples`` and ``errors``), with the errors of both."""
    return [summarize(m, samples.get(base, {}).get(m.key, []), samples.get(mode, {}).get(m.key, []),
                      errors.get(base, {}).get(m.key, []) + errors.get(mode, {}).get(m.key, []))
            for m in metrics]


def samples_cells(metrics: Sequence[Metric], samples: dict[str, dict[str, list[float]]],
                  columns: Sequence[tuple[str, str]], baseline: str = "bare") -> list[list[str]]:
    """Header + one line per metric: its samples per run in each (mode, heading) column ("n/a" for the
    baseline of an agent-only metric)."""
    cells = [["Metric", *(f"{heading}, per run" for _, heading in columns)]]
    for m in metrics:
        per_mode = [", ".join(fmt(v, m.digits) for v in samples.get(mode, {}).get(m.key, [])) or "—"
                    for mode, _ in columns]
        if m.agent_only:
            per_mode = ["n/a" if mode == baseline else v for (mode, _), v in zip(columns, per_mode)]
        cells.append([f"{m.label} ({m.unit})", *per_mode])
    return cells


# ----------------------------------------------------------------------------- Markdown
def header_lines(title: str, command: str, source: str, date: str, duration: str, machine: dict[str, str],
                 invocation: str, noise: Sequence[str]) -> list[str]:
    """The top of a suite's section: its title, what generates it (``command`` in ``source``), the date (and
    how long the bench took), the machine (``host.machine_info``), the invocation and the noise lines."""
    mc = machine
    return [
        f"# {title}",
        "",
        f"Generated by `{command}` ({source}); do not edit by hand, run it again.",
        "",
        f"- Date: {date}" + (f" ({duration})" if duration else ""),
        f"- Machine: {mc.get('nproc', '?')} CPUs ({mc.get('cpu', '?')}), {mc.get('memory', '?')} RAM, "
        f"kernel {mc.get('kernel', '?')}",
        f"- Command: {invocation}",
        *(f"- Noise, {n[0].lower()}{n[1:]}" for n in noise),
        "",
    ]


def closing_lines(errors: Sequence[str], notes: Sequence[str], samples: Sequence[str], method: Sequence[str],
                  diagnostics: Sequence[str]) -> list[str]:
    """The end of a suite's section: errors, notes on the run, the per-run samples table, the method and the
    diagnostics (each left out when empty, the samples excepted)."""
    out: list[str] = []
    if errors:
        out += ["## Errors", "", *errors, ""]
    if notes:
        out += ["## Notes on this run", "", *(f"- {n}" for n in notes), ""]
    out += ["## Samples", "", *samples, ""]
    if method:
        out += ["## Method", "", *(f"- {m}" for m in method), ""]
    if diagnostics:
        out += ["## Diagnostics", "", *diagnostics, ""]
    return out


def markdown(lines: Sequence[str]) -> str:
    """Lines joined into a section's text: no blank line at the end, one newline."""
    return "\n".join(lines).rstrip() + "\n"
