"""Derived runs: a finished run pruned, folded or exported into a new folder, with its measured trade-offs.

``prune_run``, ``fuse_run`` and ``export_run`` are what ``trainwell prune``, ``fuse`` and ``export`` do. Each
reads a finished run folder (never changes it) and writes a new folder:

- ``prune`` and ``fuse`` write a *run folder* — ``config.toml`` (the resolved config of the model it holds),
  ``run.json`` (the source run's record plus ``derived_from`` and ``transform``), ``model.pt`` (plain tensor
  names) and ``metrics.json`` (test accuracy and the transform's numbers; ``history.csv`` too when
  fine-tuned) — so ``evaluate``, ``export`` and ``predict`` work on it like on any run;
- ``export`` writes ``model-<precision>.pt`` for each precision asked for and ``export.json``, the table.

Every file is written atomically (:mod:`trainwell.io`).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from torch import nn

from trainwell.analysis.fusion import count_batch_norms, fold_batch_norms
from trainwell.analysis.latency import BATCH_SIZES, DEFAULT_RUNS, latency_rows
from trainwell.analysis.precision import PRECISIONS, check_precision, to_precision
from trainwell.analysis.pruning import (
    MagnitudePruning,
    Scope,
    check_sparsity,
    kernel_sparsity,
    prune_model,
    sparse_state_dict,
    storage_bytes,
)
from trainwell.config import Config, config_to_dict, config_to_toml, validate_config
from trainwell.errors import ConfigError, RunError
from trainwell.io import write_json, write_text, write_with
from trainwell.runs import CONFIG, HISTORY, METRICS, MODEL, RUN, history_csv, load_run_config, load_run_model
from trainwell.train.loop import evaluate, fit


def _check_runs(latency_runs: int) -> None:
    if latency_runs < 0:
        raise ConfigError(
            f"--runs must be ≥ 0 (timed forward passes; 0 skips the timing), got {latency_runs}"
        )


def _source(run_dir: str | Path) -> tuple[Path, Config, dict[str, Any]]:
    run_dir = Path(run_dir)
    config = load_run_config(run_dir)
    if not (run_dir / METRICS).is_file():
        raise RunError(
            f"{run_dir}: the run has not finished (no {METRICS}); finish it with "
            f"`trainwell train --resume {run_dir}` first"
        )
    info = json.loads((run_dir / RUN).read_text())
    return run_dir, config, info


def _out_dir(out: str | Path | None, source: Path, suffix: str) -> Path:
    path = Path(out) if out is not None else source.with_name(f"{source.name}-{suffix}")
    if path.resolve() == source.resolve():
        raise RunError(f"--out {path}: that is the source run; give a new folder")
    if path.exists() and any(path.iterdir()):
        raise RunError(f"{path}: the folder exists and is not empty; choose another --out or remove it")
    return path


def _test(model: nn.Module, dataset: Any, config: Config) -> dict[str, float]:
    result = evaluate(model, dataset.x_test, dataset.y_test, config.train.loss, config.train.eval_batch_size)
    return {"test_loss": result["loss"], "test_accuracy": result["accuracy"]}


def _write_run(
    out: Path,
    config: Config,
    info: dict[str, Any],
    source: Path,
    transform: dict[str, Any],
    model: nn.Module,
    metrics: dict[str, Any],
    history: list[dict[str, float]] | None = None,
) -> None:
    """The run folder of a derived model: written in the order a training run writes it, metrics last."""
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / CONFIG, config_to_toml(config))
    now = datetime.now(UTC).isoformat(timespec="seconds")
    record = {
        k: v for k, v in info.items() if k not in ("status", "started", "ended", "wall_seconds", "error")
    }
    write_json(
        out / RUN,
        record
        | {
            "status": "finished",
            "started": now,
            "ended": now,
            "derived_from": str(source),
            "transform": transform,
        },
    )
    if history:
        write_text(out / HISTORY, history_csv(history))
    state = model.state_dict()
    write_with(out / MODEL, lambda f: torch.save(state, f))
    write_json(out / METRICS, metrics)


def prune_run(
    run_dir: str | Path,
    *,
    sparsity: float | None = None,
    threshold: float | None = None,
    scope: Scope = "per_layer",
    finetune_epochs: int = 0,
    out: str | Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Prune a finished run's dense kernels (by magnitude to ``sparsity``, or ``|w| ≤ threshold``), optionally
    fine-tune with the masks frozen, and write the pruned run folder. Returns its metrics.

    With ``threshold`` (for an l1-regularized model), ``achieved_sparsity`` is the share of kernel weights
    already at or below it before anything is changed.
    """
    from trainwell.data import load_dataset

    if (sparsity is None) == (threshold is None):
        raise ConfigError(
            "give exactly one of --sparsity (prune the smallest fraction of the kernel weights) or "
            "--threshold (prune every weight with |w| ≤ threshold)"
        )
    if finetune_epochs < 0:
        raise ConfigError(f"--finetune must be ≥ 0 epochs, got {finetune_epochs}")
    if sparsity is not None:
        check_sparsity(sparsity)
    source, config, info = _source(run_dir)
    suffix = f"pruned{round(sparsity * 100)}" if sparsity is not None else f"threshold{threshold:g}"
    out_dir = _out_dir(out, source, suffix)
    dataset = load_dataset(config.data)
    model = load_run_model(source, config, dataset.input_shape)
    before = _test(model, dataset, config)
    pruned, masks = prune_model(model, sparsity, scope, threshold=threshold)
    metrics: dict[str, Any] = {"source_test_accuracy": before["test_accuracy"]}
    if threshold is not None:
        metrics["achieved_sparsity"] = kernel_sparsity(model, threshold)["sparsity"]
    history = None
    if finetune_epochs:
        metrics["test_accuracy_before_finetune"] = _test(pruned, dataset, config)["test_accuracy"]
        spec = config.train.model_copy(
            update={"epochs": finetune_epochs, "early_stopping": None, "pruning": None}
        )
        callbacks: list[Any] = [MagnitudePruning(pruned, masks=masks)]
        if progress:
            from trainwell.train.progress import ProgressBar

            callbacks.append(ProgressBar())
        torch.manual_seed(config.train.seed)
        history = fit(pruned, dataset, spec, callbacks=callbacks).history
        pruned.cpu().eval()
    counted = kernel_sparsity(pruned)
    state = pruned.state_dict()
    metrics |= _test(pruned, dataset, config) | {
        "sparsity": counted["sparsity"],
        "layer_sparsity": counted["layers"],
        "dense_bytes": storage_bytes(state),
        "sparse_bytes": storage_bytes(sparse_state_dict(state, list(masks))),
    }
    transform = {
        "name": "prune",
        "sparsity": sparsity,
        "threshold": threshold,
        "scope": scope if threshold is None else None,
        "finetune_epochs": finetune_epochs,
    }
    _write_run(
        out_dir,
        config,
        info,
        source,
        {k: v for k, v in transform.items() if v is not None},
        pruned,
        metrics,
        history,
    )
    return {"run_dir": str(out_dir), **metrics}


