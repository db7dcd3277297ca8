"""The block pages shown to office users, in Japanese with English alongside: which site or file was
stopped, why, and what to do, with advice by kind.

Kinds (``page_kind``): ``danger`` (malware, phishing and the other security categories, and threat
protection's C&C blocks): the site is dangerous, do not reach it another way, what to do if a
password was entered; ``policy`` (ordinary categories such as games or social networks): the
company's rule, ask the administrator if it is needed for work; ``deny`` (the administrator's deny
list); ``antivirus`` and ``sandbox`` (a file stopped in a download; an infected upload has its own
advice: the PC holding the file may be infected). Each page is one small
self-contained HTML document (the block page is injected into the HTTP response, TCP segment by
segment), with a viewport and CSS that reads on a phone.
"""
from __future__ import annotations

import html
from typing import Iterable

Pair = tuple[str, str]

# UT1 category names, as the customer reads them.
CATEGORY_NAMES: dict[str, Pair] = {
    "malware": ("マルウェア配布サイト", "malware"),
    "phishing": ("フィッシング詐欺サイト", "phishing"),
    "cryptojacking": ("不正な暗号資産マイニング", "cryptojacking"),
    "ddos": ("DDoS 攻撃ツール", "DDoS tools"),
    "hacking": ("ハッキング", "hacking"),
    "stalkerware": ("ストーカーウェア", "stalkerware"),
    "remote-control": ("遠隔操作ツール", "remote control"),
    "adult": ("アダルト", "adult"),
    "dating": ("出会い系", "dating"),
    "gambling": ("ギャンブル", "gambling"),
    "games": ("ゲーム", "games"),
    "audio-video": ("動画・音楽配信", "audio and video"),
    "social_networks": ("SNS", "social networks"),
    "shopping": ("ショッピング", "shopping"),
    "webmail": ("Web メール", "webmail"),
    "warez": ("違法ソフトウェア", "warez"),
    "vpn": ("VPN・匿名化サービス", "VPN and anonymizers"),
    "doh": ("DNS over HTTPS", "DNS over HTTPS"),
    "redirector": ("リダイレクタ・短縮 URL", "redirectors"),
    "press": ("ニュース", "press"),
    "bank": ("銀行", "banking"),
    "update": ("ソフトウェア更新", "software updates"),
}
REASONS: dict[str, Pair] = {
    "category": ("Web フィルターのカテゴリ設定により", "by the web filter's category policy"),
    "deny list": ("管理者が指定したブロックリストにより", "by your administrator's deny list"),
    "threat": ("脅威情報 (C&C サーバーなど) に一致したため", "because it matches threat intelligence (e.g. a C&C server)"),
}
# Categories whose sites attack the visitor: the "danger" page.
DANGEROUS = frozenset({"malware", "phishing", "cryptojacking", "stalkerware", "ddos", "hacking"})

# What a dangerous category does to the visitor (one sentence each).
DANGER_WHAT: dict[str, Pair] = {
    "phishing": ("本物そっくりの偽サイトで、パスワードやカード番号をだまし取ろうとします。",
                 "It imitates a real site to steal passwords and card numbers."),
    "malware": ("ウイルスなどの不正なプログラムを配布しています。", "It spreads viruses and other malicious programs."),
    "cryptojacking": ("閲覧した PC に、暗号資産の採掘をこっそり行わせます。",
                      "It makes the visitor's PC mine cryptocurrency in secret."),
    "stalkerware": ("他人の端末をこっそり監視するソフトウェアを扱っています。", "It offers software that spies on devices."),
    "ddos": ("サイバー攻撃のためのツールを扱っています。", "It offers tools for cyber attacks."),
    "hacking": ("不正アクセスの手法やツールを扱っています。", "It offers intrusion techniques and tools."),
    "threat": ("攻撃者がウイルスに指令を送るための C&C サーバーとして知られています。",
               "It is known as a command-and-control (C&C) server attackers use to steer infected PCs."),
}

