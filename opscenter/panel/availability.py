"""Was the box operating normally over a month: the panel's view of the operating record.

The customer sees one truth: the figures on the status page are those of the monthly report and of
the signed operating record, computed by the same function
(:func:`opscenter.report.operating.operating_record`, from the check-in spans stored at the center)
with the same rule (``offline_after_missed`` x the heartbeat interval). This module only shapes the
record for the page (per-day shares for the bar chart, outages in Japan time).
"""
from __future__ import annotations

import datetime as dt
from typing import Any

from opscenter.db import Database
from opscenter.report.operating import operating_record
from opscenter.report.period import Month


def month_bounds(month: str) -> tuple[dt.datetime, dt.datetime]:
    """``YYYY-MM`` (Japan time) -> (start, end) as naive UTC."""
    m = Month.parse(month)
    return m.start, m.end


def _parse_z(text: str) -> dt.datetime:
    return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ")


def month_report(db: Database, contract_id: str, month: str, now: dt.datetime, misses: int,
                 default_interval: float) -> dict[str, Any]:
    """The operating record of ``month`` for the page: ``{"month", "record", "percent",
    "protecting_percent", "share" (0..1 or None, for the progress bar), "days": [{"day", "share"}...],
    "outages": [{"kind", "start", "end", "seconds"}...] (naive UTC)}``.

    ``percent`` / ``protecting_percent`` are the record's strings (two decimals, rounded down), exactly
    what the report and the signed record print; days before the service start or after now have
    share None."""
    rec = operating_record(db, contract_id, Month.parse(month), misses=misses, default_interval=default_interval,
                           now=now)
    days = [{"day": d["date"],
             "share": d["checking_in_seconds"] / d["expected_seconds"] if d["expected_seconds"] else None}
            for d in rec["days"]]
    if not days:  # nothing expected this month: still one (empty) bar per day
        m = Month.parse(month)
        days = [{"day": f"{m.key}-{i + 1:02d}", "share": None} for i in range(m.days)]
    ppm = rec["availability_ppm"]
    return {"month": month, "record": rec, "percent": rec["availability_percent"],
            "protecting_percent": rec["protecting_percent"], "share": ppm / 1_000_000 if ppm is not None else None,
            "days": days,
            "outages": [{"kind": o["kind"], "start": _parse_z(o["start"]), "end": _parse_z(o["end"]),
                         "seconds": o["seconds"]} for o in rec["outages"]]}
