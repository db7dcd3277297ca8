"""What the command lines' ``main()`` share (``vcr-agent``, ``vcr-opscenter``, ``python -m lab``):
logging to stderr, the subcommand's ``fn`` run, Ctrl-C as exit code 130, and the errors a user
can act on printed as one message and an exit code instead of a traceback. Here because agent/
and opscenter/ may not import each other (tests/test_layers.py)."""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Callable

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def run_command(args: argparse.Namespace, known_error: Callable[[Exception], int | None] = lambda exc: None) -> int:
    """``args.fn(args)`` with logging on stderr (DEBUG with ``args.verbose``). ``known_error`` prints
    an error it knows and returns the exit code, or returns None: the error is raised."""
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format=LOG_FORMAT, stream=sys.stderr)
    try:
        return args.fn(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        code = known_error(exc)
        if code is None:
            raise
        return code
