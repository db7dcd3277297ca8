"""Monthly reports per contract (PDF and HTML) and the signed operating record, generated on schedule
and on demand.

The entry point for callers (the control panel's "download" link, the CLI, the schedule)::

    from opscenter.report import render_report
    files = render_report(db, "C-1001", "2026-05", key=signing_key)   # -> ReportFiles
    files.pdf, files.html, files.record                                # bytes, str, bytes
    pdf, html, record = files                                          # a tuple too

Stored reports (made by the schedule or ``vcr-opscenter report --store``)::

    from opscenter.report.store import list_reports, report_file
    list_reports(db, "C-1001")              # [{"month", "generated_at", "summary", ...}], newest first
    report_file(db, "C-1001", "2026-05", "pdf")   # bytes or None ("pdf" | "html" | "record")

Modules: period (months in Japan time), recording (what each check-in leaves), operating (the
operating record from check-in spans), figures (alarm figures), model (the report's data model),
charts (matplotlib), render (Jinja2 + WeasyPrint), signing (Ed25519 record signatures), store (the
reports table), schedule (the monthly job). docs/reports.md describes the record format.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from opscenter.report.render import ReportFiles

__all__ = ["render_report", "ReportFiles"]


def render_report(*args: Any, **kwargs: Any) -> "ReportFiles":
    """See :func:`opscenter.report.render.render_report` (imported lazily: WeasyPrint and matplotlib are heavy)."""
    from opscenter.report.render import render_report as _render

    return _render(*args, **kwargs)


def __getattr__(name: str) -> Any:
    if name == "ReportFiles":
        from opscenter.report.render import ReportFiles

        return ReportFiles
    raise AttributeError(name)
