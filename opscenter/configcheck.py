"""The box's own check of a config revision, run before the center queues it as a ``config`` task
(the operator's ``vcr-opscenter task add ... config`` and the console's change requests both use it):
``python -m agent.cli config check-remote FILE --json`` in a subprocess (the center never imports the
agent's code: tests/test_layers.py). The revision is written to a private temporary file first.

Outcomes: ``ok`` (exit 0), ``invalid`` (the check ran and refused the revision: the problems it
printed are shown to the operator), ``unavailable`` (this installation has no such command: the
agent package is missing or too old; the operator is told so and nothing is queued) or ``error``
(it crashed or timed out). Only ``ok`` lets the console queue the task.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

COMMAND = ("-m", "agent.cli", "config", "check-remote")
TIMEOUT = 120.0


@dataclass
class CheckResult:
    outcome: str  # ok | invalid | unavailable | error
    message: str = ""
    problems: list[str] = field(default_factory=list)
    output: str = ""

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"


def _problems(data: Any) -> list[str]:
    if not isinstance(data, dict):
        return []
    out: list[str] = [f"{r.get('key')} [{r.get('class')}]: {r.get('reason_ja')} / {r.get('reason_en')}"
                      for r in data.get("refused") or [] if isinstance(r, dict)]
    for key in ("errors", "problems", "issues"):
        items = data.get(key)
        if isinstance(items, list):
            for it in items[:50]:
                if isinstance(it, dict):
                    where = " ".join(str(it.get(k)) for k in ("file", "key") if it.get(k))
                    text = str(it.get("message") or it.get("problem") or it.get("error") or it)
                    out.append(f"{where}: {text}" if where else text)
                else:
                    out.append(str(it))
    for key in ("error", "message", "reason"):
        if isinstance(data.get(key), str) and data[key] not in out:
            out.append(data[key])
    return [p[:500] for p in out]


def check_remote(config_text: str, *, python: str | None = None, timeout: float = TIMEOUT,
                 command: tuple[str, ...] | None = None) -> CheckResult:
    """Run the box's check on ``config_text`` (the whole agent config, YAML)."""
    fd, path = tempfile.mkstemp(prefix="vcr-config-", suffix=".yaml")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(config_text)
        argv = [python or sys.executable, *(command or COMMAND), path, "--json"]
        env = dict(os.environ)
        root = Path(__file__).resolve().parents[1]
        if (root / "agent" / "cli.py").is_file():  # a source checkout: the agent's code sits beside opscenter/
            env["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), env.get("PYTHONPATH", "")) if p)
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                                  cwd=tempfile.gettempdir(), env=env)
        except subprocess.TimeoutExpired:
            return CheckResult("error", f"the check did not finish in {timeout:.0f} s")
        except OSError as exc:
            return CheckResult("unavailable", f"cannot run {argv[0]}: {exc.strerror or exc}")
    finally:
        try:
            os.unlink(path)
        except OSError:
            pass
    out, err = proc.stdout.strip(), proc.stderr.strip()
    both = (out + "\n" + err).strip()
    if proc.returncode != 0 and ("No module named" in err or "invalid choice" in err
                                 or "unrecognized arguments" in err):
        return CheckResult("unavailable", "this installation has no `vcr-agent config check-remote` "
                                          "(the agent package is missing or older than the check)", output=both[-4000:])
    data: Any = None
    try:
        data = json.loads(out) if out else None
    except ValueError:
        data = None
    if proc.returncode == 0 and (not isinstance(data, dict) or data.get("ok", True) is not False):
        return CheckResult("ok", "", _problems(data) if isinstance(data, dict) and data.get("warnings") else [],
                           both[-4000:])
    if proc.returncode in (0, 1, 2) and (data is not None or proc.returncode == 1):
        return CheckResult("invalid", "the box's check refused this revision", _problems(data) or
                           [line for line in err.splitlines() if line.strip()][-10:], both[-4000:])
    return CheckResult("error", f"the check failed (exit {proc.returncode})", output=both[-4000:])
