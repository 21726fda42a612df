"""``trainwell train CONFIG`` and ``trainwell train --resume RUN_DIR``."""

from __future__ import annotations

import argparse
from pathlib import Path

from trainwell.cli.common import add_json_option, add_set_option, err, key_value_table, out, print_json
from trainwell.errors import ConfigError


def run(args: argparse.Namespace) -> int:
    from trainwell.config import load_config
    from trainwell.runs import resume_training, run_training

    if args.resume:
        if args.config or args.set or args.out:
            raise ConfigError("--resume continues a run with its own config and folder: give no CONFIG, --set or --out")
        result = resume_training(args.resume, progress=not args.quiet)
    else:
        if not args.config:
            raise ConfigError("give a CONFIG file to train, or --resume RUN_DIR to continue a run")
        config = load_config(args.config, args.set)
        result = run_training(config, name=Path(args.config).stem, out=args.out, runs_root=args.runs,
                              progress=not args.quiet)
    if result.interrupted:  # a clean stop on SIGINT/SIGTERM: say how to continue, exit 128 + signal number
        from trainwell.train.signals import exit_code

        if args.json:
            print_json({"run_dir": str(result.run_dir), "status": "interrupted", "message": result.message})
        err.print(result.message or f"interrupted; continue with: trainwell train --resume {result.run_dir}",
                  soft_wrap=True, markup=False)
        return exit_code(result.signal) if result.signal is not None else 1
    if args.json:
        print_json({"run_dir": str(result.run_dir), **result.metrics})
    else:
        out.print(key_value_table(f"run finished: {result.run_dir}", result.metrics))
        out.print(f"results: {result.run_dir}  (evaluate again with `trainwell evaluate {result.run_dir}`)")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a config into a run folder")
    p.add_argument("config", nargs="?", help="the config file (TOML)")
    add_set_option(p)
    p.add_argument("--out", help="the run folder to write (default: runs/<name>-<timestamp>)")
    p.add_argument("--runs", default="runs", help="where new run folders go (default: runs)")
    p.add_argument("--resume", metavar="RUN_DIR",
                   help="continue an interrupted, crashed or failed run from its last checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress display")
    add_json_option(p)
    p.set_defaults(func=run)
