"""docs/benchmarks.md is written by several benchmark commands; each owns one marked section."""
from __future__ import annotations

import re
from pathlib import Path

_BLOCK = re.compile(r"<!-- bench:(?P<name>[\w-]+) begin -->\n.*?<!-- bench:(?P=name) end -->\n?", re.S)


def write_section(path: Path, name: str, markdown: str) -> None:
    """Replace (or append) the section ``name`` of the file at ``path``, keeping the others.

    A file without any marked section is taken to be the old single-section report of the
    ``dataplane`` bench: writing that section replaces it."""
    block = f"<!-- bench:{name} begin -->\n{markdown.rstrip()}\n<!-- bench:{name} end -->\n"
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    if not _BLOCK.search(old):
        old = "" if name == "dataplane" else old
    found = False

    def swap(m: re.Match[str]) -> str:
        nonlocal found
        if m.group("name") != name:
            return m.group(0)
        found = True
        return block

    text = _BLOCK.sub(swap, old)
    if not found:
        text = (text.rstrip() + "\n\n" if text.strip() else "") + block
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def read_section(path: Path, name: str) -> str | None:
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    for m in _BLOCK.finditer(text):
        if m.group("name") == name:
            return m.group(0).split("\n", 1)[1].rsplit("<!-- bench:", 1)[0].rstrip("\n")
    return None
