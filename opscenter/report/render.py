"""Rendering: the report data (opscenter/report/model.py) as HTML (Jinja2, autoescaped) and PDF
(WeasyPrint, Noto Sans CJK JP embedded), and the signed operating record beside them.

``render_report`` is the one call the control panel, the CLI and the schedule use."""
from __future__ import annotations

import base64
import datetime as dt
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Iterator

from opscenter.db import Database, utcnow
from opscenter.report import charts
from opscenter.report.figures import FUNCTIONS, THREAT_CATEGORY, AlarmFigures
from opscenter.report.model import ReportData, build
from opscenter.report.period import Month, iso_z, jst_text
from opscenter.report.signing import SigningKey, record_digest, sign_record

Pair = tuple[str, str]


@dataclass
class ReportFiles:
    """A rendered report: ``pdf`` (bytes), ``html`` (str), ``record`` (the signed operating record, bytes).
    Unpacks as ``pdf, html, record = files``; ``data`` is the model it was made from."""

    pdf: bytes
    html: str
    record: bytes
    data: ReportData
    names: dict[str, str]  # pdf / html / record -> suggested file name

    def __iter__(self) -> Iterator[Any]:
        return iter((self.pdf, self.html, self.record))


def file_names(contract_id: str, month: str) -> dict[str, str]:
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", contract_id)[:64] or "contract"
    return {"pdf": f"report-{safe}-{month}.pdf", "html": f"report-{safe}-{month}.html",
            "record": f"operating-record-{safe}-{month}.json"}


# -- words -----------------------------------------------------------------------------------------

def category_label(name: str) -> Pair:
    from filters.webfilter.page import CATEGORY_NAMES

    if name == THREAT_CATEGORY:
        return ("C&C サーバー・マルウェア (脅威情報)", "C&C and malware (threat intelligence)")
    return CATEGORY_NAMES.get(name, (name, name))


def duration(seconds: int) -> Pair:
    """``1 時間 5 分`` / ``1 h 5 min``; under a minute in seconds."""
    s = int(seconds)
    if s < 60:
        return (f"{s} 秒", f"{s} s")
    d, rem = divmod(s, 86400)
    h, rem = divmod(rem, 3600)
    m = rem // 60
    ja = "".join(x for x in (f"{d} 日 " if d else "", f"{h} 時間 " if h else "", f"{m} 分" if m else "")).strip()
    en = " ".join(x for x in (f"{d} d" if d else "", f"{h} h" if h else "", f"{m} min" if m else ""))
    return ja, en


def num(n: int | None) -> str:
    return "-" if n is None else f"{n:,}"


ACTIVITY: dict[str, Pair] = {
    "atp": ("C&C サーバー (攻撃者の指令用サーバー) への通信", "connections to C&C servers"),
    "webfilter": ("制限されているサイトへのアクセス", "visits to blocked sites"),
    "ips": ("IPS が検知した攻撃・不審な通信", "attacks or suspicious traffic seen by the IPS"),
    "antivirus": ("ウイルスを含むファイルのダウンロード・受信", "files carrying a virus"),
    "antispam": ("迷惑メール (スパム) の受信", "spam received"),
    "sandbox": ("サンドボックスで危険と判定されたファイル", "files the sandbox found dangerous"),
    "firewall": ("ファイアウォールの規則で止めた通信", "connections stopped by the firewall rules"),
}
HOST_ADVICE: list[tuple[str, Pair]] = [
    ("atp", ("ウイルスに感染している可能性があります。この PC のウイルス検査を行い、管理者にご相談ください。",
             "This PC may be infected: scan it for viruses and talk to your administrator.")),
    ("antivirus", ("ウイルスは UTM が止めました。同じファイルを別の方法で入手しないよう、利用者にお伝えください。",
                   "The UTM stopped the virus; ask the user not to fetch the file another way.")),
    ("sandbox", ("危険なファイルは UTM が止めました。送り主やダウンロード元にご注意ください。",
                 "The UTM stopped the dangerous file; be careful with its sender or source.")),
    ("ips", ("外部からの攻撃や不審な通信です。件数が多い場合は運用センターにご相談ください。",
             "Attacks or suspicious traffic; if there are many, ask the operations center.")),
    ("webfilter", ("業務に必要なサイトが止められている場合は、管理者が許可を依頼できます。",
                   "If a site needed for work is blocked, your administrator can ask for it to be allowed.")),
]


