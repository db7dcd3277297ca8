"""The settings sheet (設定シート) the customer fills in before installation: parsing and checking.

Sans-IO and shared by both sides: the operations center checks a sheet when the operator enters it
(``vcr-opscenter sheet set``) and the box checks it again before ``vcr-agent setup`` applies it.
Every problem names the field, in Japanese and English, and all problems are reported at once.

Sheet fields (YAML or JSON)::

    install_address: 東京都千代田区丸の内1-1-1 ○○ビル 3F
    install_date: 2026-12-01
    management_ip: 192.0.2.2/24          # the box's fixed IP with prefix (on the bridge)
    gateway: 192.0.2.1                   # default gateway: the customer's router
    dns: [198.51.100.53, 198.51.100.54]
    management_ipv6: 2001:db8:1::2/64     # optional, with gateway_ipv6
    gateway_ipv6: 2001:db8:1::1
    contact: {name: 山田 太郎, mail: yamada@example.co.jp, phone: 03-1234-5678}

``contact`` may also be a single string on the box's side (the agent config's informational field).
"""
from __future__ import annotations

import datetime as dt
import ipaddress
import re
from dataclasses import dataclass
from typing import Any, Callable

FIELDS = ("install_address", "install_date", "management_ip", "gateway", "dns", "management_ipv6", "gateway_ipv6",
          "contact")
CONTACT_FIELDS = ("name", "mail", "phone")
MAX_DNS = 4
MAIL_RE = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                     r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$")
PHONE_RE = re.compile(r"^\+?[0-9][0-9 ()-]{8,22}$")

LABELS = {
    "install_address": ("設置場所の住所", "install address"),
    "install_date": ("設置日", "install date"),
    "management_ip": ("UTM の固定 IP アドレス", "the box's fixed IP address"),
    "gateway": ("デフォルトゲートウェイ", "default gateway"),
    "dns": ("DNS サーバー", "DNS servers"),
    "management_ipv6": ("UTM の IPv6 アドレス", "the box's IPv6 address"),
    "gateway_ipv6": ("IPv6 デフォルトゲートウェイ", "IPv6 default gateway"),
    "contact": ("ご担当者", "contact person"),
    "contact.name": ("ご担当者名", "contact name"),
    "contact.mail": ("ご担当者のメールアドレス", "contact mail address"),
    "contact.phone": ("ご担当者の電話番号", "contact phone number"),
}


@dataclass(frozen=True)
class SheetProblem:
    """One problem of a sheet: the field (``dns.1``, ``contact.mail``), Japanese and English text."""

    field: str
    ja: str
    en: str

    def text(self) -> str:
        return f"{self.field}: {self.ja} / {self.en}"

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "ja": self.ja, "en": self.en}


class SheetError(ValueError):
    """A sheet with problems; ``problems`` lists them all."""

    def __init__(self, problems: list[SheetProblem]) -> None:
        self.problems = problems
        super().__init__("; ".join(p.text() for p in problems))


def _label(field: str) -> tuple[str, str]:
    base = field.split(".")[0] if field.split(".")[0] == "dns" else field
    return LABELS.get(base, (field, field))


class _Checker:
    def __init__(self) -> None:
        self.problems: list[SheetProblem] = []

    def add(self, field: str, ja: str, en: str) -> None:
        lj, le = _label(field)
        self.problems.append(SheetProblem(field, f"{lj}: {ja}", f"{le}: {en}"))


def _text(v: Any) -> str | None:
    if v is None:
        return None
    if isinstance(v, (int, float, dt.date)) and not isinstance(v, bool):
        return str(v)
    return v.strip() if isinstance(v, str) else None


def _plain(s: str) -> bool:
    """No control or format characters (a sheet ends up in mails, configs and terminals)."""
    import unicodedata

    return not any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in s)


