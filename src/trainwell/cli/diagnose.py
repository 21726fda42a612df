"""``trainwell diagnose CONFIG [--steps N] [--json] [--plots DIR]``: layer by layer, why a net trains badly.

Probes the config's model at initialization and after N training steps, prints a per-layer table and the
findings (with the chapter's remedies), and writes the plots. Findings are advice: the exit code is 0 with
or without them.
"""

from __future__ import annotations

import argparse
from typing import Any

from rich import box
from rich.markup import escape
from rich.table import Table

from trainwell.cli.common import add_json_option, add_set_option, out, print_json


def _short(value: float) -> str:
    """A number in at most 7 characters: 0.0123, 1.23, 123, 1.2e-05 → "1.2e-5", 3.4e+06 → "3.4e+6"."""
    if value == 0 or 1e-2 <= abs(value) < 1e3:
        return f"{value:.3g}"
    return f"{value:.1e}".replace("e-0", "e-").replace("e+0", "e+")


def _cell(stats: dict[str, Any] | None, key: str, percent: bool = False) -> str:
    if not stats or stats.get(key) is None:
        return ""
    value = stats[key]
    if isinstance(value, str):  # "nan" / "inf"
        return value
    return f"{value:.0%}" if percent else _short(float(value))


# Short headers so that the table fits a terminal of 80 columns; the legend under it says what each measures.
COLUMNS = ("layer", "act", "mean", "std", "sat", "dead", "∇rms", "∇/w", "Δw/w")
LEGEND = (
    "mean, std: of the layer's outputs on the probe batch; sat: share of outputs within 0.01 of a sigmoid/"
    "tanh bound; dead: ReLU-family units ≤ 0 on every probe example; ∇rms: RMS of the weight gradient; ∇/w: "
    "its norm over the weights' norm; Δw/w: median ‖Δw‖/‖w‖ of one step"
)


def _table(title: str, layers: list[dict[str, Any]], moment: str) -> Table:
    table = Table(
        title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True
    )
    for col in COLUMNS:
        if col in ("layer", "act"):
            table.add_column(col, no_wrap=True, min_width=8 if col == "layer" else 4)
        else:
            table.add_column(col, justify="right", no_wrap=True)
    for layer in layers:
        stats = layer.get(moment)
        dead = (
            ""
            if stats is None or stats.get("dead_units") is None
            else f"{stats['dead_units']}/{layer['units']}"
        )
        table.add_row(
            layer["name"],
            layer["activation"],
            _cell(stats, "output_mean"),
            _cell(stats, "output_std"),
            _cell(stats, "saturated_fraction", percent=True),
            dead,
            _cell(stats, "grad_rms"),
            _cell(stats, "grad_to_weight_ratio"),
            _cell(layer, "update_ratio_median") if moment == "after" else "",
        )
    return table


def _print(title: str, diagnosis: Any) -> None:
    from trainwell.analysis.diagnostics.findings import short_layer_list

    result = diagnosis.to_dict()
    layers = result["layers"]
    out.print(
        _table(
            f"{title}: at initialization (probe of {result['probe_size']} training examples)", layers, "init"
        )
    )
    if diagnosis.steps:
        out.print(
            _table(
                f"{title}: after {diagnosis.steps} training steps (update ratio: median ‖Δw‖/‖w‖ per step)",
                layers,
                "after",
            )
        )
    out.print(f"[dim]{escape(LEGEND)}[/]")
    if diagnosis.note:
        out.print(f"[yellow]note:[/] {escape(diagnosis.note)}")
    if not diagnosis.findings:
        out.print("[green]No findings:[/] gradients, activations and updates look healthy.")
    for finding in diagnosis.findings:
        where = short_layer_list(finding.layers) or "whole net"
        out.print(
            f"[bold yellow]{finding.code}[/] ({escape(where)})\n  evidence: {escape(finding.evidence)}\n"
            f"  remedy: {escape(finding.remedy)}",
            soft_wrap=True,
        )
    for path in diagnosis.plots:
        out.print(f"plot: {path}")


def run(args: argparse.Namespace) -> int:
    from trainwell.analysis.diagnostics.diagnosis import diagnose, diagnose_experiment, is_experiment
    from trainwell.errors import ConfigError

    common = {"steps": args.steps, "probe_size": args.probe_size, "plots": args.plots}
    if is_experiment(args.config):
        if args.set:
            raise ConfigError("--set applies to a config file; an experiment's variants set their own values")
        results = diagnose_experiment(args.config, variants=args.variant, quick=args.quick, **common)
        if args.json:
            print_json(
                {
                    "experiment": str(args.config),
                    "variants": {name: d.to_dict() for name, d in results.items()},
                }
            )
            return 0
        for name, diagnosis in results.items():
            out.rule(f"variant {name}")
            _print(name, diagnosis)
        return 0
    if args.variant or args.quick:
        raise ConfigError(
            f"{args.config}: --variant and --quick apply to experiment files and presets, and this "
            "is a plain config"
        )
    diagnosis = diagnose(args.config, overrides=args.set, **common)
    if args.json:
        print_json(diagnosis.to_dict())
    else:
        _print(str(args.config), diagnosis)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("diagnose", help="show layer by layer why a net trains badly (gradients, activations)")
    p.add_argument(
        "config", help="a config file (TOML), or an experiment file or preset: each variant is diagnosed"
    )
    add_set_option(p)
    p.add_argument(
        "--steps",
        type=_non_negative,
        default=100,
        help="training steps between the two probes (default: 100; 0: at initialization only)",
    )
    p.add_argument(
        "--probe-size",
        type=_positive,
        default=512,
        help="training examples in the probe batch (default: 512)",
    )
    p.add_argument(
        "--plots", metavar="DIR", help="write the plots (PNG) into DIR (DIR/<variant>/ for experiments)"
    )
    p.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME",
        help="with an experiment: diagnose only this variant (repeatable)",
    )
    p.add_argument("--quick", action="store_true", help="with an experiment: use its [quick] settings")
    add_json_option(p)
    p.set_defaults(func=run)


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value
