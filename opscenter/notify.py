"""Mail notifications to the customer's contacts: severe alarms (grouped), a box offline, a box back online.

Grouping. A severe alarm (an infected PC contacting its C&C server: ATP; a virus: AV/sandbox; an IPS
alarm of severity 1) of a contract opens a **digest window** of ``window_s`` seconds (per contract,
default 10 minutes): one ``notifications`` row in state ``open``. Every further severe alarm of that
contract until the window closes is summed into the same row (counts by kind, box, PC, signature,
first and last time, the first few as samples), so an outbreak of a thousand alarms is one mail. The
first alarm after the mail was taken for sending opens the next window. Rows are unique per
(contract, kind) while open (``open_key``), so concurrent ingest in several worker processes adds to
one window. The hot path costs one small read-modify-write per alarm batch that holds severe alarms.

Offline / back online. The background notifier mails a box that has been offline (no check-in) for
``offline_after_s`` (default 15 minutes) once per offline period, and "back online" once when that
box checks in again (only after an offline mail: a short blip sends nothing).

Sending. A background thread of the center (:class:`Notifier`, started when ``smtp_host`` is set)
takes due rows with a conditional UPDATE (only one worker process sends a row), composes the mail
(Japanese first, English alongside), and sends it over SMTP to the contract's recipients (the
preferences, or the contact mail of the contract's settings sheets). A failed send is retried with
backoff (``retry``), up to 8 attempts (``failed``); without recipients the row is ``skipped``.

Preferences per contract (``notify_prefs``; defaults without a row): ``enabled``, ``kinds`` (subset of
severe, offline, online), ``window_s``, ``offline_after_s``, ``recipients``.
"""
from __future__ import annotations

import datetime as dt
import logging
import smtplib
import threading
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any

from sqlalchemy import and_, or_, select, update

from opscenter.db import (
    Database,
    devices,
    iso,
    notifications,
    notify_device_state,
    notify_prefs,
    utcnow,
)

log = logging.getLogger("vcr-opscenter")

KINDS = ("severe", "offline", "online")
SEVERE_TYPES = {
    "cnc": ("感染 PC の C&C サーバーへの通信 (高度な脅威対策)", "infected PC contacting a C&C server (ATP)"),
    "virus": ("ウイルス検知 (アンチウイルス / サンドボックス)", "virus detected (antivirus / sandbox)"),
    "ips": ("重大度 1 の侵入検知 (IPS)", "intrusion of severity 1 (IPS)"),
}
AV_ENGINES = frozenset({"av", "antivirus", "web_av", "mail_av", "sandbox"})
MAX_KEYS = 50  # per summary table; the rest is counted under "(other)"
MAX_SAMPLES = 10
MAX_ATTEMPTS = 8
JST = dt.timezone(dt.timedelta(hours=9), "JST")


def default_prefs(settings: Any) -> dict[str, Any]:
    return {"enabled": True, "kinds": list(KINDS), "window_s": int(settings.notify_window_s),
            "offline_after_s": int(settings.notify_offline_after_s), "recipients": []}


def get_prefs(db: Database, contract_id: str, settings: Any, conn: Any = None) -> dict[str, Any]:
    with db.read(conn) as conn:
        r = conn.execute(select(notify_prefs).where(notify_prefs.c.contract_id == contract_id)).mappings().first()
    if r is None:
        return {"contract_id": contract_id, **default_prefs(settings), "default": True}
    return {"contract_id": contract_id, "enabled": bool(r["enabled"]), "kinds": list(r["kinds"]),
            "window_s": r["window_s"], "offline_after_s": r["offline_after_s"], "recipients": list(r["recipients"]),
            "updated_at": iso(r["updated_at"]), "default": False}


