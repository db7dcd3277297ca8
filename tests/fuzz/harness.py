"""What every fuzz target shares: the registry, stream splitting and segmentation, and the error watch.

A target is a function of one input (``bytes``) that feeds it to a parser's public entry points and
fails (raises) when the parser breaks its contract: an exception other than the documented one, an
internal error swallowed by a safety net (logged with a traceback, or counted as ``*.parser_error``),
or a broken invariant of the result. Hangs are caught by the runner (libFuzzer's ``-timeout`` in
atheris runs, a per-input time check when the corpus is replayed in pytest).
"""
from __future__ import annotations

import logging
import random
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

CORPUS = Path(__file__).resolve().parent / "corpus"

# The separator between the client and the server stream of a two-direction input: a line of its own,
# so seeds stay readable and mutations rarely create one by accident.
SEP = b"\n=====8<=====\n"


@dataclass(frozen=True)
class Target:
    name: str
    run: Callable[[bytes], None]
    entry: str  # the public entry points it drives (for the docs and --list)
    max_len: int = 4096  # libFuzzer -max_len in CI runs (on-demand runs may raise it)
    ci_runs: int = 3000  # libFuzzer -runs in the short CI run
    # Modules the target imports on first use: the runner imports them under atheris'
    # instrumentation (only what is imported then reports coverage; instrumenting costs seconds,
    # so a target names just what it drives beyond the target modules' own imports).
    modules: tuple[str, ...] = ()


TARGETS: dict[str, Target] = {}


def target(name: str, entry: str, *, max_len: int = 4096, ci_runs: int = 3000,
           modules: tuple[str, ...] = ()) -> Callable[[Callable[[bytes], None]], Callable[[bytes], None]]:
    def register(fn: Callable[[bytes], None]) -> Callable[[bytes], None]:
        TARGETS[name] = Target(name, fn, entry, max_len, ci_runs, modules)
        return fn

    return register


def corpus_files(name: str) -> list[Path]:
    folder = CORPUS / name
    return sorted(p for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []


# -- input shapes ------------------------------------------------------------------------------------


def split2(data: bytes) -> tuple[bytes, bytes]:
    """(client stream, server stream) of a two-direction input: ``client SEP server``."""
    client, _, server = data.partition(SEP)
    return client, server


def rng_for(data: bytes) -> random.Random:
    """A generator seeded by the input: the same input always gets the same segmentation."""
    return random.Random(zlib.crc32(data))


def pieces(rng: random.Random, stream: bytes) -> list[bytes]:
    """``stream`` cut at random points: mostly small pieces (1-8 bytes) with some larger ones, and
    sometimes whole."""
    mode = rng.randrange(4)
    if mode == 0 or not stream:
        return [stream] if stream else []
    out, pos = [], 0
    while pos < len(stream):
        size = rng.randint(1, 8) if mode == 1 else rng.randint(1, 1 + len(stream) // rng.randint(1, 4))
        out.append(stream[pos : pos + size])
        pos += size
    return out


def interleave(rng: random.Random, client: bytes, server: bytes, *, in_order: bool = True) -> list[tuple[bool, bytes]]:
    """Both streams cut into pieces and merged into one feed order ``[(to_server, piece), ...]``.

    ``in_order``: a direction's pieces stay in order (TCP reassembly guarantees that); the two
    directions interleave randomly, usually the client first.
    """
    a = [(True, p) for p in pieces(rng, client)]
    b = [(False, p) for p in pieces(rng, server)]
    out: list[tuple[bool, bytes]] = []
    while a or b:
        take_client = bool(a) and (not b or rng.random() < (0.7 if not out else 0.5))
        out.append(a.pop(0) if take_client else b.pop(0))
    return out


# -- the error watch ---------------------------------------------------------------------------------


class _Watch(logging.Handler):
    """Collects log records that mean a swallowed internal error: any record with a traceback, and
    any ERROR from our packages."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info or (record.levelno >= logging.ERROR and record.name.split(".")[0] in ("filters", "agent")):
            self.records.append(record)


class InternalError(AssertionError):
    """A parser hid an internal error behind its safety net (the message has the traceback)."""


class ErrorWatch:
    """``with ErrorWatch(): ...`` raises InternalError when the block logged a swallowed exception."""

    def __enter__(self) -> "ErrorWatch":
        self.handler = _Watch()
        root = logging.getLogger()
        root.addHandler(self.handler)
        self._level = root.level
        if root.level > logging.ERROR or root.level == logging.NOTSET:
            root.setLevel(logging.ERROR)
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        root = logging.getLogger()
        root.removeHandler(self.handler)
        root.setLevel(self._level)
        if exc_type is None and self.handler.records:
            formatter = logging.Formatter("%(name)s: %(message)s")
            text = "\n".join(formatter.format(r) for r in self.handler.records[:3])
            raise InternalError(f"swallowed internal error(s):\n{text}")
