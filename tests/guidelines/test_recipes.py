"""Recipes: complete commented configs that parse back exactly, validate, and pass the advisor."""

from __future__ import annotations

import json
import math
import re
import tomllib
from dataclasses import replace

import pytest

from trainwell.config import load_config, validate_config
from trainwell.errors import ConfigError
from trainwell.guidelines import recipes, sources
from trainwell.guidelines.advisor import advise
from trainwell.guidelines.facts import model_facts
from trainwell.guidelines.recipes import RECIPES, options_for, recipe_document, render_recipe, write_recipe
from trainwell.guidelines.thresholds import DEEP_NET_HIDDEN_LAYERS
from trainwell.guidelines.toml_text import document_data
from trainwell.nn.build import build_model
from trainwell.nn.layers import BatchNormSpec, DenseSpec, DropoutSpec

# max_lr given: these tests do not read the data (the LR finder is tested on a small dataset below)
OPTIONS = {
    "cifar10": options_for("cifar10", max_lr=0.01),
    "fashion_mnist-shallow": options_for("fashion_mnist", depth=3, units=50, max_lr=0.01),
    "npz-features-binary": options_for(
        "npz", input_shape=(20,), classes=2, data_path="data/x.npz", depth=12, max_lr=0.01
    ),
}
CASES = [(name, key) for name in RECIPES for key in OPTIONS]


@pytest.mark.parametrize(("name", "key"), CASES)
def test_recipe_text_parses_back_to_its_data_and_validates(name, key):
    text, config = render_recipe(name, OPTIONS[key])
    data = tomllib.loads(text)
    assert data == document_data(recipe_document(name, OPTIONS[key]))
    assert validate_config(data) == config


@pytest.mark.parametrize(("name", "key"), CASES)
def test_recipe_config_has_no_warnings(name, key):
    _, config = render_recipe(name, OPTIONS[key])
    assert [f for f in advise(config) if f.severity == "warning"] == []


@pytest.mark.parametrize(("name", "key"), CASES)
def test_every_choice_has_a_comment_line_saying_why(name, key):
    text, _ = render_recipe(name, OPTIONS[key])
    lines = text.splitlines()
    for i, line in enumerate(lines):
        stripped = line.strip()
        is_choice = re.match(r"^[A-Za-z_]+ = ", stripped) or stripped.startswith("{ ")
        if is_choice:
            assert lines[i - 1].strip().startswith("# "), f"no comment above line {i + 1}: {line}"


@pytest.mark.parametrize("name", RECIPES)
def test_comments_cite_the_chapter(name):
    text, _ = render_recipe(name, OPTIONS["cifar10"])
    assert sources.cite(RECIPES[name].source) in text
    assert "Table 11-" in text


@pytest.mark.parametrize("name", RECIPES)
def test_every_recipe_builds_a_model_for_its_input_shape(name):
    for options in OPTIONS.values():
        _, config = render_recipe(name, options)
        model = build_model(config.model, options.input_shape)
        last = [m for m in model.modules() if m.__class__.__name__ == "Dense"][-1]
        assert last.linear.out_features == (1 if options.classes == 2 else options.classes)


def hidden_specs(config):
    return [h.dense.spec for h in model_facts(config.model).hidden]


def test_default_follows_table_11_3():
    _, config = render_recipe("default", OPTIONS["cifar10"])
    facts = model_facts(config.model)
    assert facts.depth == recipes.DEFAULT_DEPTH
    assert {h.activation for h in facts.hidden} == {"elu"}
    assert {s.kernel_initializer.name for s in hidden_specs(config)} == {"he_normal"}
    assert len(facts.batch_norms) == facts.depth  # deep: BN before each activation
    assert not any(s.use_bias for s in hidden_specs(config))
    assert config.data.scaling == "standardize"
    assert config.train.early_stopping.restore_best_weights
    assert config.train.optimizer.name == "nadam"
    assert config.train.schedule.name == "one_cycle"


