"""MC dropout: the batched prediction against the chapter's loop of separate passes, BN left in inference mode,
the model left untouched, and the numbers `trainwell predict` prints."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.conftest import blobs
from trainwell.analysis.mc_dropout import (
    compare_mc,
    entropy,
    log_loss,
    mask_seed,
    predict,
    predict_mc,
    sample_dropout,
)
from trainwell.nn.build import build_model

# λα of SELU from its two constants (Klambauer et al. 2017, eq. 14), written out independently of the module.
SELU_ALPHA, SELU_LAMBDA = 1.6732632423543772848170429916717, 1.0507009873554804934193349852946
ALPHA_PRIME = -SELU_LAMBDA * SELU_ALPHA

MODEL = {
    "layers": [
        {"type": "flatten"},
        {"type": "batch_norm"},
        {"type": "dense", "units": 12, "activation": "selu", "kernel_initializer": "lecun_normal"},
        {"type": "dropout", "rate": 0.3},
        {"type": "dense", "units": 9, "activation": "elu", "kernel_initializer": "he_normal"},
        {"type": "batch_norm"},
        {"type": "alpha_dropout", "rate": 0.2, "mc": True},
        {"type": "dense", "units": 3, "activation": "softmax"},
    ]
}


def trained_like_model(spec=MODEL, seed: int = 0) -> nn.Sequential:
    """A model whose BN moving statistics are far from (0, 1), so that using batch statistics instead shows."""
    torch.manual_seed(seed)
    model = build_model(spec, (4, 4, 3))
    for m in model.modules():
        if isinstance(m, nn.BatchNorm1d):
            m.running_mean.uniform_(-1.0, 1.0)
            m.running_var.uniform_(0.3, 3.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    return model


def paper_dropout(h: torch.Tensor, module: nn.Module, generator: torch.Generator) -> torch.Tensor:
    """One pass of (alpha) dropout from the papers' formulas: inverted dropout keeps a unit with probability
    q = 1 − p and scales it by 1/q; alpha dropout sets a dropped unit to α' = −λα and applies a·x + b with
    a = (q + α'² q (1 − q))^(−1/2), b = −a (1 − q) α' (SNN paper, section "New dropout technique")."""
    q = 1.0 - module.p
    keep = torch.rand(h.shape, generator=generator) < q
    if isinstance(module, nn.AlphaDropout):
        a = (q + ALPHA_PRIME**2 * q * (1 - q)) ** -0.5
        b = -a * (1 - q) * ALPHA_PRIME
        return a * torch.where(keep, h, torch.full_like(h, ALPHA_PRIME)) + b
    return torch.where(keep, h / q, torch.zeros_like(h))


def naive_mc(model: nn.Sequential, x: torch.Tensor, samples: int, seed: int) -> np.ndarray:
    """The chapter's loop: `samples` separate full passes, every layer in inference mode except dropout,
    whose masks come from the same per-(sample, layer) generators."""
    passes = []
    with torch.no_grad():
        for s in range(samples):
            h, layer = x, 0
            for module in model:
                if isinstance(module, nn.Dropout | nn.AlphaDropout):
                    g = torch.Generator().manual_seed(mask_seed(seed, s, layer))
                    h = paper_dropout(h, module, g)
                    layer += 1
                else:
                    was = module.training
                    module.eval()
                    h = module(h)
                    module.train(was)
            passes.append(h.numpy())
    return np.stack(passes)


def test_predict_mc_equals_the_chapters_loop_of_separate_passes_with_the_same_seeds():
    data = blobs(n=200)
    model = trained_like_model()
    x = torch.as_tensor(data.x_test)
    probas = naive_mc(model, x, samples=30, seed=7)
    # max_rows = 90 → 3 examples per chunk: masks drawn chunk by chunk must still equal the whole-batch ones
    got = predict_mc(model, data.x_test, samples=30, seed=7, max_rows=90)
    np.testing.assert_allclose(got.mean, probas.mean(axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.std, probas.std(axis=0), rtol=1e-4, atol=1e-6)
    mean = probas.mean(axis=0).astype(np.float64)
    np.testing.assert_allclose(got.entropy, -(mean * np.log(mean)).sum(axis=1), rtol=1e-4)
    assert got.samples == 30 and got.seed == 7 and got.mean.shape == (len(x), 3)


def test_the_chapters_loop_with_torchs_own_dropout_modules_agrees_statistically():
    """torch's own modules (dropout in training mode, everything else in eval) sample the same distribution."""
    data = blobs(n=100)
    model = trained_like_model()
    x = torch.as_tensor(data.x_test)
    samples = 200
    torch.manual_seed(3)
    with torch.no_grad():
        model.eval()
        for m in model.modules():
            if isinstance(m, nn.Dropout | nn.AlphaDropout):
                m.train()
        theirs = torch.stack([model(x) for _ in range(samples)]).numpy()
        model.eval()
    ours = predict_mc(model, x, samples=samples, seed=11)
    # Two independent means of 200 samples each: their difference has std sqrt(2/200)·σ per entry.
    se = np.sqrt(ours.std**2 / samples + theirs.std(axis=0) ** 2 / samples) + 1e-6
    z = np.abs(ours.mean - theirs.mean(axis=0)) / se
    assert z.max() < 5.0  # 60 entries: the largest of 60 |N(0,1)| rarely exceeds 4
    # Power: the same loop with BN on batch statistics (what model.train() does) is clearly different.
    with torch.no_grad():
        model.train()
        flipped = torch.stack([model(x) for _ in range(20)]).numpy().mean(axis=0)
        model.eval()
    assert (np.abs(ours.mean - flipped) / se).max() > 10.0


def test_sampled_dropout_takes_torchs_values():
    """Where torch's F.dropout / F.alpha_dropout keep a unit they output the same value as ours, and dropped
    units get the same constant: the formulas agree with torch's training-mode dropout."""
    torch.manual_seed(0)
    h = torch.randn(1, 500, 8) + 3.0  # no exact zeros, so kept and dropped units can be told apart
    g = [torch.Generator().manual_seed(1)]
    for module, fn in ((nn.Dropout(0.3), F.dropout), (nn.AlphaDropout(0.3), F.alpha_dropout)):
        ours = sample_dropout(h, module, g)
        theirs = fn(h, 0.3, training=True)
        dropped_value = theirs.flatten().mode().values  # the constant every dropped unit becomes
        for out in (ours, theirs):
            dropped = torch.isclose(out, dropped_value)
            assert 0.2 < dropped.float().mean() < 0.4  # about p of the units
        kept_t = ~torch.isclose(theirs, dropped_value)
        kept_o = ~torch.isclose(ours, dropped_value)
        # the kept units: y = scale·x + shift with the same scale and shift in both
        slope_t = np.polyfit(h[kept_t].numpy(), theirs[kept_t].numpy(), 1)
        slope_o = np.polyfit(h[kept_o].numpy(), ours[kept_o].numpy(), 1)
        np.testing.assert_allclose(slope_o, slope_t, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(ours[~kept_o].unique().numpy(), dropped_value.numpy(), rtol=1e-6)


def test_alpha_dropout_keeps_mean_zero_and_variance_one():
    g = [torch.Generator().manual_seed(s) for s in range(4)]
    h = torch.randn(1, 50_000, 1, generator=torch.Generator().manual_seed(9)).expand(4, 50_000, 1)
    out = sample_dropout(h, nn.AlphaDropout(0.2), g)
    n = out.numel()
    assert abs(out.mean().item()) < 5 / math.sqrt(n)  # 5 standard errors of a mean of n unit-variance values
    assert abs(out.var().item() - 1.0) < 5 * math.sqrt(2 / n)


def test_bn_stays_in_inference_mode_and_the_model_is_left_exactly_as_it_was():
    model = trained_like_model()
    model.train()
    model[2].eval()  # a mixture of flags, which must all come back
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [m.training for m in model.modules()]
    x = blobs(n=60).x_test
    predict_mc(model, x, samples=20, seed=1)
    assert [m.training for m in model.modules()] == flags
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_with_rate_zero_every_sample_is_the_inference_mode_prediction():
    """With p = 0 the passes are deterministic: the mean must be the model's eval-mode output (BN on its moving
    statistics) and the std 0. A BN on batch statistics would be off by a lot."""
    spec = {"layers": [{**layer, "rate": 0.0} if "rate" in layer else layer for layer in MODEL["layers"]]}
    model = trained_like_model(spec)
    x = torch.as_tensor(blobs(n=60).x_test)
    with torch.no_grad():
        expected = model.eval()(x).numpy()
    model.train()
    got = predict_mc(model, x, samples=5, seed=0)
    np.testing.assert_allclose(got.mean, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.std, 0.0, atol=1e-6)


def test_the_layers_before_the_first_dropout_run_once_and_the_rest_on_samples_times_n_rows():
    model = trained_like_model()
    rows: dict[str, int] = {}

    def count(name):
        return lambda module, inputs, output: rows.__setitem__(name, rows.get(name, 0) + len(inputs[0]))

    names = dict(model.named_children())
    hooks = [
        names[n].register_forward_hook(count(n)) for n in ("batch_normalization_1", "dense_1", "dense_2")
    ]
    x = blobs(n=100).x_test  # 20 examples
    predict_mc(model, x, samples=25, seed=0)
    for h in hooks:
        h.remove()
    assert rows == {"batch_normalization_1": 20, "dense_1": 20, "dense_2": 25 * 20}


def test_numpy_and_tensor_inputs_and_the_global_seed():
    model = trained_like_model()
    x = blobs(n=60).x_test
    a = predict_mc(model, x, samples=10, seed=4)
    b = predict_mc(model, torch.as_tensor(x), samples=10, seed=4)
    np.testing.assert_array_equal(a.mean, b.mean)
    torch.manual_seed(123)
    c = predict_mc(model, x, samples=10)
    torch.manual_seed(123)
    d = predict_mc(model, x, samples=10)
    np.testing.assert_array_equal(c.mean, d.mean)
    assert c.seed == d.seed
    e = predict_mc(model, x, samples=10, seed=5)
    assert not np.array_equal(a.mean, e.mean)
    assert a.probas is None
    kept = predict_mc(model, x, samples=10, seed=4, keep_samples=True)
    assert kept.probas.shape == (10, len(x), 3)
    np.testing.assert_allclose(kept.probas.mean(axis=0), a.mean, rtol=1e-6)


def test_entropy_by_hand():
    p = torch.tensor([[1 / 3, 1 / 3, 1 / 3], [1.0, 0.0, 0.0], [0.5, 0.5, 0.0]])
    np.testing.assert_allclose(entropy(p, "softmax").numpy(), [math.log(3), 0.0, math.log(2)], rtol=1e-6)
    q = torch.tensor([[0.5], [1.0], [0.1]])
    expected = [math.log(2), 0.0, -(0.1 * math.log(0.1) + 0.9 * math.log(0.9))]
    np.testing.assert_allclose(entropy(q, "sigmoid").numpy(), expected, rtol=1e-6)


def test_a_sigmoid_output_model():
    spec = {
        "layers": [
            {"type": "flatten"},
            {"type": "dense", "units": 8, "activation": "relu"},
            {"type": "dropout", "rate": 0.5},
            {"type": "dense", "units": 1, "activation": "sigmoid"},
        ]
    }
    torch.manual_seed(0)
    model = build_model(spec, (4, 4, 3))
    x = blobs(n=60).x_test
    r = predict_mc(model, x, samples=50, seed=0)
    assert r.output == "sigmoid" and r.mean.shape == (len(x), 1) and r.entropy.shape == (len(x),)
    np.testing.assert_array_equal(r.predictions, (r.mean[:, 0] > 0.5).astype(int))


def test_compare_mc_numbers_by_hand():
    data = blobs(n=300)
    model = trained_like_model()
    out = compare_mc(model, data.x_test, data.y_test, samples=40, seed=2, curve=True)
    plain = predict(model, data.x_test)
    with torch.no_grad():  # the ordinary prediction: eval mode with the (MC) dropout layers left out
        no_dropout = nn.Sequential(*[m for m in model if not isinstance(m, nn.Dropout | nn.AlphaDropout)])
        np.testing.assert_allclose(plain, no_dropout.eval()(torch.as_tensor(data.x_test)).numpy(), rtol=1e-6)
    mc = predict_mc(model, data.x_test, samples=40, seed=2)
    y = data.y_test
    assert out["accuracy"] == pytest.approx(np.mean(plain.argmax(1) == y))
    assert out["mc_accuracy"] == pytest.approx(np.mean(mc.mean.argmax(1) == y))
    plain_right, mc_right = plain.argmax(1) == y, mc.mean.argmax(1) == y
    assert (out["turned_right"], out["turned_wrong"]) == (
        np.sum(mc_right & ~plain_right),
        np.sum(plain_right & ~mc_right),
    )
    assert out["mc_accuracy"] - out["accuracy"] == pytest.approx(
        (out["turned_right"] - out["turned_wrong"]) / len(y)
    )
    assert out["mc_log_loss"] == pytest.approx(-np.mean(np.log(mc.mean[np.arange(len(y)), y])), rel=1e-5)
    assert out["log_loss"] == pytest.approx(log_loss(plain, y, "softmax"))
    assert out["mc_mean_std"] == pytest.approx(
        np.mean(mc.std[np.arange(len(y)), mc.mean.argmax(1)]), rel=1e-5
    )
    curve = out["accuracy_by_samples"]
    assert [c["samples"] for c in curve] == [1, 2, 3, 5, 10, 20, 30, 40]
    assert curve[-1]["accuracy"] == pytest.approx(out["mc_accuracy"])
    hist = out["entropy_histogram"]
    assert sum(hist["correct"]) + sum(hist["wrong"]) == len(y)
    assert sum(hist["correct"]) == round(out["mc_accuracy"] * len(y))
    assert hist["edges"][-1] == pytest.approx(math.log(3))


@pytest.mark.parametrize(
    ("model", "kwargs", "message"),
    [
        (nn.Sequential(nn.Flatten(), nn.Linear(48, 3), nn.Softmax(-1)), {}, "has no dropout layer"),
        (nn.Sequential(nn.Linear(3, 3), nn.Dropout2d(0.2)), {}, "drops whole channels"),
        (
            nn.Sequential(nn.Sequential(nn.Linear(3, 3)), nn.TransformerEncoderLayer(4, 1)),
            {},
            "holds dropout inside",
        ),
        (nn.Linear(3, 3), {}, "needs an nn.Sequential"),
        (nn.Sequential(nn.Linear(3, 3), nn.Dropout(0.2)), {"samples": 0}, "samples must be an int >= 1"),
    ],
)
def test_errors_name_the_problem(model, kwargs, message):
    with pytest.raises(ValueError, match=message):
        predict_mc(model, torch.zeros(2, 3), **kwargs)


def test_predict_command_on_a_run(tmp_path, blob_npz, capsys):
    import tomli_w

    from tests.conftest import small_config
    from trainwell.cli import main
    from trainwell.data import load_dataset
    from trainwell.runs import load_run_config, load_run_model

    cfg = small_config(
        {"dataset": "npz", "path": str(blob_npz), "validation_size": 100, "scaling": "none"}, epochs=2
    )
    cfg["model"]["layers"].insert(2, {"type": "dropout", "rate": 0.2})
    (tmp_path / "c.toml").write_text(tomli_w.dumps(cfg))
    run = tmp_path / "run"
    assert main(["train", str(tmp_path / "c.toml"), "--out", str(run), "--quiet", "--json"]) == 0
    capsys.readouterr()
    assert main(["predict", str(run), "--mc", "30", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    data = load_dataset(cfg["data"])
    model = load_run_model(run)
    mc = predict_mc(model, data.x_test, samples=30, seed=load_run_config(run).train.seed)  # the default seed
    assert printed["mc_accuracy"] == pytest.approx(mc.accuracy(data.y_test))
    assert printed["samples"] == 30 and printed["split"] == "test" and printed["examples"] == len(data.y_test)
    # without dropout: a clear error and exit code 2
    cfg["model"]["layers"].pop(2)
    (tmp_path / "d.toml").write_text(tomli_w.dumps(cfg))
    plain = tmp_path / "plain"
    assert main(["train", str(tmp_path / "d.toml"), "--out", str(plain), "--quiet", "--json"]) == 0
    capsys.readouterr()
    assert main(["predict", str(plain), "--mc", "10"]) == 2
    assert "has no dropout layer" in capsys.readouterr().err
