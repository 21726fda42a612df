"""``trainwell evaluate RUN_DIR``: test-set loss and accuracy of a finished run."""

from __future__ import annotations

import argparse

from trainwell.cli.common import add_json_option, key_value_table, out, print_json


def run(args: argparse.Namespace) -> int:
    from trainwell.runs import evaluate_run

    result = evaluate_run(args.run)
    if args.json:
        print_json(result)
    else:
        out.print(key_value_table(f"test set of {args.run}", result))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="test-set loss and accuracy of a finished run")
    p.add_argument("run", help="the run folder")
    add_json_option(p)
    p.set_defaults(func=run)
