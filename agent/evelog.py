"""The local EVE JSON log: one JSON object a line in ``eve.json``, rotated by size."""
from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import Any, Callable

log = logging.getLogger(__name__)


class EveLog:
    """Append-only writer with size rotation (eve.json -> eve.json.1 -> ... -> eve.json.N).

    Thread-safe; each record is written with one ``write`` so readers never see half a line.
    ``listeners`` get every record too (the operations-center spool hooks in here).
    """

    def __init__(self, path: str | os.PathLike[str], *, rotate_bytes: int = 10 << 20, keep: int = 5) -> None:
        self.path = Path(path)
        self.rotate_bytes = rotate_bytes
        self.keep = keep
        self.listeners: list[Callable[[dict[str, Any]], None]] = []
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a", encoding="utf-8")
        self.written = 0

    def write(self, rec: dict[str, Any]) -> None:
        line = json.dumps(rec, ensure_ascii=False, separators=(",", ":")) + "\n"
        with self._lock:
            if self._fh.tell() + len(line) > self.rotate_bytes:
                self._rotate()
            self._fh.write(line)
            self._fh.flush()
            self.written += 1
        for fn in self.listeners:
            try:
                fn(rec)
            except Exception:
                log.exception("EVE listener failed")

    def _rotate(self) -> None:
        self._fh.close()
        for i in range(self.keep - 1, 0, -1):
            src = self.path.with_name(f"{self.path.name}.{i}")
            if src.exists():
                os.replace(src, self.path.with_name(f"{self.path.name}.{i + 1}"))
        os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        self._fh = open(self.path, "a", encoding="utf-8")

    def close(self) -> None:
        with self._lock:
            self._fh.close()


def read_eve(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """All records of an EVE file (skipping a torn last line)."""
    out = []
    try:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                try:
                    out.append(json.loads(line))
                except ValueError:
                    continue
    except FileNotFoundError:
        pass
    return out
