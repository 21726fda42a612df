"""Where one training step's time goes: trainwell's step on the chapter's nets, timed in parts and profiled.

    python benchmarks/profile_step.py --variant elu [--steps 2000] [--set train.precision=bf16] [--trace]

For one variant of ``peers/variants.py`` on random data of CIFAR-10's shape (the step's cost does not depend
on the pixel values), after a warm-up (and the compile) it times, per step, medians over ``--steps``:

- ``loop``: what ``fit``'s hot loop does per batch — slice, step, accumulate loss and accuracy;
- ``step``: the step function alone (for the compiled step: host-side scalars, the compiled call, the
  optimizer's counters);
- ``gemm``: the step's matrix multiplies alone at the same shapes (``bench_train.gemm_seconds_per_step``);

and prints torch.profiler's table of the most expensive operations over 200 steps (``--trace`` also writes a
Chrome trace to ``step_trace.json``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE / "peers")]

from bench_train import gemm_seconds_per_step  # noqa: E402
from variants import VARIANTS, trainwell_layers  # noqa: E402

CONFIG = HERE.parent / "examples" / "cifar10_baseline.toml"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="elu", choices=sorted(VARIANTS))
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--trace", action="store_true")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument(
        "--options",
        type=json.loads,
        help="inductor options for the compiled step, as JSON "
        '(default: the step\'s own, i.e. {"cpp_wrapper": true} on the CPU)',
    )
    parser.add_argument(
        "--skip-guards",
        action="store_true",
        help="time the steps under torch.compiler.set_stance(skip_guard_eval_unsafe=True)",
    )
    parser.add_argument("--no-profile", action="store_true", help="only the timings")
    args = parser.parse_args()

    from trainwell.config import read_toml, validate_config, with_overrides
    from trainwell.nn.build import build_model, split_output
    from trainwell.train.losses import LOSSES
    from trainwell.train.optimizers import build_optimizer
    from trainwell.train.step import build_step, make_compiled_step

    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.no_profile:  # name each inductor kernel in the profile (a separate compile: cached apart)
        torch._inductor.config.cpp.enable_kernel_profile = True

    raw = read_toml(CONFIG)
    raw["model"]["layers"] = trainwell_layers(VARIANTS[args.variant])
    config = validate_config(with_overrides(raw, args.set), "profile")
    spec = config.train
    torch.manual_seed(0)
    model = build_model(config.model, (32, 32, 3))
    loss_spec = LOSSES[spec.loss]
    optimizer = build_optimizer(spec.optimizer, model.parameters())
    logits_model, _ = split_output(model)
    if args.options is not None:
        step = make_compiled_step(model, logits_model, loss_spec, optimizer, 32, spec.precision, args.options)
        why = f"compiled with options {args.options}"
    else:
        step, why = build_step(
            model,
            logits_model,
            loss_spec,
            optimizer,
            compile=spec.compile,
            precision=spec.precision,
            batch_size=32,
            total_steps=spec.epochs * 1407,
        )
    n = 32 * args.steps
    xs, ys = torch.rand(n, 32, 32, 3), torch.randint(0, 10, (n,))
    model.train()
    started, cpu = time.perf_counter(), time.process_time()
    for i in range(30):
        step(xs[32 * i : 32 * i + 32], ys[32 * i : 32 * i + 32])
    print(
        f"{args.variant}: {why}; first 30 steps (warm-up, compile) {time.perf_counter() - started:.1f} s "
        f"({time.process_time() - cpu:.1f} s CPU); "
        f"{torch.get_num_threads()} threads"
    )

    if args.skip_guards:
        torch.compiler.set_stance(skip_guard_eval_unsafe=True)
    loss_sum, correct = torch.zeros(()), torch.zeros((), dtype=torch.int64)
    loop_t, step_t, cpu_t = [], [], []
    for i in range(args.steps):
        c0 = time.thread_time()  # CPU time: steady on a shared host, where wall time is not
        t0 = time.perf_counter()
        xb, yb = xs[32 * i : 32 * i + 32], ys[32 * i : 32 * i + 32]
        t1 = time.perf_counter()
        loss, logits = step(xb, yb)
        t2 = time.perf_counter()
        with torch.no_grad():
            loss_sum += loss * len(yb)
            correct += loss_spec.correct(logits, yb)
        t3 = time.perf_counter()
        cpu_t.append(time.thread_time() - c0)
        loop_t.append(t3 - t0)
        step_t.append(t2 - t1)
    gemm, _ = gemm_seconds_per_step(32 * 32 * 3)
    loop_ms, step_ms = statistics.median(loop_t) * 1e3, statistics.median(step_t) * 1e3
    cpu_ms = statistics.median(cpu_t) * 1e3
    print(f"main thread's CPU per step, ms (median): {cpu_ms:.3f} (mean {statistics.fmean(cpu_t) * 1e3:.3f})")
    print(
        f"per step, ms (median of {args.steps}): loop {loop_ms:.3f}, of which step {step_ms:.3f} "
        f"(loop bookkeeping {loop_ms - step_ms:.3f}); the step's GEMMs alone {gemm * 1e3:.3f}; "
        f"x 1407 steps = {loop_ms * 1.407:.2f} s/epoch of training (GEMMs {gemm * 1407:.2f} s)"
    )

    if args.no_profile:
        return 0
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for i in range(200):
            loss, logits = step(xs[32 * i : 32 * i + 32], ys[32 * i : 32 * i + 32])
            with torch.no_grad():
                loss_sum += loss * 32
                correct += loss_spec.correct(logits, ys[32 * i : 32 * i + 32])
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=40, max_name_column_width=60))
    if args.trace:
        prof.export_chrome_trace(str(Path.cwd() / "step_trace.json"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
