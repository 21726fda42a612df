"""How much ``train.diagnostics = { every = "epoch" }`` slows training down: a ratio, not a timed test.

Trains the same config (same seed, same data) with and without the diagnostics recorder, interleaved (the
order alternates each repetition, so a slow phase of a shared host hits both), and prints the median wall time
of ``fit`` for each and their ratio. The runs with diagnostics include every probe they take: before the
first step, at each epoch's end and after the last step, so short runs overstate the steady cost.

    TRAINWELL_DATA=... python benchmarks/bench_diagnostics.py examples/cifar10_baseline.toml \\
        --set data.limit_train=10000 --epochs 2 --reps 7
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from trainwell.analysis.diagnostics.probes import probe, probe_batch
from trainwell.analysis.diagnostics.recorder import DiagnosticsSpec, recorder_from_spec
from trainwell.config import load_config
from trainwell.data import load_dataset
from trainwell.nn.build import build_model
from trainwell.train.loop import fit


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("config")
    parser.add_argument("--set", action="append", default=[])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--every", default="epoch", help='"epoch" or a number of steps')
    args = parser.parse_args()

    every = args.every if args.every == "epoch" else int(args.every)
    config = load_config(args.config, [*args.set, f"train.epochs={args.epochs}"])
    # Early stopping could end the two kinds of run at different epochs: off, to time the same work.
    spec = config.train.model_copy(
        update={"early_stopping": None, "diagnostics": DiagnosticsSpec(every=every)}
    )
    dataset = load_dataset(config.data)
    threads = torch.get_num_threads()
    steps = -(-len(dataset.x_train) // spec.batch_size) * spec.epochs
    print(
        f"{args.config}: {len(dataset.x_train)} training examples, {spec.epochs} epochs, {steps} steps, "
        f"batch {spec.batch_size}, every={every!r}, probe_size={spec.diagnostics.probe_size}, torch threads "
        f"{threads}"
    )

    times: dict[str, list[float]] = {"off": [], "on": []}
    for rep in range(args.reps):
        order = ("off", "on") if rep % 2 == 0 else ("on", "off")
        for mode in order:
            torch.manual_seed(spec.seed)
            model = build_model(config.model, dataset.input_shape)
            callbacks = (
                [recorder_from_spec(spec.diagnostics, dataset, spec.loss, None)] if mode == "on" else []
            )
            started = time.perf_counter()
            fit(model, dataset, spec, callbacks=callbacks)
            times[mode].append(time.perf_counter() - started)
        print(f"  rep {rep + 1}: off {times['off'][-1]:.2f} s, on {times['on'][-1]:.2f} s", flush=True)

    off, on = statistics.median(times["off"]), statistics.median(times["on"])
    # One probe alone, for scale.
    torch.manual_seed(spec.seed)
    model = build_model(config.model, dataset.input_shape)
    x, y = probe_batch(dataset.x_train, dataset.y_train, spec.diagnostics.probe_size)
    probe(model, x, y)  # warm-up
    probe_times = []
    for _ in range(5):
        started = time.perf_counter()
        probe(model, x, y, loss=spec.loss)
        probe_times.append(time.perf_counter() - started)
    print(f"median fit time: off {off:.2f} s, on {on:.2f} s; slowdown {100 * (on / off - 1):+.1f} %")
    print(
        f"per-rep ratios on/off: {', '.join(f'{b / a:.3f}' for a, b in zip(times['off'], times['on'], strict=True))}"
    )
    print(f"one probe: median {1000 * statistics.median(probe_times):.0f} ms")


if __name__ == "__main__":
    main()
