"""``trainwell train CONFIG`` and ``trainwell train --resume RUN_DIR``, on one process or several.

``--nproc N`` hands the same command (without ``--nproc``) to ``torch.distributed.run`` for N local processes;
each of them, like every process of an external ``torchrun ... -m trainwell train``, finds torchrun's
environment and joins the job (:mod:`trainwell.distributed`). Only rank 0 prints the result.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from trainwell.cli.common import add_json_option, add_set_option, err, key_value_table, out, print_json
from trainwell.errors import ConfigError


def run(args: argparse.Namespace) -> int:
    from trainwell import distributed

    if args.nproc is not None and not distributed.launched_by_torchrun():
        return _launch(args)
    if distributed.launched_by_torchrun():
        with distributed.process_group(_device(args)):
            code = _run(args)
        distributed.leave(code)  # not through the interpreter's finalization (see leave)
    return _run(args)


def _device(args: argparse.Namespace) -> str:
    """``train.device`` of the config to train (or of the run to resume), for the process group's backend."""
    from trainwell.config import load_config
    from trainwell.runs import load_run_config

    if args.resume:
        return load_run_config(args.resume).train.device
    return load_config(args.config, args.set).train.device if args.config else "auto"


def _launch(args: argparse.Namespace) -> int:
    """``--nproc N``: check what can be checked here, then run this command on N processes through torchrun."""
    from trainwell import distributed
    from trainwell.config import load_config
    from trainwell.runs import load_run_config

    _check_args(args)
    config = load_run_config(args.resume) if args.resume else load_config(args.config, args.set)
    distributed.check_launch(config, args.nproc)
    if args.nproc == 1:  # nothing to distribute
        return _run(args)
    argv = ["--debug"] if args.debug else []
    argv += ["train", *([args.config] if args.config else []), *[f"--set={s}" for s in args.set]]
    for flag, value in (("--out", args.out), ("--runs", args.runs), ("--resume", args.resume)):
        if value is not None:
            argv += [flag, str(value)]
    argv += [flag for flag, on in (("--quiet", args.quiet), ("--json", args.json)) if on]
    distributed.launch(args.nproc, argv)
    return 0


def _check_args(args: argparse.Namespace) -> None:
    if args.resume:
        if args.config or args.set or args.out:
            raise ConfigError("--resume continues a run with its own config and folder: give no CONFIG, --set or --out")
    elif not args.config:
        raise ConfigError("give a CONFIG file to train, or --resume RUN_DIR to continue a run")


def _run(args: argparse.Namespace) -> int:
    from trainwell import distributed
    from trainwell.config import load_config
    from trainwell.runs import resume_training, run_training
    from trainwell.train.signals import exit_code

    _check_args(args)
    if args.resume:
        result = resume_training(args.resume, progress=not args.quiet)
    else:
        config = load_config(args.config, args.set)
        result = run_training(config, name=Path(args.config).stem, out=args.out, runs_root=args.runs,
                              progress=not args.quiet)
    if result.interrupted and distributed.current() is not None:
        distributed.current().stopped = True  # the ranks may be at different steps: leave without a barrier
    if not distributed.is_rank_zero():  # under DDP rank 0 reports for the job
        return exit_code(result.signal) if result.signal is not None else 0
    if result.interrupted:  # a clean stop on SIGINT/SIGTERM: say how to continue, exit 128 + signal number
        if args.json:
            print_json({"run_dir": str(result.run_dir), "status": "interrupted", "message": result.message})
        message = result.message or f"interrupted; continue with: trainwell train --resume {result.run_dir}"
        if distributed.world_size() > 1:  # the message ends with the command that continues the run
            message += f" --nproc {distributed.world_size()}"
        err.print(message, soft_wrap=True, markup=False)
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
    p.add_argument("--nproc", type=int, metavar="N",
                   help="train on N local processes with DistributedDataParallel, launched by torch.distributed.run "
                        "(gloo on the CPU, nccl on GPUs: one per process); train.batch_size is the global batch")
    add_json_option(p)
    p.set_defaults(func=run)