def _summary(data: ReportData) -> list[Pair]:
    """The first page's plain-language sentences."""
    rec, f = data.operating, data.alarms
    out: list[Pair] = []
    if rec["availability_percent"] is None:
        out.append(("この月はサービス期間外のため、稼働記録はありません。", "The service had not started in this month: no operating record."))
    else:
        out.append((f"今月、UTM は対象期間の {rec['availability_percent']}% の時間、運用センターと通信を続け、"
                    f"{rec['protecting_percent']}% の時間、通信を保護していました。",
                    f"This month the UTM was checking in with the operations center {rec['availability_percent']}% "
                    f"of the time and protecting the network {rec['protecting_percent']}% of the time."))
        n = sum(1 for o in rec["outages"] if o["kind"] == "no_checkin")
        if n:
            ja, en = duration(rec["outage_seconds"])
            out.append((f"停止 (運用センターと通信できなかった時間) が {n} 回、合計 {ja} ありました。詳しくは 1 章をご覧ください。",
                        f"Outages: {n}, {en} in all (see section 1)."))
        else:
            out.append(("停止はありませんでした。", "There were no outages."))
    if f.total:
        out.append((f"攻撃や脅威を {num(f.total)} 件検知し、そのうち {num(f.blocked)} 件を遮断しました。",
                    f"The UTM saw {num(f.total)} attacks and threats and blocked {num(f.blocked)} of them."))
    else:
        out.append(("攻撃や脅威の検知はありませんでした。", "No attacks or threats were seen."))
    if f.high:
        out.append((f"重要度「高」の検知が {num(f.high)} 件ありました。関係する PC を 4 章でご確認ください。",
                    f"{num(f.high)} of them were of high severity: see the PCs concerned in section 4."))
    mu = data.status.mail_uninspected
    if mu:
        out.append((f"暗号化されていて UTM が検査できなかったメールが {num(mu)} 通ありました (6 章)。",
                    f"{num(mu)} encrypted mails could not be inspected by the UTM (section 6)."))
    if data.status.portcheck_failed:
        out.append(("通信ポートの確認で失敗した時間がありました (7 章)。", "The port check failed at times (section 7)."))
    return out


def _functions(f: AlarmFigures) -> list[dict[str, Any]]:
    rows = []
    for key, (ja, en) in FUNCTIONS.items():
        ff = f.functions[key]
        if ff.total:
            state = None
        elif ff.reported:
            state = ("検知なし", "nothing detected")
        else:
            state = ("データなし (今月この機能からの報告はありません)", "no data (this function reported nothing this month)")
        rows.append({"key": key, "ja": ja, "en": en, "f": ff, "state": state})
    return rows


def _hosts(f: AlarmFigures) -> list[dict[str, Any]]:
    out = []
    for h in f.hosts:
        did = [(ACTIVITY[k][0] + f" {num(n)} 回", ACTIVITY[k][1] + f": {num(n)}")
               for k, n in sorted(h.by_function.items(), key=lambda kv: (-kv[1], kv[0]))]
        advice = next((a for k, a in HOST_ADVICE if h.by_function.get(k)), None)
        out.append({"ip": h.ip, "total": h.total, "blocked": h.blocked, "did": did, "advice": advice,
                    "signatures": h.signatures, "categories": [(category_label(c), n) for c, n in h.categories],
                    "target": h.as_target})
    return out


