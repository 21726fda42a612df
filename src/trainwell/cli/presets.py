"""``trainwell presets``: the built-in experiments, one line each (``trainwell run NAME`` runs one)."""

from __future__ import annotations

import argparse

from rich.table import Table

from trainwell.cli.common import add_json_option, out, print_json


def run(args: argparse.Namespace) -> int:
    from trainwell.experiments.spec import load_experiment, preset_names

    presets = []
    for name in preset_names():
        spec = load_experiment(name).spec
        presets.append(
            {
                "name": name,
                "variants": [v.name for v in spec.variants],
                "analyses": [a.name for a in spec.analyses],
                "description": spec.description,
            }
        )
    if args.json:
        print_json(presets)
        return 0
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(no_wrap=True, min_width=max((len(p["name"]) for p in presets), default=1))
    table.add_column(no_wrap=True, min_width=11)
    table.add_column(no_wrap=True, overflow="ellipsis")  # one line per preset: the description is cut
    for p in presets:
        table.add_row(
            f"[bold]{p['name']}[/]",
            _count(len(p["variants"]), "variant", "variants")
            if p["variants"]
            else _count(len(p["analyses"]), "analysis", "analyses"),
            " ".join(p["description"].split()),
        )
    out.print(table)
    out.print("run one with `trainwell run NAME [--quick]`; `trainwell run --help` for the options")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("presets", help="list the built-in experiments")
    add_json_option(p)
    p.set_defaults(func=run)


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"
