"""trainwell against its peers on the chapter's CIFAR-10 nets, side by side: one command, one table.

    TRAINWELL_DATA=/work/shared/datasets python benchmarks/peers/run.py --epochs 2 --reps 2 --cold --threads 1
    # the README's table; add --extra before=@/path/to/old/src to measure a change against the tree before it

Four systems train the same net (``variants.py``: 20 dense layers of 100 units, ELU + He, BN before ELU, or
SELU + LeCun; a 10-way softmax) on the same data in the same order (45,000 CIFAR-10 training images, each
epoch's permutation drawn by trainwell's seeded generator and handed to the others; a 5,000-image validation
pass per epoch), batch 32, Nadam at 5e-5:

- ``trainwell``: ``trainwell.fit`` on its default path (``torch_worker.py``);
- ``pytorch``: the idiomatic PyTorch loop (``torch_worker.py``);
- ``keras-jax`` and ``keras-tf``: Keras 3 ``model.fit`` on JAX and on TensorFlow (``keras_worker.py``), each in
  its own venv made by ``envs.py`` (never trainwell dependencies).

Each system is a subprocess; they load one after another (the seconds to ready are "start"), then train
epoch by epoch in turns, one at a time, round after round, so a slow phase of the shared host hits all alike.
Epoch 1 carries each system's compile / warm-up ("warm-up" = epoch 1 − the median of the later epochs); the
ratios use the median of the later epochs over all repetitions (``--reps`` starts fresh processes again; with
``--cold`` the first repetition gets an empty inductor cache, so cold and warm compiles are both measured).
The floor is the epoch's matrix-multiply FLOPs at the rate this machine's GEMMs reach on exactly the step's
shapes at batch 32 (``bench_train.gemm_seconds_per_step``), measured after each variant.

On a shared host, ``--threads 1`` is the steadier setting: the workers report their process CPU seconds per
epoch beside the wall seconds, and with one thread the CPU seconds are the work done, whoever else runs (the
ratios then use them). XLA's flags do not keep all of JAX's CPU runtime on one thread: its CPU time can
exceed its wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # bench_train: the floor

import envs  # noqa: E402
from protocol import parse  # noqa: E402
from variants import BATCH_SIZE, VARIANTS, trainwell_layers  # noqa: E402

SYSTEMS = ("trainwell", "pytorch", "keras-jax", "keras-tf")


def prepare_data(variant: str, epochs: int, limit_train: int | None, out: Path) -> tuple[int, int, int]:
    """Write the variant's arrays and every epoch's order to ``out``; (n_train, n_valid, input features)."""
    import torch
    from torch_worker import CONFIG

    from trainwell.config import read_toml, validate_config
    from trainwell.data import load_dataset

    raw = read_toml(CONFIG)
    raw["data"]["scaling"] = VARIANTS[variant].scaling
    if limit_train:
        raw["data"]["limit_train"] = limit_train
    raw["model"]["layers"] = trainwell_layers(VARIANTS[variant])
    config = validate_config(raw, "peers benchmark")
    data = load_dataset(config.data)
    # trainwell's loop draws epoch e's order as the e-th randperm of a generator seeded with train.seed
    generator = torch.Generator().manual_seed(config.train.seed)
    n = len(data.x_train)
    order = np.stack([torch.randperm(n, generator=generator).numpy() for _ in range(epochs)])
    for name, array in (
        ("x_train", data.x_train),
        ("y_train", data.y_train),
        ("x_valid", data.x_valid),
        ("y_valid", data.y_valid),
        ("order", order),
    ):
        np.save(out / f"{name}.npy", np.ascontiguousarray(array))
    return n, len(data.x_valid), int(np.prod(data.x_train.shape[1:]))


class Worker:
    """One system's subprocess, speaking ``protocol.py``."""

    def __init__(
        self,
        system: str,
        variant: str,
        data_dir: Path,
        epochs: int,
        args: argparse.Namespace,
        cache_dir: Path | None,
    ) -> None:
        env = dict(os.environ)
        if args.threads:  # every library's own knob (the host is shared: one thread is the steadier choice)
            env |= {
                "OMP_NUM_THREADS": str(args.threads),
                "MKL_NUM_THREADS": str(args.threads),
                "TF_NUM_INTRAOP_THREADS": str(args.threads),
                "TF_NUM_INTEROP_THREADS": str(args.threads),
            }
            if args.threads == 1:  # XLA's CPU backend has a switch for one thread only
                env["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
        if system in args.extra:  # another trainwell: config overrides, or its code from another tree
            overrides, src = args.extra[system]
            cmd = [
                sys.executable,
                str(HERE / "torch_worker.py"),
                "trainwell",
                variant,
                str(data_dir),
                str(epochs),
            ]
            cmd += [a for s in args.set + overrides for a in ("--set", s)]
            if src:
                env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
            if cache_dir is not None:
                env["TORCHINDUCTOR_CACHE_DIR"] = str(cache_dir)
        elif system in ("trainwell", "pytorch"):
            cmd = [sys.executable, str(HERE / "torch_worker.py"), system, variant, str(data_dir), str(epochs)]
            cmd += [a for s in args.set for a in ("--set", s)] if system == "trainwell" else []
            if cache_dir is not None:
                env["TORCHINDUCTOR_CACHE_DIR"] = str(cache_dir)
        else:
            cmd = [
                str(envs.ensure(system, quiet=True)),
                str(HERE / "keras_worker.py"),
                variant,
                str(data_dir),
                str(epochs),
            ]
            env["KERAS_BACKEND"] = envs.BACKEND[system]
            env["TF_CPP_MIN_LOG_LEVEL"] = "2"
        self.system = system
        self.log = data_dir / f"{system}.log"
        started = time.perf_counter()
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log.open("w"),
            text=True,
            env=env,
            cwd=HERE.parents[1],
        )
        ready = self.receive()
        self.start_s = time.perf_counter() - started
        self.step, self.threads = ready["step"], ready["threads"]

    def receive(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            message = parse(line)
            if message is not None:
                return message
        self.proc.wait()
        tail = self.log.read_text()[-3000:]
        raise SystemExit(f"{self.system} worker exited with {self.proc.returncode}:\n{tail}")

    def epoch(self) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        return self.receive()

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=120)


