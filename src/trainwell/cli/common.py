"""What every subcommand shares: the two consoles, JSON output, simple tables, the --set option."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from rich.console import Console
from rich.table import Table

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


def print_json(obj: Any) -> None:
    """The JSON document alone on stdout (messages go to stderr)."""
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


def format_value(value: Any) -> str:
    """Floats with four significant figures' worth of meaning: 0.3788, 5e-05, 8420.1."""
    if isinstance(value, float):
        return f"{value:.4f}" if 1e-3 <= abs(value) < 1e4 else f"{value:.4g}"
    return str(value)


def key_value_table(title: str, values: dict[str, Any]) -> Table:
    table = Table(title=title, show_header=False, title_justify="left")
    for key, value in values.items():
        table.add_row(key, format_value(value))
    return table


def add_set_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value (read as TOML), e.g. --set train.epochs=3; repeatable")


def add_json_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the result as JSON on stdout")


def add_latency_options(p: argparse.ArgumentParser) -> None:
    """``--runs`` and ``--threads`` for commands that time forward passes (``fuse``, ``export``)."""
    p.add_argument("--runs", type=int, default=100, metavar="N",
                   help="timed forward passes per latency number (default 100; 0 skips timing)")
    p.add_argument("--threads", type=int, metavar="N",
                   help="CPU threads for the timing (default: torch's); 1 gives steadier numbers on a busy machine")
