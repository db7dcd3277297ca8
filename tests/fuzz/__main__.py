"""Run the fuzzers: ``python -m tests.fuzz TARGET [--seconds N | --runs N] [--corpus DIR] [-- LIBFUZZER_ARGS]``.

Other commands:

* ``python -m tests.fuzz list``                   the targets and their entry points;
* ``python -m tests.fuzz all --seconds N``        every target in turn, N seconds each;
* ``python -m tests.fuzz replay TARGET FILE...``  run inputs in-process with full tracebacks;
* ``python -m tests.fuzz seeds``                  rewrite the generated seeds under corpus/;
* ``python -m tests.fuzz api --seconds N``        schemathesis on the center's API (see api.py).

A target run is atheris (libFuzzer) in this process: ``--corpus DIR`` (default
``$VCR_FUZZ_DIR/TARGET/corpus``, ``VCR_FUZZ_DIR`` defaulting to /tmp/vcr-fuzz) collects the inputs
that found new coverage, starting from the committed seeds; a crash or timeout is written under
``.../TARGET/artifacts/`` and the exit status is non-zero. Replay the file with ``replay`` and,
once fixed, copy it into ``tests/fuzz/corpus/TARGET/`` with an explicit test.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
INSTRUMENTED = ["filters", "agent"]  # packages whose code atheris instruments for coverage


def _load_targets(instrument: str | None = None) -> dict:
    """The target registry; ``instrument``: the target whose code atheris instruments (the target
    modules' shared imports and the target's own ``modules``)."""
    if instrument:
        import importlib

        import atheris

        with atheris.instrument_imports(include=INSTRUMENTED):
            import tests.fuzz.targets_files  # noqa: F401
            import tests.fuzz.targets_wire  # noqa: F401
            from tests.fuzz.harness import TARGETS

            for module in TARGETS[instrument].modules if instrument in TARGETS else ():
                importlib.import_module(module)
    else:
        import tests.fuzz.targets_files  # noqa: F401
        import tests.fuzz.targets_wire  # noqa: F401
    from tests.fuzz.harness import TARGETS

    return TARGETS


def workdir() -> Path:
    return Path(os.environ.get("VCR_FUZZ_DIR", "/tmp/vcr-fuzz"))


def run_target(name: str, args: argparse.Namespace, extra: list[str]) -> int:
    """atheris on one target, in this process (libFuzzer exits the process when it is done)."""
    import atheris

    targets = _load_targets(instrument=name)
    if name not in targets:
        print(f"unknown target {name!r}; targets: {', '.join(sorted(targets))}", file=sys.stderr)
        return 2
    from tests.fuzz.harness import CORPUS

    t = targets[name]
    corpus = Path(args.corpus) if args.corpus else workdir() / name / "corpus"
    artifacts = Path(args.artifacts) if args.artifacts else workdir() / name / "artifacts"
    corpus.mkdir(parents=True, exist_ok=True)
    artifacts.mkdir(parents=True, exist_ok=True)
    flags = [
        f"-max_len={args.max_len or t.max_len}",
        f"-timeout={args.timeout}",
        f"-rss_limit_mb={args.rss_mb}",
        f"-artifact_prefix={artifacts}/",
        "-print_final_stats=1",
    ]
    if args.seed is not None:
        flags.append(f"-seed={args.seed}")
    if args.runs is not None:
        flags.append(f"-runs={args.runs}")
    if args.seconds is not None:
        flags.append(f"-max_total_time={args.seconds}")
    dirs = [str(corpus)]
    seeds = CORPUS / name
    if seeds.is_dir() and seeds.resolve() != corpus.resolve():
        dirs.append(str(seeds))
    print(f"fuzz {name}: corpus {corpus}, artifacts {artifacts}", file=sys.stderr, flush=True)

    def one_input(data: bytes) -> None:
        t.run(data)

    atheris.Setup([sys.argv[0], *flags, *extra, *dirs], one_input)
    atheris.Fuzz()
    return 0  # not reached: libFuzzer exits


def replay(name: str, files: list[str]) -> int:
    import traceback

    from tests.fuzz.harness import corpus_files

    t = _load_targets()[name]
    paths = [Path(f) for f in files] or corpus_files(name)
    failed = 0
    for p in paths:
        start = time.perf_counter()
        try:
            t.run(p.read_bytes())
        except BaseException:  # noqa: BLE001 - report every failing input
            failed += 1
            print(f"FAIL {p}", file=sys.stderr)
            traceback.print_exc()
            continue
        print(f"ok   {p} ({(time.perf_counter() - start) * 1000:.1f} ms)")
    return 1 if failed else 0


def run_all(args: argparse.Namespace, extra: list[str]) -> int:
    """Every target in turn, in its own process (never two at once)."""
    names = sorted(_load_targets())
    failed = []
    for name in names:
        cmd = [sys.executable, "-m", "tests.fuzz", name]
        for opt in ("seconds", "runs", "max_len", "seed"):
            value = getattr(args, opt)
            if value is not None:
                cmd += [f"--{opt.replace('_', '-')}", str(value)]
        cmd += ["--timeout", str(args.timeout)]
        print(f"== {name}", flush=True)
        rc = subprocess.call(cmd + (["--", *extra] if extra else []), cwd=ROOT)
        if rc:
            failed.append(name)
    print("failed: " + ", ".join(failed) if failed else f"all {len(names)} targets ran clean")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1:]
    p = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__.split("\n")[0])
    p.add_argument("target", help="a target name, or: list, all, replay, seeds, api")
    p.add_argument("files", nargs="*", help="replay: the inputs (default: the target's seed corpus)")
    p.add_argument("--seconds", type=int, help="stop after this many seconds")
    p.add_argument("--runs", type=int, help="stop after this many inputs")
    p.add_argument("--corpus", help="corpus folder to grow (default $VCR_FUZZ_DIR/TARGET/corpus)")
    p.add_argument("--artifacts", help="where crashes/timeouts go (default $VCR_FUZZ_DIR/TARGET/artifacts)")
    p.add_argument("--max-len", type=int, help="longest input (default: the target's)")
    p.add_argument("--timeout", type=int, default=10, help="seconds one input may take (a hang past it fails)")
    p.add_argument("--rss-mb", type=int, default=2048, help="memory limit of the fuzzing process")
    p.add_argument("--seed", type=int, help="libFuzzer's random seed (fixed in CI)")
    p.add_argument("--examples", type=int, help="api: generated examples per operation and round")
    p.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite", help="api: the center's database")
    args = p.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    if args.target == "list":
        for name, t in sorted(_load_targets().items()):
            print(f"{name:12} {t.entry}")
        return 0
    if args.target == "all":
        return run_all(args, extra)
    if args.target == "replay":
        if not args.files:
            p.error("replay needs a target name")
        return replay(args.files[0], args.files[1:])
    if args.target == "seeds":
        from tests.fuzz.seeds import write_seeds

        write_seeds()
        return 0
    if args.target == "api":
        from tests.fuzz.api import run_api

        return run_api(seconds=args.seconds, examples=args.examples, db=args.db)
    return run_target(args.target, args, extra)


if __name__ == "__main__":
    sys.exit(main())
