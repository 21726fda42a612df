"""``trainwell report EXPERIMENT_DIR``: rebuild an experiment's report from its folder."""

from __future__ import annotations

import argparse

from trainwell.cli.common import out


def run(args: argparse.Namespace) -> int:
    from trainwell.experiments.report import build_report

    path = build_report(args.experiment_dir)
    out.print(f"report: {path}  (also report.md, results.json and figures/ beside it)")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report", help="rebuild an experiment's report (HTML, Markdown, figures, results.json)"
    )
    p.add_argument("experiment_dir", help="the experiment folder made by `trainwell run`")
    p.set_defaults(func=run)
