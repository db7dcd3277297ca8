"""User-facing text: Japanese first with English alongside (``lang`` ``ja``, the default), or English
only (``en``: ``?lang=en``, remembered in a cookie). Every text is a pair in ``MESSAGES``; a page
added later adds its own pairs with :func:`register`.

In templates: ``T("key", n=3)`` for text in the page (ja: Japanese, then the English in a smaller
``<span class="en">``), ``t("key")`` for plain text (titles, attributes, option labels: "日本語 /
English" in ja), ``P(pair)`` / ``p(pair)`` for pairs computed in Python (alarm explanations).
Values given as keywords are escaped.
"""
from __future__ import annotations

from typing import Any

from jinja2 import pass_context
from markupsafe import Markup, escape

LANGS = ("ja", "en")
DEFAULT = "ja"

MESSAGES: dict[str, tuple[str, str]] = {}


def register(messages: dict[str, tuple[str, str]]) -> None:
    """Add message pairs (a key defined twice is a mistake)."""
    dup = set(messages) & set(MESSAGES)
    if dup:
        raise ValueError(f"message keys defined twice: {sorted(dup)}")
    MESSAGES.update(messages)


def _fmt(text: str, kw: dict[str, Any]) -> Markup:
    safe = {k: escape(v) for k, v in kw.items()}
    return Markup(escape(text).format(**safe)) if kw else Markup(escape(text))


def pair(key: str) -> tuple[str, str]:
    try:
        return MESSAGES[key]
    except KeyError:
        raise KeyError(f"no message {key!r}") from None


def render_pair(lang: str, p: tuple[str, str], kw: dict[str, Any], *, plain: bool = False) -> Any:
    if plain:  # a str, not markup: the template escapes it where it is used
        ja_s, en_s = (x.format(**{k: str(v) for k, v in kw.items()}) if kw else x for x in p)
        if lang == "en":
            return en_s
        return f"{ja_s} / {en_s}" if en_s else ja_s
    ja, en = _fmt(p[0], kw), _fmt(p[1], kw)
    if lang == "en":
        return en
    return Markup(f'{ja}<span class="en" lang="en">{en}</span>') if p[1] else ja


@pass_context
def T(ctx: Any, key: str, **kw: Any) -> Any:
    return render_pair(ctx.get("lang", DEFAULT), pair(key), kw)


@pass_context
def t(ctx: Any, key: str, **kw: Any) -> str:
    return str(render_pair(ctx.get("lang", DEFAULT), pair(key), kw, plain=True))


@pass_context
def P(ctx: Any, p: tuple[str, str], **kw: Any) -> Any:
    return render_pair(ctx.get("lang", DEFAULT), p, kw)


@pass_context
def p(ctx: Any, pr: tuple[str, str], **kw: Any) -> str:
    return str(render_pair(ctx.get("lang", DEFAULT), pr, kw, plain=True))


def text(lang: str, key: str, **kw: Any) -> str:
    """Plain text outside templates."""
    return str(render_pair(lang, pair(key), kw, plain=True))
