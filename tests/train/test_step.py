"""The training steps: the functional whole step against the eager one (torch.optim), and the choice between them.

The functional step replays each optimizer's update by hand; here it runs uncompiled (``use_compiler=False``,
seconds) against ``torch.optim`` step for step, for every optimizer and clipping mode, and with Batch
Normalization against torch's own. Two tests compile it for real (a plain net with clipping, penalties and
a schedule; a BN net; inductor, 15-25 s each the first time on 2 cores, a few seconds once the on-disk cache
holds the graphs) and check that compiling changes nothing beyond float rounding.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from tests.conftest import blobs
from trainwell.config import TrainSpec
from trainwell.errors import ConfigError
from trainwell.nn.build import build_model, split_output
from trainwell.train.loop import fit
from trainwell.train.losses import LOSSES
from trainwell.train.optimizers import build_optimizer
from trainwell.train.step import AUTO_COMPILE_MIN_STEPS, build_step, make_compiled_step, make_step

LOSS = LOSSES["sparse_categorical_crossentropy"]
PLAIN = {
    "layers": [
        {"type": "flatten"},
        {"type": "dense", "units": 8, "activation": "elu", "kernel_initializer": "he_normal"},
        {"type": "dense", "units": 3, "activation": "softmax"},
    ]
}
# an L1+L2 kernel penalty and a max-norm constraint that binds (weights drawn with std 1 have row norms ≈ 2)
REGULARIZED = {
    "layers": [
        {"type": "flatten"},
        {
            "type": "dense",
            "units": 8,
            "activation": "elu",
            "kernel_initializer": {"name": "random_normal", "stddev": 1.0},
            "kernel_regularizer": {"l1": 1e-3, "l2": 1e-2},
            "kernel_constraint": {"max_norm": 1.0},
        },
        {"type": "dense", "units": 3, "activation": "softmax"},
    ]
}


# Batch Normalization before the activation (the chapter's 8c), with Keras's momentum 0.99 made small so that
# the running statistics move visibly in a few steps
BN = {
    "layers": [
        {"type": "flatten"},
        {"type": "dense", "units": 8, "use_bias": False},
        {"type": "batch_norm", "momentum": 0.5},
        {"type": "activation", "name": "elu"},
        {"type": "dense", "units": 3, "activation": "softmax"},
    ]
}


def pair(model_spec, opt_spec, seed=0):
    """Two identical models with identical optimizers: one for the eager step, one for the functional one."""
    torch.manual_seed(seed)
    a = build_model(model_spec, (4,))
    b = copy.deepcopy(a)
    return (a, build_optimizer(opt_spec, a.parameters())), (b, build_optimizer(opt_spec, b.parameters()))


def data(n=96, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 4, generator=g), torch.randint(0, 3, (n,), generator=g)


def assert_same_state(opt_a, opt_b, atol=1e-6):
    sa, sb = opt_a.state_dict(), opt_b.state_dict()
    assert sa["param_groups"] == sb["param_groups"]
    assert sa["state"].keys() == sb["state"].keys()
    for k in sa["state"]:
        assert sa["state"][k].keys() == sb["state"][k].keys()
        for key, va in sa["state"][k].items():
            torch.testing.assert_close(va, sb["state"][k][key], rtol=1e-5, atol=atol, msg=f"state {k}.{key}")


OPTIMIZERS = [
    {"name": "sgd", "learning_rate": 0.1},
    {"name": "sgd", "learning_rate": 0.1, "momentum": 0.9},
    {"name": "sgd", "learning_rate": 0.1, "momentum": 0.9, "nesterov": True},
    {"name": "adam", "learning_rate": 0.01},
    {"name": "adamw", "learning_rate": 0.01, "weight_decay": 0.1},
    {"name": "adamax", "learning_rate": 0.01},
    {"name": "nadam", "learning_rate": 0.01},
    {"name": "rmsprop", "learning_rate": 0.01},
    {"name": "rmsprop", "learning_rate": 0.01, "momentum": 0.9, "centered": True},
    {"name": "adagrad", "learning_rate": 0.1},
    # clipping in the graph, each mode, and Keras's decay after the update
    {"name": "nadam", "learning_rate": 0.01, "clipvalue": 0.02},
    {"name": "adam", "learning_rate": 0.01, "clipnorm": 0.05},
    {"name": "sgd", "learning_rate": 0.1, "momentum": 0.9, "global_clipnorm": 0.1},
    {"name": "sgd", "learning_rate": 0.1, "momentum": 0.5, "decay": 0.2},
]


@pytest.mark.parametrize("opt_spec", OPTIMIZERS, ids=lambda s: "-".join(f"{v}" for v in s.values()))
@pytest.mark.parametrize("model_spec", [PLAIN, REGULARIZED], ids=["plain", "regularized"])
def test_functional_step_replays_torch_optim_step_for_step(opt_spec, model_spec):
    (ma, oa), (mb, ob) = pair(model_spec, opt_spec)
    eager = make_step(ma, split_output(ma)[0], LOSS, oa)
    functional = make_compiled_step(mb, split_output(mb)[0], LOSS, ob, batch_size=16, use_compiler=False)
    x, y = data()
    for i in range(6):
        xb, yb = x[16 * i : 16 * (i + 1)], y[16 * i : 16 * (i + 1)]
        la, logits_a = eager(xb, yb)
        lb, logits_b = functional(xb, yb)
        torch.testing.assert_close(lb, la, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(logits_b, logits_a, rtol=1e-5, atol=1e-5)
    for (name, pa), pb in zip(ma.named_parameters(), mb.parameters(), strict=True):
        torch.testing.assert_close(pb, pa, rtol=1e-5, atol=1e-6, msg=name)
    assert_same_state(oa, ob)
    assert all(p.grad is None for p in mb.parameters())  # as set_to_none leaves them after the next step


def test_functional_step_runs_batch_norm_as_the_eager_module_does():
    """BN by hand in the graph: same outputs, gradients and running statistics as torch's BatchNorm1d."""
    (ma, oa), (mb, ob) = pair(BN, {"name": "nadam", "learning_rate": 0.01})
    eager = make_step(ma, split_output(ma)[0], LOSS, oa)
    functional = make_compiled_step(mb, split_output(mb)[0], LOSS, ob, batch_size=16, use_compiler=False)
    x, y = data()
    x = x * 3 + 1  # batch statistics far from the initial running ones (0 and 1)
    for i in range(6):
        xb, yb = x[16 * i : 16 * (i + 1)], y[16 * i : 16 * (i + 1)]
        la, logits_a = eager(xb, yb)
        lb, logits_b = functional(xb, yb)
        torch.testing.assert_close(lb, la, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(logits_b, logits_a, rtol=1e-5, atol=1e-5)
    for (name, ta), tb in zip(ma.state_dict().items(), mb.state_dict().values(), strict=True):
        torch.testing.assert_close(tb, ta, rtol=1e-5, atol=1e-6, msg=name)
    bn = ma.batch_normalization_1
    assert int(bn.num_batches_tracked) == 6 and not torch.allclose(bn.running_mean, torch.zeros(8), atol=0.1)
    assert_same_state(oa, ob)


def test_batch_norm_in_inference_mode_takes_the_eager_step():
    """The graph runs BN in training mode; a BN layer in inference mode (running statistics, no update) must
    get torch's own BN, i.e. the eager step."""
    (ma, oa), (mb, ob) = pair(BN, {"name": "nadam", "learning_rate": 0.01})
    eager = make_step(ma, split_output(ma)[0], LOSS, oa)
    functional = make_compiled_step(mb, split_output(mb)[0], LOSS, ob, batch_size=16, use_compiler=False)
    x, y = data()
    for i in range(4):
        if i == 2:
            ma.batch_normalization_1.eval()
            mb.batch_normalization_1.eval()
        eager(x[16 * i : 16 * (i + 1)], y[16 * i : 16 * (i + 1)])
        functional(x[16 * i : 16 * (i + 1)], y[16 * i : 16 * (i + 1)])
    for (name, ta), tb in zip(ma.state_dict().items(), mb.state_dict().values(), strict=True):
        torch.testing.assert_close(tb, ta, rtol=1e-5, atol=1e-6, msg=name)
    assert int(mb.batch_normalization_1.num_batches_tracked) == 2  # the two steps in inference mode left it


def test_partial_batches_and_a_fresh_optimizer_take_the_eager_step_on_the_same_state():
    (ma, oa), (mb, ob) = pair(PLAIN, {"name": "nadam", "learning_rate": 0.01})
    eager = make_step(ma, split_output(ma)[0], LOSS, oa)
    functional = make_compiled_step(mb, split_output(mb)[0], LOSS, ob, batch_size=16, use_compiler=False)
    x, y = data(n=56)
    for start, stop in [(0, 16), (16, 32), (32, 40), (40, 56)]:  # 16, 16, 8 (eager), 16
        eager(x[start:stop], y[start:stop])
        functional(x[start:stop], y[start:stop])
    for pa, pb in zip(ma.parameters(), mb.parameters(), strict=True):
        torch.testing.assert_close(pb, pa, rtol=1e-5, atol=1e-6)
    assert_same_state(oa, ob)
    assert int(ob.state_dict()["state"][0]["step"]) == 4


def test_functional_step_follows_a_schedule_written_into_param_groups():
    """LR and β1 change every step (as 1cycle does): the functional step reads them each time."""
    (ma, oa), (mb, ob) = pair(PLAIN, {"name": "adam", "learning_rate": 0.01})
    eager = make_step(ma, split_output(ma)[0], LOSS, oa)
    functional = make_compiled_step(mb, split_output(mb)[0], LOSS, ob, batch_size=16, use_compiler=False)
    x, y = data()
    for i in range(6):
        for opt in (oa, ob):
            opt.param_groups[0]["lr"] = 0.01 * (i + 1)
            opt.param_groups[0]["betas"] = (0.95 - 0.02 * i, 0.999)
        eager(x[16 * i : 16 * (i + 1)], y[16 * i : 16 * (i + 1)])
        functional(x[16 * i : 16 * (i + 1)], y[16 * i : 16 * (i + 1)])
    for pa, pb in zip(ma.parameters(), mb.parameters(), strict=True):
        torch.testing.assert_close(pb, pa, rtol=1e-5, atol=1e-6)


def test_the_step_follows_a_state_dict_loaded_into_the_optimizer():
    """load_state_dict replaces the optimizer's state tensors; the functional step must use the new ones."""
    (ma, oa), (mb, ob) = pair(PLAIN, {"name": "nadam", "learning_rate": 0.01})
    functional = make_compiled_step(mb, split_output(mb)[0], LOSS, ob, batch_size=16, use_compiler=False)
    eager = make_step(ma, split_output(ma)[0], LOSS, oa)
    x, y = data()
    for i in range(3):
        eager(x[16 * i : 16 * (i + 1)], y[16 * i : 16 * (i + 1)])
        functional(x[16 * i : 16 * (i + 1)], y[16 * i : 16 * (i + 1)])
    saved_model, saved_opt = copy.deepcopy(mb.state_dict()), copy.deepcopy(ob.state_dict())
    for i in range(3, 6):
        functional(x[16 * i : 16 * (i + 1)], y[16 * i : 16 * (i + 1)])  # wander off ...
    mb.load_state_dict(saved_model)
    ob.load_state_dict(saved_opt)  # ... and come back: new state tensors
    for i in range(3, 6):
        eager(x[16 * i : 16 * (i + 1)], y[16 * i : 16 * (i + 1)])
        functional(x[16 * i : 16 * (i + 1)], y[16 * i : 16 * (i + 1)])
    for pa, pb in zip(ma.parameters(), mb.parameters(), strict=True):
        torch.testing.assert_close(pb, pa, rtol=1e-5, atol=1e-6)
    assert_same_state(oa, ob)


def test_bf16_precision_autocasts_the_forward_pass_only():
    (model, opt), _ = pair(PLAIN, {"name": "nadam", "learning_rate": 0.01})
    step = make_step(model, split_output(model)[0], LOSS, opt, precision="bf16")
    x, y = data()
    loss, logits = step(x[:16], y[:16])
    assert logits.dtype == torch.bfloat16 and loss.dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert all(s["exp_avg"].dtype == torch.float32 for s in opt.state.values())


# --- the choice: train.compile ---------------------------------------------------------------------------


def choose(model_spec=PLAIN, opt_spec=None, **kw):
    torch.manual_seed(0)
    model = build_model(model_spec, (4,))
    opt = build_optimizer(opt_spec or {"name": "nadam"}, model.parameters())
    return build_step(model, split_output(model)[0], LOSS, opt, batch_size=16, **kw)


def test_auto_compiles_only_runs_long_enough_to_repay_the_compile():
    _, short = choose(compile="auto", total_steps=2 * 1407)  # a 2-epoch CIFAR-10 run at batch 32
    assert short.startswith("eager (auto: 2,814 steps")
    _, long = choose(compile="auto", total_steps=100 * 1407)  # the exercise's 100 epochs
    assert long == "compiled (auto: 140,700 steps)"
    assert AUTO_COMPILE_MIN_STEPS > 2 * 1407


def test_auto_stays_eager_where_the_compiled_step_cannot_go_and_true_says_why():
    _, why = choose(BN, compile="auto", total_steps=10**6)
    assert why == "compiled (auto: 1,000,000 steps)"
    torch_bn = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 3))
    opt = build_optimizer({"name": "nadam"}, torch_bn.parameters())
    _, why = build_step(torch_bn, torch_bn, LOSS, opt, batch_size=16, compile="auto", total_steps=10**6)
    assert why == (
        "eager (auto: batch normalization layers other than trainwell's (with running statistics and a momentum))"
    )
    _, why = choose(opt_spec={"name": "adam", "amsgrad": True}, compile="auto", total_steps=10**6)
    assert why == "eager (auto: adam with amsgrad)"
    with pytest.raises(
        ConfigError, match=r"train\.compile: the compiled step does not support adam with amsgrad"
    ):
        choose(opt_spec={"name": "adam", "amsgrad": True}, compile=True, total_steps=10)
    _, why = choose(compile=False, total_steps=10**6)
    assert why == "eager (train.compile = false)"