def test_default_has_no_batch_norm_when_shallow():
    _, config = render_recipe("default", OPTIONS["fashion_mnist-shallow"])
    facts = model_facts(config.model)
    assert facts.depth == 3 < DEEP_NET_HIDDEN_LAYERS and not facts.batch_norms
    assert all(s.use_bias for s in hidden_specs(config))


def test_self_normalizing_follows_table_11_4():
    _, config = render_recipe("self-normalizing", OPTIONS["cifar10"])
    facts = model_facts(config.model)
    assert {h.activation for h in facts.hidden} == {"selu"}
    assert {s.kernel_initializer.name for s in hidden_specs(config)} == {"lecun_normal"}
    assert not facts.batch_norms
    assert {type(leaf.spec).__name__ for leaf in facts.leaves} == {"FlattenSpec", "DenseSpec"}
    assert config.data.scaling == "standardize"


def test_sparse_builds_on_default_with_l1():
    _, default = render_recipe("default", OPTIONS["cifar10"])
    _, sparse = render_recipe("sparse", OPTIONS["cifar10"])
    assert [s.kernel_regularizer for s in hidden_specs(default)] == [None] * 20
    l1 = {s.kernel_regularizer.l1 for s in hidden_specs(sparse)}
    assert len(l1) == 1 and next(iter(l1)) > 0
    # apart from the regularizer, the same net as the default
    strip = [s.model_copy(update={"kernel_regularizer": None}) for s in hidden_specs(sparse)]
    assert strip == hidden_specs(default)


def test_l1_factor_makes_the_initial_penalty_a_tenth_of_the_initial_loss():
    o = OPTIONS["cifar10"]
    # hand computation for 3,072 → 100, then 19 × (100 → 100), He normal: E|w| = sqrt(2/n) · sqrt(2/π)
    expected_sum = 3072 * 100 * math.sqrt(2 / 3072) * math.sqrt(2 / math.pi) + 19 * 100 * 100 * math.sqrt(
        2 / 100
    ) * math.sqrt(2 / math.pi)
    factor = recipes._l1_factor(o, 20)
    assert factor * expected_sum == pytest.approx(0.1 * math.log(10), rel=0.5)  # one significant figure
    assert factor == float(f"{0.1 * math.log(10) / expected_sum:.0e}")


def test_low_latency_is_shallow_leaky_foldable_and_sparse():
    _, config = render_recipe("low-latency", OPTIONS["cifar10"])
    facts = model_facts(config.model)
    assert facts.depth == recipes.LOW_LATENCY_DEPTH < recipes.DEFAULT_DEPTH
    assert {h.activation for h in facts.hidden} == {"leaky_relu"}
    for h in facts.hidden:
        # BN directly after the dense layer: foldable into it
        assert isinstance(h.after[0].spec, BatchNormSpec)
        assert h.dense.spec.kernel_regularizer.l1 > 0
    leaky = [leaf.spec.activation for leaf in facts.leaves if getattr(leaf.spec, "type", "") == "activation"]
    assert {a.alpha for a in leaky} == {recipes.LEAKY_ALPHA}


def test_risk_sensitive_puts_mc_dropout_after_every_batch_norm():
    _, config = render_recipe("risk-sensitive", OPTIONS["cifar10"])
    leaves = model_facts(config.model).leaves
    drops = [i for i, leaf in enumerate(leaves) if isinstance(leaf.spec, DropoutSpec)]
    assert [leaves[i].spec.mc for i in drops] == [True]
    assert isinstance(leaves[drops[0] + 1].spec, DenseSpec) and drops[0] + 1 == len(leaves) - 1
    assert not any(isinstance(leaf.spec, BatchNormSpec) for leaf in leaves[drops[0] :])


def test_two_classes_make_a_sigmoid_output_and_binary_loss():
    _, config = render_recipe("default", OPTIONS["npz-features-binary"])
    assert config.train.loss == "binary_crossentropy"
    assert config.model.layers[-1].activation.name == "sigmoid"
    assert config.model.layers[0].type == "repeat"  # rank-1 inputs need no flatten


