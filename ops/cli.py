"""`keel`: the command line. Errors are one clear line on stderr; `--verbose` shows the trace.

Exit codes: 0 success, 1 runtime failure, 2 bad usage, config or input, 130 interrupted.
"""
from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
import time
from collections.abc import Sequence

# Before numpy is first imported: keel does no linear algebra, and OpenBLAS's thread pool, started at
# import, only costs CPU (about 0.05-0.1 s of a `keel backtest` here). An explicit setting wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

_COLLECTING = gc.isenabled()
gc.disable()  # the commands' modules load without collector passes (see commands.loading_modules)
try:
    from ops import commands
finally:
    if _COLLECTING:
        gc.enable()


class UsageError(Exception):
    """A mistake by the user: exit code 2."""


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG and show tracebacks")


def build_parser() -> argparse.ArgumentParser:
    """Every command and its options."""
    parser = argparse.ArgumentParser(prog="keel", description="Self-hosted smart-portfolio rebalancer.")
    _common(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (fn, add_args, help_text) in commands.REGISTRY.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        _common(p)
        add_args(p)
        p.set_defaults(func=fn)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `keel` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.own_process = argv is None  # keel is the process, not a function a test or a tool calls
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    started = time.monotonic()
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("keel: interrupted", file=sys.stderr)
        return 130
    except commands.CommandError as e:
        if args.verbose:
            logging.exception("failed")
        print(f"keel {args.command}: {e}", file=sys.stderr)
        return e.code
    except Exception as e:  # the CLI boundary: one line unless --verbose
        if args.verbose:
            raise
        print(f"keel {args.command}: {type(e).__name__}: {e} (after {time.monotonic() - started:.1f}s; "
              f"--verbose shows the trace)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