def set_prefs(db: Database, contract_id: str, settings: Any, *, enabled: bool | None = None,
              kinds: list[str] | None = None, window_s: int | None = None, offline_after_s: int | None = None,
              recipients: list[str] | None = None) -> dict[str, Any]:
    """Change some preferences of a contract (the others keep their value or default)."""
    from filters.settingsheet import MAIL_RE

    cur = get_prefs(db, contract_id, settings)
    if kinds is not None:
        bad = [k for k in kinds if k not in KINDS]
        if bad:
            raise ValueError(f"kinds: 不明な種類 / unknown kind {bad} (severe, offline, online)")
        cur["kinds"] = [k for k in KINDS if k in kinds]
    if window_s is not None:
        if not 10 <= window_s <= 86400:
            raise ValueError("window: 10 秒から 1 日 / from 10 s to one day")
        cur["window_s"] = int(window_s)
    if offline_after_s is not None:
        if not 60 <= offline_after_s <= 7 * 86400:
            raise ValueError("offline: 1 分から 7 日 / from one minute to 7 days")
        cur["offline_after_s"] = int(offline_after_s)
    if recipients is not None:
        bad = [r for r in recipients if not MAIL_RE.match(r) or len(r) > 254]
        if bad or len(recipients) > 20:
            raise ValueError(f"recipients: メールアドレスが正しくありません / not valid mail addresses: {bad}"
                             if bad else "recipients: 20 件まで / at most 20")
        cur["recipients"] = list(dict.fromkeys(recipients))
    if enabled is not None:
        cur["enabled"] = bool(enabled)
    now = utcnow()
    values = {"enabled": int(cur["enabled"]), "kinds": cur["kinds"], "window_s": cur["window_s"],
              "offline_after_s": cur["offline_after_s"], "recipients": cur["recipients"], "updated_at": now}
    with db.write() as conn:
        ins = db.insert(notify_prefs).values(contract_id=contract_id, **values)
        conn.execute(ins.on_conflict_do_update(index_elements=[notify_prefs.c.contract_id], set_=values))
    return get_prefs(db, contract_id, settings)


def recipients_of(db: Database, contract_id: str, prefs: dict[str, Any], conn: Any = None) -> list[str]:
    from opscenter.sheets import contacts_of

    return list(prefs.get("recipients") or []) or contacts_of(db, contract_id, conn)


# ------------------------------------------------------------------------------- severe alarms
def classify(event: dict[str, Any], severity: Any = None) -> str | None:
    """``cnc``, ``virus``, ``ips`` for a severe alarm, else None."""
    if not isinstance(event, dict) or event.get("event_type") != "alert":
        return None
    a = event.get("alert") if isinstance(event.get("alert"), dict) else {}
    engine = str(a.get("engine") or "")
    if engine == "atp" or isinstance(event.get("atp"), dict):
        return "cnc"
    if engine in AV_ENGINES or isinstance(event.get("av"), dict):
        return "virus"
    sev = a.get("severity") if a.get("severity") is not None else severity
    if engine == "ips" and sev == 1:
        return "ips"
    return None


def _lan_host(event: dict[str, Any]) -> str:
    for key in ("atp", "av"):
        part = event.get(key)
        if isinstance(part, dict) and isinstance(part.get("lan_host"), str):
            return part["lan_host"][:64]
    return str(event.get("src_ip") or "")[:64]


def _bump(table: dict[str, int], key: str, n: int = 1) -> None:
    if key in table or len(table) < MAX_KEYS:
        table[key] = table.get(key, 0) + n
    else:
        table["(other)"] = table.get("(other)", 0) + n


