"""From a loaded configuration to running engines: the explicit steps after ``load_config``.

``load_config`` (agent/config.py) only parses and validates. What the engines then run is

1. ``overlay_live_bundles``: with ``updates.enabled``, each engine section that takes a signature
   bundle kind gets the live version's folder (``Engine.apply_bundle``, via the registry);
2. ``build_engines``: the registry configures the engines from those sections and the box's
   context (``AgentConfig.engine_context``: home_net, management addresses), then prepares
   (compiles) the enabled ones.

``load_effective_config`` is 1 plus every section checked by its engine (configure, nothing
compiled): what the daemon, its workers, the CLI and remote configuration load. Offline (pcap)
mode builds from its own config without the live bundles.
"""
from __future__ import annotations

import os

from agent.config import AgentConfig, load_config
from agent.lifecycle.updates import apply_live_bundles
from filters import registry
from filters.engine import Engine


def overlay_live_bundles(cfg: AgentConfig) -> AgentConfig:
    """``cfg`` with the live signed bundles in its engine sections (``cfg`` itself when updates are
    off or nothing is live); ``cfg`` is not changed."""
    if not cfg.updates.enabled:
        return cfg
    data = {"engines": dict(cfg.engines)}
    if not apply_live_bundles(data, cfg.updates.bundles_dir):
        return cfg
    return cfg.model_copy(update={"engines": data["engines"]})


def build_engines(cfg: AgentConfig, *, path: str | os.PathLike[str] = "", prepare: bool = True) -> list[Engine]:
    """The enabled engines of ``cfg`` (as given: overlay first for the live bundles), configured and,
    with ``prepare``, loaded. ConfigError names ``path`` and the key under engines."""
    return registry.build_engines(cfg.engines, cfg.engine_context(), path=str(path), prepare=prepare)


def file_depth(cfg: AgentConfig) -> int:
    """The depth the enabled file engines need (``Engine.file_depth``: the antivirus's ``max_size``,
    the sandbox's ``max_submit_size``), 0 when none is on."""
    return registry.file_depth(build_engines(cfg, prepare=False))


def kernel_stream_depth(cfg: AgentConfig) -> int:
    """The kernel's connbytes cap for ``cfg``: ``dataplane.flows.stream_depth``, raised to what the
    file engines' downloads need (the kernel cannot tell an HTTP flow; user space keeps the other
    flows at the configured depth and offloads them there). 0 stays 0 (no kernel cap)."""
    depth = cfg.dataplane.flows.stream_depth
    if not depth:
        return 0
    from filters.app.layer import file_stream_depth

    return max(depth, file_stream_depth(file_depth(cfg)))


def load_effective_config(path: str | os.PathLike[str]) -> AgentConfig:
    """The configuration the engines run: ``load_config``, the live bundles overlaid, and every engine
    section checked by its engine (``configure``: rule files found, categories known; nothing
    compiled). Raises ConfigError naming the file, the key and the problem."""
    cfg = overlay_live_bundles(load_config(path))
    build_engines(cfg, path=path, prepare=False)
    return cfg
