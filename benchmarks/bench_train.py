"""Epoch time of trainwell's loop against the idiomatic PyTorch loop, side by side in one run.

The workload is the chapter's exercise (``examples/cifar10_baseline.toml``): 20 dense layers of 100 ELU units
with He initialization and Nadam, batch size 32, 45,000 CIFAR-10 training images and a 5,000-image validation
pass per epoch. Three loops train it, their epochs interleaved round by round (so a slow phase of the host
hits all of them alike):

- ``pytorch``: the idiomatic loop — ``DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True)``,
  ``nn.Sequential``, ``torch.optim.NAdam``, ``loss.item()`` each step, an eval pass over a validation
  ``DataLoader`` (batch 1024, to be kind to it);
- ``trainwell``: ``trainwell.fit`` with the config exactly as written (100 epochs planned, so the default
  ``train.compile = "auto"`` compiles; the run is stopped after ``--epochs``);
- ``trainwell-eager``: the same with ``train.compile = false`` (what a short run gets).

Each loop lives in a process of its own and trains one epoch when the coordinator passes it the turn; only one
trains at a time. (Not threads: on this 2-core CPU a second Python thread that has run torch code makes
OpenMP see more threads than cores and throttle its spin-waits, which slowed a lone training loop 3.4x here.)

Epoch 1 is warm-up (and the compile) and is reported apart; the ratios use the median of the later epochs.
The floor is the arithmetic: the FLOPs of an epoch (forward, backward, validation; the first layer's input
gradient is not needed) at the rate this machine's matrix multiply reaches on exactly the step's GEMMs at
batch 32, measured here too.

    TRAINWELL_DATA=/work/shared/datasets python benchmarks/bench_train.py --epochs 4
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import sys
import time
from pathlib import Path
from typing import Any

CONFIG = Path(__file__).resolve().parents[1] / "examples" / "cifar10_baseline.toml"
LOOPS = ("pytorch", "trainwell", "trainwell-eager")


# --- the loops, each in its own process ----------------------------------------------------------------------


def idiomatic_loop(data: Any, lr: float, epochs: int, conn: Any) -> None:
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(0)
    x_train, y_train = torch.as_tensor(data.x_train), torch.as_tensor(data.y_train)
    x_valid, y_valid = torch.as_tensor(data.x_valid), torch.as_tensor(data.y_valid)
    layers: list[nn.Module] = [nn.Flatten()]
    width = x_train[0].numel()
    for _ in range(20):
        linear = nn.Linear(width, 100)
        nn.init.kaiming_normal_(linear.weight)
        nn.init.zeros_(linear.bias)
        layers += [linear, nn.ELU()]
        width = 100
    layers.append(nn.Linear(100, 10))
    model = nn.Sequential(*layers)
    optimizer = torch.optim.NAdam(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    train_loader = DataLoader(TensorDataset(x_train, y_train), batch_size=32, shuffle=True)
    valid_loader = DataLoader(TensorDataset(x_valid, y_valid), batch_size=1024)
    conn.send({"step": "idiomatic (eager, torch.optim.NAdam defaults)"})
    for _ in range(epochs):
        conn.recv()
        started = time.perf_counter()
        model.train()
        running = 0.0
        for xb, yb in train_loader:
            optimizer.zero_grad()
            loss = loss_fn(model(xb), yb)
            loss.backward()
            optimizer.step()
            running += loss.item()
        model.eval()
        correct, total = 0, 0.0
        with torch.no_grad():
            for xb, yb in valid_loader:
                logits = model(xb)
                total += loss_fn(logits, yb).item() * len(yb)
                correct += (logits.argmax(1) == yb).sum().item()
        conn.send(time.perf_counter() - started)


def trainwell_loop(config: Any, data: Any, epochs: int, conn: Any) -> None:
    import torch

    from trainwell.nn.build import build_model
    from trainwell.train.callbacks import Callback
    from trainwell.train.loop import fit

    class Turns(Callback):
        """Wait for the turn before training; report each epoch's seconds and wait again."""

        def on_train_begin(self, trainer: Any) -> None:
            conn.send({"step": None})  # ready; the step is known once fit has chosen it
            conn.recv()

        def on_epoch_end(self, trainer: Any, epoch: int, logs: dict[str, float]) -> None:
            if epoch + 1 >= epochs:
                trainer.stop_training = True
            conn.send(logs["seconds"])
            if epoch + 1 < epochs:
                conn.recv()

    torch.manual_seed(config.train.seed)
    model = build_model(config.model, data.input_shape)
    state = fit(model, data, config.train, callbacks=[Turns()])
    conn.send({"step": state.extra["step"]})


def child(name: str, overrides: list[str], epochs: int, threads: int | None, conn: Any) -> None:
    import torch

    from trainwell.config import load_config
    from trainwell.data import load_dataset

    if threads:
        torch.set_num_threads(threads)
    config = load_config(CONFIG, overrides + (["train.compile=false"] if name == "trainwell-eager" else []))
    data = load_dataset(config.data)
    if name == "pytorch":
        idiomatic_loop(data, config.train.optimizer.learning_rate, epochs, conn)
    else:
        trainwell_loop(config, data, epochs, conn)


# --- the floor -------------------------------------------------------------------------------------------


def layer_shapes(in_features: int) -> list[tuple[int, int]]:
    return [(in_features, 100)] + [(100, 100)] * 19 + [(100, 10)]


def epoch_flops(n_train: int, n_valid: int, in_features: int) -> float:
    """Multiply-adds × 2 of one epoch: forward 2·in·out per layer and sample; backward the weight gradient
    (2·in·out) and the input gradient (2·in·out, except the first layer, whose input needs none); the
    validation pass forward only."""
    shapes = layer_shapes(in_features)
    forward = sum(2 * i * o for i, o in shapes)
    backward = sum(2 * i * o for i, o in shapes) + sum(2 * i * o for i, o in shapes[1:])
    return n_train * (forward + backward) + n_valid * forward


