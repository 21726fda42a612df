"""MC dropout: ``trainwell.predict_mc`` against the chapter's loop of separate stochastic passes.

The model is the exercise's (e) (``cifar10-exercise``, variant ``alpha-dropout``): 20 dense layers of 100 SELU
units, then alpha dropout and the softmax output. The chapter's loop, in PyTorch with BN-safe flags::

    model.eval(); [m.train() for m in dropout layers]
    probas = torch.stack([model(x) for _ in range(100)]); probas.mean(0), probas.std(0)

``predict_mc`` runs the 20 layers before the dropout once and the 100 samples of the rest as one batch. Both
run on the same images, rounds interleaved (a slow phase of a shared host hits both alike); the script prints
each round's seconds, the median ratio, and how far the two means are apart (in units of their standard
error: two MC estimates of the same distribution, so a few at most).

    TRAINWELL_DATA=/work/shared/datasets python benchmarks/bench_mc_dropout.py            # 5,000 CIFAR images
    python benchmarks/bench_mc_dropout.py --run experiments/cifar10-exercise-quick/alpha-dropout   # trained (e)
    python benchmarks/bench_mc_dropout.py --examples 2000 --rounds 3 --json               # random images
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch
from torch import nn


def exercise_model() -> tuple[nn.Module, dict]:
    from trainwell.experiments.spec import load_experiment, plan_runs
    from trainwell.nn.build import build_model

    plan = next(p for p in plan_runs(load_experiment("cifar10-exercise")) if p.folder == "alpha-dropout")
    torch.manual_seed(0)
    return build_model(plan.config.model, (32, 32, 3)).eval(), plan.data


def images(n: int, data: dict) -> tuple[np.ndarray, str]:
    try:
        from trainwell.data import load_dataset

        dataset = load_dataset(data["data"])
        return dataset.x_valid[
            :n
        ], f"{min(n, len(dataset.x_valid))} CIFAR-10 validation images (standardized)"
    except Exception as e:  # no data here: the timing does not depend on the pixels
        return np.random.default_rng(0).normal(size=(n, 32, 32, 3)).astype(
            np.float32
        ), f"{n} random images ({e})"


@torch.inference_mode()
def chapter_loop(model: nn.Module, x: torch.Tensor, samples: int) -> tuple[np.ndarray, np.ndarray]:
    dropouts = [m for m in model.modules() if isinstance(m, nn.Dropout | nn.AlphaDropout)]
    model.eval()
    for m in dropouts:
        m.train()
    try:
        probas = torch.stack([model(x) for _ in range(samples)])
    finally:
        model.eval()
    return probas.mean(0).numpy(), probas.std(0, correction=0).numpy()


def main() -> None:
    from trainwell.analysis.mc_dropout import predict_mc

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=5000)
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--run", help="a trained run folder of model (e) (default: the model untrained)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.run:
        from trainwell.config import config_to_dict
        from trainwell.runs import load_run_config, load_run_model

        model, data = load_run_model(args.run), config_to_dict(load_run_config(args.run))
    else:
        model, data = exercise_model()
    x_np, what = images(args.examples, data)
    x = torch.as_tensor(x_np)
    chapter_loop(model, x[:64], 2)  # warm-up: first calls allocate
    predict_mc(model, x[:64], 2, seed=0)
    rows = []
    for r in range(args.rounds):
        t = time.perf_counter()
        loop_mean, loop_std = chapter_loop(model, x, args.samples)
        loop_s = time.perf_counter() - t
        t = time.perf_counter()
        fast = predict_mc(model, x, args.samples, seed=r)
        fast_s = time.perf_counter() - t
        rows.append(
            {"round": r + 1, "chapter_loop_s": loop_s, "predict_mc_s": fast_s, "ratio": loop_s / fast_s}
        )
        if not args.json:
            print(
                f"round {r + 1}: chapter's loop {loop_s:7.2f} s   predict_mc {fast_s:6.2f} s   "
                f"{loop_s / fast_s:5.1f}x",
                flush=True,
            )
    se = np.sqrt(loop_std**2 / args.samples + fast.std**2 / args.samples) + 1e-7
    z = float(np.max(np.abs(loop_mean - fast.mean) / se))
    agree = float(np.mean(loop_mean.argmax(1) == fast.mean.argmax(1)))
    summary = {
        "model": "cifar10-exercise (e): 20x100 SELU + alpha dropout 0.1 + softmax"
        + (f", trained ({args.run})" if args.run else ", untrained"),
        "images": what,
        "samples": args.samples,
        "threads": torch.get_num_threads(),
        "rounds": rows,
        "median_chapter_loop_s": statistics.median(r["chapter_loop_s"] for r in rows),
        "median_predict_mc_s": statistics.median(r["predict_mc_s"] for r in rows),
        "median_ratio": statistics.median(r["ratio"] for r in rows),
        "max_mean_difference_in_standard_errors": z,
        "same_predicted_class": agree,
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"{summary['model']}; {what}; {args.samples} samples; {summary['threads']} threads")
        print(
            f"median: chapter's loop {summary['median_chapter_loop_s']:.2f} s, predict_mc "
            f"{summary['median_predict_mc_s']:.2f} s: {summary['median_ratio']:.1f}x faster"
        )
        print(
            f"the two means differ by at most {z:.1f} standard errors; same predicted class for "
            f"{100 * agree:.1f} % of the images"
        )


if __name__ == "__main__":
    main()
