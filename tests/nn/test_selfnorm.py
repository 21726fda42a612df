"""Self-normalizing nets: the fixed point of a deep SELU stack, and the check of the chapter's conditions."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
import tomli_w
import torch

from tests.conftest import small_config
from trainwell.cli import main
from trainwell.config import load_config, validate_config
from trainwell.nn.build import ModelSpec, build_model
from trainwell.nn.selfnorm import check_config, self_normalization_problems

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def last_layer_moments(initializer: str, seed: int, depth: int = 20, width: int = 100) -> tuple[float, float]:
    """Mean and std of the last of ``depth`` dense SELU layers on standard normal (standardized) inputs."""
    torch.manual_seed(seed)
    model = build_model(
        {
            "layers": [
                {
                    "type": "repeat",
                    "count": depth,
                    "layers": [
                        {
                            "type": "dense",
                            "units": width,
                            "activation": "selu",
                            "kernel_initializer": initializer,
                        }
                    ],
                }
            ]
        },
        (width,),
    )
    x = torch.randn(500, width, generator=torch.Generator().manual_seed(10_000 + seed))
    with torch.no_grad():
        y = model(x)
    return y.mean().item(), y.std().item()


def test_selu_stack_with_lecun_normal_keeps_mean_0_and_std_1_where_he_normal_drifts():
    """Klambauer et al. (2017): with SELU and weights of variance 1/fan_in, (mean 0, variance 1) is an
    attracting fixed point, so after 20 layers the activations are still standardized.

    Margins come from the spread across seeds (different weights and inputs): a finite net's last-layer std
    scatters around 1 by ``sd`` from one draw to the next, so every LeCun net's must lie within 4 such spreads
    of the fixed point. He initialization (variance 2/fan_in) must end outside that band by more than the two
    spreads combined, for every seed.
    """
    seeds = range(8)
    lecun = [last_layer_moments("lecun_normal", s) for s in seeds]
    he = [last_layer_moments("he_normal", s) for s in seeds]
    lecun_means, lecun_stds = [m for m, _ in lecun], [s for _, s in lecun]
    he_stds = [s for _, s in he]
    sd_mean, sd_std = statistics.stdev(lecun_means), statistics.stdev(lecun_stds)
    assert 0 < sd_std < 0.1 and 0 < sd_mean < 0.1  # a fixed point scatters little; a drifting net does not
    assert all(abs(m) < 4 * sd_mean for m in lecun_means)
    assert all(abs(s - 1) < 4 * sd_std for s in lecun_stds)
    band = 4 * sd_std + 4 * statistics.stdev(he_stds)
    assert min(he_stds) - 1 > 4 * sd_std and statistics.mean(he_stds) - 1 > band


def test_he_initialized_selu_stack_drifts_further_with_depth():
    shallow, deep = (
        statistics.mean(last_layer_moments("he_normal", s, depth=d)[1] for s in range(4)) for d in (5, 20)
    )
    assert 1 < shallow < deep


def model_spec(*layers: dict) -> ModelSpec:
    return ModelSpec.model_validate(
        {"layers": [{"type": "flatten"}, *layers, {"type": "dense", "units": 10, "activation": "softmax"}]}
    )


SELU = {"type": "dense", "units": 20, "activation": "selu", "kernel_initializer": "lecun_normal"}


def test_the_chapters_self_normalizing_examples_have_no_problems():
    for name in ("fashion_mnist_selu.toml", "fashion_mnist_alpha_dropout.toml"):
        assert check_config(load_config(EXAMPLES / name)) == []


def test_equivalent_spellings_are_accepted():
    assert (
        self_normalization_problems(
            model_spec(
                SELU,
                {"type": "alpha_dropout", "rate": 0.1},
                {
                    "type": "dense",
                    "units": 20,
                    "kernel_initializer": {
                        "name": "variance_scaling",
                        "scale": 1.0,
                        "distribution": "untruncated_normal",
                    },
                },
                {"type": "selu"},  # a linear dense layer followed by a SELU layer is a SELU layer
            ),
            "standardize",
        )
        == []
    )


def test_nets_without_selu_are_not_checked():
    relu = {"type": "dense", "units": 20, "activation": "relu", "kernel_initializer": "he_normal"}
    assert self_normalization_problems(model_spec(relu, {"type": "batch_norm"}), "unit") == []


@pytest.mark.parametrize(
    ("layers", "scaling", "where", "reason", "fix"),
    [
        ([SELU], "unit", "data.scaling", "not standardized", 'set data.scaling = "standardize"'),
        (
            [SELU | {"kernel_initializer": "he_normal"}],
            "standardize",
            "model.layers[1].kernel_initializer",
            '"he_normal" is not LeCun normal',
            'set kernel_initializer = "lecun_normal"',
        ),
        (
            [
                SELU
                | {
                    "kernel_initializer": {
                        "name": "variance_scaling",
                        "scale": 1.0,
                        "distribution": "uniform",
                    }
                }
            ],
            "standardize",
            "model.layers[1].kernel_initializer",
            "is not LeCun normal",
            "lecun_normal",
        ),
        (
            [SELU, {"type": "batch_norm"}],
            "standardize",
            "model.layers[2]",
            "Batch Normalization",
            "remove this batch_norm layer",
        ),
        (
            [SELU, {"type": "dropout", "rate": 0.3}],
            "standardize",
            "model.layers[2]",
            "plain dropout",
            'use alpha dropout: { type = "alpha_dropout", rate = 0.3 }',
        ),
        (
            [SELU | {"kernel_regularizer": {"l2": 0.01}}],
            "standardize",
            "model.layers[1].kernel_regularizer",
            "l1/l2 regularization",
            "remove it",
        ),
        (
            [SELU | {"kernel_constraint": {"max_norm": 1.0}}],
            "standardize",
            "model.layers[1].kernel_constraint",
            "max-norm",
            "remove it",
        ),
        (
            [SELU, SELU | {"activation": "relu"}],
            "standardize",
            "model.layers[2].activation",
            'hidden activation "relu" is not SELU',
            'set activation = "selu"',
        ),
        (
            [SELU, {"type": "activation", "name": "tanh"}],
            "standardize",
            "model.layers[2]",
            '"tanh" is not SELU',
            "selu",
        ),
    ],
)
def test_each_broken_condition_is_one_problem_with_its_key_path_reason_and_fix(
    layers, scaling, where, reason, fix
):
    problems = self_normalization_problems(model_spec(*layers), scaling)
    assert len(problems) == 1, problems
    problem = problems[0]
    assert problem.where == where and reason in problem.reason and fix in problem.fix
    assert str(problem).startswith(f"{where}: ")


def test_a_repeated_layer_is_reported_once_and_the_output_layer_is_free():
    spec = ModelSpec.model_validate(
        {
            "layers": [
                {"type": "flatten"},
                {"type": "repeat", "count": 30, "layers": [SELU | {"kernel_initializer": "glorot_uniform"}]},
                {
                    "type": "dense",
                    "units": 10,
                    "activation": "softmax",
                    "kernel_initializer": "glorot_uniform",
                },
            ]
        }
    )
    problems = self_normalization_problems(spec, "standardize")
    assert [p.where for p in problems] == ["model.layers[1].layers[0].kernel_initializer"]
    assert self_normalization_problems(spec) == problems  # scaling unknown: the input check is skipped


def test_opting_out_silences_the_check():
    config = load_config(EXAMPLES / "fashion_mnist_selu.toml", ["data.scaling=unit"])
    assert [p.where for p in check_config(config)] == ["data.scaling"]
    quiet = load_config(
        EXAMPLES / "fashion_mnist_selu.toml", ["data.scaling=unit", "model.check_self_normalization=false"]
    )
    assert check_config(quiet) == []


def test_summary_prints_the_problems_on_stderr_and_keeps_stdout_json(capsys):
    config = str(EXAMPLES / "fashion_mnist_alpha_dropout.toml")
    assert (
        main(
            ["summary", config, "--input-shape", "28,28,1", "--json", "--set", "model.layers.1.type=dropout"]
        )
        == 0
    )
    captured = capsys.readouterr()
    assert json.loads(captured.out)["total"] == (784 * 300 + 300) + (300 * 100 + 100) + (100 * 10 + 10)
    assert "warning: this SELU net is not self-normalizing" in captured.err
    assert (
        "model.layers[1]: plain dropout" in captured.err
        and "model.check_self_normalization = false" in captured.err
    )
    main(
        [
            "summary",
            config,
            "--input-shape",
            "28,28,1",
            "--json",
            "--set",
            "model.layers.1.type=dropout",
            "--set",
            "model.check_self_normalization=false",
        ]
    )
    assert capsys.readouterr().err == ""


def test_train_prints_the_problems_on_stderr(tmp_path, blob_npz, capsys):
    data = small_config(
        {"dataset": "npz", "path": str(blob_npz), "validation_size": 50, "scaling": "none"}, epochs=1
    )
    data["model"]["layers"][1] |= {"activation": "selu"}  # he_normal, unscaled inputs: two problems
    path = tmp_path / "selu.toml"
    path.write_text(tomli_w.dumps(data))
    validate_config(data)
    assert main(["train", str(path), "--out", str(tmp_path / "run"), "--quiet", "--json"]) == 0
    err = capsys.readouterr().err
    assert "(2 problems;" in err and "data.scaling" in err and "model.layers[1].kernel_initializer" in err
