"""Which configuration keys the operations center may set: an allow list (security issue, item 1).

A config revision from the center (agent/lifecycle/remoteconfig.py) may set only what a customer's
change request can ask for: engine policies, zones (``home_net``), allow and deny lists, web filter
categories, and tuning. Everything else is **local-only**: commands (``upgrade.restart_command``),
file and folder paths (logs, ``bridge.resolv_conf``, rule files, category database, feeds), trust
settings (the update repository, the trusted TUF root, the center link, look-up URLs and CA files),
the management channel (settings sheet addresses, bridge ports) and the safety nets themselves
(``remote_config``, ``upgrade``). A key that is not on the allow list is local-only, so a key added
to the schema later is protected until someone decides otherwise.

:func:`split_revision` merges a revision with the box's own config: allowed keys come from the
revision (left out = the default, the revision is the whole config), local-only keys from the box.
A revision that *sets* a local-only key to something other than the box's value is refused with
the key and the reason; leaving it out, or repeating the box's value, is fine. Without the box's
config (``local=None``: the center's check, ``vcr-agent config check-remote`` without ``-c``) any
local-only key in the revision is refused: the center cannot know the box's values, so it must
leave them out.

A replacement box restoring the contract's backup (:data:`RESTORE_ALLOWED`) also takes the
customer's settings sheet and bridge port names (it stands where the old box stood), and keeps its
own value for every other local-only key (those are dropped from the backup and reported).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

_MISSING: Any = object()

# True: the whole subtree; a dict: only the listed keys below (anything else is local-only).
REMOTE_ALLOWED: dict[str, Any] = {
    "settings_sheet": {"install_address": True, "contact": True},
    "dataplane": {"fail_mode": True, "queue_maxlen": True, "on_engine_error": True, "on_malformed": True,
                  "flows": True, "hold": True},
    "logging": {"eve_rotate_bytes": True, "eve_keep": True, "level": True},
    "app_layer": True,
    "home_net": True,
    "engines": {
        "firewall": True,
        "ips": {"enabled": True, "vars": True, "stream_tail": True},
        "atp": {"enabled": True, "dns_action": True, "monitor_only": True, "box_name": True},
        "webfilter": {
            "enabled": True, "blocked": True, "allow": True, "deny": True, "dns_action": True,
            "block_quic": True, "doh_canary": True, "block_dot": True, "block_doh": True,
            "monitor_only": True, "box_name": True,
            "lookup": {"enabled": True, "timeout": True, "cache_ttl": True, "negative_ttl": True,
                       "error_ttl": True, "cache_size": True},
        },
    },
}


def _union(a: Any, b: Any) -> Any:
    if a is True or b is True:
        return True
    out = dict(a)
    for k, v in b.items():
        out[k] = _union(out[k], v) if k in out else v
    return out


# A replacement box also restores where the old box stood: the settings sheet and the port names
# (remapped to this hardware's ports when they do not exist here, remoteconfig.remap_ports).
RESTORE_ALLOWED: dict[str, Any] = _union(REMOTE_ALLOWED, {
    "settings_sheet": True,
    "bridge": {"name": True, "lan_port": True, "wan_port": True},
})

# Why a key is local-only: (path prefix, class, Japanese, English); the longest matching prefix wins.
_REASONS: tuple[tuple[tuple[str, ...], str, str, str], ...] = (
    (("upgrade", "restart_command"), "command",
     "機器が root 権限で実行するコマンドです", "a command the box runs as root"),
    (("upgrade",), "trust",
     "ソフトウェア更新の安全装置です (フォルダー・検証・再起動)",
     "the software upgrade's safety net (folders, checks, restart)"),
    (("updates",), "trust",
     "署名付き更新の信頼設定です (リポジトリ・信頼ルート・フォルダー・時刻検証)",
     "a trust setting of the signed updates (repository, trusted root, folders, clock checks)"),
    (("center",), "trust",
     "運用センター接続の設定です (URL・CA・認証情報)",
     "the operations-center link (URL, CA, credential)"),
    (("remote_config",), "trust",
     "遠隔設定の安全装置です", "the remote configuration's own safety net"),
    (("settings_sheet",), "management",
     "管理通信を保つ設定です (管理アドレス・ゲートウェイ・DNS)",
     "it keeps the management channel alive (management address, gateway, DNS)"),
    (("bridge",), "management",
     "ブリッジのインターフェース設定です (管理通信)", "the bridge's interfaces (the management channel)"),
    (("bridge", "resolv_conf"), "path", "機器上のファイルのパスです", "a file path on the box"),
    (("bridge", "state_file"), "path", "機器上のファイルのパスです", "a file path on the box"),
    (("logging", "dir"), "path", "機器上のフォルダーのパスです", "a folder path on the box"),
    (("dataplane", "queue_base"), "plumbing",
     "カーネル規則とワーカーの接続設定です (再読み込みでは変えられません)",
     "kernel plumbing tied to the installed ruleset and the worker processes (a reload cannot change it)"),
    (("dataplane", "workers"), "plumbing",
     "カーネル規則とワーカーの接続設定です (再読み込みでは変えられません)",
     "kernel plumbing tied to the installed ruleset and the worker processes (a reload cannot change it)"),
    (("dataplane", "nflog_group"), "plumbing",
     "カーネル規則とワーカーの接続設定です (再読み込みでは変えられません)",
     "kernel plumbing tied to the installed ruleset and the worker processes (a reload cannot change it)"),
    (("engines", "ips", "rule_files"), "path", "機器上のファイルのパスです", "a file path on the box"),
    (("engines", "ips", "classification"), "path", "機器上のファイルのパスです", "a file path on the box"),
    (("engines", "webfilter", "database"), "path", "機器上のフォルダーのパスです", "a folder path on the box"),
    (("engines", "atp", "feeds"), "path", "機器上のファイルのパスです", "file paths on the box"),
    (("engines", "webfilter", "lookup"), "trust",
     "LAN のホスト名の送り先と信頼先です (URL・CA・認証ファイル)",
     "where the box sends the LAN's host names and whom it trusts (URL, CA, credential file)"),
    (("engines", "webfilter", "sinkhole_ipv4"), "trust",
     "ブロックした名前の誘導先です (既定は機器自身)", "where blocked names are sent (the box itself by default)"),
    (("engines", "webfilter", "sinkhole_ipv6"), "trust",
     "ブロックした名前の誘導先です (既定は機器自身)", "where blocked names are sent (the box itself by default)"),
    (("engines", "atp", "sinkhole_ipv4"), "trust",
     "ブロックした名前の誘導先です (既定は機器自身)", "where blocked names are sent (the box itself by default)"),
    (("engines", "atp", "sinkhole_ipv6"), "trust",
     "ブロックした名前の誘導先です (既定は機器自身)", "where blocked names are sent (the box itself by default)"),
    (("engines", "probe"), "trust",
     "診断用エンジンです (通信を指定 URL に問い合わせます)", "a diagnostic engine (asks a URL about flows)"),
)
_DEFAULT_REASON = ("other", "運用センターが変更できる設定 (エンジンのポリシー・ゾーン・許可/拒否リスト・カテゴリー・調整値) ではありません",
                   "not one of the settings the center may change (engine policies, zones, allow/deny lists, "
                   "categories, tuning)")


@dataclass(frozen=True)
class Refusal:
    """A local-only key that a revision sets: the key, its class and why (Japanese and English)."""

    key: str
    kind: str  # command, path, trust, management, plumbing, other
    reason_ja: str
    reason_en: str
    how: str = "changed"  # changed (differs from the box) | present (the center must leave it out) | shape

    def message(self) -> str:
        ja = f"保護された設定 {self.key} は遠隔で変更できません ({self.reason_ja})"
        en = f"protected setting {self.key} cannot be changed remotely ({self.reason_en})"
        if self.how == "present":
            ja += "。運用センターの設定から省略してください (機器の値のままになります)"
            en += "; leave it out of the revision, the box keeps its own value"
        elif self.how == "shape":
            ja += "。辞書 (mapping) で指定してください"
            en += "; expected a mapping"
        return f"{ja} / {en}"

    def as_dict(self) -> dict[str, str]:
        return {"key": self.key, "class": self.kind, "reason_ja": self.reason_ja, "reason_en": self.reason_en,
                "how": self.how, "message": self.message()}


def reason_for(path: tuple[str, ...]) -> tuple[str, str, str]:
    """(class, Japanese, English): why ``path`` is local-only."""
    best: tuple[int, tuple[str, str, str]] = (-1, _DEFAULT_REASON)
    for prefix, kind, ja, en in _REASONS:
        if path[:len(prefix)] == prefix and len(prefix) > best[0]:
            best = (len(prefix), (kind, ja, en))
    return best[1]


_DEFAULTS: dict[str, Any] | None = None


def _default(path: tuple[str, ...]) -> Any:
    """The schema default of ``path`` (what a box that leaves the key out runs with), or _MISSING."""
    global _DEFAULTS
    if _DEFAULTS is None:
        from agent.config import AgentConfig

        _DEFAULTS = AgentConfig().model_dump()
    node: Any = _DEFAULTS
    for k in path:
        if not isinstance(node, dict) or k not in node:
            return _MISSING
        node = node[k]
    return node


def _changed(rev: Any, loc: Any, path: tuple[str, ...]) -> list[tuple[str, ...]]:
    """The keys under ``path`` that ``rev`` sets to something else than the box runs with.

    A key the box leaves out runs with the schema default; a mapping is compared key by key, so
    keys the revision leaves out are no change (the box keeps them)."""
    if loc is _MISSING:
        loc = _default(path)
    if isinstance(rev, dict) and (isinstance(loc, dict) or loc is _MISSING):
        base = loc if isinstance(loc, dict) else {}
        return [p for k, v in rev.items() for p in _changed(v, base.get(k, _MISSING), (*path, str(k)))]
    if loc is _MISSING or rev != loc:
        return [path]
    return []


def _present(rev: Any, path: tuple[str, ...]) -> list[tuple[str, ...]]:
    """Every leaf key ``rev`` holds under ``path``."""
    if isinstance(rev, dict):
        return [p for k, v in rev.items() for p in _present(v, (*path, str(k)))]
    return [path]


def _refusal(path: tuple[str, ...], how: str) -> Refusal:
    kind, ja, en = reason_for(path)
    return Refusal(".".join(path), kind, ja, en, how)


def split_revision(revision: dict[str, Any], local: dict[str, Any] | None, *,
                   allowed: dict[str, Any] = REMOTE_ALLOWED) -> tuple[dict[str, Any], list[Refusal]]:
    """Merge ``revision`` with the box's raw config ``local`` under the allow list.

    Returns (merged document, refusals). The merged document has the revision's allowed keys and
    the box's local-only keys (deep copies). ``local=None``: nobody knows the box's values, so
    every local-only key the revision holds is refused (``how="present"``)."""
    refused: list[Refusal] = []
    strict = local is None

    def merge_map(rev: Any, loc: Any, rule: dict[str, Any], path: tuple[str, ...]) -> Any:
        if rev is not _MISSING and rev is not None and not isinstance(rev, dict):
            refused.append(_refusal(path, "shape"))
            return loc
        rev_map = rev if isinstance(rev, dict) else {}
        loc_map = loc if isinstance(loc, dict) else {}
        out: dict[Any, Any] = {}
        for k in [*rev_map, *(k for k in loc_map if k not in rev_map)]:
            p = (*path, str(k))
            sub = rule.get(k, False) if isinstance(k, str) else False
            r, lv = rev_map.get(k, _MISSING), loc_map.get(k, _MISSING)
            if sub is True:
                v = r if r is _MISSING else copy.deepcopy(r)
            elif sub is False:
                if r is not _MISSING:
                    bad = _present(r, p) if strict else _changed(r, lv, p)
                    refused.extend(_refusal(q, "present" if strict else "changed") for q in bad)
                v = lv if lv is _MISSING else copy.deepcopy(lv)
            else:
                v = merge_map(r, lv, sub, p)
            if v is not _MISSING:
                out[k] = v
        if not out and rev is _MISSING and not isinstance(loc, dict):
            return _MISSING
        if not out and rev is None and not loc_map:
            return None
        return out

    merged = merge_map(revision, {} if local is None else local, allowed, ())
    return (merged if isinstance(merged, dict) else {}), refused