def note_alarms(db: Database, conn: Any, contract_id: str, device_id: str, events: list[dict[str, Any]],
                settings: Any, now: dt.datetime | None = None) -> int:
    """Add the severe ones of newly stored alarms (``{"event_id", "severity", "event"}``) to the contract's
    open digest window (opening one if needed), in the caller's transaction. Returns how many were severe."""
    severe = [(k, e) for e in events if (k := classify(e.get("event"), e.get("severity")))]
    if not severe:
        return 0
    prefs = get_prefs(db, contract_id, settings, conn)
    if not prefs["enabled"] or "severe" not in prefs["kinds"]:
        return len(severe)
    now = now or utcnow()
    row = _open_window(db, conn, contract_id, "severe", now, prefs["window_s"])
    s = row["summary"] or {}
    for key in ("by_type", "devices", "hosts", "signatures"):
        s.setdefault(key, {})
    samples = s.setdefault("samples", [])
    for kind, e in severe:
        ev = e["event"]
        a = ev.get("alert") if isinstance(ev.get("alert"), dict) else {}
        _bump(s["by_type"], kind)
        _bump(s["devices"], device_id)
        host = _lan_host(ev)
        if host:
            _bump(s["hosts"], host)
        sig = str(a.get("signature") or "")[:200]
        if sig:
            _bump(s["signatures"], sig)
        if len(samples) < MAX_SAMPLES:
            samples.append({"at": str(ev.get("timestamp") or iso(now))[:40], "device_id": device_id, "type": kind,
                            "signature": sig, "src": str(ev.get("src_ip") or "")[:64],
                            "dest": str(ev.get("dest_ip") or "")[:64], "host": host})
    s.setdefault("first_at", iso(now))
    s["last_at"] = iso(now)
    conn.execute(update(notifications).where(notifications.c.id == row["id"]).values(
        summary=s, count=notifications.c.count + len(severe)))
    return len(severe)


def _open_window(db: Database, conn: Any, contract_id: str, kind: str, now: dt.datetime, window_s: int) -> Any:
    """The contract's open notification of ``kind``, created (due in ``window_s``) when there is none.

    Insert-or-ignore, then lock the open row. On PostgreSQL a sender may claim (close) the row between
    the two statements; then the insert is simply tried again and opens the next window."""
    for _ in range(5):
        conn.execute(db.insert(notifications).values(
            contract_id=contract_id, kind=kind, open_key="open", status="open", opened_at=now,
            due_at=now + dt.timedelta(seconds=window_s), count=0, summary={}, attempts=0)
            .on_conflict_do_nothing(index_elements=[notifications.c.contract_id, notifications.c.kind,
                                                    notifications.c.open_key]))
        row = conn.execute(select(notifications.c.id, notifications.c.summary).where(and_(
            notifications.c.contract_id == contract_id, notifications.c.kind == kind,
            notifications.c.open_key == "open")).with_for_update()).mappings().first()
        if row is not None:
            return row
    raise RuntimeError(f"no open {kind} notification for contract {contract_id} after 5 tries")