ADVICE: dict[str, list[Pair]] = {
    "danger": [
        ("このサイトは危険です。別のブラウザー、スマートフォン、自宅の回線や VPN など、ほかの方法で開こうとしないでください。",
         "This site is dangerous. Do not try to reach it another way (another browser, a phone, home internet, a VPN)."),
        ("このサイトですでにパスワードを入力してしまった場合は、すぐにそのパスワードを変更し (リンクではなく、いつものブックマークや公式アプリから)、"
         "管理者に知らせてください。同じパスワードを使っているほかのサービスも変更してください。",
         "If you already entered a password on this site, change it at once (through your usual bookmark or the official "
         "app, not a link) and tell your administrator; change it on other services that use the same password too."),
        ("ファイルをダウンロードしたり開いたりしてしまった場合は、その PC を使うのをやめて管理者に連絡してください。",
         "If you downloaded or opened a file from it, stop using the PC and contact your administrator."),
    ],
    "threat": [
        ("この PC のプログラムが、自動的にこのサーバーへ接続しようとした可能性があります。ウイルスに感染しているおそれがあるため、"
         "すぐに管理者に連絡してください。",
         "A program on this PC may have tried to contact this server by itself: the PC may be infected. Contact your "
         "administrator now."),
        ("管理者の確認が済むまで、この PC でパスワードの入力やネットバンキングをしないでください。",
         "Until your administrator has checked the PC, do not enter passwords or use online banking on it."),
        ("このサイトをほかの方法 (別のブラウザー、スマートフォン、VPN など) で開こうとしないでください。"
         "すでにパスワードを入力してしまった場合は、すぐに変更して管理者に知らせてください。",
         "Do not try to reach it another way (another browser, a phone, a VPN). If you already entered a password, "
         "change it at once and tell your administrator."),
    ],
    "policy": [
        ("業務でこのサイトが必要な場合は、社内の管理者にご相談ください。管理者はサポートデスク (平日 9:00〜17:00、メールは 24 時間受付) "
         "に許可を依頼できます。",
         "If you need this site for your work, ask your administrator, who can ask the support desk (weekdays "
         "9:00-17:00, mail 24/7) to allow it."),
    ],
    "antivirus": [
        ("ファイルは PC に届いていません。このページを閉じれば、PC への影響はありません。",
         "The file did not reach your PC. Close this page; your PC is not affected."),
        ("同じファイルを、別のブラウザーやスマートフォン、別のサイトなどから再度ダウンロードしようとしないでください。",
         "Do not try to download the file again (another browser, a phone, another site)."),
        ("管理者に、ファイル名とこのページの内容を知らせてください。業務に必要なファイルの場合は、安全なものを入手する方法を管理者と相談してください。",
         "Tell your administrator the file name and what this page says. If you need the file for work, find a safe "
         "copy together with your administrator."),
    ],
}
ADVICE["sandbox"] = ADVICE["antivirus"]
ADVICE["antivirus-upload"] = [
    ("ファイルは送信されていません。", "The file was not sent."),
    ("このファイルがある PC はウイルスに感染しているおそれがあります。ファイルを開かず、ほかの方法 (メール、USB メモリ、"
     "別のサイトなど) で送ろうとしないでください。",
     "The PC holding this file may be infected. Do not open the file or try to send it another way (mail, a USB "
     "stick, another site)."),
    ("管理者に、検出名とファイル名を知らせてください。PC のウイルス検査をおすすめします。",
     "Tell your administrator the name found and the file name; have the PC scanned for viruses."),
]

