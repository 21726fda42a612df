"""``trainwell run EXPERIMENT [--quick] [--only NAME ...] [--out DIR] [--repeat N]``: train every variant of
an experiment (a file or a built-in preset) and write its report. Running it again continues where it stopped."""

from __future__ import annotations

import argparse
import json

from rich import box
from rich.table import Table

from trainwell.cli.common import add_json_option, err, out, print_json


def _table(result) -> Table:
    """The results, one row per variant, narrow enough for an 80-column terminal."""
    from trainwell.experiments.report.answers import duration

    data = json.loads((result.experiment_dir / "results.json").read_text())
    table = Table(title=str(result.experiment_dir), title_justify="left", box=box.SIMPLE_HEAD)
    table.add_column("variant", no_wrap=True)
    for col in ("val %", "test %", "MC %", "best", "ep", "s/ep", "time"):
        table.add_column(col, justify="right", no_wrap=True)
    table.add_column("LR", justify="right", no_wrap=True, min_width=7)  # 6.1e-05
    for v in data["variants"]:

        def pct(key: str, v=v) -> str:
            x = v.get(key)
            return (
                "–"
                if x is None
                else f"{100 * x:.1f}" + (f"±{100 * v[key + '_std']:.1f}" if key + "_std" in v else "")
            )

        def num(key: str, fmt: str, v=v) -> str:
            return "–" if v.get(key) is None else format(v[key], fmt)

        if v["status"] != "finished" and v.get("val_accuracy") is None:
            table.add_row(v["name"], f"[yellow]{v['status']}[/]", *["–"] * 7)
            continue
        table.add_row(
            v["name"],
            pct("val_accuracy"),
            pct("test_accuracy"),
            pct("mc_accuracy"),
            num("best_epoch", ".0f"),
            num("epochs_run", ".0f"),
            num("seconds_per_epoch", ".2f"),
            duration(v["train_seconds"]) if v.get("train_seconds") is not None else "–",
            num("learning_rate", ".2g"),
        )
    return table


def run(args: argparse.Namespace) -> int:
    from trainwell.experiments.runner import run_experiment

    result = run_experiment(
        args.experiment,
        quick=args.quick,
        only=args.only or (),
        out=args.out,
        repeat=args.repeat,
        root=args.root,
        progress=not args.quiet,
        say=None
        if args.quiet
        else (lambda line: err.print(f"[bold]›[/] {line}", soft_wrap=True, markup=True, highlight=False)),
    )
    if args.json:
        print_json(
            {
                "experiment_dir": str(result.experiment_dir),
                "seconds": result.seconds,
                "report": str(result.report) if result.report else None,
                "runs": [
                    {
                        "variant": o.variant,
                        "seed": o.seed,
                        "run_dir": str(o.run_dir),
                        "action": o.action,
                        "error": o.error,
                        "seconds": o.seconds,
                        **o.metrics,
                    }
                    for o in result.outcomes
                ],
                "analyses": [  # the [[analyses]] steps: study.json in each folder
                    {"name": o.variant, "folder": str(o.run_dir), "action": o.action, "error": o.error,
                     "seconds": o.seconds}
                    for o in result.analyses
                ],
            }
        )
    else:
        from trainwell.experiments.report.answers import duration

        if result.report and result.outcomes:
            out.print(_table(result))
        analysed = f", {len(result.analyses)} analyses" if result.analyses else ""
        out.print(
            f"{len(result.outcomes)} runs{analysed} in {duration(result.seconds)}; "
            + (f"report: {result.report}" if result.report else f"no report ({result.report_error})")
        )
        for o in result.failed:
            err.print(f"[bold red]failed:[/] {o.run_dir}: {o.error}", soft_wrap=True, highlight=False)
    if result.interrupted:
        from trainwell.train.signals import exit_code

        return exit_code(result.signal) if result.signal else 130
    return 1 if result.failed or result.report_error else 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run", help="train every variant of an experiment (a file or a preset) and write its report"
    )
    p.add_argument(
        "experiment", help="an experiment file (TOML) or a built-in preset name (`trainwell presets`)"
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="the study scaled down by the file's [quick] table (a slice of the data, fewer epochs)",
    )
    p.add_argument("--only", nargs="+", action="extend", metavar="NAME", help="run only these variants or analyses")
    p.add_argument("--out", help="the experiment folder (default: experiments/<name>[-quick])")
    p.add_argument("--root", default="experiments", help="where experiment folders go (default: experiments)")
    p.add_argument(
        "--repeat", type=int, metavar="N", help="train each variant with N seeds; the report gives mean ± std"
    )
    p.add_argument("--quiet", action="store_true", help="no progress display")
    add_json_option(p)
    p.set_defaults(func=run)
