"""``trainwell predict RUN [--mc N] [--split test|valid] [--json]``: a finished run's predictions, ordinary and
MC dropout side by side (accuracy, log loss, mean predictive entropy)."""

from __future__ import annotations

import argparse

from trainwell.cli.common import add_json_option, key_value_table, out, print_json


def run(args: argparse.Namespace) -> int:
    from trainwell.analysis.mc_dropout import predict_run

    result = predict_run(args.run, args.mc, split=args.split, seed=args.seed)
    if args.json:
        print_json(result)
        return 0
    title = f"{args.split} set of {args.run}" + (f": MC dropout, {args.mc} samples" if args.mc > 0 else "")
    out.print(key_value_table(title, result))
    if args.mc > 0:
        gain = 100 * (result["mc_accuracy"] - result["accuracy"])
        out.print(
            f"MC dropout changes the accuracy by {gain:+.2f} points and the log loss from "
            f"{result['log_loss']:.4f} to {result['mc_log_loss']:.4f} (lower is better)."
        )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="a finished run's predictions, ordinary and MC dropout side by side")
    p.add_argument("run", help="the run folder")
    p.add_argument(
        "--mc",
        type=int,
        default=0,
        metavar="N",
        help="MC dropout with N stochastic passes (the chapter uses 100); 0: the ordinary prediction only",
    )
    p.add_argument(
        "--split", choices=("test", "valid"), default="test", help="which split to predict (default: test)"
    )
    p.add_argument("--seed", type=int, help="seed of the dropout masks (default: the run's train.seed)")
    add_json_option(p)
    p.set_defaults(func=run)
