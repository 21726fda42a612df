"""Time per epoch of data-parallel training (``trainwell train --nproc 2``) against one process.

The workload is the chapter's baseline (``examples/cifar10_baseline.toml``: 20 dense layers of 100 ELU units,
Nadam, global batch 32) on a slice of CIFAR-10 (``--limit`` training images, ``--epochs`` epochs, eager step so
the single process is not given a compile the distributed one cannot use). Three set-ups, their runs
interleaved round by round so a busy phase of the host hits all of them alike:

- ``1 proc, 2 threads``: one process, torch's default threads on this machine;
- ``1 proc, 1 thread``: one process, one thread (what each distributed process gets: torchrun sets
  ``OMP_NUM_THREADS=1`` when it starts more than one process per host);
- ``2 procs, 1 thread each``: ``--nproc 2``, each process training on 16 of every 32 examples, gradients
  all-reduced over gloo on loopback after every step.

Per run it reads ``metrics.json``'s ``seconds_per_epoch`` (training and validation, as ``history.csv`` counts
them) and the command's wall time (with start-up: torchrun, three Python processes, the data). Medians over
``--repeat`` rounds. Speed-up = time on one process / time on two.

    TRAINWELL_DATA=/work/shared/datasets python benchmarks/bench_distributed.py --repeat 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONFIG = Path(__file__).resolve().parents[1] / "examples" / "cifar10_baseline.toml"
SETUPS = {
    "1 proc, 2 threads": ["--set", "train.threads=2"],
    "1 proc, 1 thread": ["--set", "train.threads=1"],
    "2 procs, 1 thread each": ["--nproc", "2"],
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--limit", type=int, default=10_000, help="training images (data.limit_train)")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--repeat", type=int, default=3, help="rounds; medians are reported")
    args = p.parse_args()
    common = [
        "--set",
        f"data.limit_train={args.limit}",
        "--set",
        f"train.epochs={args.epochs}",
        "--set",
        "train.compile=false",
        "--quiet",
        "--json",
    ]
    epoch: dict[str, list[float]] = {name: [] for name in SETUPS}
    wall: dict[str, list[float]] = {name: [] for name in SETUPS}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.repeat):
            for name, extra in SETUPS.items():
                out = Path(tmp) / f"{round_}-{name.replace(' ', '_').replace(',', '')}"
                started = time.perf_counter()
                proc = subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "trainwell",
                        "train",
                        str(CONFIG),
                        "--out",
                        str(out),
                        *common,
                        *extra,
                    ],
                    capture_output=True,
                    text=True,
                )
                if proc.returncode:
                    sys.exit(f"{name}: exit code {proc.returncode}\n{proc.stderr[-2000:]}")
                wall[name].append(time.perf_counter() - started)
                epoch[name].append(json.loads((out / "metrics.json").read_text())["seconds_per_epoch"])
                print(
                    f"round {round_ + 1} {name:24s} {epoch[name][-1]:6.2f} s/epoch  {wall[name][-1]:6.1f} s wall",
                    file=sys.stderr,
                )
    medians = {name: statistics.median(times) for name, times in epoch.items()}
    print(f"{args.limit} images, {args.epochs} epochs, medians of {args.repeat} rounds")
    print(
        f"{'set-up':24s} {'s/epoch':>8s} {'wall s':>8s} {'speed-up vs 1 proc 2 threads':>29s} {'vs 1 thread':>12s}"
    )
    for name in SETUPS:
        print(
            f"{name:24s} {medians[name]:8.2f} {statistics.median(wall[name]):8.1f} "
            f"{medians['1 proc, 2 threads'] / medians[name]:29.2f} {medians['1 proc, 1 thread'] / medians[name]:12.2f}"
        )


if __name__ == "__main__":
    main()