def check_sheet(data: Any, *, require_center_fields: bool = True) -> dict[str, Any]:
    """The sheet, normalised (addresses in canonical form, ``dns`` a list, ``contact`` a mapping);
    raises :class:`SheetError` listing every problem.

    ``require_center_fields``: install date and the contact's mail and phone are required (the
    center's sheet). The box's own copy may carry ``contact`` as one string and no date."""
    c = _Checker()
    if not isinstance(data, dict):
        raise SheetError([SheetProblem("(sheet)", "設定シートはキーと値の組で書いてください",
                                       "the settings sheet must be a mapping of fields")])
    out: dict[str, Any] = {}
    for key in data:
        if key not in FIELDS:
            c.add(str(key), "不明な項目です", "unknown field")

    # install address and date
    addr = _text(data.get("install_address"))
    if not addr:
        if require_center_fields:
            c.add("install_address", "入力してください", "required")
    elif len(addr) > 300 or not _plain(addr):
        c.add("install_address", "300 文字以内の文字で入力してください", "at most 300 plain characters")
    else:
        out["install_address"] = addr
    date = _text(data.get("install_date"))
    if date:
        try:
            out["install_date"] = dt.date.fromisoformat(date).isoformat()
        except ValueError:
            c.add("install_date", "YYYY-MM-DD の形式で入力してください", "expected YYYY-MM-DD")
    elif require_center_fields:
        c.add("install_date", "入力してください (YYYY-MM-DD)", "required (YYYY-MM-DD)")

    # IPv4: the box's address, the gateway in its subnet
    iface = None
    mip = _text(data.get("management_ip"))
    if not mip:
        c.add("management_ip", "入力してください (例: 192.0.2.2/24)", "required (e.g. 192.0.2.2/24)")
    else:
        iface = _interface(c, "management_ip", mip, 4, "192.0.2.2/24", (8, 30),
                           (" (IPv6 は management_ipv6 へ)", " (IPv6 goes into management_ipv6)"))
        if iface is None:
            pass
        elif _special(iface.ip):
            c.add("management_ip", f"{iface.ip} は機器に設定できないアドレスです",
                  f"{iface.ip} cannot be a host's address (loopback, multicast, link-local or reserved)")
            iface = None
        elif iface.ip in (iface.network.network_address, iface.network.broadcast_address):
            which = ("ネットワークアドレス", "the network address") if iface.ip == iface.network.network_address \
                else ("ブロードキャストアドレス", "the broadcast address")
            c.add("management_ip", f"{iface.ip} は {iface.network} の{which[0]}です",
                  f"{iface.ip} is {which[1]} of {iface.network}")
            iface = None
        else:
            out["management_ip"] = str(iface)
    gw = _text(data.get("gateway"))
    if not gw:
        c.add("gateway", "入力してください (ルーターの LAN 側アドレス)", "required (the router's LAN address)")
    else:
        gwa = _address(c, "gateway", gw, 4)
        if gwa is None:
            pass
        elif _special(gwa):
            c.add("gateway", f"{gwa} はゲートウェイにできないアドレスです", f"{gwa} cannot be a gateway")
        elif iface is not None and gwa == iface.ip:
            c.add("gateway", f"UTM 自身のアドレス ({gwa}) と同じです。ルーターのアドレスを入力してください",
                  f"is the box's own address ({gwa}); enter the router's address")
        elif iface is not None and gwa not in iface.network:
            c.add("gateway", f"{gwa} は UTM のアドレス {iface} と同じサブネットにありません",
                  f"{gwa} is not inside the subnet of the box's address {iface}")
        elif iface is not None and gwa in (iface.network.network_address, iface.network.broadcast_address):
            c.add("gateway", f"{gwa} は {iface.network} のネットワークアドレスかブロードキャストアドレスです",
                  f"{gwa} is the network or broadcast address of {iface.network}")
        else:
            out["gateway"] = str(gwa)

    # DNS servers
    dns = data.get("dns")
    if isinstance(dns, str):
        dns = [x for x in re.split(r"[,\s]+", dns) if x]
    if not dns:
        c.add("dns", "DNS サーバーを 1 つ以上入力してください", "give at least one DNS server")
    elif not isinstance(dns, list):
        c.add("dns", "DNS サーバーのリストで入力してください", "expected a list of DNS servers")
    elif len(dns) > MAX_DNS:
        c.add("dns", f"DNS サーバーは {MAX_DNS} つまでです", f"at most {MAX_DNS} DNS servers")
    else:
        servers = []
        for i, item in enumerate(dns):
            s = _text(item) or ""
            try:
                a = ipaddress.ip_address(s)
            except ValueError:
                c.add(f"dns.{i}", f"IP アドレスとして正しくありません: {s or '(空)'}", f"not a valid address: {s or '(empty)'}")
                continue
            if _special(a) and not a.is_link_local:
                c.add(f"dns.{i}", f"{a} は DNS サーバーにできないアドレスです", f"{a} cannot be a DNS server")
            elif iface is not None and a == iface.ip:
                c.add(f"dns.{i}", f"UTM 自身のアドレス ({a}) は DNS サーバーにできません",
                      f"the box's own address ({a}) cannot be its DNS server")
            elif str(a) in servers:
                c.add(f"dns.{i}", f"{a} が重複しています", f"{a} is listed twice")
            else:
                servers.append(str(a))
        out["dns"] = servers

    # optional IPv6: both or neither, the gateway on-link (in the prefix, or link-local)
    mip6, gw6 = _text(data.get("management_ipv6")), _text(data.get("gateway_ipv6"))
    if mip6 or gw6:
        iface6 = None
        if not mip6:
            c.add("management_ipv6", "IPv6 ゲートウェイを入力した場合は UTM の IPv6 アドレスも入力してください",
                  "required when gateway_ipv6 is given")
        else:
            iface6 = _interface(c, "management_ipv6", mip6, 6, "2001:db8:1::2/64", (16, 126))
            if iface6 is None:
                pass
            elif _special(iface6.ip) or iface6.ip == iface6.network.network_address:
                c.add("management_ipv6", f"{iface6.ip} は機器に設定できないアドレスです",
                      f"{iface6.ip} cannot be a host's address")
                iface6 = None
            else:
                out["management_ipv6"] = str(iface6)
        if not gw6:
            c.add("gateway_ipv6", "UTM の IPv6 アドレスを入力した場合は IPv6 ゲートウェイも入力してください",
                  "required when management_ipv6 is given")
        else:
            g6 = _address(c, "gateway_ipv6", gw6, 6)
            if g6 is None:
                pass
            elif g6.is_multicast or g6.is_unspecified or g6.is_loopback:
                c.add("gateway_ipv6", f"{g6} はゲートウェイにできないアドレスです", f"{g6} cannot be a gateway")
            elif iface6 is not None and g6 == iface6.ip:
                c.add("gateway_ipv6", f"UTM 自身のアドレス ({g6}) と同じです", f"is the box's own address ({g6})")
            elif iface6 is not None and not g6.is_link_local and g6 not in iface6.network:
                c.add("gateway_ipv6", f"{g6} は {iface6.network} の中にもリンクローカル (fe80::/10) にもありません",
                      f"{g6} is neither inside {iface6.network} nor link-local (fe80::/10)")
            else:
                out["gateway_ipv6"] = str(g6)

    # contact
    contact = data.get("contact")
    if isinstance(contact, str) and not require_center_fields:
        if len(contact) > 300 or not _plain(contact):
            c.add("contact", "300 文字以内の文字で入力してください", "at most 300 plain characters")
        else:
            out["contact"] = contact.strip()
    elif contact is None and not require_center_fields:
        pass
    elif not isinstance(contact, dict):
        c.add("contact", "name, mail, phone を入力してください", "give name, mail and phone")
    else:
        oc: dict[str, str] = {}
        for key in contact:
            if key not in CONTACT_FIELDS:
                c.add(f"contact.{key}", "不明な項目です", "unknown field")
        name = _text(contact.get("name"))
        if not name:
            c.add("contact.name", "入力してください", "required")
        elif len(name) > 100 or not _plain(name):
            c.add("contact.name", "100 文字以内の文字で入力してください", "at most 100 plain characters")
        else:
            oc["name"] = name
        mail = _text(contact.get("mail"))
        if not mail:
            if require_center_fields:
                c.add("contact.mail", "入力してください (通知メールの宛先です)", "required (notifications are mailed there)")
        elif len(mail) > 254 or not MAIL_RE.match(mail):
            c.add("contact.mail", f"メールアドレスとして正しくありません: {mail}", f"not a valid mail address: {mail}")
        else:
            oc["mail"] = mail
        phone = _text(contact.get("phone"))
        if not phone:
            if require_center_fields:
                c.add("contact.phone", "入力してください", "required")
        elif not PHONE_RE.match(phone) or sum(ch.isdigit() for ch in phone) < 10:
            c.add("contact.phone", f"電話番号として正しくありません: {phone} (例: 03-1234-5678)",
                  f"not a valid phone number: {phone} (e.g. 03-1234-5678)")
        else:
            oc["phone"] = phone
        out["contact"] = oc
    if c.problems:
        raise SheetError(c.problems)
    return out


