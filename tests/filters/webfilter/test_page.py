"""Block pages: advice by kind of block (dangerous categories, C&C, policy categories, the deny list)
and by function (antivirus, sandbox), Japanese with English, a viewport, small, escaped."""
from __future__ import annotations

import re

import pytest

from filters.webfilter import page

PASSWORD = ("パスワード", "password")
ANOTHER_WAY = ("ほかの方法", "another way")
ASK_ADMIN_FOR_WORK = ("業務でこのサイトが必要な場合", "need this site for your work")


def _has(html: str, pair: tuple[str, str]) -> bool:
    return pair[0] in html and pair[1] in html


def _common(html: str) -> None:
    assert '<meta name="viewport" content="width=device-width,initial-scale=1">' in html
    assert "@media(max-width:480px)" in html and "max-width:40em" in html
    assert len(html.encode()) < 4 * 1200  # at most four injected TCP segments
    assert html.count("<html") == 1 and html.rstrip().endswith("</html>")


@pytest.mark.parametrize("category", sorted(page.DANGEROUS))
def test_dangerous_categories(category: str):
    html = page.render(f"bad.example/{category}", [category], "category", box="vcr-office")
    _common(html)
    assert page.page_kind([category], "category") == "danger"
    assert _has(html, ("危険なサイト", "dangerous"))
    assert _has(html, ANOTHER_WAY)  # do not try to reach it another way
    assert _has(html, PASSWORD) and _has(html, ("パスワードを変更", "change it"))  # a password already entered
    assert _has(html, ("管理者", "administrator"))
    assert not _has(html, ASK_ADMIN_FOR_WORK)  # no "ask to allow it" for a dangerous site
    assert page.DANGER_WHAT[category][0] in html  # what this kind of site does


def test_phishing_wins_over_a_policy_category():
    html = page.render("x.example", ["games", "phishing"], "category")
    assert page.page_kind(["games", "phishing"], "category") == "danger" and _has(html, PASSWORD)


def test_command_and_control():
    html = page.render("c2.example/gate.php", ["malware"], "threat", threat="emotet", box="vcr-office")
    _common(html)
    assert page.page_kind(["malware"], "threat") == "threat"
    assert "emotet" in html and _has(html, ("C&amp;C", "C&amp;C"))
    assert _has(html, ("感染", "infected")) and _has(html, ("すぐに管理者に連絡", "Contact your administrator now"))
    assert _has(html, ANOTHER_WAY) and _has(html, PASSWORD)


@pytest.mark.parametrize("category", ["games", "social_networks", "shopping", "audio-video", "gambling", "adult",
                                      "dating", "webmail", "vpn", "unknown-cat"])
def test_policy_categories(category: str):
    html = page.render("fun.example", [category], "category")
    _common(html)
    assert page.page_kind([category], "category") == "policy"
    ja, en = page.CATEGORY_NAMES.get(category, (category, category))
    assert f"「{ja}」" in html and en in html  # the policy note names the category
    assert _has(html, ("社内の Web 利用ルール", "web usage rules"))
    assert _has(html, ASK_ADMIN_FOR_WORK)
    assert not _has(html, ("パスワードを変更", "change it"))


def test_deny_list():
    html = page.render("blocked.example", [], "deny list")
    _common(html)
    assert page.page_kind([], "deny list") == "deny"
    assert _has(html, ("管理者が個別に指定", "blocked this site by name")) and _has(html, ASK_ADMIN_FOR_WORK)


def test_antivirus_and_sandbox():
    html = page.render_file("antivirus", "http://files.example.com/setup.exe", threat="Win.Test.EICAR_HDB-1",
                            filename="setup.exe", box="vcr-office")
    _common(html)
    assert _has(html, ("ウイルスが検出されたため、ダウンロードをブロックしました", "A virus was found"))
    assert _has(html, ("ファイルは PC に届いていません", "did not reach your PC"))  # not delivered
    assert _has(html, ("再度ダウンロードしようとしないでください", "Do not try to download the file again"))
    assert _has(html, ("管理者に", "Tell your administrator"))
    assert "Win.Test.EICAR_HDB-1" in html and "setup.exe" in html
    up = page.render_antivirus("upload.example.com", "report.docx", "Eicar-Test-Signature", upload=True)
    _common(up)
    assert _has(up, ("アップロードをブロックしました", "the upload was blocked"))
    assert _has(up, ("ファイルは送信されていません", "was not sent")) and _has(up, ("ウイルス検査", "scanned"))
    assert _has(up, ("ほかの方法", "another way")) and "Eicar-Test-Signature" in up
    sb = page.render_file("sandbox", "http://x.example/a.docm")
    _common(sb)
    assert _has(sb, ("サンドボックス", "sandbox")) and _has(sb, ("再度ダウンロード", "download the file again"))
    with pytest.raises(ValueError):
        page.render_file("ips", "http://x")


def test_untrusted_text_is_escaped():
    html = page.render('<script>alert(1)</script>.example/"><img src=x>', ["<b>"], "category",
                       box="<box>", ref="<r>")
    assert "<script>" not in html and "<img" not in html and "<b>" not in html.split("<style>")[1]
    assert "&lt;script&gt;" in html and "&lt;box&gt;" in html
    av = page.render_file("antivirus", "http://x/<script>", threat="<svg onload=1>", filename="<i>.exe")
    assert "<script>" not in av and "<svg" not in av and "&lt;i&gt;.exe" in av


def test_every_page_is_japanese_first_with_english():
    pages = [page.render("a.example", ["phishing"], "category"), page.render("a.example", ["games"], "category"),
             page.render("a.example", [], "deny list"), page.render("a.example", ["malware"], "threat"),
             page.render_file("antivirus", "http://a/b")]
    for html in pages:
        assert 'lang="ja"' in html and "このサイトへのアクセスはブロックされました" in html or "このダウンロード" in html
        items = re.findall(r"<li>(.*?)</li>", html)
        assert items and all('<span class="en">' in li for li in items)  # each piece of advice in both languages
