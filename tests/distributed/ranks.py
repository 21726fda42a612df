"""``trainwell train`` as one rank of a torchrun job, with test hooks: what the tests cannot see from outside.

Run under torchrun (``python -m torch.distributed.run --standalone --nproc-per-node 2 ranks.py CONFIG OUT
[--dump DIR] [--fail-rank R --fail-step S]``), it joins the job exactly as ``trainwell train`` does
(:func:`trainwell.distributed.process_group`, then :func:`trainwell.runs.run_training`) and

- ``--dump DIR``: writes every rank's final weights to ``DIR/rank<R>.pt``, so a test can compare the ranks;
- ``--fail-rank R --fail-step S``: raises a TrainingError on rank R just before its global step S, the way a
  real fault in one process (a bad GPU, a full disk) would.

Without torchrun's environment (``launch`` as the first argument) it is the launcher instead, as ``trainwell
train --nproc 2`` is: it hands the rest of its arguments to :func:`trainwell.distributed.launch` and prints the
job's error the way the CLI does.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch

from trainwell import distributed
from trainwell.config import load_config
from trainwell.errors import TrainingError, TrainwellError
from trainwell.runs import run_training
from trainwell.train.callbacks import Callback


class FailAtStep(Callback):
    """Raise on one rank just before a given global step (1-based, counted over the whole run)."""

    def __init__(self, rank: int, step: int):
        self.rank, self.step = rank, step

    def on_step_begin(self, trainer: Any, step: int) -> None:
        here = distributed.current()
        if here is not None and here.rank == self.rank and step + 1 == self.step:
            raise TrainingError(f"injected fault on rank {self.rank} before step {self.step}")


class DumpWeights(Callback):
    """Save this rank's final weights, and how many examples it trained on in the first epoch (read after the
    epoch's last step, before the epoch's sums are reduced over the ranks)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.seen_first_epoch = -1

    def on_step_end(self, trainer: Any, step: int) -> None:
        if trainer.epoch == 0 and trainer.epoch_step == trainer.steps_per_epoch:
            self.seen_first_epoch = trainer.epoch_seen

    def on_train_end(self, trainer: Any) -> None:
        rank = distributed.current().rank
        self.folder.mkdir(parents=True, exist_ok=True)
        torch.save(
            {"weights": trainer.model.state_dict(), "seen_first_epoch": self.seen_first_epoch},
            self.folder / f"rank{rank}.pt",
        )


def main(argv: list[str]) -> int:
    if argv and argv[0] == "launch":
        try:
            distributed.launch(int(argv[1]), [__file__, *argv[2:]], module=None)
        except TrainwellError as e:
            print(f"error: {e}", file=sys.stderr)
            return e.exit_code
        return 0
    p = argparse.ArgumentParser()
    p.add_argument("config")
    p.add_argument("out")
    p.add_argument("--dump", type=Path)
    p.add_argument("--fail-rank", type=int)
    p.add_argument("--fail-step", type=int)
    args = p.parse_args(argv)
    callbacks: list[Callback] = []
    if args.dump is not None:
        callbacks.append(DumpWeights(args.dump))
    if args.fail_rank is not None:
        callbacks.append(FailAtStep(args.fail_rank, args.fail_step))
    config = load_config(args.config)
    with distributed.process_group(config.train.device):
        run_training(config, out=args.out, progress=False, extra_callbacks=callbacks)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
