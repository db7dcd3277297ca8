"""Alarms explained to the customer in plain Japanese (with English): what happened, which PC of the
office (LAN host), what the box did (blocked or only alerted) and what to do.

One explainer per engine (``EXPLAINERS``: firewall, atp, ips, webfilter; av, antispam and sandbox
ready for when the box has them; the agent's own alarms and the spool's gap records), chosen by
``alert.engine`` and else by the signature id range; anything unknown gets the fallback, which still
says what was recorded and what the box did. Texts are pairs ``(Japanese, English)``.

Everything here reads box-supplied JSON: every value is treated as untrusted text (made plain with
:func:`opscenter.textsafe.clean`, cut to a length) and the templates escape it again.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any, Callable

from filters.webfilter.page import CATEGORY_NAMES
from opscenter.textsafe import clean

Pair = tuple[str, str]

# The category names the box's block page shows (plain data in filters/, which the center may import):
# the customer reads the same words in the panel as on the block page.
WEB_CATEGORIES: dict[str, Pair] = CATEGORY_NAMES
SECURITY_CATEGORIES = {"malware", "phishing", "cryptojacking", "ddos", "stalkerware"}

ACTIONS: dict[str, Pair] = {
    "blocked": ("遮断しました", "blocked"),
    "alerted": ("検知のみ（通信は止めていません）", "detected only (not blocked)"),
    "info": ("お知らせ", "for your information"),
}
LEVELS: dict[str, Pair] = {
    "high": ("要対応", "action needed"),
    "medium": ("確認推奨", "please check"),
    "low": ("対応不要", "no action needed"),
}

ENGINE_NAMES: dict[str, Pair] = {
    "firewall": ("ファイアウォール", "Firewall"),
    "atp": ("脅威対策 (C&C 通信防止)", "Threat protection (C&C)"),
    "ips": ("不正侵入防止 (IPS)", "Intrusion prevention (IPS)"),
    "webfilter": ("Web フィルター", "Web filter"),
    "av": ("アンチウイルス", "Antivirus"),
    "mail": ("メールセキュリティ", "Mail security"),
    "antispam": ("アンチスパム", "Anti-spam"),
    "sandbox": ("サンドボックス", "Sandbox"),
    "agent": ("UTM 本体", "The UTM box"),
    "spool": ("記録の転送", "Alarm delivery"),
    "other": ("その他", "Other"),
}


@dataclass
class Explanation:
    engine: str
    title: Pair
    what: Pair
    action: str  # blocked | alerted | info
    todo: Pair
    level: str  # high | medium | low
    pc: str | None = None  # the office PC (LAN host) concerned
    remote: str | None = None  # the other side (internet host, site, sender)
    facts: list[tuple[Pair, str]] = field(default_factory=list)  # label -> value, for the detail page

    @property
    def engine_name(self) -> Pair:
        return ENGINE_NAMES.get(self.engine, ENGINE_NAMES["other"])

    @property
    def action_text(self) -> Pair:
        return ACTIONS[self.action]

    @property
    def level_text(self) -> Pair:
        return LEVELS[self.level]


def _s(v: Any, limit: int = 200) -> str:
    """Untrusted box text as plain, bounded text ('' for non-text)."""
    if v is None or isinstance(v, (dict, list, bool)):
        return ""
    return clean(v)[:limit]


def _private(ip: str) -> bool:
    try:
        a = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return a.is_private or a.is_link_local


def lan_host(ev: dict[str, Any]) -> str | None:
    """The office PC of a record: the engine's ``lan_host``, else the side the packet came in on, else
    the private address of the two."""
    for key in ("atp", "webfilter", "av", "sandbox", "antispam", "infected_host"):
        if key == "infected_host" and isinstance(ev.get(key), dict) and _s(ev[key].get("ip")):
            return _s(ev[key].get("ip"), 64)
        sub = ev.get(key)
        if isinstance(sub, dict) and _s(sub.get("lan_host")):
            return _s(sub.get("lan_host"), 64)
    src, dst = _s(ev.get("src_ip"), 64), _s(ev.get("dest_ip"), 64)
    side = ev.get("in_iface")
    if side == "lan" and src:
        return src
    if side == "wan" and dst:
        return dst
    if src and _private(src):
        return src
    if dst and _private(dst):
        return dst
    return None


def _remote(ev: dict[str, Any], pc: str | None) -> str | None:
    src, dst = _s(ev.get("src_ip"), 64), _s(ev.get("dest_ip"), 64)
    other = dst if pc == src else src if pc == dst else dst or src
    if not other:
        return None
    port = ev.get("dest_port") if other == dst else ev.get("src_port")
    return f"{other}:{port}" if isinstance(port, int) and not isinstance(port, bool) else other


def _inbound(ev: dict[str, Any], pc: str | None) -> bool:
    """The connection came from the internet toward the office."""
    if ev.get("in_iface") == "wan":
        return ev.get("direction") != "to_client"
    if ev.get("in_iface") == "lan":
        return ev.get("direction") == "to_client"
    return pc is not None and pc == _s(ev.get("dest_ip"), 64)


def _alert(ev: dict[str, Any]) -> dict[str, Any]:
    a = ev.get("alert")
    return a if isinstance(a, dict) else {}


def _action(ev: dict[str, Any]) -> str:
    return "blocked" if _alert(ev).get("action") == "blocked" else "alerted"


def _sid(ev: dict[str, Any]) -> int:
    sid = _alert(ev).get("signature_id")
    return sid if isinstance(sid, int) and not isinstance(sid, bool) else 0


def engine_of(ev: dict[str, Any]) -> str:
    et = ev.get("event_type")
    if et == "gap":
        return "spool"
    if et in ("upgrade", "update", "maintenance"):
        return "agent"
    eng = _alert(ev).get("engine")
    if isinstance(eng, str) and eng in ENGINE_NAMES:
        return eng
    for key in ("av", "antispam", "sandbox"):
        if isinstance(ev.get(key), dict):
            return key
    sid = _sid(ev)
    if 8_999_999 <= sid < 9_100_000:
        return "firewall"
    if 9_100_000 <= sid < 9_200_000:
        return "agent"
    if 9_300_000 <= sid < 9_400_000:
        return "webfilter"
    if 9_400_000 <= sid < 9_500_000:
        return "atp"
    if et == "alert":
        return "ips"
    return "other"


# one explainer per engine -----------------------------------------------------------------------

def _atp(ev: dict[str, Any]) -> Explanation:
    d = ev.get("atp") if isinstance(ev.get("atp"), dict) else {}
    pc = lan_host(ev)
    threat = _s(d.get("threat"), 80) or "不明 / unknown"
    ind = _s(d.get("indicator"), 200) or _remote(ev, pc) or "?"
    blocked = _action(ev) == "blocked"
    who = pc or "社内の PC"
    who_en = pc or "a PC in the office"
    return Explanation(
        "atp",
        ("ウイルス感染の疑い (遠隔操作サーバーへの通信)", "Possible infection (contact with a C&C server)"),
        (f"社内の PC {who} が、遠隔操作型ウイルス「{threat}」の指令サーバー ({ind}) と通信しようとしました。"
         + ("UTM がこの通信を遮断しました。" if blocked else "UTM は検知しましたが、通信は止めていません。"),
         f"{who_en} tried to contact {ind}, a command-and-control server of the malware \"{threat}\". "
         + ("The UTM blocked it." if blocked else "The UTM detected it but did not block it.")),
        _action(ev),
        ("この PC はウイルスに感染している可能性があります。すぐに LAN ケーブルを抜くか Wi-Fi を切ってネットワークから外し、"
         "ウイルス対策ソフトで全体をスキャンしてください。あわせてサポートデスクにご連絡ください。",
         "This PC may be infected. Disconnect it from the network now (unplug the LAN cable or turn Wi-Fi off), "
         "run a full antivirus scan and contact the support desk."),
        "high", pc, ind,
        [(("脅威の名前", "threat"), threat), (("検知箇所", "seen in"), _s(d.get("where"), 40)),
         (("情報源", "source"), _s(d.get("source"), 80))],
    )


def _webfilter(ev: dict[str, Any]) -> Explanation:
    d = ev.get("webfilter") if isinstance(ev.get("webfilter"), dict) else {}
    pc = lan_host(ev)
    sid = _sid(ev)
    host = _s(d.get("host"), 200) or _s((ev.get("tls") or {}).get("sni") if isinstance(ev.get("tls"), dict) else "")
    host = host or _remote(ev, pc) or "?"
    blocked = _action(ev) == "blocked"
    who, who_en = pc or "社内の PC", pc or "a PC in the office"
    if sid in (9_300_010, 9_300_011, 9_300_012):
        return Explanation(
            "webfilter", ("通信方式の切り替え", "Bypass route closed"),
            (f"{who} のブラウザーが Web フィルターを通らない通信方式 (QUIC・DNS over TLS など) を使おうとしたため止めました。"
             "通常の方式に自動で切り替わります。",
             f"The browser on {who_en} tried a route around the web filter (QUIC, DNS over TLS, ...); it was "
             "closed and the browser falls back to the normal route by itself."),
            "blocked" if blocked else "alerted",
            ("対応は不要です。", "No action needed."), "low", pc, host)
    if sid == 9_300_020:
        return Explanation(
            "webfilter", ("サイトの分類を確認できませんでした", "Site category could not be checked"),
            (f"{who} が開いたサイト {host} の分類をセンターに問い合わせましたが、応答がなかったため通信を許可しました。",
             f"The category of {host}, opened on {who_en}, could not be looked up in time, so it was allowed."),
            "alerted", ("対応は不要です (センターで確認します)。", "No action needed (the center looks into it)."),
            "low", pc, host)
    cats = [c for c in (d.get("categories") or []) if isinstance(c, str)][:5] if isinstance(d.get("categories"), list) else []
    labels_ja = "、".join(WEB_CATEGORIES.get(c, (_s(c, 40), ""))[0] for c in cats) or "指定のカテゴリ"
    labels_en = ", ".join(WEB_CATEGORIES.get(c, ("", _s(c, 40)))[1] or _s(c, 40) for c in cats) or "a blocked category"
    deny = sid == 9_300_002 or d.get("reason") == "deny list"
    if deny:
        what = (f"{who} が、お客様のブロックリストに登録されたサイト {host} を開こうとしました。"
                + ("UTM がアクセスを遮断しました。" if blocked else "検知のみで、アクセスは止めていません。"),
                f"{who_en} tried to open {host}, which is on your deny list. "
                + ("The UTM blocked it." if blocked else "It was detected, not blocked."))
        todo = ("ご指定どおりの遮断です。業務で必要になった場合は変更依頼でブロックリストからの削除を依頼してください。",
                "Blocked as you asked. If the site is now needed for work, file a change request to remove it "
                "from the deny list.")
        return Explanation("webfilter", ("ブロックリストのサイトへのアクセス", "Site on your deny list"), what,
                           _action(ev), todo, "low", pc, host, [(("サイト", "site"), host)])
    risky = any(c in SECURITY_CATEGORIES for c in cats)
    what = (f"{who} が、「{labels_ja}」に分類されるサイト {host} を開こうとしました。"
            + ("UTM がアクセスを遮断しました。" if blocked else "検知のみで、アクセスは止めていません。"),
            f"{who_en} tried to open {host}, a site in the category \"{labels_en}\". "
            + ("The UTM blocked it." if blocked else "It was detected, not blocked."))
    if risky:
        todo = ("危険なサイトです。メールやメッセージのリンクから開いた可能性があります。この PC で ID やパスワードを入力していないか"
                "利用者に確認し、入力していた場合はパスワードを変更してください。",
                "This is a dangerous site, possibly opened from a link in a mail or message. Ask the user whether "
                "they typed an ID or password there; if so, change that password.")
        title = ("危険なサイトへのアクセス", "Access to a dangerous site")
    else:
        todo = ("社内ルールによる遮断です。業務で必要なサイトであれば、変更依頼で許可リストへの追加を依頼してください。",
                "Blocked by your web filter policy. If the site is needed for work, file a change request to add "
                "it to the allow list.")
        title = ("制限対象のサイトへのアクセス", "Access to a restricted site")
    return Explanation("webfilter", title, what, _action(ev), todo, "medium" if risky else "low", pc, host,
                       [(("サイト", "site"), host), (("カテゴリ", "category"), labels_ja)])


def _firewall(ev: dict[str, Any]) -> Explanation:
    pc = lan_host(ev)
    remote = _remote(ev, pc) or "?"
    sig = _s(_alert(ev).get("signature"), 200)
    action = _action(ev)
    inbound = _inbound(ev, pc) if "wan_to_lan" not in sig and "lan_to_wan" not in sig else "wan_to_lan" in sig
    port = ev.get("dest_port")
    port_txt = f" (ポート {port})" if isinstance(port, int) and not isinstance(port, bool) else ""
    port_en = f" (port {port})" if isinstance(port, int) and not isinstance(port, bool) else ""
    who, who_en = pc or "社内の機器", pc or "a device in the office"
    if _sid(ev) == 8_999_999:
        what = (f"ブロック対象のアドレス {remote} と {who} の間の通信を遮断しました。",
                f"Traffic between {who_en} and the blocklisted address {remote} was blocked.")
        todo = ("対応は不要です。", "No action needed.")
        return Explanation("firewall", ("ブロック対象アドレスとの通信", "Blocklisted address"), what, action, todo,
                           "low", pc, remote)
    if inbound:
        what = (f"インターネット側の {remote} から {who} への接続{port_txt}を、ファイアウォールが"
                + ("遮断しました。" if action == "blocked" else "記録しました。"),
                f"A connection from {remote} on the internet to {who_en}{port_en} was "
                + ("blocked by the firewall." if action == "blocked" else "logged by the firewall."))
        todo = ("外部からの不要な接続を止めたもので、通常は対応不要です。", "Unwanted connections from outside are "
                "stopped this way; usually no action is needed.")
        return Explanation("firewall", ("外部からの接続", "Connection from the internet"), what, action, todo,
                           "low", pc, remote, [(("規則", "rule"), sig)])
    what = (f"{who} から外部 {remote}{port_txt} への通信を、ファイアウォールの規則により"
            + ("遮断しました。" if action == "blocked" else "記録しました。"),
            f"A connection from {who_en} to {remote}{port_en} was "
            + ("blocked" if action == "blocked" else "logged") + " by a firewall rule.")
    todo = ("設定どおりの動作です。業務で必要な通信であれば変更依頼で規則の変更を依頼してください。",
            "This follows your firewall rules. If the connection is needed for work, file a change request.")
    return Explanation("firewall", ("社内からの通信の制限", "Outgoing connection restricted"), what, action, todo,
                       "low", pc, remote, [(("規則", "rule"), sig)])


def _ips(ev: dict[str, Any]) -> Explanation:
    pc = lan_host(ev)
    remote = _remote(ev, pc) or "?"
    a = _alert(ev)
    sig = _s(a.get("signature"), 200) or "?"
    sev = a.get("severity") if isinstance(a.get("severity"), int) else 3
    action = _action(ev)
    who, who_en = pc or "社内の機器", pc or "a device in the office"
    done_ja = "UTM が遮断しました。" if action == "blocked" else "UTM は検知しましたが、通信は止めていません。"
    done_en = "The UTM blocked it." if action == "blocked" else "The UTM detected it but did not block it."
    if _inbound(ev, pc):
        what = (f"インターネット側の {remote} から {who} への通信に、攻撃のパターン「{sig}」を検知しました。{done_ja}",
                f"Traffic from {remote} on the internet to {who_en} matched the attack pattern \"{sig}\". {done_en}")
        if action == "blocked":
            todo = ("攻撃は遮断済みのため、通常は対応不要です。同じ攻撃が続く場合はセンターからご連絡します。",
                    "The attack was blocked; usually no action is needed. If it keeps coming, the center will "
                    "contact you.")
            level = "low"
        else:
            todo = ("対象の機器のソフトウェアが最新か確認してください。ご不明な点はサポートデスクへ。",
                    "Check that the software of that device is up to date. Ask the support desk if unsure.")
            level = "medium"
        title = ("外部からの攻撃", "Attack from the internet")
    else:
        what = (f"{who} から外部 {remote} への通信に、不審なパターン「{sig}」を検知しました。{done_ja}",
                f"Traffic from {who_en} to {remote} matched the suspicious pattern \"{sig}\". {done_en}")
        todo = ("この PC でウイルス対策ソフトのスキャンを実行し、心当たりのないソフトが動いていないか確認してください。",
                "Run an antivirus scan on this PC and check for software nobody installed on purpose.")
        level = "high" if sev <= 1 else "medium"
        title = ("社内からの不審な通信", "Suspicious traffic from the office")
    return Explanation("ips", title, what, action, todo, level, pc, remote,
                       [(("検知名", "signature"), sig), (("分類", "category"), _s(a.get("category"), 100))])


def _av(ev: dict[str, Any]) -> Explanation:
    d = ev.get("av") if isinstance(ev.get("av"), dict) else {}
    pc = lan_host(ev)
    virus = _s(d.get("virus") or d.get("name") or _alert(ev).get("signature"), 120) or "?"
    where = _s(d.get("url") or d.get("file") or d.get("host"), 200)
    action = _action(ev)
    who, who_en = pc or "社内の PC", pc or "a PC in the office"
    return Explanation(
        "av", ("ウイルスを検知", "Virus detected"),
        (f"{who} が受け取ろうとしたデータにウイルス「{virus}」を検知しました"
         + ("。UTM が遮断しました。" if action == "blocked" else "（遮断はしていません）。"),
         f"A virus (\"{virus}\") was found in data sent to {who_en}. "
         + ("The UTM blocked it." if action == "blocked" else "It was not blocked.")),
        action,
        ("念のため、この PC でウイルス対策ソフトのスキャンを実行してください。", "To be safe, run an antivirus scan on "
         "this PC."), "medium", pc, where or None, [(("ウイルス名", "virus"), virus)])


def _antispam(ev: dict[str, Any]) -> Explanation:
    d = ev.get("antispam") if isinstance(ev.get("antispam"), dict) else {}
    pc = lan_host(ev)
    sender = _s(d.get("from") or d.get("sender"), 200)
    return Explanation(
        "antispam", ("迷惑メールを検知", "Spam detected"),
        (f"迷惑メール{'（差出人 ' + sender + '）' if sender else ''}を検知しました。",
         f"A spam mail{' from ' + sender if sender else ''} was detected."),
        _action(ev), ("対応は不要です。心当たりのないメールのリンクや添付ファイルは開かないでください。",
                      "No action needed. Do not open links or attachments of unexpected mail."),
        "low", pc, sender or None)


def _mail(ev: dict[str, Any]) -> Explanation:
    """Mail security (filters/mail/engine.py): a virus in a mail sent or received, spam, a PC sending
    either out, or a mail passed unscanned."""
    pc = lan_host(ev)
    mail = ev.get("email") if isinstance(ev.get("email"), dict) else {}
    subject = _s(mail.get("subject"), 120)
    sender = _s(mail.get("from"), 200)
    action = _action(ev)
    who, who_en = pc or "社内の PC", pc or "a PC in the office"
    if isinstance(ev.get("infected_host"), dict):
        what_ = _s(ev["infected_host"].get("what"), 80)
        spam = what_ == "spam"
        return Explanation(
            "mail", ("PC がウイルスメール・迷惑メールを送信", "A PC sent a virus or spam"),
            (f"{who} が{'迷惑メール' if spam else 'ウイルス付きのメール'}を外部へ送ろうとしました"
             + ("。UTM が止めました。" if action == "blocked" else "（止めてはいません）。"),
             f"{who_en} tried to send {'spam' if spam else 'a mail with a virus'} out. "
             + ("The UTM stopped it." if action == "blocked" else "It was not stopped.")),
            action, ("この PC がウイルスに感染している可能性があります。ネットワークから外し、ウイルス対策ソフトで"
                     "スキャンしてサポートデスクへご連絡ください。",
                     "This PC may be infected. Take it off the network, run an antivirus scan and contact the "
                     "support desk."), "high", pc, None, [(("件名", "subject"), subject)])
    av = ev.get("av") if isinstance(ev.get("av"), dict) else {}
    virus = _s(av.get("virus"), 120)
    if virus:
        sent = av.get("direction") == "sent"
        done = {"refused": ("送信を拒否しました", "refused it"), "removed": ("添付ファイルを削除しました",
                "removed the attachment")}.get(_s(av.get("action")), ("記録しました（止めてはいません）", "logged it (not blocked)"))
        return Explanation(
            "mail", ("メールのウイルスを検知", "Virus in a mail"),
            (f"{who} が{'送ろうとした' if sent else '受け取った'}メール（件名「{subject}」）にウイルス「{virus}」を検知し、"
             f"UTM が{done[0]}。", f"A virus (\"{virus}\") was found in a mail {'sent by' if sent else 'received by'} "
             f"{who_en} (subject \"{subject}\"); the UTM {done[1]}."),
            action, ("差出人に心当たりがない場合は削除してください。心当たりがある場合は差出人に連絡し、安全な方法で送り直して"
                     "もらってください。", "If you do not know the sender, delete the mail. If you do, ask them to "
                     "send it again safely."), "medium", pc, sender or None, [(("ウイルス名", "virus"), virus)])
    if isinstance(ev.get("antispam"), dict):
        return _antispam(ev)
    reason = _s(av.get("reason"), 60)
    return Explanation(
        "mail", ("検査できなかったメール", "Mail not scanned"),
        (f"{who} のメール（件名「{subject}」）を検査できずにそのまま通しました（理由: {reason}）。",
         f"A mail of {who_en} (subject \"{subject}\") passed without a scan (reason: {reason})."),
        "alerted", ("心当たりのない添付ファイルは開かないでください。暗号化された通信 (SSL/TLS) のメールは UTM では検査"
                    "できません。", "Do not open unexpected attachments. Mail over encrypted connections (SSL/TLS) "
                    "cannot be inspected by the UTM."), "low", pc, sender or None)


def _sandbox(ev: dict[str, Any]) -> Explanation:
    """The sandbox's records (filters/sandbox/engine.py): ``sandbox.reason`` says what happened —
    malicious (blocked), retro (found dangerous after the PC got it: urgent), suspicious, timeout /
    incomplete / unavailable (passed before a verdict: for the record)."""
    d = ev.get("sandbox") if isinstance(ev.get("sandbox"), dict) else {}
    info = ev.get("fileinfo") if isinstance(ev.get("fileinfo"), dict) else {}
    pc = lan_host(ev)
    name = _s(d.get("file") or d.get("filename") or info.get("filename"), 200) or "?"
    http = ev.get("http") if isinstance(ev.get("http"), dict) else {}
    site = _s(http.get("hostname"), 200) or None
    who, who_en = pc or "社内の PC", pc or "a PC in the office"
    reason = _s(d.get("reason"), 32)
    reasons = d.get("reasons") if isinstance(d.get("reasons"), list) else []
    facts = [(("ファイル", "file"), name)] + ([(("判定理由", "why"), _s(reasons[0], 200))] if reasons else [])
    if reason == "retro":
        return Explanation(
            "sandbox", ("受け取ったファイルが危険と判定", "A file already received proved dangerous"),
            (f"{who} がダウンロードしたファイル {name} は、検査結果が出る前に PC に届いていました。その後の検査で危険と"
             "判定されました。", f"The file {name} reached {who_en} before its check finished; the check then found it "
             "dangerous."),
            "alerted", ("この PC をネットワークから外し、ファイルを開かずに削除して、ウイルス対策ソフトのスキャンを実行してく"
                        "ださい。運用センターからもご連絡します。", "Disconnect this PC from the network, delete the file "
                        "without opening it and run an antivirus scan. The operations center will contact you too."),
            "high", pc, site, facts)
    if reason in ("timeout", "incomplete", "unavailable", "unknown", "pending"):
        return Explanation(
            "sandbox", ("未知のファイルを検査中に通過", "Unknown file passed before its check"),
            (f"{who} がダウンロードした未知のファイル {name} は、検査結果を待たずに通過しました。危険と判定された場合は"
             "改めてお知らせします。", f"An unknown file ({name}) downloaded by {who_en} passed before its check "
             "finished. You will be told if it proves dangerous."),
            _action(ev), ("対応は不要です。", "No action needed."), "low", pc, site, facts)
    if reason == "suspicious":
        return Explanation(
            "sandbox", ("疑わしいファイルを検知", "Suspicious file detected"),
            (f"{who} がダウンロードしたファイル {name} を検査し、疑わしいと判定しました。",
             f"The file {name} downloaded by {who_en} was checked and found suspicious."),
            _action(ev), ("心当たりのないファイルであれば開かずに削除してください。",
                          "If nobody expected this file, delete it without opening it."), "medium", pc, site, facts)
    return Explanation(
        "sandbox", ("危険なファイルを遮断", "Dangerous file blocked"),
        (f"{who} がダウンロードしようとした未知のファイル {name} を安全な環境で検査し、危険と判定しました。",
         f"An unknown file ({name}) downloaded by {who_en} was run in a safe place and judged dangerous."),
        _action(ev), ("ファイルの入手元に心当たりがない場合は、この PC のスキャンを実行してください。",
                      "If nobody expected this file, scan this PC."), "medium", pc, site, facts)


def _agent(ev: dict[str, Any]) -> Explanation:
    et = ev.get("event_type")
    sig = _s(_alert(ev).get("signature"), 200)
    if et in ("upgrade", "update", "maintenance"):
        return Explanation("agent", ("UTM のソフトウェア更新", "UTM software update"),
                           ("UTM のソフトウェアまたは定義ファイルの更新に関する記録です。", "A record about an update "
                            "of the UTM's software or signatures."), "info",
                           ("対応は不要です。", "No action needed."), "low")
    return Explanation("agent", ("UTM 本体からのお知らせ", "Notice from the UTM"),
                       (f"UTM 本体が状態を報告しました: {sig or et}", f"The UTM reported: {sig or et}"), "info",
                       ("センターで確認します。対応は不要です。", "The center looks into it; no action needed."), "low")


def _gap(ev: dict[str, Any]) -> Explanation:
    n = ev.get("dropped")
    n_txt = str(n) if isinstance(n, int) and not isinstance(n, bool) else "?"
    return Explanation("spool", ("記録の一部が届きませんでした", "Some records were lost"),
                       (f"UTM からセンターへ送る記録のうち {n_txt} 件が、通信障害などで届きませんでした。UTM の防御は続いています。",
                        f"{n_txt} records from the UTM did not reach the center (e.g. a network outage). The "
                        "UTM kept protecting the office."), "info",
                       ("対応は不要です。", "No action needed."), "low")


def _fallback(ev: dict[str, Any]) -> Explanation:
    a = _alert(ev)
    sig = _s(a.get("signature"), 200) or _s(ev.get("event_type"), 40) or "?"
    pc = lan_host(ev)
    action = _action(ev) if a else "info"
    return Explanation("other", ("UTM の記録", "UTM record"),
                       (f"UTM が「{sig}」を記録しました。", f"The UTM recorded \"{sig}\"."), action,
                       ("センターで内容を確認します。ご不明な点はサポートデスクにお問い合わせください。",
                        "The center looks into it. Ask the support desk if you have questions."), "low",
                       pc, _remote(ev, pc))


EXPLAINERS: dict[str, Callable[[dict[str, Any]], Explanation]] = {
    "atp": _atp, "webfilter": _webfilter, "firewall": _firewall, "ips": _ips,
    "av": _av, "antispam": _antispam, "sandbox": _sandbox, "mail": _mail, "agent": _agent, "spool": _gap,
}


def explain(event: Any) -> Explanation:
    """The explanation of one stored alarm's EVE record (any JSON; never raises)."""
    ev = event if isinstance(event, dict) else {}
    try:
        return EXPLAINERS.get(engine_of(ev), _fallback)(ev)
    except Exception:  # a record of an odd shape still gets an explanation
        return _fallback({})
