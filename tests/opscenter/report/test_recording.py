"""What each check-in leaves for the reports (spans, month rows, heartbeat counters), over the device API
on SQLite and PostgreSQL, and the outage rule on spans."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import select

from lab.reportsim import center_clock
from opscenter.db import checkin_months, checkin_spans
from opscenter.report.operating import Span, outages
from opscenter.report.recording import heartbeat_counters, protecting
from tests.opscenter.helpers import activate, bearer, checkin_body, issue, make_client

T0 = dt.datetime(2026, 11, 30, 14, 40)  # 23:40 JST on 30 November


def _checkin(c, box, t, **extra):  # type: ignore[no-untyped-def]
    with center_clock(t):
        r = c.post("/api/v1/checkin", json=checkin_body(**extra), headers=bearer(box["token"]))
    assert r.status_code == 200, r.text


def test_spans_months_and_counters(db_url: str):
    with make_client(db_url, heartbeat_interval=60) as c:
        with center_clock(T0 - dt.timedelta(minutes=1)):
            box = activate(c, issue(c, "C-1"), "SN-1").json()
        mail = lambda n: {"engines": {"av": {"counters": {"mail.uninspected": n}}}, "mail": {"spam": n}}  # noqa: E731
        for i, n in enumerate((5, 7)):  # the first value ever only sets the baseline
            _checkin(c, box, T0 + dt.timedelta(seconds=60 * i), **mail(n))
        _checkin(c, box, T0 + dt.timedelta(seconds=150), **mail(9))  # 90 s later: within 3 x 60 s
        _checkin(c, box, T0 + dt.timedelta(seconds=600), **mail(2))  # 7.5 min later: a new span; agent restarted
        ready0 = checkin_body()["health"] | {"agent": {"ready": 0}}
        _checkin(c, box, T0 + dt.timedelta(seconds=660), health=ready0)  # not protecting: a new span
        _checkin(c, box, T0 + dt.timedelta(seconds=1300), **mail(4))  # next month (00:01 JST on 1 December)
        db = c.app.state.db
        with db.read() as conn:
            spans = conn.execute(select(checkin_spans.c.first_at, checkin_spans.c.last_at, checkin_spans.c.checkins,
                                        checkin_spans.c.protecting).order_by(checkin_spans.c.id)).all()
            months = {r.month: r for r in conn.execute(select(checkin_months)).all()}
    assert [(s.checkins, s.protecting) for s in spans] == [(3, 1), (1, 1), (1, 0), (1, 1)]
    assert spans[0].first_at == T0 and spans[0].last_at == T0 + dt.timedelta(seconds=150)
    nov, dec = months["2026-11"], months["2026-12"]
    assert nov.checkins == 5 and dec.checkins == 1 and nov.portcheck_ok == 5
    # 5 -> 7 -> 9 (+4), restart to 2 (+2); December continues from 2: 4 (+2)
    assert nov.counters["mail.uninspected"] == {"total": 6, "last": 2}
    assert dec.counters["mail.uninspected"] == {"total": 2, "last": 4}
    assert nov.counters["mail.spam"]["total"] == 6 and nov.engines == {"av": 1, "ips": 1}


def test_mail_not_measured_is_not_zero(db_url: str):
    """A month in which no check-in carried the counter is "not measured" (None), even though the counter
    continues from the month before; a month that reported it without an increase is 0."""
    from opscenter.report.model import month_status
    from opscenter.report.period import Month

    with make_client(db_url, heartbeat_interval=60) as c:
        with center_clock(T0 - dt.timedelta(minutes=1)):
            box = activate(c, issue(c, "C-2"), "SN-2").json()
        mail = lambda n: {"engines": {"mail": {"counters": {"mail.uninspected": n}}}}  # noqa: E731
        _checkin(c, box, T0, **mail(3))  # November: the baseline
        _checkin(c, box, T0 + dt.timedelta(seconds=60), **mail(5))  # +2
        _checkin(c, box, T0 + dt.timedelta(days=3), engines={"ips": {}})  # December: mail engine off
        _checkin(c, box, T0 + dt.timedelta(days=40), **mail(5))  # January: reported, nothing new
        db = c.app.state.db
        ids = [box["device_id"]]
        assert month_status(db, ids, Month.parse("2026-11")).mail_uninspected == 2
        assert month_status(db, ids, Month.parse("2026-12")).mail_uninspected is None
        assert month_status(db, ids, Month.parse("2027-01")).mail_uninspected == 0
        assert month_status(db, ids, Month.parse("2027-02")).mail_uninspected is None  # no check-in at all


def test_counters_and_protection_read_defensively():
    assert heartbeat_counters({"mail": {"uninspected": 3, "bad": -1, "x": "7", "b": True},
                               "engines": {"a": {"counters": {"mail.uninspected": 2, "other": 5}},
                                           "b": {"counters": {"mail.uninspected": 1}}, "c": "junk"}}) == \
        {"mail.uninspected": 3 + 2 + 1}
    assert protecting({}) == 1 and protecting({"health": {"agent": {"ready": 0}}}) == 0
    assert protecting({"health": {"agent": {"ready": False}}}) == 1 and protecting({"health": "x"}) == 1


def _span(a: int, b: int, ivl: float = 60.0, p: bool = True) -> Span:
    t = dt.datetime(2026, 11, 1)
    return Span("d", t + dt.timedelta(seconds=a), t + dt.timedelta(seconds=b), ivl, p)


def test_outage_rule():
    t = dt.datetime(2026, 11, 1)
    lo, hi = t, t + dt.timedelta(seconds=10_000)
    s = lambda x: t + dt.timedelta(seconds=x)  # noqa: E731
    # gaps of up to 3 intervals are normal, also at the edges of the period
    assert outages([_span(100, 5000), _span(5150, 9900)], lo, hi, 3, 60) == []
    # a longer gap is an outage from the last check-in to the next
    assert outages([_span(0, 5000), _span(5500, 10_000)], lo, hi, 3, 60) == [(s(5000), s(5500))]
    # no check-in at all: the whole period
    assert outages([], lo, hi, 3, 60) == [(lo, hi)]
    # a gap that began before the period is judged whole (100 s inside, 400 s in all)
    assert outages([_span(-1000, -300), _span(100, 10_000)], lo, hi, 3, 60) == [(lo, s(100))]
    # the end: judged up to the next check-in or now
    assert outages([_span(0, 9950)], lo, hi, 3, 60, now=s(10_100)) == []
    assert outages([_span(0, 9950)], lo, hi, 3, 60, now=s(20_000)) == [(s(9950), hi)]
    # two boxes (a replacement) count together
    assert outages([_span(0, 4000), _span(3990, 10_000)], lo, hi, 3, 60) == []
