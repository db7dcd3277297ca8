"""The block page shown to office users, in Japanese with English alongside."""
from __future__ import annotations

import html
from typing import Iterable

# UT1 category names, as the customer reads them.
CATEGORY_NAMES: dict[str, tuple[str, str]] = {
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
REASONS: dict[str, tuple[str, str]] = {
    "category": ("Web フィルターのカテゴリ設定により", "by the web filter's category policy"),
    "deny list": ("管理者が指定したブロックリストにより", "by your administrator's deny list"),
    "threat": ("脅威情報 (C&C サーバーなど) に一致したため", "because it matches threat intelligence (e.g. a C&C server)"),
}

TEMPLATE = """<!DOCTYPE html>
<html lang="ja"><head><meta charset="utf-8"><meta name="robots" content="noindex">
<title>アクセスがブロックされました / Access blocked</title>
<style>body{{font-family:sans-serif;max-width:40em;margin:3em auto;color:#222}}h1{{color:#b00020}}
.en{{color:#555}}dt{{font-weight:bold}}code{{background:#f3f3f3;padding:0 .2em}}</style></head>
<body>
<h1>このサイトへのアクセスはブロックされました</h1>
<p class="en">Access to this site has been blocked.</p>
<dl>
<dt>サイト / Site</dt><dd><code>{site}</code></dd>
<dt>カテゴリ / Category</dt><dd>{categories}</dd>
<dt>理由 / Reason</dt><dd>{reason_ja}<br><span class="en">{reason_en}</span></dd>
</dl>
<h2>どうすればよいですか / What to do</h2>
<p>業務でこのサイトが必要な場合は、社内の管理者にご連絡ください。管理者はサポートデスク
(平日 9:00〜17:00、メールは 24 時間受付) に許可リストへの追加を依頼できます。</p>
<p class="en">If you need this site for your work, please contact your administrator, who can ask the
support desk (weekdays 9:00-17:00, mail 24/7) to add it to the allow list.</p>
<p class="en">VCR116w UTM &middot; {box} &middot; ref {ref}</p>
</body></html>
"""


def category_label(name: str) -> str:
    ja, en = CATEGORY_NAMES.get(name, (name, name))
    return f"{html.escape(ja)} / {html.escape(en)}"


def render(site: str, categories: Iterable[str], reason: str, *, box: str = "", ref: str = "") -> str:
    """The block page for ``site`` (host or host/path). ``reason`` is "category", "deny list" or "threat"."""
    cats = sorted(categories)
    ja, en = REASONS.get(reason, (reason, reason))
    return TEMPLATE.format(
        site=html.escape(site),
        categories=", ".join(category_label(c) for c in cats) or "&mdash;",
        reason_ja=html.escape(ja),
        reason_en=html.escape(en),
        box=html.escape(box or "VCR"),
        ref=html.escape(ref or "-"),
    )
