"""``vcr-agent setup``: from the settings sheet to a box that protects the office and reports to the center.

Steps (each printed in Japanese with English alongside):

1. the settings sheet: from the operations center by the box's serial (authenticated by the
   activation code the customer types, or by the box's credential once activated), from a file
   (``--sheet``), interactively (``--interactive``), or the one already in the configuration. To reach
   the center before the box has its fixed address, a temporary DHCP address is taken on the port
   that gets an answer and given back afterwards (``agent/link/netprobe.py``).
2. the sheet is checked (``filters/settingsheet.py``, the same checks as the center's).
3. which port goes to the router: the port on which the sheet's gateway answers ARP is the WAN port
   (else the one that got the DHCP answer); without an answer the configured names are kept, and
   said so. Skipped when the ports are already in the bridge (a second run).
4. the configuration is written (``settings_sheet``, ``bridge.lan_port/wan_port``, ``center``) after
   it validates; the first version is kept as ``<config>.before-setup``. Unchanged: not rewritten.
5. the bridge comes up (``BridgeControl.up``: idempotent).
6. the port check (table 4): each blocked port is named with its fix.
7. activation with the code, unless the box is already activated for this serial.

Then it says what is left to do. Running it again is safe: nothing that is already done is redone.
"""
from __future__ import annotations

import copy
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from agent.config import AgentConfig, load_config, load_yaml
from filters.engine import ConfigError
from filters.settingsheet import LABELS, SheetError, agent_section, check_sheet, from_agent_section

CODE_ENV = "VCR_ACTIVATION_CODE"


