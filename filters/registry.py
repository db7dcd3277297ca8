"""The explicit list of inspection engines, in pipeline order, and how they are built from config."""
from __future__ import annotations

from typing import TYPE_CHECKING

from filters.atp import Atp
from filters.engine import ConfigError, Engine, EngineContext
from filters.firewall import Firewall
from filters.ips.engine import Ips
from filters.probe import Probe
from filters.webfilter.engine import WebFilter

if TYPE_CHECKING:  # pragma: no cover
    from agent.config import AgentConfig

# name -> (class, enabled unless the config says otherwise)
ENGINES: tuple[tuple[type[Engine], bool], ...] = (
    (Firewall, True),
    (Atp, False),
    (Ips, False),
    (WebFilter, False),
    (Probe, False),
)


def engine_context(cfg: "AgentConfig") -> EngineContext:
    sheet = cfg.settings_sheet
    return EngineContext(
        home_net=tuple(cfg.home_net),
        management_ipv4=sheet.management_ip.split("/")[0] if sheet else "",
        management_ipv6=(sheet.management_ipv6 or "").split("/")[0] if sheet else "",
    )


def build_engines(cfg: "AgentConfig", *, path: str = "", prepare: bool = True) -> list[Engine]:
    """Instantiate and configure the enabled engines; ConfigError names the key under engines.

    A disabled engine's section is validated too. ``prepare`` then does the heavy loading
    (rule compilation) of the enabled ones; validation alone passes False."""
    known = {cls.name for cls, _ in ENGINES}
    for name in cfg.engines:
        if name not in known:
            raise ConfigError(f"unknown engine (known: {', '.join(sorted(known))})", path=path, key=f"engines.{name}")
    ctx = engine_context(cfg)
    out: list[Engine] = []
    for cls, default_on in ENGINES:
        section = cfg.engines.get(cls.name) or {}
        if not isinstance(section, dict):
            raise ConfigError("expected a mapping", path=path, key=f"engines.{cls.name}")
        enabled = section.get("enabled", default_on)
        if not isinstance(enabled, bool):
            raise ConfigError("expected true or false", path=path, key=f"engines.{cls.name}.enabled")
        engine = cls()
        try:
            engine.configure(section, ctx)
        except ConfigError as exc:
            raise exc.within(path=path, prefix=f"engines.{cls.name}") from None
        if enabled:
            out.append(engine)
    if prepare:
        for engine in out:
            engine.prepare()
    return out
