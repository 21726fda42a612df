"""``trainwell export RUN --precision int8``: the model in lower precision next to float32 — test accuracy,
file size and latency in one table."""

from __future__ import annotations

import argparse

from rich import box
from rich.table import Table

from trainwell.cli.common import add_json_option, add_latency_options, out, print_json


def run(args: argparse.Namespace) -> int:
    from trainwell.analysis.derived import export_run

    result = export_run(args.run, args.precision, out=args.out, latency_runs=args.runs, threads=args.threads)
    if args.json:
        print_json(result)
        return 0
    rows = result["rows"]
    batches = [int(k.rsplit("_", 1)[1]) for k in rows[0] if k.startswith("latency_ms_batch_")]
    table = Table(
        title=f"{args.run}: precision trade-offs (latency: median of {args.runs} runs, "
        f"{result['threads']} threads)",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    for col in (
        "precision",
        "test acc",
        "Δ acc",
        "MB",
        "size ×",
        *(h for b in batches for h in (f"ms@{b}", f"×@{b}")),
    ):
        table.add_column(col, justify="left" if col == "precision" else "right")
    for r in rows:
        cells = [
            r["precision"],
            f"{r['test_accuracy']:.4f}",
            f"{r['accuracy_change']:+.4f}",
            f"{r['file_bytes'] / 1e6:.3f}",
            f"{r['size_vs_float32']:.2f}",
        ]
        for b in batches:
            cells += [f"{r[f'latency_ms_batch_{b}']:.3g}", f"{r[f'speedup_batch_{b}']:.2f}"]
        table.add_row(*cells)
    out.print(table)
    out.print("Δ acc: test accuracy minus float32's; size ×, speed ×: relative to float32 (× > 1 is faster)")
    backend = "; int8: torchao dynamic quantization of the dense layers" if result["int8_backend"] else ""
    out.print(f"files: {result['out_dir']}{backend}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="the model in lower precision: accuracy, size and latency vs float32")
    p.add_argument("run", help="the run folder")
    # Checked by export_run (an unknown name gets the closest valid one), so --help needs no torch import.
    p.add_argument(
        "--precision",
        nargs="+",
        required=True,
        metavar="PRECISION",
        help="one or more of float32, bfloat16, float16, int8; float32 is always measured as the reference",
    )
    p.add_argument("--out", help="the folder for the exported files (default: RUN-export beside the run)")
    add_latency_options(p)
    add_json_option(p)
    p.set_defaults(func=run)
