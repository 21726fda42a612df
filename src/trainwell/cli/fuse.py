"""``trainwell fuse RUN``: every Batch-Norm layer folded into its neighbouring dense layer, into a new run
folder, with the latency of both models."""

from __future__ import annotations

import argparse

from rich.table import Table

from trainwell.cli.common import (
    add_json_option,
    add_latency_options,
    format_value,
    key_value_table,
    out,
    print_json,
)


def latency_table(rows: list[dict], title: str, key: str = "model") -> Table:
    table = Table(title=title, title_justify="left")
    for col in (key, "batch", "median ms", "p10 ms", "p90 ms", "runs"):
        table.add_column(col, justify="left" if col == key else "right")
    for r in rows:
        table.add_row(
            str(r[key]),
            str(r["batch_size"]),
            format_value(r["median_ms"]),
            format_value(r["p10_ms"]),
            format_value(r["p90_ms"]),
            str(r["runs"]),
        )
    return table


def run(args: argparse.Namespace) -> int:
    from trainwell.analysis.derived import fuse_run

    result = fuse_run(args.run, out=args.out, latency_runs=args.runs, threads=args.threads)
    if args.json:
        print_json(result)
        return 0
    latency = result.pop("latency", None)
    out.print(key_value_table(f"folded run: {result['run_dir']}", result))
    if latency:
        threads = latency[0]["threads"]
        out.print(
            latency_table(
                latency, f"latency per forward pass ({threads} threads, median of {args.runs} runs)"
            )
        )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fuse", help="fold every Batch-Norm layer into a dense layer, into a new run folder")
    p.add_argument("run", help="the run folder")
    p.add_argument("--out", help="the new run folder (default: RUN-folded beside the run)")
    add_latency_options(p)
    add_json_option(p)
    p.set_defaults(func=run)
