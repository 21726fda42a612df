"""Plots and the report section: they render from real records, including broken (NaN) ones."""

from __future__ import annotations

import matplotlib.image as mpimg
import pytest
import torch

from tests.analysis.diagnostics.nets import batch, build, dense_stack
from tests.conftest import small_config
from trainwell.analysis.diagnostics.probes import probe
from trainwell.analysis.diagnostics.report import (
    MAX_HISTOGRAM_LAYERS,
    PLOTS,
    diagnosis_plots,
    diagnostics_section,
    histogram_layers,
    plot_gradient_heatmap,
)
from trainwell.config import config_to_dict, validate_config
from trainwell.runs import run_training


def records_of(spec: dict, steps: int = 3) -> list[dict]:
    model = build(spec)
    x, y = batch(64)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    records = [probe(model, x, y, moment="init")]
    for step in range(1, steps + 1):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model[:-1](x), y).backward()
        optimizer.step()
        records.append(probe(model, x, y, moment="epoch", step=step, epoch=step))
    return records


def test_every_plot_renders_an_image(tmp_path):
    paths = diagnosis_plots(records_of(dense_stack("sigmoid", "glorot_uniform", 12)), tmp_path)
    assert [p.name for p in paths] == list(PLOTS)
    for path in paths:
        image = mpimg.imread(path)
        assert image.shape[0] > 200 and image.shape[1] > 300
        assert image[..., :3].std() > 0.05  # not a blank canvas


def test_heatmap_survives_non_finite_gradients(tmp_path):
    records = records_of(dense_stack("relu", "he_normal", 3), steps=1)
    records[1]["layers"][0]["grad_rms"] = "nan"
    records[1]["layers"][1]["grad_rms"] = 0.0
    assert plot_gradient_heatmap(records, tmp_path / "h.png").stat().st_size > 1000


def test_plots_need_a_probe(tmp_path):
    with pytest.raises(ValueError, match="no probe records"):
        plot_gradient_heatmap([{"record": "update", "step": 1, "layers": {}}], tmp_path / "x.png")


def test_report_section_from_a_run_folder(blob_npz, tmp_path):
    from trainwell.experiments.report.collect import RunRecord, VariantRuns
    from trainwell.experiments.report.document import Bullets, Figure, Section, Table

    # a constant initializer: every unit of a layer has the same weights, which the section must report
    model = {
        "layers": [
            {"type": "flatten"},
            {"type": "dense", "units": 8, "activation": "relu", "kernel_initializer": "ones"},
            {"type": "dense", "units": 3, "activation": "softmax"},
        ]
    }
    data = small_config(
        {"dataset": "npz", "path": str(blob_npz), "validation_size": 50},
        diagnostics={"every": "epoch", "probe_size": 40},
    ) | {"model": model}
    config = validate_config(data)
    result = run_training(config, out=tmp_path / "exp" / "const", progress=False)
    plain = run_training(
        validate_config(small_config({"dataset": "npz", "path": str(blob_npz)})),
        out=tmp_path / "exp" / "plain",
        progress=False,
    )

    def variant(name: str, run_dir, index: int) -> VariantRuns:
        run = RunRecord(
            variant=name,
            seed=42,
            folder=name,
            run_dir=run_dir,
            status="finished",
            config=config_to_dict(config),
        )
        return VariantRuns(
            name=name,
            description="",
            index=index,
            color="#000",
            mc_dropout=None,
            baseline=None,
            question=None,
            reference=None,
            runs=[run],
        )

    section = diagnostics_section(
        tmp_path / "exp", [variant("const", result.run_dir, 0), variant("plain", plain.run_dir, 1)]
    )
    assert isinstance(section, Section) and section.title == "Diagnostics"
    table = next(b for b in section.blocks if isinstance(b, Table))
    assert table.rows[0][0] == "const" and "symmetric_units" in table.rows[0][1]
    assert len(table.rows) == 1  # the plain run recorded no diagnostics
    bullets = next(b for b in section.blocks if isinstance(b, Bullets))
    assert any("symmetric_units" in item and "Remedy" in item for item in bullets.items)
    figures = [b for b in section.blocks if isinstance(b, Figure)]
    assert len(figures) == 3 and all(f.path.is_file() for f in figures)
    assert diagnostics_section(tmp_path / "exp", [variant("plain", plain.run_dir, 1)]) is None


def test_histogram_layers_are_at_most_eight_evenly_spaced_with_first_and_last():
    record = records_of(dense_stack("tanh", "glorot_uniform", 20), steps=0)[0]
    names = [layer["name"] for layer in histogram_layers(record)]
    assert len(names) == MAX_HISTOGRAM_LAYERS == 8
    assert names[0] == "dense_1" and names[-1] == "dense_20"  # the output layer (dense_21) is not hidden
    # a BN net's activations are its activation layers, not its linear dense and BN outputs
    bn = {
        "layers": [
            {"type": "dense", "units": 8},
            {"type": "batch_norm"},
            {"type": "relu"},
            {"type": "dense", "units": 3, "activation": "softmax"},
        ]
    }
    assert [layer["name"] for layer in histogram_layers(records_of(bn, steps=0)[0])] == ["activation_1"]