def _outages(rec: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for o in rec["outages"]:
        a = dt.datetime.strptime(o["start"], "%Y-%m-%dT%H:%M:%SZ")
        b = dt.datetime.strptime(o["end"], "%Y-%m-%dT%H:%M:%SZ")
        kind = ("停止 (通信なし)", "outage (no check-in)") if o["kind"] == "no_checkin" else \
            ("通信は継続・保護停止", "checking in, not protecting")
        out.append({"start": jst_text(a), "end": jst_text(b), "duration": duration(o["seconds"]), "kind": kind,
                    "down": o["kind"] == "no_checkin"})
    return out


def _data_uri(png: bytes | None) -> str | None:
    return "data:image/png;base64," + base64.b64encode(png).decode() if png else None


def _css_string(text: Any) -> Any:
    """Text for inside a CSS string in a <style> element (no HTML escaping there: CSS escapes)."""
    from markupsafe import Markup

    out = "".join(ch if ch.isalnum() or ch in " ._-/:" else f"\\{ord(ch):x} " for ch in str(text))
    return Markup(out)


@lru_cache(maxsize=1)
def _env() -> Any:
    from jinja2 import Environment, PackageLoader, select_autoescape

    env = Environment(loader=PackageLoader("opscenter.report", "templates"), autoescape=select_autoescape(["html"]),
                      trim_blocks=True, lstrip_blocks=True)
    env.filters["num"] = num
    env.filters["jst"] = lambda t: jst_text(t) if t else "-"
    env.filters["css"] = _css_string
    return env


def view(data: ReportData, record_file: bytes, key: SigningKey) -> dict[str, Any]:
    """Everything the template shows."""
    f, rec = data.alarms, data.operating
    st = data.status
    n_pc = st.portcheck_ok + st.portcheck_failed
    return {
        "d": data, "rec": rec, "f": f, "st": st,
        "month_ja": data.month.label_ja, "month_en": data.month.label_en,
        "period": (jst_text(data.month.start), jst_text(data.month.end)),
        "expected": (jst_text(dt.datetime.strptime(rec["expected"]["start"], "%Y-%m-%dT%H:%M:%SZ")),
                     jst_text(dt.datetime.strptime(rec["expected"]["end"], "%Y-%m-%dT%H:%M:%SZ")))
        if rec["expected"]["start"] else None,
        "generated": jst_text(data.generated_at),
        "summary": _summary(data),
        "functions": _functions(f),
        "hosts": _hosts(f),
        "categories": [(category_label(c), n) for c, n in f.categories],
        "sites": f.sites,
        "outages": _outages(rec),
        "outage_total": duration(rec["outage_seconds"]),
        "interval": duration(rec["rule"]["heartbeat_interval_s"][0]) if rec["rule"]["heartbeat_interval_s"] else ("-", "-"),
        "unprotected_total": duration(rec["not_protecting_seconds"]),
        "portcheck_share": None if not n_pc else f"{100 * st.portcheck_failed / n_pc:.1f}",
        "boxes": data.boxes,
        "current": data.current_boxes,
        "desired_agent": data.desired_agent,
        "updates": f.updates,
        "charts": {
            "daily": _data_uri(charts.daily_threats(f, data.month.days)),
            "operating": _data_uri(charts.operating_days(rec)),
        },
        "key_id": key.key_id,
        "public_pem": key.public_pem,
        "record_digest": record_digest(record_file),
        "record_text": record_file.decode("utf-8"),
        "names": file_names(data.contract_id, data.month.key),
    }


def html_of(v: dict[str, Any], *, screen: bool = True) -> str:
    """The report page from :func:`view`; ``screen=False`` is the PDF's copy (without the browser-only
    phone CSS, which WeasyPrint would warn about)."""
    return _env().get_template("report.html").render(**v, screen=screen)


def pdf_of(html: str, record_file: bytes, record_name: str) -> bytes:
    import logging

    for name in ("weasyprint", "weasyprint.progress", "fontTools"):  # their INFO is per step and page
        logging.getLogger(name).setLevel(logging.WARNING)
    from weasyprint import HTML, Attachment

    return HTML(string=html).write_pdf(
        attachments=[Attachment(string=record_file.decode("utf-8"), name=record_name,
                                description="signed operating record / 署名付き稼働記録")])


def render_report(db: Database, contract_id: str, month: str | Month, *, key: SigningKey | None = None,
                  settings: Any = None, now: dt.datetime | None = None, pdf: bool = True,
                  id_range: tuple[int | None, int | None] | None = None) -> ReportFiles:
    """Render the monthly report of ``contract_id`` for ``month`` (``YYYY-MM``, Japan time).

    ``key`` signs the operating record (default: ``settings.report_key``); ``settings`` gives the outage
    rule (``offline_after_missed``) and the default heartbeat interval (defaults: the center's defaults);
    ``now`` bounds a month still running (default: the current time). LookupError for an unknown
    contract; ValueError for a bad month or no key. ``pdf=False`` skips the PDF (``files.pdf`` is b"")."""
    from opscenter.settings import Settings

    settings = settings or Settings()
    m = month if isinstance(month, Month) else Month.parse(month)
    if key is None:
        if not getattr(settings, "report_key", None):
            raise ValueError("no report signing key: set report_key in the settings (vcr-opscenter report-key)")
        key = SigningKey.load(settings.report_key)
    now = now or utcnow()
    data = build(db, contract_id, m, misses=settings.offline_after_missed,
                 default_interval=settings.heartbeat_interval, now=now, id_range=id_range)
    record_file = sign_record(data.operating, key, iso_z(now))
    names = file_names(contract_id, m.key)
    v = view(data, record_file, key)
    html = html_of(v)
    return ReportFiles(pdf=pdf_of(html_of(v, screen=False), record_file, names["record"]) if pdf else b"",
                       html=html, record=record_file, data=data, names=names)