Interface = ipaddress.IPv4Interface | ipaddress.IPv6Interface


def _address(c: _Checker, key: str, text: str, version: int, hint: tuple[str, str] = ("", ""),
             parse: Callable[[str], Any] = ipaddress.ip_address) -> Any:
    """``text`` parsed (an address of IP ``version`` by default), else a problem (``hint`` follows the
    wrong-family one) and None."""
    try:
        value = parse(text)
    except ValueError:
        c.add(key, f"IP アドレスとして正しくありません: {text}", f"not a valid address: {text}")
        return None
    if value.version != version:
        c.add(key, f"IPv{version} アドレスを入力してください{hint[0]}", f"expected an IPv{version} address{hint[1]}")
        return None
    return value


def _interface(c: _Checker, key: str, text: str, version: int, example: str, prefixes: tuple[int, int],
               hint: tuple[str, str] = ("", "")) -> Interface | None:
    """``text`` as ADDRESS/PREFIX of IP ``version``, the prefix length within ``prefixes``, else a problem and None."""
    if "/" not in text:
        c.add(key, f"プレフィックス長を付けてください (例: {example})", f"give the prefix length too (e.g. {example})")
        return None
    iface = _address(c, key, text, version, hint, ipaddress.ip_interface)
    if iface is None:
        return None
    low, high = prefixes
    if not low <= iface.network.prefixlen <= high:
        c.add(key, f"プレフィックス長 /{iface.network.prefixlen} は使えません (/{low} から /{high})",
              f"prefix length /{iface.network.prefixlen} cannot be used (/{low} to /{high})")
        return None
    return iface