TITLES: dict[str, Pair] = {
    "danger": ("危険なサイトのため、アクセスをブロックしました", "This site is dangerous: access was blocked"),
    "threat": ("危険なサーバーへの接続をブロックしました", "A connection to a dangerous server was blocked"),
    "policy": ("このサイトは社内のルールで制限されています", "This site is restricted by your company's rules"),
    "deny": ("このサイトは管理者によりブロックされています", "Your administrator has blocked this site"),
    "antivirus": ("ウイルスが検出されたため、ダウンロードをブロックしました", "A virus was found: the download was blocked"),
    "antivirus-upload": ("ウイルスが検出されたため、アップロードをブロックしました", "A virus was found: the upload was blocked"),
    "sandbox": ("危険なファイルのため、ダウンロードをブロックしました", "A dangerous file was found: the download was blocked"),
}

_CSS = ("*{box-sizing:border-box}body{font-family:system-ui,-apple-system,\"Hiragino Sans\",\"Yu Gothic UI\",Meiryo,"
        "\"Noto Sans CJK JP\",sans-serif;margin:0;color:#222;line-height:1.6;background:#f6f6f6}"
        "main{max-width:40em;margin:0 auto;padding:1em;background:#fff;min-height:100vh}"
        "h1{font-size:1.35em;margin:.2em 0;line-height:1.35}h2{font-size:1.05em;margin:1.1em 0 .3em}"
        ".k{border-top:6px solid #b00020;padding-top:.6em}.k.policy,.k.deny{border-color:#1f6fb2}"
        ".danger h1,.threat h1,.antivirus h1,.sandbox h1{color:#b00020}.en{color:#555;font-size:.88em}"
        "dl{margin:.6em 0}dt{font-weight:bold;margin-top:.4em}dd{margin:0;overflow-wrap:anywhere}"
        "code{background:#f0f0f0;padding:0 .25em}ol{padding-left:1.3em}li{margin-bottom:.6em}"
        "footer{margin-top:1.5em;font-size:.8em;color:#777}.b{font-size:.85em;margin:0;color:#555}"
        "@media(max-width:480px){body{font-size:15px}main{padding:.8em}h1{font-size:1.2em}}")

TEMPLATE = """<!DOCTYPE html>
<html lang="ja"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<meta name="robots" content="noindex"><title>{title_ja} / {title_en}</title><style>{css}</style></head>
<body><main class="k {kind}">
<p class="b">{banner}</p>
<h1>{title_ja}</h1><p class="en">{title_en}</p>
{lead}<dl>{facts}</dl>
<h2>どうすればよいですか <span class="en">What to do</span></h2>
<ol>{advice}</ol>
<footer>VCR116w UTM &middot; {box} &middot; ref {ref}</footer>
</main></body></html>
"""


def category_label(name: str) -> str:
    ja, en = CATEGORY_NAMES.get(name, (name, name))
    return f"{html.escape(ja)} / {html.escape(en)}"


def page_kind(categories: Iterable[str], reason: str) -> str:
    """danger, threat, deny or policy for a blocked site (see the module text)."""
    if reason == "threat":
        return "threat"
    if DANGEROUS & set(categories):
        return "danger"
    return "deny" if reason == "deny list" else "policy"


def _pair(ja: str, en: str) -> str:
    return f"{html.escape(ja)}<br><span class=\"en\">{html.escape(en)}</span>"


def _fact(label_ja: str, label_en: str, value_html: str) -> str:
    return f"<dt>{label_ja} <span class=\"en\">{label_en}</span></dt><dd>{value_html}</dd>"


BANNERS: dict[str, Pair] = {
    "site": ("このサイトへのアクセスはブロックされました", "Access to this site has been blocked."),
    "file": ("このダウンロードはブロックされました", "This download has been blocked."),
    "upload": ("このアップロードはブロックされました", "This upload has been blocked."),
}


def _page(kind: str, facts: list[str], lead: list[Pair], advice: list[Pair], box: str, ref: str) -> str:
    title_ja, title_en = TITLES[kind]
    banner = BANNERS["upload" if kind == "antivirus-upload" else "file" if kind in ("antivirus", "sandbox") else "site"]
    return TEMPLATE.format(
        kind=kind.split("-")[0], banner=f"{html.escape(banner[0])} <span class=\"en\">{html.escape(banner[1])}</span>", css=_CSS, title_ja=html.escape(title_ja), title_en=html.escape(title_en),
        lead="".join(f"<p>{_pair(ja, en)}</p>" for ja, en in lead),
        facts="".join(facts), advice="".join(f"<li>{_pair(ja, en)}</li>" for ja, en in advice),
        box=html.escape(box or "VCR"), ref=html.escape(ref or "-"))


