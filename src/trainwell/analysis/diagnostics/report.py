"""Pictures of the diagnostic records, and the experiment report's "Diagnostics" section.

- :func:`plot_gradient_heatmap`: RMS of each layer's weight gradient (rows, bottom layer at the bottom) at
  each probe (columns: init, then each epoch or every N steps), on a log color scale: vanishing gradients
  are a dark bottom, exploding ones a bright bottom.
- :func:`plot_activation_histograms`: the distribution of each hidden layer's outputs on the probe batch at
  initialization and at the end, one curve per layer (Glorot & Bengio 2010, figures 3, 4 and 6).
- :func:`plot_mean_std_by_depth`: each layer's output mean and std through depth, at init and at the end
  (what a self-normalizing net keeps at 0 and 1).

Plots are pure functions of records (plain dicts) that write a PNG and return its path.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display is needed, or wanted, on a training machine
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from trainwell.analysis.diagnostics.findings import judge, moment_label, short_layer_list  # noqa: E402
from trainwell.analysis.diagnostics.probes import number  # noqa: E402

# More curves than this on one histogram panel are unreadable; deeper nets show layers evenly spaced in depth.
MAX_HISTOGRAM_LAYERS = 8
# Heat-map columns beyond this are thinned (evenly, keeping the first and the last), so a 100-epoch run stays
# legible.
MAX_HEATMAP_COLUMNS = 60
FIGURE_DPI = 110
# Layer outputs with a mean or std beyond this make the mean/std plot switch to a symmetric log scale.
EXPLODED_OUTPUTS = 10.0


def _probes(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    probes = [r for r in records if r["record"] == "probe"]
    if not probes:
        raise ValueError("no probe records to plot")
    return probes


def _evenly(items: list, most: int) -> list:
    """At most ``most`` items of ``items``, evenly spaced, always with the first and the last."""
    if len(items) <= most:
        return items
    index = np.unique(np.round(np.linspace(0, len(items) - 1, most)).astype(int))
    return [items[i] for i in index]


def _column_label(record: dict[str, Any]) -> str:
    if record.get("step", 0) == 0:
        return "init"
    if record.get("moment") == "end":
        return "end"
    if record.get("moment") == "epoch":
        return str(record["epoch"])
    return str(record["step"])


def plot_gradient_heatmap(records: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """A heat map of log10 RMS of each layer's weight gradient, by layer (rows) and probe (columns)."""
    probes = _evenly(_probes(records), MAX_HEATMAP_COLUMNS)
    names = [layer["name"] for layer in probes[0]["layers"] if "grad_rms" in layer]
    values = np.full((len(names), len(probes)), np.nan)
    for j, record in enumerate(probes):
        by_name = {layer["name"]: layer for layer in record["layers"]}
        for i, name in enumerate(names):
            g = number(by_name[name]["grad_rms"]) if name in by_name else math.nan
            values[i, j] = math.log10(g) if math.isfinite(g) and g > 0 else np.nan
    width = max(6.5, min(14, 4 + 0.35 * len(probes)))  # room for the title and the color bar's label
    fig, ax = plt.subplots(figsize=(width, max(3.5, min(12, 1.5 + 0.28 * len(names)))))
    cmap = plt.get_cmap("viridis").with_extremes(bad="lightgray")  # inf, NaN or an exactly zero gradient
    image = ax.imshow(
        np.ma.masked_invalid(values), aspect="auto", origin="lower", cmap=cmap, interpolation="nearest"
    )
    fig.colorbar(image, ax=ax, label="log10 RMS of the weight gradient")
    ax.set_yticks(range(len(names)), _evenly_labels(names, 25))
    ax.set_xticks(range(len(probes)), _evenly_labels([_column_label(r) for r in probes], 20))
    by_epoch = any(r.get("moment") == "epoch" for r in probes)
    ax.set_xlabel("epoch" if by_epoch else "step")
    ax.set_ylabel("layer (bottom to top)")
    ax.set_title(
        "Weight-gradient RMS by layer and " + ("epoch" if by_epoch else "step") + " (gray: 0, inf or NaN)",
        fontsize=10,
    )
    return _save(fig, path)


