"""``trainwell recipes``: the recipes ``trainwell new`` writes, one line each."""

from __future__ import annotations

import argparse

from rich.table import Table

from trainwell.cli.common import add_json_option, out, print_json


def run(args: argparse.Namespace) -> int:
    from trainwell.guidelines.recipes import RECIPES
    from trainwell.guidelines.sources import cite

    rows = [{"name": r.name, "summary": r.summary, "guideline": cite(r.source)} for r in RECIPES.values()]
    if args.json:
        print_json(rows)
        return 0
    table = Table(title="recipes (trainwell new CONFIG.toml --recipe NAME)", title_justify="left")
    for col in ("recipe", "what it configures", "from"):
        table.add_column(col)
    for row in rows:
        table.add_row(row["name"], row["summary"], row["guideline"].split(": ", 1)[1])
    out.print(table)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("recipes", help="list the recipes that `trainwell new` writes")
    add_json_option(p)
    p.set_defaults(func=run)