def test_compile_setting_is_validated():
    assert TrainSpec.model_validate({}).compile == "auto"
    with pytest.raises(ValueError, match="compile"):
        TrainSpec.model_validate({"compile": "yes"})


@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")  # inductor's
def test_compiled_fit_matches_eager_fit():
    """One real compile: NAdam with clipping, an L1/L2 penalty, max-norm and a per-step β1/LR schedule
    (1cycle), through ``fit`` with a partial last batch (eager) every epoch; no recompilation allowed."""
    from trainwell.train.schedules import LearningRateScheduler, OneCycleSpec

    ds = blobs(n=500, shape=(4,))  # 300 training samples: 9 full batches of 32 and one of 12 per epoch
    spec = {
        "optimizer": {"name": "nadam", "learning_rate": 1e-2, "global_clipnorm": 1.0},
        "epochs": 3,
        "batch_size": 32,
        "device": "cpu",
    }
    results = []
    for compile_ in (False, True):
        torch.manual_seed(0)
        model = build_model(REGULARIZED, (4,))
        cycle = LearningRateScheduler(OneCycleSpec(name="one_cycle", max_lr=0.05))
        with torch._dynamo.config.patch(error_on_recompile=True):
            state = fit(model, ds, TrainSpec.model_validate(spec | {"compile": compile_}), callbacks=[cycle])
        results.append(state)
    eager, compiled = results
    assert compiled.extra["step"] == "compiled (train.compile = true)"
    np.testing.assert_allclose(
        [r["loss"] for r in compiled.history], [r["loss"] for r in eager.history], rtol=1e-5
    )
    np.testing.assert_allclose(
        [r["val_loss"] for r in compiled.history], [r["val_loss"] for r in eager.history], rtol=1e-5
    )
    for pa, pb in zip(eager.model.parameters(), compiled.model.parameters(), strict=True):
        torch.testing.assert_close(pb, pa, rtol=1e-4, atol=1e-5)