def test_write_recipe_never_overwrites_without_force(tmp_path):
    path = tmp_path / "cfg.toml"
    write_recipe(path, "default", OPTIONS["cifar10"])
    assert load_config(path) == render_recipe("default", OPTIONS["cifar10"], "cfg.toml")[1]
    path.write_text("# mine\n")
    with pytest.raises(ConfigError, match="the file exists; .* --force"):
        write_recipe(path, "sparse", OPTIONS["cifar10"])
    assert path.read_text() == "# mine\n"
    write_recipe(path, "sparse", OPTIONS["cifar10"], force=True)
    assert 'recipe "sparse"' in path.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cfg.toml"]  # no temporary file left behind


def test_write_recipe_wants_a_toml_name(tmp_path):
    with pytest.raises(ConfigError, match=r"ends in \.toml"):
        write_recipe(tmp_path / "cfg.txt", "default", OPTIONS["cifar10"])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dataset": "cifar100"}, r"--dataset: unknown dataset 'cifar100' \(did you mean 'cifar10'\?\)"),
        ({"input_shape": (28, 28)}, "--input-shape: cifar10 images are 32×32×3, not 28×28"),
        ({"classes": 100}, "--classes: cifar10 has 10 classes, not 100"),
        ({"dataset": "npz", "input_shape": (3,), "classes": 2}, "--data-path: dataset 'npz' needs the path"),
        (
            {"dataset": "npz", "data_path": "x.npz"},
            "--input-shape and --classes: dataset 'npz' has no known shape",
        ),
        (
            {"dataset": "npz", "data_path": "x.npz", "input_shape": (0, 3), "classes": 2},
            "every dimension must be ≥ 1",
        ),
        ({"dataset": "npz", "data_path": "x.npz", "input_shape": (3,), "classes": 1}, "at least 2 classes"),
        ({"depth": 0}, "--depth: the number of hidden layers must be ≥ 1"),
        ({"units": 0}, "--units: the number of units per hidden layer must be ≥ 1"),
    ],
)
def test_bad_options_name_the_option(kwargs, message):
    dataset = kwargs.pop("dataset", "cifar10")
    with pytest.raises(ConfigError, match=message):
        options_for(dataset, **kwargs)


def test_unknown_recipe_lists_the_valid_ones():
    with pytest.raises(
        ConfigError,
        match=r"unknown recipe 'defualt' \(did you mean 'default'\?\); valid recipe "
        r"names: default, low-latency, risk-sensitive, self-normalizing, sparse",
    ):
        recipe_document("defualt", OPTIONS["cifar10"])


def test_parse_shape():
    assert recipes.parse_shape("32,32,3") == (32, 32, 3)
    with pytest.raises(ConfigError, match="--input-shape: expected integers"):
        recipes.parse_shape("32,a")


def test_the_lr_finder_sets_max_lr_from_the_recipes_own_net_and_data(blob_npz):
    from trainwell.train.lr_finder import find_lr_for_config

    options = options_for("npz", input_shape=(4, 4, 3), classes=3, data_path=str(blob_npz), depth=2, units=16)
    found = recipes.with_found_max_lr("default", options)
    # the same sweep, set up by hand: the recipe's config with any max_lr and a 100-step finder
    data = document_data(recipe_document("default", replace(options, max_lr=0.5)))
    data["train"]["lr_finder"] = {"steps": recipes.FINDER_STEPS}
    expected = find_lr_for_config(validate_config(data))
    assert found.max_lr == float(f"{expected.suggested_lr:.2g}") > 0
    assert "LR finder's suggestion" in found.max_lr_source
    assert f"{expected.min_loss_lr:.2g}" in found.max_lr_source


def test_new_without_max_lr_runs_the_finder(blob_npz, tmp_path):
    from trainwell.cli import main

    path = tmp_path / "found.toml"
    assert (
        main(
            [
                "new",
                str(path),
                "--dataset",
                "npz",
                "--data-path",
                str(blob_npz),
                "--input-shape",
                "4,4,3",
                "--classes",
                "3",
                "--depth",
                "2",
                "--units",
                "16",
            ]
        )
        == 0
    )
    text = path.read_text()
    assert "# max_lr: the LR finder's suggestion" in text
    assert load_config(path).train.schedule.max_lr > 0


