"""The CLI's commands: each takes parsed arguments and returns an exit code."""
from __future__ import annotations

import argparse
import gc
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ops.config import ConfigError, load_config

Command = Callable[[argparse.Namespace], int]
REGISTRY: dict[str, tuple[Command, Callable[[argparse.ArgumentParser], None], str]] = {}


class CommandError(Exception):
    """A failure with a one-line message and an exit code (2: the user's input, 1: at run time)."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


def command(name: str, help_text: str) -> Callable[[Callable[[argparse.ArgumentParser], None]], Callable[[Command], Command]]:
    """Register `fn` as `keel NAME` with the given argument builder."""
    def with_args(add_args: Callable[[argparse.ArgumentParser], None]) -> Callable[[Command], Command]:
        def register(fn: Command) -> Command:
            REGISTRY[name] = (fn, add_args, help_text)
            return fn
        return register
    return with_args


def load(path: str) -> Any:
    """Load a config file, turning every problem into a one-line CommandError."""
    try:
        return load_config(path)
    except ConfigError as e:
        raise CommandError(str(e)) from None
    except FileNotFoundError:
        raise CommandError(f"config file {path} not found") from None


@contextmanager
def loading_modules(freeze: bool) -> Iterator[None]:
    """No collector passes while a command loads its modules (long-lived objects, hardly any garbage).

    With `freeze` (keel owns the process) what they made leaves the collector for good: the passes
    during the run, and the one at exit, no longer scan it (about 5% of a `keel backtest`).
    """
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if freeze:
            gc.freeze()
        if collecting:
            gc.enable()


def parse_candles(items: list[str]) -> list[tuple[str, Path]]:
    """`BTC-USDT=FILE` items."""
    out = []
    for item in items:
        symbol, sep, file = item.partition("=")
        if not sep or not symbol or not file:
            raise CommandError(f"--candles takes SYMBOL=FILE (for example BTC-USDT=btc.csv.gz), got {item!r}")
        out.append((symbol.strip().upper(), Path(file)))
    return out


def progress_bar(enabled: bool) -> tuple[Callable[[int, int], None] | None, Callable[[], None]]:
    """A rich progress bar on a terminal; nothing otherwise."""
    if not enabled or not sys.stderr.isatty():
        return None, lambda: None
    from rich.progress import Progress

    prog = Progress(transient=True)
    task = prog.add_task("replaying", total=1)
    prog.start()

    def update(done: int, total: int) -> None:
        prog.update(task, completed=done, total=total)

    return update, prog.stop


from ops import cmd_backtest, cmd_inspect, cmd_live  # noqa: E402,F401  (registers their commands)