def _special(a: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return bool(a.is_loopback or a.is_multicast or a.is_unspecified or a.is_link_local or a.is_reserved
                or (a.version == 4 and int(a) == 0xFFFFFFFF))


def contact_text(contact: Any) -> str:
    """The contact as one line (the box's informational ``settings_sheet.contact``)."""
    if isinstance(contact, str):
        return contact
    if not isinstance(contact, dict):
        return ""
    parts = [contact.get("name") or ""]
    if contact.get("mail"):
        parts.append(f"<{contact['mail']}>")
    if contact.get("phone"):
        parts.append(f"tel {contact['phone']}")
    return " ".join(p for p in parts if p)


def agent_section(sheet: dict[str, Any]) -> dict[str, Any]:
    """The box's ``settings_sheet:`` config section from a checked sheet."""
    out: dict[str, Any] = {"management_ip": sheet["management_ip"], "gateway": sheet["gateway"],
                           "dns": list(sheet["dns"])}
    if sheet.get("management_ipv6"):
        out["management_ipv6"] = sheet["management_ipv6"]
        out["gateway_ipv6"] = sheet["gateway_ipv6"]
    out["install_address"] = sheet.get("install_address", "")
    out["contact"] = contact_text(sheet.get("contact"))
    return out


def from_agent_section(section: dict[str, Any]) -> dict[str, Any]:
    """A box's ``settings_sheet:`` section as sheet fields (contact stays a string)."""
    return {k: section[k] for k in FIELDS if k in section and section[k] not in (None, "")}
