"""The shared test data: the suricata-verify and ET Open peers, UT1, the URLhaus and abuse.ch feeds,
spam/ham. Not in the repository: ``shared`` beside the checkout (as in CI), or wherever
``$VCR_SHARED`` points (``lab.shared_dir``, the same place the lab's runners read).

A test reaches it through the ``shared_data`` session fixture (tests/conftest.py) or, where a path
is needed before a fixture can run (parametrizing on its files at collection), through ``find`` and
then ``require`` inside the test. Missing data never passes silently: under CI (``CI`` set, as
``.ci/run`` has it) the test FAILS, so a green CI run always includes the IPS compatibility and
real-data coverage; elsewhere it is skipped with a loud reason naming the path and the variable.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import NoReturn

import pytest

from lab import SHARED_ENV, shared_dir

__all__ = ["SHARED_ENV", "SharedData", "find", "in_ci", "missing", "require", "root"]


def in_ci() -> bool:
    """True under CI: ``CI`` set to anything but empty, 0, false or no."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def root() -> Path:
    """Where the shared data is expected: ``$VCR_SHARED``, else ``<repo>/../shared``."""
    return shared_dir()


def missing(what: Path | str, detail: str = "") -> NoReturn:
    """Fail (under CI) or skip loudly: the shared data ``what`` is not there."""
    where = (f"${SHARED_ENV} is {os.environ[SHARED_ENV]!r}" if os.environ.get(SHARED_ENV, "").strip()
             else f"expected beside the repository at {root()}, or where ${SHARED_ENV} points")
    msg = f"SHARED TEST DATA MISSING: {what}{f' ({detail})' if detail else ''}; {where}"
    if in_ci():
        pytest.fail(f"{msg} - required under CI (CI={os.environ.get('CI')!r})", pytrace=False)
    pytest.skip(msg)


def find(*parts: str) -> Path | None:
    """``root()/parts`` when it exists, else None (for collection time: never fails or skips)."""
    path = root().joinpath(*parts)
    return path if path.exists() else None


def require(*parts: str) -> Path:
    """``root()/parts``, which must exist (else ``missing``)."""
    path = root().joinpath(*parts)
    if not path.exists():
        missing(path)
    return path


class SharedData:
    """The value of the ``shared_data`` fixture: paths under the shared data, each one required."""

    def __init__(self, base: Path) -> None:
        self.root = base

    def __repr__(self) -> str:
        return f"SharedData({str(self.root)!r})"

    def path(self, *parts: str) -> Path:
        """``root/parts``; fails under CI (skips elsewhere) when it does not exist."""
        path = self.root.joinpath(*parts)
        if not path.exists():
            missing(path)
        return path

    def glob(self, folder: str, pattern: str) -> list[Path]:
        """The sorted matches of ``pattern`` under ``root/folder``; none is missing data too."""
        base = self.path(folder)
        files = sorted(base.glob(pattern))
        if not files:
            missing(base, f"no {pattern}")
        return files


def session() -> SharedData:
    """The fixture's body: the root must exist (missing data fails under CI, skips otherwise)."""
    base = root()
    if not base.is_dir():
        missing(base)
    return SharedData(base)