def gemm_seconds_per_step(in_features: int, batch: int = 32, repeats: int = 300) -> tuple[float, float]:
    """(median seconds, FLOPs) of one training step's matrix multiplies at ``batch``, run back to back on
    random data: forward x·Wᵀ + b, weight gradient gᵀ·x, input gradient g·W."""
    import torch

    shapes = layer_shapes(in_features)
    xs = [torch.randn(batch, i) for i, _ in shapes]
    ws = [torch.randn(o, i) for i, o in shapes]
    bs = [torch.randn(o) for _, o in shapes]
    gs = [torch.randn(batch, o) for _, o in shapes]
    flops = sum(2 * batch * i * o * (3 if k else 2) for k, (i, o) in enumerate(shapes))

    def one() -> None:
        for k in range(len(shapes)):
            torch.addmm(bs[k], xs[k], ws[k].t())
        for k in reversed(range(len(shapes))):
            torch.mm(gs[k].t(), xs[k])
            if k:
                torch.mm(gs[k], ws[k])

    for _ in range(20):
        one()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        one()
        times.append(time.perf_counter() - started)
    return statistics.median(times), flops


def floor_child(in_features: int, threads: int | None, conn: Any) -> None:
    import torch

    if threads:
        torch.set_num_threads(threads)
    conn.send((*gemm_seconds_per_step(in_features), torch.get_num_threads(), torch.__version__))


# --- the coordinator -------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4, help="epochs per loop (the first is warm-up)")
    parser.add_argument("--limit-train", type=int, help="train on this many images only (a quick check)")
    parser.add_argument("--threads", type=int, help="torch threads in every loop (default: torch's)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a config override for the trainwell loops, e.g. train.precision=bf16; repeatable",
    )
    parser.add_argument("--json", action="store_true", help="also print the numbers as JSON")
    args = parser.parse_args()
    overrides = [f"data.limit_train={args.limit_train}"] if args.limit_train else []
    ctx = mp.get_context("spawn")

    from trainwell.config import load_config
    from trainwell.data import load_dataset

    config = load_config(CONFIG, overrides)
    data = load_dataset(config.data)  # numpy only here; the loops load their own copies
    n_train, n_valid = len(data.x_train), len(data.x_valid)
    in_features = int(data.x_train[0].size)
    del data

    conns, procs = {}, []
    for name in LOOPS:
        parent, child_end = ctx.Pipe()
        extra = [] if name == "pytorch" else args.set
        proc = ctx.Process(
            target=child, args=(name, overrides + extra, args.epochs, args.threads, child_end), daemon=True
        )
        proc.start()
        conns[name] = parent
        procs.append(proc)
    steps = {name: conns[name].recv()["step"] for name in LOOPS}  # each is loaded and ready
    times: dict[str, list[float]] = {name: [] for name in LOOPS}
    for _ in range(args.epochs):
        for name in LOOPS:
            conns[name].send("go")
            times[name].append(conns[name].recv())
    for name in ("trainwell", "trainwell-eager"):
        steps[name] = conns[name].recv()["step"]
    for proc in procs:
        proc.join()

    parent, child_end = ctx.Pipe()
    proc = ctx.Process(target=floor_child, args=(in_features, args.threads, child_end))
    proc.start()
    gemm, step_flops, threads, version = parent.recv()
    proc.join()

    batches = -(-n_train // 32)
    rate = step_flops / gemm
    floor = batches * gemm + n_valid * sum(2 * i * o for i, o in layer_shapes(in_features)) / rate
    flops = epoch_flops(n_train, n_valid, in_features)

    print(
        f"torch {version}, {threads} threads; {n_train} training + {n_valid} validation images, batch 32, "
        f"{args.epochs} epochs per loop, interleaved"
    )
    for name in LOOPS:
        print(f"  {name}: {steps[name]}")
    print(
        f"{'loop':<16} {'epoch 1 s':>9}  {'later epochs s':<22} {'median s':>8} {'samples/s':>10} "
        f"{'vs pytorch':>10} {'vs floor':>9}"
    )
    base = statistics.median(times["pytorch"][1:] or times["pytorch"])
    summary = {}
    for name in LOOPS:
        steady = times[name][1:] or times[name]
        median = statistics.median(steady)
        summary[name] = {
            "epochs": times[name],
            "median_steady": median,
            "samples_per_s": n_train / median,
            "speedup_vs_pytorch": base / median,
            "times_floor": median / floor,
            "step": steps[name],
        }
        print(
            f"{name:<16} {times[name][0]:>9.2f}  {' '.join(f'{t:.2f}' for t in steady):<22} {median:>8.2f} "
            f"{n_train / median:>10.0f} {base / median:>9.2f}x {median / floor:>8.2f}x"
        )
    for name in ("trainwell", "trainwell-eager"):
        rounds = [p / t for p, t in zip(times["pytorch"][1:], times[name][1:], strict=False)]
        if rounds:
            print(f"per-round speedup of {name} over pytorch: {' '.join(f'{r:.2f}' for r in rounds)}")
    print(
        f"floor: {flops / 1e9:.1f} GFLOP per epoch; one step's GEMMs at batch 32 take {gemm * 1e3:.3f} ms "
        f"({rate / 1e9:.1f} GFLOP/s) -> {floor:.2f} s per epoch"
    )
    if args.json:
        print(
            json.dumps(
                {
                    "loops": summary,
                    "floor_s": floor,
                    "gflop_per_epoch": flops / 1e9,
                    "gemm_gflops": rate / 1e9,
                    "threads": threads,
                }
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
