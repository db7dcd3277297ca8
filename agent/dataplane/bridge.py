"""Bringing the bridge up and down: br0, management address, sysctls, ipsets and the agent's chains.

``up`` records what it changed in a state file; ``down`` undoes exactly that and nothing else.
Running ``up`` again re-installs the ruleset atomically and adds only what is missing.
"""
from __future__ import annotations

import ipaddress
import json
import logging
import os
import re
import shlex
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

from agent.config import AgentConfig
from agent.engines import kernel_stream_depth
from agent.dataplane.ruleset import (BLOCK_SETS, CHAINS, MARK_ACCEPT, MARK_MASK, DataplaneSpec, input_jump_rule, jump_rule,
                                    pf_worker_chain, render)
from filters.engine import KernelSet
from filters.firewall import Policy, parse_policy
from filters.registry import kernel_sets
from filters.packet import Side

log = logging.getLogger(__name__)

SYSCTLS = {
    "net/bridge/bridge-nf-call-iptables": "1",
    "net/bridge/bridge-nf-call-ip6tables": "1",
    "net/netfilter/nf_conntrack_acct": "1",
}


class BridgeError(RuntimeError):
    """A step of bringing the bridge up or down failed (message in Japanese and English)."""


def run(argv: list[str], *, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    log.debug("run: %s", " ".join(argv))
    try:
        res = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        raise BridgeError(f"コマンドが見つかりません / command not found: {argv[0]}") from None
    if check and res.returncode != 0:
        raise BridgeError(f"{' '.join(argv[:4])} failed: {res.stderr.strip() or res.stdout.strip()}")
    return res


def spec_from_config(cfg: AgentConfig, needs: tuple[bool, bool] = (True, True)) -> DataplaneSpec:
    """``needs``: (packets, empty_acks) of the loaded engines (filters.registry.dataplane_needs);
    the configuration alone cannot tell (the rules are not loaded), so by default everything."""
    dp = cfg.dataplane
    return DataplaneSpec(
        bridge=cfg.bridge.name,
        lan_port=cfg.bridge.lan_port,
        wan_port=cfg.bridge.wan_port,
        queue_base=dp.queue_base,
        workers=dp.worker_count(),
        fail_open=dp.fail_mode == "open",
        nflog_group=dp.nflog_group,
        stream_depth=kernel_stream_depth(cfg),
        mail_port=mail_listen_port(cfg),
        inspect=needs[0],
        empty_acks=needs[1],
        bulk_after=dp.bulk_queue_kib * 1024,
    )


def mail_listen_port(cfg: AgentConfig) -> int:
    """The mail proxy's port when engines.mail is enabled, else 0."""
    section = cfg.engines.get("mail") or {}
    if section.get("enabled") is not True:
        return 0
    from filters.mail.engine import MailConfig

    return int(section.get("listen_port", MailConfig.model_fields["listen_port"].default))


def firewall_policy(cfg: AgentConfig) -> Policy:
    section = cfg.engines.get("firewall") or {}
    if section.get("enabled", True) is False:
        return Policy((), "allow", "allow", {})
    return parse_policy(section)


def port_sides(cfg: AgentConfig) -> dict[int, Side]:
    """Interface index of each bridge port -> the side (zone) it faces."""
    out = {}
    for name, side in ((cfg.bridge.lan_port, Side.LAN), (cfg.bridge.wan_port, Side.WAN)):
        try:
            out[socket.if_nametoindex(name)] = side
        except OSError:
            log.warning("bridge port %s not found; its packets get side 'unknown'", name)
    return out


def blocklist(cfg: AgentConfig) -> list[str]:
    section = cfg.engines.get("firewall") or {}
    return [str(x) for x in section.get("blocklist", []) or []]


@dataclass
class BridgeState:
    """What ``up`` changed, so that ``down`` undoes exactly that."""

    created_bridge: bool = False
    addresses: list[str] = field(default_factory=list)
    routes: list[list[str]] = field(default_factory=list)
    sysctls: dict[str, str] = field(default_factory=dict)
    resolv_backup: str | None = None
    resolv_path: str = ""
    bridge: str = ""
    ports: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path) -> "BridgeState":
        try:
            return cls(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            return cls()

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.__dict__, indent=1))
        os.replace(tmp, path)