def render(site: str, categories: Iterable[str], reason: str, *, box: str = "", ref: str = "",
           threat: str = "") -> str:
    """The block page for ``site`` (host or host/path). ``reason`` is "category", "deny list" or "threat"
    (threat protection: ``threat`` names it, e.g. the malware family)."""
    cats = sorted(categories)
    kind = page_kind(cats, reason)
    ja, en = REASONS.get(reason, (reason, reason))
    facts = [_fact("サイト", "Site", f"<code>{html.escape(site)}</code>")]
    if kind != "threat":
        facts.append(_fact("カテゴリ", "Category", ", ".join(category_label(c) for c in cats) or "&mdash;"))
    elif threat:
        facts.append(_fact("脅威", "Threat", html.escape(threat[:100])))
    facts.append(_fact("理由", "Reason", _pair(ja, en)))
    lead: list[Pair] = []
    if kind == "threat":
        lead.append(DANGER_WHAT["threat"])
    elif kind == "danger":
        lead += [DANGER_WHAT[c] for c in cats if c in DANGER_WHAT][:2]
    elif kind == "policy":
        names = [CATEGORY_NAMES.get(c, (c, c)) for c in cats] or [("このカテゴリ", "this category")]
        lead.append((f"「{'」「'.join(n[0] for n in names)}」のサイトは、社内の Web 利用ルールにより制限されています。",
                     f"Sites in the category {', '.join(n[1] for n in names)} are restricted by your company's web "
                     "usage rules."))
    else:
        lead.append(("このサイトは、管理者が個別に指定してブロックしています。", "Your administrator blocked this site by name."))
    advice = ADVICE["danger"] if kind == "danger" else ADVICE["threat"] if kind == "threat" else ADVICE["policy"]
    return _page(kind, facts, lead, advice, box, ref)


def render_file(kind: str, url: str, *, threat: str = "", filename: str = "", box: str = "", ref: str = "",
                upload: bool = False) -> str:
    """The page for a stopped file: ``kind`` "antivirus" (``threat``: the virus name; ``upload``: the PC was
    sending it) or "sandbox"."""
    if kind not in ("antivirus", "sandbox"):
        raise ValueError(f"unknown file block page kind {kind!r}")
    page_kind_ = "antivirus-upload" if kind == "antivirus" and upload else kind
    facts = [_fact("送信先" if upload else "ダウンロード元", "Destination" if upload else "Source",
                   f"<code>{html.escape(url[:300] or '-')}</code>")]
    if filename:
        facts.append(_fact("ファイル", "File", f"<code>{html.escape(filename[:200])}</code>"))
    if threat:
        facts.append(_fact("検出名" if kind == "antivirus" else "判定", "Found" if kind == "antivirus" else "Verdict",
                           html.escape(threat[:100])))
    lead = [("アンチウイルスがこのファイルからウイルスを検出しました。", "The antivirus found a virus in this file.")
            if kind == "antivirus" else
            ("サンドボックス (安全な環境) で動かしたところ、このファイルは危険と判定されました。",
             "Run in the sandbox (a safe environment), this file proved dangerous.")]
    return _page(page_kind_, facts, lead, ADVICE[page_kind_], box, ref)


def render_antivirus(site: str, filename: str, virus: str, *, upload: bool = False, box: str = "",
                     ref: str = "") -> str:
    """The antivirus block page (filters/av): what was found (``virus``), in which file, what to do."""
    return render_file("antivirus", site, threat=virus, filename=filename, upload=upload, box=box, ref=ref)
