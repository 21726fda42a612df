"""``trainwell lr-find CONFIG [--json] [--plot FILE]``: sweep the LR on the config's model and data."""

from __future__ import annotations

import argparse

from trainwell.cli.common import add_json_option, add_set_option, err, key_value_table, out, print_json


def run(args: argparse.Namespace) -> int:
    from trainwell.config import load_config
    from trainwell.train.lr_finder import find_lr_for_config, plot_lr_finder

    config = load_config(args.config, args.set)
    result = find_lr_for_config(config)
    if args.plot:
        plot_lr_finder(result, args.plot)
        err.print(f"plot: {args.plot}")
    if args.json:
        print_json(
            {
                "suggested_lr": result.suggested_lr,
                "min_loss_lr": result.min_loss_lr,
                "lrs": result.lrs,
                "losses": result.losses,
                "raw_losses": result.raw_losses,
                "stopped_early": result.stopped_early,
                "settings": result.settings,
            }
        )
        return 0
    out.print(
        key_value_table(
            f"LR finder: {args.config}",
            {
                "suggested learning rate": result.suggested_lr,
                "lowest smoothed loss at": result.min_loss_lr,
                "steps": len(result.lrs),
                "stopped early (loss exploded)": result.stopped_early,
            },
        )
    )
    out.print(
        f"rule: the LR of the lowest smoothed loss / {result.settings['divisor']:g}; use it with "
        f'--set train.optimizer.learning_rate={result.suggested_lr:.3g}, or set learning_rate = "auto"'
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("lr-find", help="find a good learning rate for a config (grow the LR, watch the loss)")
    p.add_argument("config", help="the config file (TOML)")
    add_set_option(p)
    p.add_argument("--plot", metavar="FILE", help="write loss vs. LR (log axis) to FILE (.png, .svg, .pdf)")
    add_json_option(p)
    p.set_defaults(func=run)
