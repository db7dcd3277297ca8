"""The explicit list of inspection engines, in pipeline order, and how they are built from config."""
from __future__ import annotations

from typing import TYPE_CHECKING

from filters.engine import ConfigError, Engine
from filters.firewall import Firewall
from filters.probe import Probe

if TYPE_CHECKING:  # pragma: no cover
    from agent.config import AgentConfig

# name -> (class, enabled unless the config says otherwise)
ENGINES: tuple[tuple[type[Engine], bool], ...] = (
    (Firewall, True),
    (Probe, False),
)


def build_engines(cfg: "AgentConfig", *, path: str = "") -> list[Engine]:
    """Instantiate and configure the enabled engines; ConfigError names the key under engines."""
    known = {cls.name for cls, _ in ENGINES}
    for name in cfg.engines:
        if name not in known:
            raise ConfigError(f"unknown engine (known: {', '.join(sorted(known))})", path=path, key=f"engines.{name}")
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
            engine.configure(section)
        except ConfigError as exc:
            raise exc.within(path=path, prefix=f"engines.{cls.name}") from None
        if enabled:
            out.append(engine)
    return out