def fuse_run(
    run_dir: str | Path,
    *,
    out: str | Path | None = None,
    latency_runs: int = DEFAULT_RUNS,
    batch_sizes: tuple[int, ...] = BATCH_SIZES,
    threads: int | None = None,
) -> dict[str, Any]:
    """Fold every BN of a finished run into its neighbouring dense layer and write the folded run folder.

    Returns its metrics: test accuracy of both models, the largest output difference on the test set, and the
    latency of both at each batch size (``latency_runs = 0`` skips the timing).
    """
    from trainwell.data import load_dataset

    _check_runs(latency_runs)
    source, config, info = _source(run_dir)
    out_dir = _out_dir(out, source, "folded")
    dataset = load_dataset(config.data)
    model = load_run_model(source, config, dataset.input_shape)
    folded, spec = fold_batch_norms(model, config.model, dataset.input_shape)
    folded_config = validate_config(
        config_to_dict(config) | {"model": spec.model_dump(mode="json", exclude_none=True)},
        source=f"the folded config of {source}",
    )
    x = torch.as_tensor(dataset.x_test[: config.train.eval_batch_size], dtype=torch.float32)
    with torch.inference_mode():
        max_diff = float((folded(x) - model(x)).abs().max()) if len(x) else 0.0
    metrics: dict[str, Any] = {
        "source_test_accuracy": _test(model, dataset, config)["test_accuracy"],
        **_test(folded, dataset, folded_config),
        "batch_norms_folded": count_batch_norms(model),
        "max_output_difference": max_diff,
        "parameters_before": sum(p.numel() for p in model.parameters()),
        "parameters_after": sum(p.numel() for p in folded.parameters()),
    }
    if latency_runs:
        metrics["latency"] = latency_rows(
            {"original": model, "folded": folded},
            tuple(dataset.input_shape),
            batch_sizes,
            runs=latency_runs,
            threads=threads,
        )
    _write_run(out_dir, folded_config, info, source, {"name": "fuse"}, folded, metrics)
    return {"run_dir": str(out_dir), **metrics}