# ------------------------------------------------------------------------------------------- experiments


def all_recipes(options):
    return {name: options for name in RECIPES}


def test_experiment_of_every_recipe_parses_plans_and_has_no_warnings():
    from trainwell.experiments.spec import plan_runs

    text, experiment = recipes.render_experiment(all_recipes(OPTIONS["cifar10"]), "study.toml")
    assert tomllib.loads(text) == document_data(
        recipes.experiment_document(all_recipes(OPTIONS["cifar10"]), "study.toml")
    )
    assert [v.name for v in experiment.spec.variants] == list(RECIPES)
    for quick in (False, True):
        for run in plan_runs(experiment, quick=quick):
            # each variant trains its recipe's config exactly
            expected = render_recipe(run.variant.name, OPTIONS["cifar10"])[1]
            if not quick:
                assert run.config.model == expected.model and run.config.train == expected.train
            assert [f for f in advise(run.config) if f.severity == "warning"] == [], (run.variant.name, quick)


def test_experiment_variants_set_only_what_differs_from_the_base():
    _, experiment = recipes.render_experiment(all_recipes(OPTIONS["cifar10"]), "study.toml")
    sets = {v.name: v.set for v in experiment.spec.variants}
    assert sets["default"] == {}
    assert set(sets["sparse"]) == {"model"} and set(sets["risk-sensitive"]) == {"model"}
    assert {v.name: v.mc_dropout for v in experiment.spec.variants}["risk-sensitive"] == recipes.MC_SAMPLES


def test_experiment_name_comes_from_the_file_name():
    assert recipes.experiment_name("my study.toml") == "my-study"
    assert recipes.experiment_name("dir/.hidden.toml") == "hidden"


def test_new_then_run_quick_then_report(blob_npz, tmp_path, capsys):
    from trainwell.cli import main

    study = tmp_path / "study.toml"
    assert (
        main(
            [
                "new",
                str(study),
                "--recipe",
                "default",
                "--recipe",
                "self-normalizing",
                "--dataset",
                "npz",
                "--data-path",
                str(blob_npz),
                "--input-shape",
                "4,4,3",
                "--classes",
                "3",
                "--depth",
                "2",
                "--units",
                "8",
                "--max-lr",
                "0.01",
            ]
        )
        == 0
    )
    assert "trainwell run" in capsys.readouterr().out
    out = tmp_path / "exp"
    assert main(["run", str(study), "--quick", "--out", str(out), "--quiet"]) == 0
    assert (out / "report.html").is_file()
    results = json.loads((out / "results.json").read_text())
    assert [v["name"] for v in results["variants"]] == ["default", "self-normalizing"]
    assert all(v["val_accuracy"] > 0 for v in results["variants"])


@pytest.mark.parametrize("key", OPTIONS)
def test_every_recipe_writes_the_same_data_table(key):
    assert len({render_recipe(name, OPTIONS[key])[1].data for name in RECIPES}) == 1


def test_an_experiments_lr_finder_sweeps_share_one_load_of_the_data(blob_npz, tmp_path, monkeypatch):
    import trainwell.data

    loads = []
    real = trainwell.data.load_dataset
    monkeypatch.setattr(trainwell.data, "load_dataset", lambda spec: loads.append(spec) or real(spec))
    options = options_for("npz", input_shape=(4, 4, 3), classes=3, data_path=str(blob_npz), depth=2, units=8)
    experiment = recipes.write_experiment(tmp_path / "s.toml", ["default", "self-normalizing"], options)
    assert len(loads) == 1
    text = (tmp_path / "s.toml").read_text()
    assert "# max_lr: the LR finder's suggestion" in text
    assert [v.name for v in experiment.spec.variants] == ["default", "self-normalizing"]