def _evenly_labels(labels: list[str], most: int) -> list[str]:
    """Tick labels with only ``most`` of them shown (the others blank), so that long axes stay legible."""
    keep = set(_evenly(list(range(len(labels))), most))
    return [label if i in keep else "" for i, label in enumerate(labels)]


def _activation_layers(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The hidden layers whose outputs are activations (a non-linear function), else every hidden layer."""
    hidden = [layer for layer in record["layers"] if not layer["output"]]
    nonlinear = [layer for layer in hidden if layer["activation"] != "linear"]
    return nonlinear or hidden


def histogram_layers(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The layers of a probe record that get a histogram curve: at most :data:`MAX_HISTOGRAM_LAYERS` of the
    hidden activation layers, evenly spaced in depth, the first and the last always among them."""
    return _evenly(_activation_layers(record), MAX_HISTOGRAM_LAYERS)


def plot_activation_histograms(records: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Histograms (as density curves) of each hidden layer's outputs at the first and the last probe."""
    probes = _probes(records)
    moments = [probes[0], probes[-1]] if len(probes) > 1 else probes[:1]
    fig, axes = plt.subplots(1, len(moments), figsize=(6.5 * len(moments), 4.2), squeeze=False)
    for ax, record in zip(axes[0], moments, strict=True):
        layers = histogram_layers(record)
        colors = plt.get_cmap("viridis")(np.linspace(0, 0.9, max(1, len(layers))))
        for layer, color in zip(layers, colors, strict=True):
            counts = np.asarray(layer["hist_counts"], dtype=float)
            lo, hi = layer["hist_range"]
            edges = np.linspace(lo, hi, len(counts) + 1)
            width = edges[1] - edges[0]
            total = counts.sum()
            density = counts / (total * width) if total else counts
            ax.plot(
                (edges[:-1] + edges[1:]) / 2,
                density,
                color=color,
                label=f"{layer['name']} ({layer['activation']})",
            )
        ax.set_title(f"Layer outputs {moment_label(record)}")
        ax.set_xlabel("output value")
        ax.set_ylabel("density (log scale)")
        ax.set_yscale(
            "log"
        )  # ReLU's spike at 0 and sigmoid's at 0 and 1 would hide the rest on a linear scale
        ax.legend(fontsize=7)
    fig.suptitle("Activation histograms per layer (Glorot & Bengio 2010)")
    return _save(fig, path)


def plot_mean_std_by_depth(records: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Each hidden layer's output mean and std through depth, at the first and the last probe."""
    probes = _probes(records)
    moments = [probes[0], probes[-1]] if len(probes) > 1 else probes[:1]
    fig, ax = plt.subplots(figsize=(8, 4.2))
    for record, style in zip(moments, ("-", "--"), strict=False):
        layers = _activation_layers(record)
        depth = np.arange(1, len(layers) + 1)
        label = moment_label(record)
        ax.plot(
            depth,
            [number(layer["output_mean"]) for layer in layers],
            style,
            color="tab:blue",
            label=f"mean, {label}",
        )
        ax.plot(
            depth,
            [number(layer["output_std"]) for layer in layers],
            style,
            color="tab:orange",
            label=f"std, {label}",
        )
    ax.axhline(0, color="gray", lw=0.6)
    ax.axhline(1, color="gray", lw=0.6, ls=":")
    ax.set_xlabel("hidden layer (depth)")
    ax.set_ylabel("output mean / std on the probe batch")
    values = [abs(v) for line in ax.get_lines() for v in line.get_ydata() if math.isfinite(v)]
    if values and max(values) > EXPLODED_OUTPUTS:
        # linear from -2 to 2, where a healthy net lives; logarithmic beyond, so exploded layers still fit
        ax.set_yscale("symlog", linthresh=2)
        lowest = min(v for line in ax.get_lines() for v in line.get_ydata() if math.isfinite(v))
        ax.set_ylim(bottom=min(-1.0, 2 * lowest))  # no empty decades of negative values below the curves
    ax.set_title("Layer output mean and std through depth")
    ax.legend(fontsize=8)
    return _save(fig, path)


def _save(fig: plt.Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=FIGURE_DPI)
    plt.close(fig)
    return path


PLOTS = {
    "gradient_heatmap.png": plot_gradient_heatmap,
    "activation_histograms.png": plot_activation_histograms,
    "activation_mean_std.png": plot_mean_std_by_depth,
}


def diagnosis_plots(records: Sequence[dict[str, Any]], folder: str | Path) -> list[Path]:
    """Every diagnostics plot of ``records``, written into ``folder``; their paths."""
    folder = Path(folder)
    return [plot(records, folder / name) for name, plot in PLOTS.items()]


def diagnostics_section(experiment_dir: Path, variants: list[Any]) -> Any:
    """The report's "Diagnostics" section: per variant with a ``diagnostics.jsonl`` (its first seed), the
    findings with their remedies, the gradient heat map, the activation histograms and the mean/std through
    depth; None when no run recorded diagnostics (``train.diagnostics`` off).

    ``variants`` are :class:`~trainwell.experiments.report.collect.VariantRuns`; figures go to
    ``experiment_dir/figures/diagnostics-<variant>-*.png``.
    """
    from trainwell.analysis.diagnostics.recorder import RECORDS_FILE, read_records
    from trainwell.experiments.report.document import Bullets, Figure, Section, Table, Text

    blocks: list[Any] = []
    summary: list[list[str]] = []
    for variant in variants:
        run = next((r for r in variant.runs if (Path(r.run_dir) / RECORDS_FILE).is_file()), None)
        if run is None:
            continue
        records = read_records(Path(run.run_dir) / RECORDS_FILE)
        if not any(r["record"] == "probe" for r in records):
            continue
        findings = judge(records, broken_preconditions=_run_preconditions(run.config))
        probes = [r for r in records if r["record"] == "probe"]
        summary.append(
            [
                variant.name,
                ", ".join(f.code for f in findings) or "none",
                f"{probes[0]['step']}–{probes[-1]['step']}",
            ]
        )
        blocks.append(
            Text(
                f"**{variant.name}** ({len(probes)} probes of {probes[0]['probe_size']} training "
                f"examples, {moment_label(probes[0])} to {moment_label(probes[-1])})"
            )
        )
        if findings:
            blocks.append(
                Bullets(
                    [
                        f"**{f.code}** ({short_layer_list(f.layers) or 'whole net'}): {f.evidence}. "
                        f"*Remedy:* {f.remedy}"
                        for f in findings
                    ]
                )
            )
        else:
            blocks.append(Text("No findings: gradients, activations and updates look healthy."))
        folder = Path(experiment_dir) / "figures"
        for name, plot in PLOTS.items():
            path = plot(records, folder / f"diagnostics-{variant.name}-{name}")
            blocks.append(Figure(path, f"{variant.name}: {_CAPTIONS[name]}"))
    if not summary:
        return None
    intro = Text(
        "Probes of each layer on a fixed batch of training examples, at initialization, after every "
        "epoch (or every N steps) and at the end; findings judge the first and the last probe and "
        "every measured update. Thresholds are documented in trainwell.analysis.diagnostics.findings."
    )
    table = Table(["variant", "findings", "steps probed"], summary, align=["l", "l", "r"])
    return Section("Diagnostics", [intro, table, *blocks])


_CAPTIONS = {
    "gradient_heatmap.png": "weight-gradient RMS by layer and probe (log scale; a dark bottom is vanishing)",
    "activation_histograms.png": "distribution of each hidden layer's outputs, at init and at the end",
    "activation_mean_std.png": "output mean and std through depth (a self-normalizing net keeps 0 and 1)",
}


def _run_preconditions(config: dict[str, Any] | None) -> list[str]:
    """The self-normalization preconditions a run's recorded config breaks (none if it cannot be read)."""
    if not config:
        return []
    from trainwell.analysis.diagnostics.diagnosis import config_preconditions
    from trainwell.config import validate_config
    from trainwell.errors import ConfigError

    try:
        return config_preconditions(validate_config(config))
    except ConfigError:
        return []