def test_compiled_fit_with_batch_norm_matches_eager_fit():
    """One real compile of a BN-before-activation net (the chapter's 8c): after an epoch (9 compiled steps and
    an eager partial one) the weights and BN's running statistics equal the eager run's."""
    ds = blobs(n=500, shape=(4,))
    spec = {
        "optimizer": {"name": "nadam", "learning_rate": 1e-2},
        "epochs": 1,
        "batch_size": 32,
        "device": "cpu",
    }
    models = []
    for compile_ in (False, True):
        torch.manual_seed(0)
        model = build_model(BN, (4,))
        with torch._dynamo.config.patch(error_on_recompile=True):
            state = fit(model, ds, TrainSpec.model_validate(spec | {"compile": compile_}))
        models.append(state.model)
    assert state.extra["step"] == "compiled (train.compile = true)"
    for (name, ta), tb in zip(models[0].state_dict().items(), models[1].state_dict().values(), strict=True):
        torch.testing.assert_close(tb, ta, rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")  # inductor's
def test_each_compiled_step_compiles_on_its_own_not_as_a_recompile_of_the_last():
    """A process that trains many models (an experiment's runs, a study's sub-runs) compiles one step per
    model. Had they shared one dynamo cache, each new model would count as a recompile of the last, and with
    ``fullgraph`` the ninth would fail (it did: the full chapter-questions study). Here even one recompile is an
    error, and two different models compile in turn, then the first again."""
    ds = blobs(n=500, shape=(4,))
    spec = {"optimizer": {"name": "nadam", "learning_rate": 1e-2}, "epochs": 1, "batch_size": 32}
    torch._dynamo.reset()
    with torch._dynamo.config.patch(error_on_recompile=True):
        for layers in (REGULARIZED, BN, REGULARIZED):
            torch.manual_seed(0)
            state = fit(build_model(layers, (4,)), ds, TrainSpec.model_validate(spec | {"compile": True}))
            assert state.extra["step"] == "compiled (train.compile = true)"