class SetupError(Exception):
    """Setup cannot go on; the message is for people (Japanese / English)."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class SetupOptions:
    config: str
    serial: str = ""
    code: str = ""
    sheet_file: str = ""
    interactive: bool = False
    refetch: bool = False
    lan_port: str = ""
    wan_port: str = ""
    detect: bool = True
    dhcp: bool = True
    portcheck: bool = True


@dataclass
class SetupReport:
    steps: list[dict[str, Any]] = field(default_factory=list)
    todo: list[tuple[str, str]] = field(default_factory=list)
    ok: bool = True

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "steps": self.steps, "todo": [{"ja": j, "en": e} for j, e in self.todo]}


class Setup:
    def __init__(self, opts: SetupOptions, *, out: Callable[[str], None] = print,
                 ask: Callable[[str], str] | None = None) -> None:
        self.opts = opts
        self.out = out
        self.ask = ask or input
        self.path = Path(opts.config)
        self.report = SetupReport()
        self.wan_hint: str | None = None
        self.center_part: dict[str, Any] = {}

    # ------------------------------------------------------------------------- helpers
    def say(self, n: int, ja: str, en: str) -> None:
        self.out(f"[{n}/7] {ja} / {en}")

    def note(self, ja: str, en: str = "") -> None:
        self.out(f"      {ja}" + (f" / {en}" if en else ""))

    def step(self, name: str, ok: bool, detail: str = "") -> None:
        self.report.steps.append({"step": name, "ok": ok, "detail": detail})
        if not ok:
            self.report.ok = False

    def raw(self) -> dict[str, Any]:
        data = load_yaml(self.path) if self.path.exists() else {}
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise SetupError(f"設定ファイルの形式が不正です / {self.path}: expected a mapping", 2)
        return data

    # ------------------------------------------------------------------------- run
    def run(self) -> SetupReport:
        data = self.raw()
        try:
            base = load_config(self.path)
        except ConfigError as exc:
            raise SetupError(f"出荷時の設定ファイルにエラーがあります / the box's configuration has an error: {exc}", 2)
        from agent.link.center import default_serial, load_state

        serial = self.opts.serial or default_serial(base)
        state = None
        try:
            state = load_state(base.center.state_file)
        except Exception:  # noqa: BLE001 - an unreadable credential counts as none
            state = None

        # 1. the sheet
        self.say(1, "設定シートの取得", "getting the settings sheet")
        fields, source = self.get_sheet(data, base, serial, state)
        self.note(f"取得元: {source[0]}", f"source: {source[1]}")
        self.step("sheet", True, source[1])

        # 2. check it
        self.say(2, "設定シートの確認", "checking the settings sheet")
        try:
            sheet = check_sheet(fields, require_center_fields=False)
        except SheetError as exc:
            self.out("      設定シートに問題があります / the settings sheet has problems:")
            for p in exc.problems:
                self.out(f"        - {p.field}: {p.ja}")
                self.out(f"          {p.en}")
            raise SetupError("設定シートを直してからもう一度実行してください / fix the sheet and run again "
                             "(何も変更していません / nothing was changed)", 2) from None
        self.note(f"UTM {sheet['management_ip']}  ゲートウェイ {sheet['gateway']}  DNS {', '.join(sheet['dns'])}",
                  f"box {sheet['management_ip']}, gateway {sheet['gateway']}, DNS {', '.join(sheet['dns'])}")
        self.step("check", True)

        # 3. ports
        self.say(3, "LAN 側とルーター側のポートの検出", "detecting the LAN port and the router port")
        lan, wan = self.detect_ports(base, sheet)
        self.step("ports", True, f"lan={lan} wan={wan}")

        # 4. config
        self.say(4, "設定の書き込み", "writing the configuration")
        cfg = self.write_config(data, sheet, lan, wan, serial)
        self.step("config", True, str(self.path))

        # 5. bridge
        self.say(5, "ブリッジの起動", "bringing the bridge up")
        from agent.dataplane.bridge import BridgeControl, BridgeError

        try:
            BridgeControl(cfg).up()
        except BridgeError as exc:
            self.step("bridge", False, str(exc))
            raise SetupError(f"ブリッジを起動できません / the bridge did not come up: {exc}") from None
        self.note(f"{cfg.bridge.name} ({lan} + {wan}) 起動、管理アドレス {sheet['management_ip']}",
                  f"{cfg.bridge.name} ({lan} + {wan}) up, management address {sheet['management_ip']}")
        self.step("bridge", True)

        # 6. port check
        self.say(6, "通信ポートの確認 (ポートチェック)", "checking the outbound ports (port check)")
        pc_ok = self.portcheck(cfg)

        # 7. activation
        self.say(7, "アクティベーション", "activation")
        self.activate(cfg, serial, pc_ok)
        self.finish(cfg)
        return self.report

    # ------------------------------------------------------------------------- 1. the sheet
    def get_sheet(self, data: dict[str, Any], base: AgentConfig, serial: str,
                  state: dict[str, Any] | None) -> tuple[dict[str, Any], tuple[str, str]]:
        o = self.opts
        if o.sheet_file:
            try:
                loaded = yaml.safe_load(Path(o.sheet_file).read_text(encoding="utf-8"))
            except (OSError, yaml.YAMLError) as exc:
                raise SetupError(f"設定シートのファイルを読めません / cannot read the sheet {o.sheet_file}: {exc}", 2)
            if isinstance(loaded, dict) and isinstance(loaded.get("settings_sheet"), dict):  # a config made by the center
                return from_agent_section(loaded["settings_sheet"]), (f"ファイル {o.sheet_file}", f"file {o.sheet_file}")
            if isinstance(loaded, dict) and hasattr(loaded.get("install_date"), "isoformat"):
                loaded["install_date"] = loaded["install_date"].isoformat()
            return loaded, (f"ファイル {o.sheet_file}", f"file {o.sheet_file}")
        if o.interactive:
            return self.prompt(data.get("settings_sheet") or {}), ("入力", "typed in")
        if isinstance(data.get("settings_sheet"), dict) and not o.refetch:
            return from_agent_section(data["settings_sheet"]), ("設定ファイルの設定シート",
                                                                 "the sheet already in the configuration")
        if not base.center.url:
            raise SetupError("設定シートがありません。運用センターの URL (center.url) も無いため取得できません。"
                             "--sheet FILE か --interactive で入力してください / no settings sheet, and no center.url "
                             "to fetch it from: give it with --sheet FILE or --interactive", 2)
        if not serial:
            raise SetupError("シリアル番号がわかりません。--serial で指定してください / the box's serial number is "
                             "unknown: give --serial", 2)
        token = state.get("token") if state and state.get("serial") == serial else None
        code = o.code or os.environ.get(CODE_ENV, "")
        if not token and not code:
            if sys.stdin.isatty():
                code = self.ask("アクティベーションコード (クイックスタートガイド記載) / activation code (on the "
                                "quick-start guide): ").strip()
            if not code:
                raise SetupError("アクティベーションコードが必要です (--code) / the activation code is needed (--code)", 2)
            self.opts.code = code
        self.opts.code = code
        reply = self.fetch(base, serial, code=code, token=token)
        cfg_part = reply.get("config") or {}
        self.center_part = cfg_part.get("center") or {}
        return reply.get("sheet") or from_agent_section(cfg_part.get("settings_sheet") or {}), \
            (f"運用センター (シリアル {serial}, 契約 {reply.get('contract_id')})",
             f"the operations center (serial {serial}, contract {reply.get('contract_id')})")

    def fetch(self, base: AgentConfig, serial: str, *, code: str, token: str | None) -> dict[str, Any]:
        from agent.link.center import CenterClient, CenterError, Unreachable

        def ask_center() -> dict[str, Any]:
            c = base.center
            client = CenterClient(c.url, c.ca_file, timeout=c.request_timeout, user_agent="vcr-agent-setup")
            try:
                body: dict[str, Any] = {"serial": serial}
                if code:
                    body["activation_code"] = code
                return client.request("POST", "/provision", token=token if not code else None, body=body).body
            finally:
                client.close()

        try:
            return ask_center()
        except Unreachable as first:
            if not self.opts.dhcp or _has_default_route():
                raise SetupError(f"運用センターに接続できません / cannot reach the operations center ({base.center.url}): "
                                 f"{first}") from None
        except CenterError as exc:
            raise self._refused(exc) from None
        # No network yet: a temporary DHCP address on the port that gets an answer.
        self.note("一時的な DHCP アドレスで運用センターに接続します", "reaching the center with a temporary DHCP address")
        with TemporaryNetwork(base, self.out) as tmp:
            if tmp.lease is None:
                raise SetupError("運用センターに接続できません (DHCP の応答もありません)。--sheet FILE か --interactive で"
                                 "設定シートを入力してください / cannot reach the operations center and no DHCP server "
                                 "answered: give the sheet with --sheet FILE or --interactive") from None
            self.wan_hint = tmp.lease.port
            try:
                return ask_center()
            except Unreachable as exc:
                raise SetupError(f"運用センターに接続できません / cannot reach the operations center ({base.center.url}) "
                                 f"from {tmp.lease.address}: {exc}") from None
            except CenterError as exc:
                raise self._refused(exc) from None

    @staticmethod
    def _refused(exc: Any) -> SetupError:
        if exc.status == 403:
            return SetupError("アクティベーションコードとシリアル番号に合う設定シートがありません。コードを確認するか運用センターに"
                              "お問い合わせください / no settings sheet matches this activation code and serial: check "
                              f"the code or ask the operations center [{exc.message}]", 2)
        return SetupError(f"運用センターが設定シートを返しませんでした / the center did not return the sheet: {exc}")

    def prompt(self, current: dict[str, Any]) -> dict[str, Any]:
        self.out("設定シートの内容を入力してください (Enter で [ ] 内の値) / type in the settings sheet (Enter keeps [ ])")
        out: dict[str, Any] = {}
        for key in ("install_address", "management_ip", "gateway", "dns", "management_ipv6", "gateway_ipv6", "contact"):
            ja, en = LABELS[key]
            cur = current.get(key)
            if isinstance(cur, list):
                cur = ", ".join(cur)
            hint = {"management_ip": " (例 / e.g. 192.0.2.2/24)", "dns": " (カンマ区切り / comma-separated)",
                    "management_ipv6": " (任意 / optional)", "gateway_ipv6": " (任意 / optional)"}.get(key, "")
            text = self.ask(f"  {ja} / {en}{hint} [{cur or ''}]: ").strip() or (cur or "")
            if text:
                out[key] = text
        return out

    # ------------------------------------------------------------------------- 3. ports
    def detect_ports(self, base: AgentConfig, sheet: dict[str, Any]) -> tuple[str, str]:
        from agent.link import netprobe

        b = base.bridge
        lan, wan = self.opts.lan_port or b.lan_port, self.opts.wan_port or b.wan_port
        if self.opts.lan_port or self.opts.wan_port or not self.opts.detect:
            self.note(f"指定のポートを使います: LAN {lan}, ルーター側 {wan}", f"using the given ports: LAN {lan}, router {wan}")
            return lan, wan
        if netprobe.in_bridge(lan) == b.name and netprobe.in_bridge(wan) == b.name:
            self.note(f"ブリッジ {b.name} は構成済みです。設定のポートを使います: LAN {lan}, ルーター側 {wan}",
                      f"the bridge {b.name} is already built: keeping LAN {lan}, router {wan}")
            return lan, wan
        gw, me = sheet["gateway"], sheet["management_ip"].split("/")[0]
        answers: dict[str, str | None] = {}
        for port in (lan, wan):
            try:
                if netprobe.in_bridge(port):
                    raise netprobe.ProbeError(f"{port} is in bridge {netprobe.in_bridge(port)}")
                netprobe.bring_up(port)
                answers[port] = netprobe.arp_probe(port, gw, me, timeout=1.5)
            except netprobe.ProbeError as exc:
                self.note(f"{port} を調べられません", f"cannot probe {port}: {exc}")
                answers[port] = None
        seen = [p for p, mac in answers.items() if mac]
        if len(seen) == 1:
            router = seen[0]
            self.note(f"ゲートウェイ {gw} は {router} 側で応答しました ({answers[router]})",
                      f"the gateway {gw} answered on {router} ({answers[router]})")
        elif len(seen) == 2:
            self.note(f"ゲートウェイ {gw} が両方のポートで応答しました。配線がループしていないか確認してください。設定のポートを使います",
                      f"the gateway {gw} answered on both ports: check the cabling for a loop; keeping the configured ports")
            return lan, wan
        elif self.wan_hint in (lan, wan):
            router = self.wan_hint
            self.note(f"ゲートウェイ {gw} は ARP に応答しませんでした。DHCP が応答した {router} をルーター側とします",
                      f"the gateway {gw} did not answer ARP; taking {router}, where DHCP answered, as the router port")
        else:
            self.note(f"ゲートウェイ {gw} がどちらのポートでも応答しません。設定のポート (LAN {lan}, ルーター側 {wan}) を"
                      "使います。ルーターとケーブルを確認してください",
                      f"the gateway {gw} answered on neither port: keeping the configured ports (LAN {lan}, router "
                      f"{wan}); check the router and the cables")
            return lan, wan
        if router == wan:
            self.note(f"配線は設定どおりです: LAN {lan}, ルーター側 {wan}", f"cabled as configured: LAN {lan}, router {wan}")
            return lan, wan
        self.note(f"ポートを入れ替えます: LAN {wan}, ルーター側 {lan} (ケーブルの差し替えは不要です)",
                  f"swapping the ports: LAN {wan}, router {lan} (no need to move the cables)")
        return wan, lan

    # ------------------------------------------------------------------------- 4. config
    def write_config(self, data: dict[str, Any], sheet: dict[str, Any], lan: str, wan: str, serial: str) -> AgentConfig:
        new = copy.deepcopy(data)
        new["settings_sheet"] = agent_section(sheet)
        bridge = dict(new.get("bridge") or {})
        bridge.update(lan_port=lan, wan_port=wan)
        new["bridge"] = bridge
        center = dict(new.get("center") or {})
        fetched = self.center_part
        if center.get("url") or fetched.get("url"):
            center["enabled"] = True
            if not center.get("url") and fetched.get("url"):
                center["url"] = fetched["url"]
        if serial:
            center["serial"] = serial
        new["center"] = center
        if new == data:
            self.note("変更はありません", f"unchanged: {self.path}")
            return load_config(self.path)
        text = ("# vcr-agent の設定 (vcr-agent setup が設定シートから更新) / vcr-agent configuration "
                "(updated from the settings sheet by vcr-agent setup)\n"
                + yaml.safe_dump(new, allow_unicode=True, sort_keys=False))
        tmp = self.path.with_name(self.path.name + ".setup-new")
        tmp.write_text(text, encoding="utf-8")
        try:
            cfg = load_config(tmp)
        except ConfigError as exc:
            tmp.unlink(missing_ok=True)
            raise SetupError(f"新しい設定が検証できません (変更していません) / the new configuration does not validate "
                             f"(nothing changed): {exc}", 2) from None
        keep = self.path.with_name(self.path.name + ".before-setup")
        if self.path.exists() and not keep.exists():
            keep.write_bytes(self.path.read_bytes())
            self.note(f"元の設定を保存しました: {keep}", f"the previous configuration is kept as {keep}")
        os.chmod(tmp, 0o644)
        os.replace(tmp, self.path)
        self.note(f"書き込みました: {self.path}", f"written: {self.path}")
        return cfg

    # ------------------------------------------------------------------------- 6. port check
    def portcheck(self, cfg: AgentConfig) -> bool:
        from agent.link.portcheck import endpoints, run_portcheck

        if not self.opts.portcheck or not endpoints(cfg):
            self.note("ポートチェックは省略しました", "port check skipped")
            self.step("portcheck", True, "skipped")
            return True
        res = None
        for attempt in range(3):  # the router may still be learning the box's address
            res = run_portcheck(cfg)
            if res.ok:
                break
            time.sleep(1.0 + attempt)
        assert res is not None
        for f in res.features():
            mark = "OK" if f["ok"] else "NG"
            self.out(f"      {mark}  {f['name_ja']} / {f['name_en']}")
        if res.ok:
            self.note("サービスに必要な通信はすべて可能です", "everything the service needs is reachable")
        for fx in res.fixes():
            self.out(f"      ! {fx['check'].upper()}: {fx['ja']}")
            self.out(f"        {fx['en']}")
            self.report.todo.append((fx["ja"], fx["en"]))
        self.step("portcheck", res.ok, ", ".join(f["check"] for f in res.fixes()))
        return res.ok

    # ------------------------------------------------------------------------- 7. activation
    def activate(self, cfg: AgentConfig, serial: str, pc_ok: bool) -> None:
        from agent.link.center import ActivationError, LinkConfigError, activate, load_state

        try:
            state = load_state(cfg.center.state_file)
        except LinkConfigError:
            state = None
        if state and state.get("serial") == serial and state.get("device_id"):
            self.note(f"アクティベーション済みです (機器 {state['device_id']}, 契約 {state.get('contract_id')})。"
                      "再アクティベーションはしません",
                      f"already activated (device {state['device_id']}, contract {state.get('contract_id')}); "
                      "not activated again")
            self.step("activate", True, "already")
            return
        code = self.opts.code or os.environ.get(CODE_ENV, "")
        if not code:
            self.note("アクティベーションコードがないため未実施です", "not done: no activation code")
            self.report.todo.append((f"アクティベーション: vcr-agent activate コード --serial {serial}",
                                     f"activate: vcr-agent activate CODE --serial {serial}"))
            self.step("activate", False, "no code")
            return
        try:
            st = activate(cfg, code=code, serial=serial)
        except (ActivationError, LinkConfigError) as exc:
            self.note(f"アクティベーションできません: {exc}", "activation failed")
            if not pc_ok:
                self.note("先にポートチェックの問題を直してください", "fix the port check problems first")
            self.report.todo.append((f"アクティベーション: vcr-agent setup をもう一度 ({exc})",
                                     "activation: run vcr-agent setup again"))
            self.step("activate", False, str(exc))
            return
        self.note(f"アクティベーション完了: 機器 {st['device_id']}, 契約 {st['contract_id']}",
                  f"activated: device {st['device_id']}, contract {st['contract_id']}")
        self.step("activate", True, str(st["device_id"]))

    # ------------------------------------------------------------------------- the end
    def finish(self, cfg: AgentConfig) -> None:
        import json
        import signal

        running = False
        try:
            pid = int(json.loads((Path(cfg.logging.dir) / "status.json").read_text())["pid"])
            os.kill(pid, signal.SIGHUP)
            running = True
            self.note(f"実行中のエージェントに新しい設定を読み込ませました (pid {pid})", f"the running agent reloads (pid {pid})")
        except (OSError, ValueError, KeyError):
            pass
        if not running:
            self.report.todo.append(("エージェントを起動してください: systemctl enable --now vcr-agent",
                                     "start the agent: systemctl enable --now vcr-agent"))
        self.report.todo.append(("LAN ケーブルをつないで PC からインターネットが使えることを確認してください。運用センターが"
                                 "通信を確認すると「設置確認完了」となります",
                                 "connect the LAN cable and check that the PCs reach the internet; the operations "
                                 "center marks the installation confirmed once it sees the traffic"))
        self.out("")
        self.out("設定は完了しました / setup finished" if self.report.ok else
                 "設定は完了しましたが、残りの作業があります / setup finished with work left")
        self.out("残りの作業 / what is left to do:")
        for ja, en in self.report.todo:
            self.out(f"  - {ja}")
            self.out(f"    {en}")


def _has_default_route() -> bool:
    try:
        out = subprocess.run(["ip", "-4", "route", "show", "default"], capture_output=True, text=True, timeout=10).stdout
    except OSError:
        return False
    return bool(out.strip())


class TemporaryNetwork:
    """A DHCP address on the first port that gets one (ports tried in config order, WAN port first), with a
    default route and the DNS servers it came with; all removed again (and the lease released) on exit."""

    def __init__(self, base: AgentConfig, out: Callable[[str], None]) -> None:
        self.base = base
        self.out = out
        self.lease: Any = None
        self.resolv = Path(base.bridge.resolv_conf)
        self.resolv_old: str | None = None
        self.added: list[list[str]] = []

    def __enter__(self) -> "TemporaryNetwork":
        from agent.link import netprobe

        for port in (self.base.bridge.wan_port, self.base.bridge.lan_port):
            try:
                if netprobe.in_bridge(port):
                    continue
                netprobe.bring_up(port)
                time.sleep(0.2)
                self.lease = netprobe.dhcp_lease(port, timeout=4.0)
            except netprobe.ProbeError as exc:
                self.out(f"      {port}: {exc}")
                continue
            if self.lease is not None:
                break
        if self.lease is None:
            return self
        lease = self.lease
        self.out(f"      一時アドレス {lease.address} ({lease.port}, DHCP サーバー {lease.server_id}) / temporary address "
                 f"{lease.address} on {lease.port} from DHCP server {lease.server_id}")
        self._ip(["addr", "add", lease.address, "dev", lease.port], ["addr", "del", lease.address, "dev", lease.port])
        if lease.router:
            self._ip(["route", "add", "default", "via", lease.router, "dev", lease.port],
                     ["route", "del", "default", "via", lease.router, "dev", lease.port])
        if lease.dns:
            try:
                self.resolv_old = self.resolv.read_text() if self.resolv.exists() else ""
                self.resolv.write_text("# vcr-agent setup: temporary (DHCP)\n" + "".join(f"nameserver {d}\n" for d in lease.dns))
            except OSError:
                self.resolv_old = None
        return self

    def _ip(self, up: list[str], down: list[str]) -> None:
        r = subprocess.run(["ip", "-4", *up], capture_output=True, text=True, timeout=10)
        if r.returncode == 0:
            self.added.append(down)

    def __exit__(self, *exc: object) -> None:
        from agent.link import netprobe

        for down in reversed(self.added):
            subprocess.run(["ip", "-4", *down], capture_output=True, timeout=10)
        if self.resolv_old is not None:
            try:
                self.resolv.write_text(self.resolv_old)
            except OSError:
                pass
        if self.lease is not None:
            netprobe.dhcp_release(self.lease)
            self.out(f"      一時アドレスを返却しました / the temporary address was given back ({self.lease.address})")
