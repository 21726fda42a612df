"""``trainwell advise CONFIG``: where a config departs from the chapter's guidelines, and what to change.

Exit code 0 whenever advice is given (warnings included: they are advice, not errors), 2 when the config is
invalid.
"""

from __future__ import annotations

import argparse

from rich.markup import escape
from rich.padding import Padding

from trainwell.cli.common import add_json_option, add_set_option, out, print_json

STYLE = {"warning": "bold yellow", "info": "cyan"}


def run(args: argparse.Namespace) -> int:
    from trainwell.config import load_config
    from trainwell.guidelines.advisor import advise, count_by_severity

    config = load_config(args.config, args.set)
    findings = advise(config)
    counts = count_by_severity(findings)
    if args.json:
        print_json({"config": args.config, "counts": counts, "findings": [f.as_dict() for f in findings]})
        return 0
    if not findings:
        out.print(f"{args.config}: follows the chapter's guidelines (no findings)")
        return 0
    out.print(f"{args.config}: {counts['warning']} warning(s), {counts['info']} info")
    for f in findings:
        out.print(f"\n[{STYLE[f.severity]}]{f.severity}[/] [bold]{escape(f.where)}[/]  [dim]({f.rule})[/]")
        out.print(
            Padding(
                f"{escape(f.message)}\n[bold]fix:[/] {escape(f.fix)}\n[dim]from: {escape(f.guideline)}[/]",
                (0, 0, 0, 2),
            )
        )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("advise", help="check a config against the chapter's guidelines")
    p.add_argument("config", help="the config file (TOML)")
    add_set_option(p)
    add_json_option(p)
    p.set_defaults(func=run)