def export_run(
    run_dir: str | Path,
    precisions: list[str] | tuple[str, ...],
    *,
    out: str | Path | None = None,
    latency_runs: int = DEFAULT_RUNS,
    batch_sizes: tuple[int, ...] = BATCH_SIZES,
    threads: int | None = None,
) -> dict[str, Any]:
    """The run's model in each of ``precisions`` next to float32: test accuracy, file size, latency.

    Writes ``model-<precision>.pt`` (a state dict; reload it with
    :func:`~trainwell.analysis.precision.load_precision_model`) per precision and ``export.json``.
    """
    from trainwell.data import load_dataset

    _check_runs(latency_runs)
    for precision in precisions:
        check_precision(precision)
    wanted = ["float32", *(p for p in PRECISIONS if p in precisions and p != "float32")]
    source, config, _ = _source(run_dir)
    out_dir = _out_dir(out, source, "export")
    dataset = load_dataset(config.data)
    model = load_run_model(source, config, dataset.input_shape)
    models = {p: to_precision(model, p) for p in wanted}
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for precision, m in models.items():
        path = out_dir / f"model-{precision}.pt"
        state = m.state_dict()
        write_with(path, lambda f, state=state: torch.save(state, f))
        rows.append(
            {
                "precision": precision,
                **_test(m, dataset, config),
                "file": path.name,
                "file_bytes": path.stat().st_size,
            }
        )
    reference = rows[0]
    for row in rows:
        row["size_vs_float32"] = row["file_bytes"] / reference["file_bytes"]
        row["accuracy_change"] = row["test_accuracy"] - reference["test_accuracy"]
    if latency_runs:
        timings = latency_rows(
            models, tuple(dataset.input_shape), batch_sizes, runs=latency_runs, threads=threads
        )
        for row in rows:
            for t in timings:
                if t["model"] == row["precision"]:
                    base = next(
                        r for r in timings if r["model"] == "float32" and r["batch_size"] == t["batch_size"]
                    )
                    row[f"latency_ms_batch_{t['batch_size']}"] = t["median_ms"]
                    row[f"speedup_batch_{t['batch_size']}"] = base["median_ms"] / t["median_ms"]
    result = {
        "run": str(source),
        "out_dir": str(out_dir),
        "int8_backend": "torchao" if "int8" in wanted else None,
        "threads": threads or torch.get_num_threads(),
        "rows": rows,
    }
    write_json(out_dir / "export.json", result)
    return result