def _link_exists(name: str) -> bool:
    return run(["ip", "link", "show", "dev", name], check=False).returncode == 0


def _has_address(dev: str, cidr: str) -> bool:
    out = run(["ip", "-o", "addr", "show", "dev", dev], check=False).stdout
    return f" {cidr} " in out


def _sysctl(key: str, value: str | None = None) -> str:
    p = Path("/proc/sys") / key
    old = p.read_text().strip()
    if value is not None and old != value:
        p.write_text(value)
    return old


class BridgeControl:
    def __init__(self, cfg: AgentConfig, needs: tuple[bool, bool] = (True, True)) -> None:
        self.cfg = cfg
        self.spec = spec_from_config(cfg, needs)
        self.state_path = Path(cfg.bridge.state_file)

    # -- up ------------------------------------------------------------------------------
    def up(self) -> None:
        if self.cfg.settings_sheet is None:
            raise BridgeError("設定シート (settings_sheet) がありません / the config has no settings_sheet section")
        rulesets = self.prepare_ruleset()  # everything that can fail on bad input fails here, before any change
        st = BridgeState.load(self.state_path)
        b = self.cfg.bridge
        for port in (b.lan_port, b.wan_port):
            if not _link_exists(port):
                raise BridgeError(f"ポート {port} が見つかりません。ケーブルとポート名を確認してください / port {port} not found")
        st.bridge, st.ports = b.name, [b.lan_port, b.wan_port]
        if not _link_exists(b.name):
            run(["ip", "link", "add", b.name, "type", "bridge", "stp_state", "0", "forward_delay", "0"])
            st.created_bridge = True
            st.save(self.state_path)
        for port in (b.lan_port, b.wan_port):
            run(["ip", "link", "set", port, "master", b.name])
            run(["ip", "link", "set", port, "up"])
        run(["ip", "link", "set", b.name, "up"])
        self._sysctls(st)
        self._addresses(st)
        self._resolv(st)
        st.save(self.state_path)
        self.install_ruleset(rulesets)
        log.info("bridge %s up (%s + %s), ruleset installed", b.name, b.lan_port, b.wan_port)

    def _sysctls(self, st: BridgeState) -> None:
        for key, val in SYSCTLS.items():
            try:
                old = _sysctl(key, val)
            except OSError as exc:
                raise BridgeError(f"sysctl {key} を設定できません / cannot set sysctl {key}: {exc}") from None
            st.sysctls.setdefault(key, old)
        _sysctl(f"net/ipv6/conf/{self.cfg.bridge.name}/accept_dad", "0")

    def _addresses(self, st: BridgeState) -> None:
        sheet = self.cfg.settings_sheet
        assert sheet is not None
        dev = self.cfg.bridge.name
        for cidr, gw, fam in ((sheet.management_ip, sheet.gateway, "-4"), (sheet.management_ipv6, sheet.gateway_ipv6, "-6")):
            if cidr and not _has_address(dev, cidr):
                run(["ip", fam, "addr", "add", cidr, "dev", dev])
                st.addresses.append(cidr)
            if gw:
                if not run(["ip", fam, "route", "show", "default"], check=False).stdout.strip():
                    route = ["default", "via", gw, "dev", dev]
                    run(["ip", fam, "route", "add", *route])
                    st.routes.append([fam, *route])

    def _resolv(self, st: BridgeState) -> None:
        sheet = self.cfg.settings_sheet
        if sheet is None or not sheet.dns:
            return
        path = Path(self.cfg.bridge.resolv_conf)
        text = "# written by vcr-agent from the settings sheet\n" + "".join(f"nameserver {a}\n" for a in sheet.dns)
        if st.resolv_backup is None and not st.resolv_path:
            st.resolv_backup = path.read_text() if path.exists() else ""
            st.resolv_path = str(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    def prepare_ruleset(self) -> dict[int, str]:
        """Render both families' rules and have the kernel tools test them; nothing is changed."""
        policy = firewall_policy(self.cfg)
        try:
            texts = {fam: render(self.spec, policy, fam) for fam in (4, 6)}
        except ValueError as exc:
            raise BridgeError(f"ファイアウォール規則を変換できません / cannot compile the firewall policy: {exc}") from None
        self.ensure_ipsets()  # the test below resolves set names
        for tool in ("iptables", "ip6tables"):
            # the workers' prefilter chains (agent/dataplane/prefilter.py), which VCR-PF jumps to:
            # created here, never flushed here (each worker owns its own)
            for i in range(self.spec.workers):
                run([tool, "-w", "-N", pf_worker_chain(i)], check=False)
        for fam, restore in ((4, "iptables-restore"), (6, "ip6tables-restore")):
            run([restore, "--noflush", "--test", "-w"], input=texts[fam])
        return texts

    def install_ruleset(self, texts: dict[int, str] | None = None) -> None:
        """(Re)install the agent's chains atomically, ipsets first, then the FORWARD jumps."""
        texts = texts or self.prepare_ruleset()
        update_blocklist(blocklist(self.cfg))
        for fam, restore, tool in ((4, "iptables-restore", "iptables"), (6, "ip6tables-restore", "ip6tables")):
            run([restore, "--noflush", "-w"], input=texts[fam])
            jump = jump_rule(self.spec)
            for args in forward_jumps(run([tool, "-w", "-S", "FORWARD"], check=False).stdout):
                if args != jump:  # an older version's jump (an upgrade without bridge down)
                    run([tool, "-w", "-D", "FORWARD", *args], check=False)
            if run([tool, "-w", "-C", "FORWARD", *jump], check=False).returncode != 0:
                run([tool, "-w", "-I", "FORWARD", "1", *jump])
            # the box's own input policy (VCR-IN), first in INPUT for the bridge
            jump = input_jump_rule(self.spec)
            for args in input_jumps(run([tool, "-w", "-S", "INPUT"], check=False).stdout):
                if args != jump:  # the bridge was renamed
                    run([tool, "-w", "-D", "INPUT", *args], check=False)
            if run([tool, "-w", "-C", "INPUT", *jump], check=False).returncode != 0:
                run([tool, "-w", "-I", "INPUT", "1", *jump])

    def ensure_ipsets(self) -> None:
        for fam in (4, 6):
            family = "inet" if fam == 4 else "inet6"
            run(["ipset", "create", BLOCK_SETS[fam], "hash:net", "family", family, "-exist"])
            for ks in kernel_sets():
                if ks.family == fam:
                    run(["ipset", "create", ks.name, ks.kind, "family", family, "maxelem", str(ks.maxelem),
                         *(["counters"] if ks.counters else []), "-exist"])

    # -- down ----------------------------------------------------------------------------
    def down(self) -> None:
        st = BridgeState.load(self.state_path)
        self.remove_ruleset()
        for name in (*BLOCK_SETS.values(), *(ks.name for ks in kernel_sets())):
            run(["ipset", "destroy", name], check=False)
        dev = st.bridge or self.cfg.bridge.name
        for route in st.routes:
            run(["ip", route[0], "route", "del", *route[1:]], check=False)
        for cidr in st.addresses:
            run(["ip", "addr", "del", cidr, "dev", dev], check=False)
        if st.resolv_path and st.resolv_backup is not None:
            Path(st.resolv_path).write_text(st.resolv_backup)
        if st.created_bridge:
            for port in st.ports:
                run(["ip", "link", "set", port, "nomaster"], check=False)
            run(["ip", "link", "del", dev], check=False)
        for key, old in st.sysctls.items():
            try:
                _sysctl(key, old)
            except OSError:
                log.warning("could not restore sysctl %s", key)
        self.state_path.unlink(missing_ok=True)
        log.info("bridge down: removed what bridge up added")

    def remove_ruleset(self) -> None:
        for tool in ("iptables", "ip6tables"):
            # every FORWARD rule that jumps to the agent's chain, also those of older versions
            # whose jump had other matches (an upgrade followed by bridge down leaves nothing)
            for args in forward_jumps(run([tool, "-w", "-S", "FORWARD"], check=False).stdout):
                run([tool, "-w", "-D", "FORWARD", *args], check=False)
            for args in input_jumps(run([tool, "-w", "-S", "INPUT"], check=False).stdout):
                run([tool, "-w", "-D", "INPUT", *args], check=False)
            for chain in CHAINS:
                run([tool, "-w", "-F", chain], check=False)
            # the prefilter chains the workers made (VCR-PF-W<i>, VCR-PF-<id>), now unreferenced
            pf = [line.split()[1] for line in run([tool, "-w", "-S"], check=False).stdout.splitlines()
                  if line.startswith("-N VCR-PF-")]
            for chain in pf:
                run([tool, "-w", "-F", chain], check=False)
            for chain in (*CHAINS, *pf):
                run([tool, "-w", "-X", chain], check=False)
            # the mail proxy's REDIRECT (agent/dataplane/mailproxy.py), if a run left it
            for args in _jumps(run([tool, "-w", "-t", "nat", "-S", "PREROUTING"], check=False).stdout, "PREROUTING", "VCR-MAIL"):
                run([tool, "-w", "-t", "nat", "-D", "PREROUTING", *args], check=False)
            run([tool, "-w", "-t", "nat", "-F", "VCR-MAIL"], check=False)
            run([tool, "-w", "-t", "nat", "-X", "VCR-MAIL"], check=False)


def _jumps(listing: str, chain: str, target: str) -> list[list[str]]:
    out = []
    for line in listing.splitlines():
        args = shlex.split(line)
        if args[:2] == ["-A", chain] and args[-2:] == ["-j", target]:
            out.append(args[2:])
    return out


def forward_jumps(listing: str) -> list[list[str]]:
    """The rules of an ``iptables -S FORWARD`` listing that jump to VCR-FWD, as argv for ``-D``."""
    return _jumps(listing, "FORWARD", "VCR-FWD")


def input_jumps(listing: str) -> list[list[str]]:
    """The rules of an ``iptables -S INPUT`` listing that jump to VCR-IN, as argv for ``-D``."""
    return _jumps(listing, "INPUT", "VCR-IN")


def swap_set(name: str, kind: str, family: int, entries: Iterable[str], *, maxelem: int = 65536,
             counters: bool = False) -> int:
    """Replace one ipset's content atomically: fill a temporary set, swap it in, destroy the old one.

    Returns the number of entries loaded. A failure leaves the live set as it was."""
    tmp = f"{name}-new"
    fam = "inet" if family == 4 else "inet6"
    extra = f" maxelem {maxelem}" + (" counters" if counters else "")
    lines = [f"create {tmp} {kind} family {fam}{extra} -exist", f"flush {tmp}"]
    n0 = len(lines)
    lines += [f"add {tmp} {e} -exist" for e in entries]
    try:
        run(["ipset", "restore"], input="\n".join(lines) + "\n")
        run(["ipset", "swap", tmp, name])
    finally:
        run(["ipset", "destroy", tmp], check=False)
    return len(lines) - n0


def update_kernel_sets(sets: Iterable[KernelSet], entries: Mapping[str, Iterable[str]], *, why: str) -> dict[str, int]:
    """Load an engine's kernel sets (``entries`` by set name; a set without entries is emptied);
    returns entries per set.

    Connections the kernel already let through (connmark fast path) to or from a now listed address
    or ip:port are cut (``cut_listed_connections``, logged with ``why``)."""
    loaded: dict[str, int] = {}
    nets: list[str] = []
    ports: list[str] = []
    for ks in sets:
        items = list(entries.get(ks.name, ()))
        loaded[ks.name] = swap_set(ks.name, ks.kind, ks.family, items, maxelem=ks.maxelem, counters=ks.counters)
        (ports if ks.kind == "hash:ip,port" else nets).extend(items)
    cut_listed_connections(ListedMatcher(nets, ports), why)
    return loaded


class ListedMatcher:
    """The content of ``hash:net`` and ``hash:ip,port`` sets, to test conntrack tuples against."""

    def __init__(self, nets: Iterable[str], ip_ports: Iterable[str] = ()) -> None:
        self._nets: dict[tuple[int, int], set[int]] = {}  # (family, prefix length) -> network numbers
        for entry in nets:
            net = ipaddress.ip_network(entry, strict=False)
            self._nets.setdefault((net.version, net.prefixlen), set()).add(int(net.network_address))
        self._ports: set[tuple[int, str, int]] = set()  # (address number, proto, port)
        for entry in ip_ports:
            addr, _, rest = entry.rpartition(",")
            proto, _, port = rest.partition(":")
            self._ports.add((int(ipaddress.ip_address(addr)), proto, int(port)))

    def __bool__(self) -> bool:
        return bool(self._nets or self._ports)

    def match(self, addr: str, proto: str = "", port: int | None = None) -> bool:
        ip = ipaddress.ip_address(addr)
        number, bits = int(ip), (32 if ip.version == 4 else 128)
        for (fam, plen), numbers in self._nets.items():
            if fam == ip.version and (number >> (bits - plen)) << (bits - plen) in numbers:
                return True
        return port is not None and (number, proto, port) in self._ports


# conntrack -L: "tcp      6 431999 ESTABLISHED src=A dst=B sport=P dport=Q src=B dst=A ... mark=..."
_CT_TUPLE = re.compile(r"^(\S+)\s+(\d+)\s.*?src=(\S+) dst=(\S+)(?: sport=(\d+) dport=(\d+))?")


def cut_listed_connections(listed: ListedMatcher, why: str) -> int:
    """Delete the conntrack entries of fast-path connections (connmark: accept) whose either end is
    listed; returns how many (logged with ``why``). Their packets skip ``VCR-BLOCK``; with the entry gone, the next
    packet is a new conntrack entry that the blocklist chain drops (and logs)."""
    if not listed:
        return 0
    cut = 0
    for fam in ("ipv4", "ipv6"):
        res = run(["conntrack", "-L", "-f", fam, "-m", f"0x{MARK_ACCEPT:x}/0x{MARK_MASK:x}"], check=False)
        for line in res.stdout.splitlines():
            m = _CT_TUPLE.match(line)
            if m is None:
                continue
            proto, _num, src, dst, sport, dport = m.groups()
            ends = ((src, int(sport) if sport else None), (dst, int(dport) if dport else None))
            if not any(listed.match(addr, proto, port) for addr, port in ends):
                continue
            argv = ["conntrack", "-D", "-f", fam, "-p", proto, "-s", src, "-d", dst]
            if sport:
                argv += ["--sport", sport, "--dport", dport]
            if run(argv, check=False).returncode == 0:
                cut += 1
    if cut:
        log.warning("%s: cut %d running connection(s) to newly listed addresses", why, cut)
    return cut


def update_blocklist(entries: Iterable[str]) -> None:
    """Replace the blocklist ipsets atomically (build a temporary set, then swap)."""
    by_fam: dict[int, list[str]] = {4: [], 6: []}
    for e in entries:
        net = ipaddress.ip_network(e, strict=False)
        by_fam[net.version].append(str(net))
    for fam, name in BLOCK_SETS.items():
        swap_set(name, "hash:net", fam, by_fam[fam])
    cut_listed_connections(ListedMatcher([*by_fam[4], *by_fam[6]]), "blocklist update")
