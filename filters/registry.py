"""The explicit list of inspection engines, in pipeline order; how they are validated and built from
their config sections, and which engine declares what to the box (bundle kinds, kernel sets).

Plain values in, engines out: the engines mapping of the config (``engines.<name>`` sections) and an
``EngineContext``. Nothing here knows the agent's configuration model; a new engine plugs in by
being listed in ``ENGINES``.
"""
from __future__ import annotations

from typing import Any, Mapping

from filters.antispam.engine import AntiSpamEngine
from filters.atp import Atp
from filters.av.engine import Antivirus
from filters.engine import ConfigError, Engine, EngineContext, KernelSet
from filters.firewall import Firewall
from filters.ips.engine import Ips
from filters.mail.engine import MailSecurity
from filters.probe import Probe
from filters.sandbox.engine import Sandbox
from filters.webfilter.engine import WebFilter

# (class, enabled unless the config says otherwise), in pipeline order
ENGINES: tuple[tuple[type[Engine], bool], ...] = (
    (Firewall, True),
    (Atp, False),
    (Ips, False),
    (WebFilter, False),
    (Antivirus, False),
    (MailSecurity, False),
    (Sandbox, False),  # after the antivirus: a virus is blocked there, never submitted
    (AntiSpamEngine, False),
    (Probe, False),
)


def engine_classes() -> tuple[type[Engine], ...]:
    return tuple(cls for cls, _ in ENGINES)


def engine_for_kind(kind: str) -> type[Engine] | None:
    """The engine that takes signature bundles of ``kind``, or None."""
    return next((cls for cls in engine_classes() if kind in cls.bundle_kinds), None)


def kernel_set_owners() -> tuple[type[Engine], ...]:
    """The engines that declare kernel sets, in pipeline order."""
    return tuple(cls for cls in engine_classes() if cls.kernel_sets)


def kernel_sets() -> tuple[KernelSet, ...]:
    """Every engine's kernel sets (the ruleset matches them all; empty while their engine is off)."""
    return tuple(s for cls in kernel_set_owners() for s in cls.kernel_sets)


def kernel_set_owner(tag: str) -> type[Engine] | None:
    """The engine whose kernel sets log their drops with the NFLOG prefix kind ``tag``."""
    return next((cls for cls in kernel_set_owners() if any(s.tag == tag for s in cls.kernel_sets)), None)


def _sections(engines: Mapping[str, Any], path: str) -> list[tuple[type[Engine], bool, Mapping[str, Any]]]:
    """(class, enabled, section) of every registered engine; unknown engine names are errors."""
    known = {cls.name for cls in engine_classes()}
    for name in engines:
        if name not in known:
            raise ConfigError(f"unknown engine (known: {', '.join(sorted(known))})", path=path, key=f"engines.{name}")
    out = []
    for cls, default_on in ENGINES:
        section = engines.get(cls.name) or {}
        if not isinstance(section, Mapping):
            raise ConfigError("expected a mapping", path=path, key=f"engines.{cls.name}")
        enabled = section.get("enabled", default_on)
        if not isinstance(enabled, bool):
            raise ConfigError("expected true or false", path=path, key=f"engines.{cls.name}.enabled")
        out.append((cls, enabled, section))
    return out


def check_sections(engines: Mapping[str, Any], *, path: str = "") -> None:
    """Validate every engine section through its engine's ``Config`` model (disabled ones too),
    without building anything or reading files; ConfigError names ``path`` and ``engines.<name>.<key>``."""
    for cls, _, section in _sections(engines, path):
        try:
            cls.check_section(section)
        except ConfigError as exc:
            raise exc.within(path=path, prefix=f"engines.{cls.name}") from None


def build_engines(engines: Mapping[str, Any], ctx: EngineContext = EngineContext(), *, path: str = "",
                  prepare: bool = True) -> list[Engine]:
    """Instantiate and configure the enabled engines from the ``engines`` sections; ConfigError
    names ``path`` and the key under engines.

    A disabled engine's section is validated too. ``prepare`` then does the heavy loading
    (rule compilation) of the enabled ones; validation alone passes False."""
    out: list[Engine] = []
    for cls, enabled, section in _sections(engines, path):
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


def file_depth(engines: list[Engine]) -> int:
    """The file depth the engines need (``Engine.file_depth``): the largest, 0 when none asks."""
    return max((e.file_depth() for e in engines), default=0)


def dataplane_needs(engines: list[Engine]) -> tuple[bool, bool]:
    """(packets, empty_acks): does any of the loaded ``engines`` need to see packets of allowed
    connections (``Engine.needs_packets``), and empty TCP ACKs (``Engine.needs_empty_acks``)? The
    kernel ruleset keeps from the workers what none needs (agent/dataplane/ruleset.py)."""
    return any(e.needs_packets() for e in engines), any(e.needs_empty_acks() for e in engines)