# ---------------------------------------------------------------------------- offline / online
def scan_devices(db: Database, settings: Any, now: dt.datetime | None = None) -> dict[str, int]:
    """Queue offline mails (offline longer than the contract's ``offline_after_s``, once per offline
    period) and back-online mails (once, after an offline mail). Race-free across workers."""
    now = now or utcnow()
    counts = {"offline": 0, "online": 0}
    with db.read() as conn:
        devs = conn.execute(select(devices.c.device_id, devices.c.contract_id, devices.c.serial, devices.c.status,
                                   devices.c.status_changed_at, devices.c.last_checkin_at, devices.c.activated_at)
                            .where(and_(devices.c.revoked_at.is_(None),
                                        devices.c.status.in_(("offline", "online"))))).mappings().all()
        state = {r[0]: (r[1], r[2]) for r in conn.execute(select(
            notify_device_state.c.device_id, notify_device_state.c.offline_since,
            notify_device_state.c.online_sent_for))}
    prefs_cache: dict[str, dict[str, Any]] = {}
    for d in devs:
        did = d["device_id"]
        mailed, answered = state.get(did, (None, None))
        prefs = prefs_cache.get(d["contract_id"]) or prefs_cache.setdefault(
            d["contract_id"], get_prefs(db, d["contract_id"], settings))
        if d["status"] == "offline":
            since = d["status_changed_at"]
            last = d["last_checkin_at"] or d["activated_at"]
            if mailed == since or (now - last).total_seconds() < prefs["offline_after_s"]:
                continue
            if not prefs["enabled"] or "offline" not in prefs["kinds"]:
                continue
            with db.write() as conn:
                if not _claim(db, conn, did, notify_device_state.c.offline_since, since):
                    continue
                item = {"device_id": did, "serial": d["serial"], "last_checkin": iso(last), "offline_since": iso(since),
                        "minutes": int((now - last).total_seconds() // 60)}
                _add_item(db, conn, d["contract_id"], "offline", now, item)
                counts["offline"] += 1
        elif mailed is not None and answered != mailed:
            with db.write() as conn:
                if not _claim(db, conn, did, notify_device_state.c.online_sent_for, mailed):
                    continue
                if prefs["enabled"] and "online" in prefs["kinds"]:
                    item = {"device_id": did, "serial": d["serial"], "offline_since": iso(mailed),
                            "back_at": iso(d["last_checkin_at"] or now)}
                    _add_item(db, conn, d["contract_id"], "online", now, item)
                    counts["online"] += 1
    return counts


def _claim(db: Database, conn: Any, device_id: str, column: Any, value: dt.datetime) -> bool:
    conn.execute(db.insert(notify_device_state).values(device_id=device_id)
                 .on_conflict_do_nothing(index_elements=[notify_device_state.c.device_id]))
    r = conn.execute(update(notify_device_state).where(and_(
        notify_device_state.c.device_id == device_id, or_(column.is_(None), column != value)))
        .values({column.name: value}))
    return r.rowcount == 1


def _add_item(db: Database, conn: Any, contract_id: str, kind: str, now: dt.datetime, item: dict[str, Any]) -> None:
    row = _open_window(db, conn, contract_id, kind, now, 0)
    s = row["summary"] or {}
    s.setdefault("devices", []).append(item)
    conn.execute(update(notifications).where(notifications.c.id == row["id"]).values(
        summary=s, count=notifications.c.count + 1))


# ------------------------------------------------------------------------------------- mails
def _jst(text: str | None) -> str:
    if not text:
        return "-"
    try:
        t = dt.datetime.strptime(text[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=dt.timezone.utc)
    except ValueError:
        return text
    return t.astimezone(JST).strftime("%Y-%m-%d %H:%M:%S JST")


def _top(table: dict[str, int], n: int = 10) -> list[tuple[str, int]]:
    return sorted(table.items(), key=lambda kv: (-kv[1], kv[0]))[:n]


def compose(row: dict[str, Any], recipients: list[str], sender: str) -> EmailMessage:
    """The mail of one notification row (Japanese first, English alongside)."""
    from opscenter.textsafe import clean

    kind, contract, n, s = row["kind"], row["contract_id"], int(row["count"]), row["summary"] or {}
    lines: list[str] = []
    if kind == "severe":
        subject = f"[VCR 運用センター] 重大なアラーム {n} 件 / {n} severe alarm{'s' if n != 1 else ''} (契約 / contract {contract})"
        lines += [f"契約 {contract} の UTM で重大なアラームが {n} 件検知されました。",
                  f"The UTM of contract {contract} detected {n} severe alarm{'s' if n != 1 else ''}.",
                  f"期間 / period: {_jst(s.get('first_at'))} 〜 {_jst(s.get('last_at'))}", "",
                  "種類 / kinds:"]
        for key, cnt in _top(s.get("by_type") or {}):
            ja, en = SEVERE_TYPES.get(key, (key, key))
            lines.append(f"  {ja} / {en}: {cnt}")
        if s.get("hosts"):
            lines += ["", "関係する PC (LAN 側アドレス) / PCs involved (LAN address):"]
            lines += [f"  {clean(h)}: {cnt}" for h, cnt in _top(s["hosts"])]
        if s.get("signatures"):
            lines += ["", "主な検知名 / top signatures:"]
            lines += [f"  {clean(sig)}: {cnt}" for sig, cnt in _top(s["signatures"])]
        if s.get("devices"):
            lines += ["", "機器 / boxes:"] + [f"  {clean(d)}: {cnt}" for d, cnt in _top(s["devices"])]
        if s.get("samples"):
            lines += ["", f"最初の {len(s['samples'])} 件 / the first {len(s['samples'])}:"]
            for x in s["samples"]:
                lines.append(f"  {clean(x.get('at'))}  {clean(x.get('type'))}  {clean(x.get('src'))} -> "
                             f"{clean(x.get('dest'))}  {clean(x.get('signature'))}")
        lines += ["", "感染が疑われる PC はネットワークから外し、サポートデスクにご連絡ください。",
                  "Disconnect the PCs that may be infected from the network and contact the support desk."]
    elif kind == "offline":
        devs = s.get("devices") or []
        subject = f"[VCR 運用センター] UTM がオフラインです / UTM offline (契約 / contract {contract})"
        lines += [f"契約 {contract} の UTM から運用センターへの通信が途絶えています。",
                  f"The UTM of contract {contract} has stopped checking in with the operations center.", ""]
        for d in devs:
            lines.append(f"  シリアル / serial {clean(d.get('serial'))} (機器 / device {clean(d.get('device_id'))}): "
                         f"最終通信 / last check-in {_jst(d.get('last_checkin'))} ({d.get('minutes')} 分前 / minutes ago)")
        lines += ["", "UTM の電源、ケーブル、ルーターをご確認ください。復旧するとお知らせします。",
                  "Please check the UTM's power, its cables and the router. We will tell you when it is back."]
    else:  # same shape as "offline" above: kept apart, every text and device line differs
        devs = s.get("devices") or []
        subject = f"[VCR 運用センター] UTM が復旧しました / UTM back online (契約 / contract {contract})"
        lines += [f"契約 {contract} の UTM が運用センターとの通信を再開しました。",
                  f"The UTM of contract {contract} is checking in with the operations center again.", ""]
        for d in devs:
            lines.append(f"  シリアル / serial {clean(d.get('serial'))}: オフライン / offline {_jst(d.get('offline_since'))}"
                         f" 〜 復旧 / back {_jst(d.get('back_at'))}")
    lines += ["", "-- ", "VCR 運用センター / VCR operations center",
              "このメールは自動送信です / this mail was sent automatically"]
    msg = EmailMessage()
    msg["Subject"] = subject
    msg["From"] = sender
    msg["To"] = ", ".join(recipients)
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or "vcr-opscenter.local")
    msg["X-VCR-Notification"] = f"{row['id']} {kind} {contract}"
    msg.set_content("\n".join(lines) + "\n", charset="utf-8")
    return msg


def send_due(db: Database, settings: Any, now: dt.datetime | None = None) -> list[dict[str, Any]]:
    """Send every due notification this process wins; returns what happened to each."""
    now = now or utcnow()
    done = []
    with db.write() as conn:  # a worker that died while sending: its rows are retried
        conn.execute(update(notifications).where(and_(
            notifications.c.status == "sending", notifications.c.claimed_at < now - dt.timedelta(minutes=10)))
            .values(status="retry"))
    with db.read() as conn:
        ids = conn.execute(select(notifications.c.id).where(and_(
            notifications.c.status.in_(("open", "retry")), notifications.c.due_at <= now))
            .order_by(notifications.c.id).limit(100)).scalars().all()
    for nid in ids:
        with db.write() as conn:
            won = conn.execute(update(notifications).where(and_(
                notifications.c.id == nid, notifications.c.status.in_(("open", "retry")),
                notifications.c.due_at <= now)).values(status="sending", open_key=None, claimed_at=now)).rowcount
            if not won:
                continue
            row = dict(conn.execute(select(notifications).where(notifications.c.id == nid)).mappings().one())
            prefs = get_prefs(db, row["contract_id"], settings, conn)
            to = recipients_of(db, row["contract_id"], prefs, conn)
        result = {"id": nid, "kind": row["kind"], "contract_id": row["contract_id"], "count": row["count"],
                  "recipients": to}
        if not to:
            _finish(db, nid, status="skipped", error="no recipients (no contact mail on the settings sheet and "
                                                     "none in the preferences)", recipients=[])
            log.warning("notification %s (%s, contract %s) skipped: no recipients", nid, row["kind"],
                        row["contract_id"])
            done.append({**result, "status": "skipped"})
            continue
        msg = compose(row, to, settings.smtp_from)
        try:
            _smtp_send(settings, msg, to)
        except (OSError, smtplib.SMTPException) as exc:
            attempts = row["attempts"] + 1
            final = attempts >= MAX_ATTEMPTS
            _finish(db, nid, status="failed" if final else "retry", error=f"{type(exc).__name__}: {exc}"[:1000],
                    attempts=attempts, due_at=now + dt.timedelta(seconds=min(3600, 30 * 2 ** attempts)),
                    recipients=to, subject=str(msg["Subject"]))
            log.warning("notification %s to %s failed (attempt %d): %s", nid, to, attempts, exc)
            done.append({**result, "status": "failed" if final else "retry", "error": str(exc)})
            continue
        _finish(db, nid, status="sent", sent_at=utcnow(), attempts=row["attempts"] + 1, recipients=to,
                subject=str(msg["Subject"]), error=None)
        log.info("notification %s (%s, %d item(s), contract %s) mailed to %s", nid, row["kind"], row["count"],
                 row["contract_id"], ", ".join(to))
        done.append({**result, "status": "sent"})
    return done


def _finish(db: Database, nid: int, **values: Any) -> None:
    with db.write() as conn:
        conn.execute(update(notifications).where(notifications.c.id == nid).values(**values))


def _smtp_send(settings: Any, msg: EmailMessage, to: list[str]) -> None:
    with smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=settings.smtp_timeout) as smtp:
        if settings.smtp_starttls:
            import ssl

            smtp.starttls(context=ssl.create_default_context())
        if settings.smtp_user:
            smtp.login(settings.smtp_user, settings.smtp_password or "")
        smtp.send_message(msg, from_addr=settings.smtp_from, to_addrs=to)


def list_notifications(db: Database, *, contract_id: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    q = select(notifications).order_by(notifications.c.id.desc()).limit(limit)
    if contract_id:
        q = q.where(notifications.c.contract_id == contract_id)
    with db.read() as conn:
        rows = conn.execute(q).mappings().all()
    return [{"id": r["id"], "contract_id": r["contract_id"], "kind": r["kind"], "status": r["status"],
             "count": r["count"], "opened_at": iso(r["opened_at"]), "due_at": iso(r["due_at"]),
             "sent_at": iso(r["sent_at"]), "recipients": r["recipients"], "subject": r["subject"],
             "attempts": r["attempts"], "error": r["error"], "summary": r["summary"]} for r in rows]


def notifications_text(rows: list[dict[str, Any]]) -> str:
    from opscenter.render import table

    if not rows:
        return "通知はありません / no notifications"
    return table(["ID", "契約 / contract", "種類 / kind", "件数 / count", "状態 / status", "期限 / due",
                  "送信 / sent", "宛先 / to"],
                 [[str(r["id"]), r["contract_id"], r["kind"], str(r["count"]), r["status"], r["due_at"] or "",
                   r["sent_at"] or "-", ", ".join(r["recipients"] or [])] for r in rows])


# Same skeleton as opscenter/app.py Sweeper (a daemon thread with a stop event): kept apart, the
# loops, intervals and counters are each its own.
class Notifier(threading.Thread):
    """The center's background sender: offline/online scan, then due notifications, every ``notify_interval``."""

    def __init__(self, db: Database, settings: Any) -> None:
        super().__init__(name="opscenter-notify", daemon=True)
        self.db = db
        self.settings = settings
        self.stopping = threading.Event()
        self.passes = 0

    def run(self) -> None:
        while not self.stopping.wait(self.settings.notify_interval):
            try:
                scan_devices(self.db, self.settings)
                send_due(self.db, self.settings)
            except Exception as exc:  # noqa: BLE001 - the notifier must outlive a database hiccup
                log.error("notification pass failed: %s", exc)
            self.passes += 1

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=10)
