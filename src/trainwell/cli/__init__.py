"""The ``trainwell`` command: parse arguments, call one API function, print the result.

Each subcommand lives in its own module of this package with a ``register(subparsers)`` function that adds
its parser and sets ``func``; :data:`COMMANDS` lists them in the order ``--help`` shows them.

Output for people goes to stdout as rich tables; ``--json`` prints only the JSON document on stdout.
Messages, progress and warnings go to stderr. A :class:`~trainwell.errors.TrainwellError` becomes one
message and its exit code (2 for bad input) — the traceback only with ``--debug``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from rich.markup import escape

from trainwell.cli.common import err
from trainwell.errors import TrainwellError

COMMANDS = ("train", "lr_find", "evaluate", "summary", "diagnose", "datasets", "prune", "fuse", "export", "new",
            "recipes", "advise", "run", "report", "presets", "predict")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trainwell", description="Train deep neural networks well.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"trainwell.cli.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except TrainwellError as e:
        if args.debug:
            raise
        err.print(f"[bold red]error:[/] {escape(str(e))}", soft_wrap=True)
        return e.exit_code
    except OSError as e:  # the file system refused (disk full, permissions) where no message was planned
        if args.debug:
            raise
        err.print(f"[bold red]error:[/] {escape(str(e))} (--debug shows where)", soft_wrap=True)
        return 1
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
