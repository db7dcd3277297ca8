"""TOTP (RFC 6238, 6 digits, 30 s) with pyotp; enrolment QR codes as inline SVG with segno.

A code is accepted for the current step and one step either side (clock drift), and only once: the
step it matched is stored and a code of that step or an earlier one is refused afterwards.
"""
from __future__ import annotations

import hmac
import time

import pyotp
import segno

ISSUER = "VCR Operations Center"


def new_secret() -> str:
    return pyotp.random_base32()


def uri(secret: str, account: str, issuer: str = ISSUER) -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=account, issuer_name=issuer)


def qr_svg(text: str) -> str:
    """An SVG element (no XML declaration) of a QR code for ``text``, for inline use in a page."""
    return segno.make(text, error="m").svg_inline(scale=4, dark="#000", light="#fff")


def grouped(secret: str) -> str:
    """``ABCD EFGH ...``: easier to type into an authenticator app by hand."""
    return " ".join(secret[i:i + 4] for i in range(0, len(secret), 4))


def match(secret: str, code: str, now: float | None = None, window: int = 1) -> int | None:
    """The time step ``code`` belongs to (within ``window`` steps of now), or None."""
    code = "".join(ch for ch in (code or "") if not ch.isspace())
    if len(code) != 6 or not code.isdigit():
        return None
    totp = pyotp.TOTP(secret)
    now = time.time() if now is None else now
    step = int(now // totp.interval)
    found = None
    for off in range(-window, window + 1):
        if hmac.compare_digest(totp.generate_otp(step + off), code):
            found = step + off
    return found