def floor_seconds(n_train: int, n_valid: int, in_features: int, threads: int | None) -> dict[str, float]:
    import torch
    from bench_train import epoch_flops, gemm_seconds_per_step, layer_shapes

    if threads:
        torch.set_num_threads(threads)

    gemm, step_flops = gemm_seconds_per_step(in_features, BATCH_SIZE)
    rate = step_flops / gemm
    batches = -(-n_train // BATCH_SIZE)
    floor = batches * gemm + n_valid * sum(2 * i * o for i, o in layer_shapes(in_features)) / rate
    return {
        "floor_s": floor,
        "gflop_per_epoch": epoch_flops(n_train, n_valid, in_features) / 1e9,
        "gemm_gflops": rate / 1e9,
    }


def bench_variant(variant: str, args: argparse.Namespace, systems: list[str]) -> dict[str, Any]:
    results: dict[str, Any] = {
        s: {"epochs": [], "cpu_epochs": [], "start_s": [], "warmup_epoch_s": [], "val_accuracy": []}
        for s in systems
    }
    with tempfile.TemporaryDirectory(
        prefix="trainwell-peers-", dir="/dev/shm" if Path("/dev/shm").is_dir() else None
    ) as tmp:
        data_dir = Path(tmp)
        n_train, n_valid, in_features = prepare_data(variant, args.epochs, args.limit_train, data_dir)
        cache = Path(tempfile.mkdtemp(prefix="inductor-cold-")) if args.cold else None
        for rep in range(args.reps):
            workers = []
            for s in systems:
                w = Worker(s, variant, data_dir, args.epochs, args, cache)
                workers.append(w)
                results[s]["start_s"].append(w.start_s)
                results[s]["step"], results[s]["threads"] = w.step, w.threads
            for e in range(args.epochs):
                for w in workers:
                    message = w.epoch()
                    if e == 0:
                        results[w.system]["warmup_epoch_s"].append(message["epoch_s"])
                    else:
                        results[w.system]["epochs"].append(message["epoch_s"])
                        results[w.system]["cpu_epochs"].append(message["cpu_s"])
                    results[w.system]["val_accuracy"].append(message["val_accuracy"])
                    print(
                        f"  {variant} rep {rep + 1} epoch {e + 1} {w.system}: {message['epoch_s']:.2f} s "
                        f"({message['cpu_s']:.2f} s CPU; load {os.getloadavg()[0]:.1f})",
                        file=sys.stderr,
                    )
            for w in workers:
                w.close()
    floor = floor_seconds(n_train, n_valid, in_features, args.threads)
    for s in systems:
        r = results[s]
        r["median_cpu_s"] = statistics.median(r["cpu_epochs"]) if r["cpu_epochs"] else float("nan")
        r["median_s"] = statistics.median(r["epochs"] or r["warmup_epoch_s"])
        r["warmup_s"] = [w - r["median_s"] for w in r["warmup_epoch_s"]]
    for s in systems:
        r = results[s]
        r["vs_floor"] = (r["median_cpu_s"] if args.threads == 1 else r["median_s"]) / floor["floor_s"]
    if "trainwell" in systems:
        # each round's ratio to trainwell's epoch of the same round, then their median: robust to the host's
        # drift, which moves all systems of a round alike but can differ between rounds by 2x
        # With one thread per system, CPU seconds are the steadier measure on a shared host: a process's CPU
        # time does not grow when the scheduler gives its core to someone else, its wall time does.
        key = "cpu_epochs" if args.threads == 1 else "epochs"
        base = results["trainwell"][key]
        for s in systems:
            rounds = [t / b for t, b in zip(results[s][key], base, strict=True)]
            results[s]["round_ratios"] = rounds
            results[s]["vs_trainwell"] = statistics.median(rounds) if rounds else float("nan")
    return {"systems": results, **floor, "n_train": n_train, "n_valid": n_valid}


def print_variant(variant: str, res: dict[str, Any]) -> None:
    print(
        f"\n{variant}: {res['n_train']} + {res['n_valid']} images; floor {res['floor_s']:.2f} s "
        f"({res['gflop_per_epoch']:.0f} GFLOP at {res['gemm_gflops']:.1f} GFLOP/s)"
    )
    print(
        f"{'system':<10} {'start s':>8} {'warm-up s':>10} {'median s/epoch':>15} {'CPU s/epoch':>12} "
        f"{'x trainwell':>12} {'x floor':>8} {'val acc':>8}  later epochs s (ratio to trainwell's of the round)"
    )
    for s, r in res["systems"].items():
        print(
            f"{s:<10} {statistics.median(r['start_s']):>8.1f} "
            f"{'/'.join(f'{w:.1f}' for w in r['warmup_s']):>10} {r['median_s']:>15.2f} {r['median_cpu_s']:>12.2f} "
            f"{r.get('vs_trainwell', float('nan')):>12.2f} {r.get('vs_floor', float('nan')):>8.2f} "
            f"{r['val_accuracy'][-1]:>8.3f}  "
            + " ".join(
                f"{t:.2f} ({q:.2f})"
                for t, q in zip(r["epochs"], r.get("round_ratios", r["epochs"]), strict=True)
            )
        )
    for s, r in res["systems"].items():
        print(f"  {s}: {r['step']}")


def parse_extra(text: str) -> tuple[str, tuple[list[str], str | None]]:
    """``--extra``'s ``LABEL=SPEC`` as (label, (overrides, source tree or None))."""
    label, sep, spec = text.partition("=")
    if not sep or not label or not spec:
        raise SystemExit(f"--extra {text!r}: expected LABEL=SPEC, e.g. bf16=train.precision=bf16")
    if spec.startswith("@"):
        return label, ([], spec[1:])
    return label, (spec.split(";"), None)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3, help="epochs per process; the first is warm-up")
    parser.add_argument("--reps", type=int, default=1, help="fresh processes per system, one after another")
    parser.add_argument(
        "--variants", default="elu,bn,selu", help=f"comma-separated, of {', '.join(VARIANTS)}"
    )
    parser.add_argument(
        "--systems", default=",".join(SYSTEMS), help=f"comma-separated, of {', '.join(SYSTEMS)}"
    )
    parser.add_argument("--limit-train", type=int, help="train on this many images only (a quick check)")
    parser.add_argument(
        "--threads", type=int, help="threads in every system (default: each library's own; 1 or 2 here)"
    )
    parser.add_argument("--cold", action="store_true", help="first repetition with an empty inductor cache")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a config override for trainwell, e.g. train.precision=bf16; repeatable",
    )
    parser.add_argument(
        "--extra",
        action="append",
        default=[],
        metavar="LABEL=SPEC",
        help="another trainwell system, interleaved with the rest: SPEC is KEY=VALUE config overrides joined "
        'by ";" (e.g. "bf16=train.precision=bf16"), or "@PATH" to run trainwell from the source tree PATH '
        '(e.g. a checkout of the commit before a change: "before=@/tmp/old/src"); repeatable',
    )
    parser.add_argument("--json", action="store_true", help="also print the numbers as JSON")
    args = parser.parse_args()
    variants = args.variants.split(",")
    args.extra = dict(parse_extra(e) for e in args.extra)
    systems = args.systems.split(",") + list(args.extra)
    for bad in [v for v in variants if v not in VARIANTS] + [
        s for s in systems if s not in SYSTEMS and s not in args.extra
    ]:
        parser.error(
            f"unknown variant or system {bad!r}; variants: {', '.join(VARIANTS)}; "
            f"systems: {', '.join(SYSTEMS)}"
        )
    if args.epochs < 2:
        parser.error("--epochs must be at least 2: the first is warm-up")
    load = os.getloadavg()
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    results = {v: bench_variant(v, args, systems) for v in variants}
    print(
        f"{started}; load average before {load[0]:.2f}, after {os.getloadavg()[0]:.2f}; {os.cpu_count()} CPUs; "
        f"{args.epochs} epochs per process (epoch 1 = warm-up), {args.reps} rep(s), interleaved"
    )
    for v, res in results.items():
        print_variant(v, res)
    print(f"\n{'variant':<8} " + " ".join(f"{s:>10}" for s in systems) + f" {'floor':>7}")
    for v, res in results.items():
        print(
            f"{v:<8} "
            + " ".join(f"{res['systems'][s]['median_s']:>10.2f}" for s in systems)
            + f" {res['floor_s']:>7.2f}   median s/epoch"
        )
        print(
            f"{'':<8} "
            + " ".join(f"{res['systems'][s]['median_cpu_s']:>10.2f}" for s in systems)
            + f" {'':>7}   median CPU s/epoch"
        )
        if "trainwell" in systems:
            print(
                f"{'':<8} "
                + " ".join(f"{res['systems'][s]['vs_trainwell']:>9.2f}x" for s in systems)
                + f" {res['systems']['trainwell']['vs_floor']:>6.2f}x  median per-round ratio to trainwell "
                f"(under floor: trainwell / floor; {'CPU' if args.threads == 1 else 'wall'} seconds)"
            )
    if args.json:
        print(json.dumps({"date": started, "load": load, "args": vars(args), "variants": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
