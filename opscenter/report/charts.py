"""The report's charts (matplotlib, Agg): PNG bytes, Japanese labels in Noto Sans CJK JP.

One figure per chart, closed after rendering; the font and style are set once per process."""
from __future__ import annotations

import io
import logging
from functools import lru_cache
from typing import Any

from opscenter.report.figures import FUNCTIONS, AlarmFigures

log = logging.getLogger(__name__)

DPI = 150
JP_FONTS = ("Noto Sans CJK JP", "Noto Sans JP", "IPAexGothic", "IPAGothic", "TakaoGothic")
SHORT: dict[str, str] = {
    "ips": "IPS", "atp": "脅威対策 (ATP)", "webfilter": "Web フィルター", "antivirus": "アンチウイルス",
    "antispam": "アンチスパム", "sandbox": "サンドボックス", "firewall": "ファイアウォール",
}
COLORS: dict[str, str] = {
    "ips": "#c0392b", "atp": "#8e44ad", "webfilter": "#2471a3", "antivirus": "#d35400",
    "antispam": "#7f8c8d", "sandbox": "#16a085", "firewall": "#5d6d7e",
}
UP, UNPROTECTED, DOWN = "#2e8b57", "#e0a800", "#c0392b"


@lru_cache(maxsize=1)
def pyplot() -> Any:
    """matplotlib.pyplot on Agg with a Japanese font (once per process)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import font_manager
    import matplotlib.pyplot as plt

    names = {f.name for f in font_manager.fontManager.ttflist}
    jp = next((n for n in JP_FONTS if n in names), None)
    if jp is None:
        log.warning("no Japanese font found for the report charts (install fonts-noto-cjk): labels will not render")
    plt.rcParams.update({
        "font.family": [jp, "DejaVu Sans"] if jp else ["DejaVu Sans"],
        "font.size": 9,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "axes.titlesize": 10,
        "svg.fonttype": "none",
        "figure.dpi": DPI,
    })
    return plt


def _png(fig: Any) -> bytes:
    plt = pyplot()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)  # fixed margins (subplots_adjust): no second, "tight" pass
    plt.close(fig)
    return buf.getvalue()


def daily_threats(f: AlarmFigures, days: int) -> bytes | None:
    """Stacked bars: attacks and threats per day, by function (None when there were none)."""
    if f.total == 0:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.2, 2.6))
    fig.subplots_adjust(left=0.08, right=0.99, bottom=0.16, top=0.82)
    x = list(range(1, days + 1))
    bottom = [0] * days
    for key in FUNCTIONS:
        counts = f.by_day[key]
        if not any(counts):
            continue
        ax.bar(x, counts, bottom=bottom, color=COLORS[key], label=SHORT[key], width=0.75)
        bottom = [b + c for b, c in zip(bottom, counts)]
    ax.set_xlim(0.3, days + 0.7)
    ax.set_xticks([d for d in x if d == 1 or d % 5 == 0])
    ax.set_xlabel("日 / day")
    ax.set_ylabel("件数 / count")
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.grid(axis="y", color="#dddddd", linewidth=0.6)
    ax.set_axisbelow(True)
    ax.legend(ncol=4, fontsize=8, frameon=False, loc="lower left", bbox_to_anchor=(0, 1.0))
    return _png(fig)


def operating_days(record: dict[str, Any]) -> bytes | None:
    """Per day: the share of the expected time the box was checking in and protecting."""
    days = [d for d in record.get("days") or []]
    if not any(d["expected_seconds"] for d in days):
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.2, 2.0))
    fig.subplots_adjust(left=0.08, right=0.99, bottom=0.2, top=0.78)
    x = list(range(1, len(days) + 1))
    prot, unprot, down, none = [], [], [], []
    for d in days:
        e = d["expected_seconds"]
        if not e:
            prot.append(0), unprot.append(0), down.append(0), none.append(100)
            continue
        p = 100 * d["protecting_seconds"] / e
        c = 100 * d["checking_in_seconds"] / e
        prot.append(p), unprot.append(c - p), down.append(100 - c), none.append(0)
    ax.bar(x, prot, color=UP, width=0.8, label="保護中 / protecting")
    ax.bar(x, unprot, bottom=prot, color=UNPROTECTED, width=0.8, label="接続のみ / checking in, not protecting")
    ax.bar(x, down, bottom=[a + b for a, b in zip(prot, unprot)], color=DOWN, width=0.8, label="停止 / outage")
    ax.bar(x, none, color="#eeeeee", width=0.8, label="対象外 / not in service")
    ax.set_ylim(0, 100)
    ax.set_yticks([0, 50, 100])
    ax.set_yticklabels(["0%", "50%", "100%"])
    ax.set_xlim(0.3, len(days) + 0.7)
    ax.set_xticks([d for d in x if d == 1 or d % 5 == 0])
    ax.set_xlabel("日 / day")
    handles, labels = ax.get_legend_handles_labels()
    keep = [i for i, series in enumerate((prot, unprot, down, none)) if any(series)]
    ax.legend([handles[i] for i in keep], [labels[i] for i in keep], ncol=4, fontsize=8, frameon=False,
              loc="lower left", bbox_to_anchor=(0, 1.0))
    return _png(fig)
