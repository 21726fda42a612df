"""The training step: forward to logits, loss, backward, optimizer step, constraints — one batch.

A step is any function ``step(xb, yb) -> (loss, logits)`` (both detached) with the effect of one optimizer
update on the model and its optimizer; the loop calls it once per batch. Two are built here:

- :func:`make_step`, the eager step: plain autograd and ``optimizer.step()`` (clipping and Keras's ``decay``
  run in its hooks);
- :func:`make_compiled_step`, the whole step as **one** graph: ``torch.func.grad_and_value`` over
  ``functional_call`` gives loss and gradients; clipping, the optimizer update and max-norm follow in the
  same graph, which ``torch.compile`` (inductor, ``fullgraph``, static shapes) turns into a single compiled
  call. It reads the optimizer's hyperparameters from its param groups
  at every step (so schedules apply without recompiling) and updates the optimizer's own state tensors, so
  eager and compiled steps can alternate on the same model and optimizer: checkpoints, the LR finder and
  early stopping see no difference. Batches of another size (an epoch's last) take the eager step, so only
  one graph is compiled. Batch Normalization runs by hand in the graph (its batch statistics leave the
  gradient transform and the running statistics are updated after it); on the CPU the optimizer's step
  counters advance in the graph too; and once compiled, dynamo's guards are skipped while the step's own
  checks hold (see ``benchmarks/NOTES.md`` for what each of these saves).

:func:`build_step` chooses between them from ``train.compile`` (``"auto"``: compile when the run is long
enough to repay the compile, see :data:`AUTO_COMPILE_MIN_STEPS`) and applies ``train.precision``.

The compiled step replays the optimizer update by hand: ``torch.optim``'s ``step()`` cannot be traced into
a whole-step graph (it graph-breaks), and its functional kernels compute the schedule scalars (bias
corrections, Nadam's μ_t) as tensor ops that the compiler would evaluate per element. So the scalars are
computed here on the host, in double precision, and only the element-wise part runs in the graph.
``tests/train/test_step.py`` checks each update against ``torch.optim`` step for step, and the compiled
step against the eager one.
"""

from __future__ import annotations

import contextlib
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from trainwell.errors import ConfigError, TrainingError
from trainwell.nn.constraints import apply_constraints, constrained
from trainwell.nn.regularizers import penalty, penalty_terms
from trainwell.train.losses import Loss
from trainwell.train.optimizers import apply_decay, built_from

StepFn = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]
Precision = Literal["float32", "bf16"]

# compile = "auto" compiles when the run has at least this many steps. Measured on the project's 2-core CPU
# (benchmarks/bench_train.py, the 20x100 ELU/Nadam net at batch 32, 45,000 images): a cold compile costs
# 20-35 s (3-8 s once inductor's on-disk cache holds the graph), and a compiled epoch takes about 1.9 s where
# the eager one takes 3.7 s, i.e. about 1.3 ms saved per step; so a cold compile pays for itself after
# roughly 15,000-25,000 steps (11-18 CIFAR-10 epochs at batch 32). 15,000 leans towards compiling, since the
# cache makes every later run of the same model cheap to compile. A 2-epoch run (2,814 steps) stays eager
# and is never slowed by a compile it cannot amortize; the exercise's 100 epochs (140,700 steps) compile.
AUTO_COMPILE_MIN_STEPS = 15_000


def _autocast(device: torch.device, precision: Precision) -> contextlib.AbstractContextManager:
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def make_step(
    model: nn.Module,
    logits_model: nn.Module,
    loss: Loss,
    optimizer: torch.optim.Optimizer,
    precision: Precision = "float32",
) -> StepFn:
    """The eager step: plain autograd and ``optimizer.step()`` (clipping runs in its pre-hook).

    With ``precision = "bf16"`` the forward pass runs under ``torch.autocast`` (bfloat16 matrix products);
    the loss is computed in float32.
    """
    terms = penalty_terms(model)
    limits = constrained(model)
    device = _device_of(model)

    def step(xb: Tensor, yb: Tensor) -> tuple[Tensor, Tensor]:
        with _autocast(device, precision):
            logits = logits_model(xb)
        value = loss.fn(logits.float(), yb)
        if terms:
            value = value + penalty(terms)
        optimizer.zero_grad(set_to_none=True)
        value.backward()
        optimizer.step()
        if limits:
            apply_constraints(limits)
        return value.detach(), logits.detach()

    return step


def _device_of(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


# --- functional optimizer updates for the compiled step ----------------------------------------------------
#
# Each rule mirrors one torch.optim class (foreach=False, maximize=False, differentiable=False), reading its
# state tensors from ``optimizer.state`` so that the two paths share one state. ``scalars`` runs on the host
# before the step and returns the numbers the graph needs; ``update`` runs in the graph; ``advance`` does the
# host-side bookkeeping torch does (step counters, Nadam's μ product) after it.


@dataclass(frozen=True)
class FunctionalUpdate:
    """One optimizer's update, split into host-side scalars and an element-wise in-graph part."""

    state_keys: Callable[[dict[str, Any]], tuple[str, ...]]
    scalars: Callable[[dict[str, Any], dict[str, Any]], list[float]]
    update: Callable[[list[Tensor], list[Tensor], dict[str, list[Tensor]], Tensor, dict[str, Any]], None]
    flags: Callable[[dict[str, Any]], dict[str, Any]] = lambda group: {}
    counts_steps: bool = True  # whether torch keeps state["step"] (and advance adds 1 to it)
    unsupported: Callable[[dict[str, Any]], str | None] = lambda group: None


def _step_of(state: dict[str, Any]) -> float:
    """The step this update is (torch increments ``state["step"]`` first, so the current value + 1)."""
    return float(state["step"]) + 1.0


# SGD: b ← μ·b + g; d = g + μ·b (Nesterov) or b; θ ← θ − η·d. (First step b = g: taken eagerly.)
def _sgd_scalars(group: dict[str, Any], state: dict[str, Any]) -> list[float]:
    return [group["lr"], group["momentum"]]


def _sgd_update(
    params: list[Tensor], grads: list[Tensor], st: dict[str, list[Tensor]], sc: Tensor, flags: dict[str, Any]
) -> None:
    lr, mu = sc[0], sc[1]
    for i, (p, g) in enumerate(zip(params, grads, strict=True)):
        if flags["momentum"]:
            buf = st["momentum_buffer"][i]
            buf.mul_(mu).add_(g)
            g = g + mu * buf if flags["nesterov"] else buf
        p.sub_(lr * g)


# Adam / AdamW: m ← lerp(m, g, 1−β1); v ← β2·v + (1−β2)·g²; θ ← θ − (η/(1−β1^t))·m / (√v/√(1−β2^t) + ε);
# AdamW first decays θ ← θ·(1 − η·λ).
def _adam_scalars(group: dict[str, Any], state: dict[str, Any]) -> list[float]:
    t = _step_of(state)
    b1, b2 = group["betas"]
    decoupled = 1.0 - group["lr"] * group["weight_decay"] if group["decoupled_weight_decay"] else 1.0
    return [1 - b1, b2, 1 - b2, group["lr"] / (1 - b1**t), (1 - b2**t) ** 0.5, group["eps"], decoupled]


def _adam_update(
    params: list[Tensor], grads: list[Tensor], st: dict[str, list[Tensor]], sc: Tensor, flags: dict[str, Any]
) -> None:
    one_minus_b1, b2, one_minus_b2, step_size, bc2_sqrt, eps, decoupled = sc.unbind()
    for p, g, m, v in zip(params, grads, st["exp_avg"], st["exp_avg_sq"], strict=True):
        if flags["decoupled"]:
            p.mul_(decoupled)
        m.lerp_(g, one_minus_b1)
        v.mul_(b2).add_(one_minus_b2 * g * g)
        p.sub_(step_size * m / (v.sqrt() / bc2_sqrt + eps))


def _adam_unsupported(group: dict[str, Any]) -> str | None:
    if group["amsgrad"]:
        return "amsgrad"
    if group["weight_decay"] and not group["decoupled_weight_decay"]:
        return "coupled weight_decay"
    return None


# Adamax: m ← lerp(m, g, 1−β1); u ← max(β2·u, |g| + ε); θ ← θ − (η/(1−β1^t))·m/u.
def _adamax_scalars(group: dict[str, Any], state: dict[str, Any]) -> list[float]:
    b1, b2 = group["betas"]
    return [1 - b1, b2, group["eps"], group["lr"] / (1 - b1 ** _step_of(state))]


def _adamax_update(
    params: list[Tensor], grads: list[Tensor], st: dict[str, list[Tensor]], sc: Tensor, flags: dict[str, Any]
) -> None:
    one_minus_b1, b2, eps, clr = sc.unbind()
    for p, g, m, u in zip(params, grads, st["exp_avg"], st["exp_inf"], strict=True):
        m.lerp_(g, one_minus_b1)
        u.copy_(torch.maximum(u * b2, g.abs() + eps))
        p.sub_(clr * m / u)


# Nadam (Dozat 2016, torch's NAdam): μ_t = β1·(1 − ½·0.96^(ψ·t)), Π_t = Π_{t−1}·μ_t;
# θ ← θ − η(1−μ_t)/(1−Π_t) · g/d − η·μ_{t+1}/(1−Π_t·μ_{t+1}) · m/d with d = √(v/(1−β2^t)) + ε.
def _nadam_mu(group: dict[str, Any], t: float) -> tuple[float, float]:
    b1 = group["betas"][0]
    psi = group["momentum_decay"]
    return b1 * (1.0 - 0.5 * 0.96 ** (t * psi)), b1 * (1.0 - 0.5 * 0.96 ** ((t + 1) * psi))


def _nadam_scalars(group: dict[str, Any], state: dict[str, Any]) -> list[float]:
    t = _step_of(state)
    b1, b2 = group["betas"]
    mu, mu_next = _nadam_mu(group, t)
    # torch keeps Π in a float32 tensor: form the product the same way
    product = float(state["mu_product"] * mu)
    lr = group["lr"]
    return [
        1 - b1,
        b2,
        1 - b2,
        1 - b2**t,
        group["eps"],
        -lr * (1 - mu) / (1 - product),
        -lr * mu_next / (1 - product * mu_next),
        mu,  # for the μ product's update in the graph (see _COUNTERS)
    ]


def _nadam_update(
    params: list[Tensor], grads: list[Tensor], st: dict[str, list[Tensor]], sc: Tensor, flags: dict[str, Any]
) -> None:
    one_minus_b1, b2, one_minus_b2, bc2, eps, c_grad, c_avg, _ = sc.unbind()
    for p, g, m, v in zip(params, grads, st["exp_avg"], st["exp_avg_sq"], strict=True):
        m.lerp_(g, one_minus_b1)
        v.mul_(b2).add_(one_minus_b2 * g * g)
        d = (v / bc2).sqrt() + eps
        p.add_(c_grad * g / d)
        p.add_(c_avg * m / d)


def _nadam_unsupported(group: dict[str, Any]) -> str | None:
    return "weight_decay" if group["weight_decay"] else None


# RMSprop (torch's: ε after the square root): v ← ρ·v + (1−ρ)·g²; centered: ḡ ← lerp(ḡ, g, 1−ρ), v − ḡ²;
# a = √(·) + ε; with momentum b ← μ·b + g/a, θ ← θ − η·b; else θ ← θ − η·g/a.
def _rmsprop_scalars(group: dict[str, Any], state: dict[str, Any]) -> list[float]:
    return [group["alpha"], 1 - group["alpha"], group["eps"], group["lr"], group["momentum"]]


def _rmsprop_update(
    params: list[Tensor], grads: list[Tensor], st: dict[str, list[Tensor]], sc: Tensor, flags: dict[str, Any]
) -> None:
    rho, one_minus_rho, eps, lr, mu = sc.unbind()
    for i, (p, g) in enumerate(zip(params, grads, strict=True)):
        v = st["square_avg"][i]
        v.mul_(rho).add_(one_minus_rho * g * g)
        if flags["centered"]:
            gbar = st["grad_avg"][i]
            gbar.lerp_(g, one_minus_rho)
            a = (v - gbar * gbar).sqrt() + eps
        else:
            a = v.sqrt() + eps
        if flags["momentum"]:
            buf = st["momentum_buffer"][i]
            buf.mul_(mu).add_(g / a)
            p.sub_(lr * buf)
        else:
            p.sub_(lr * g / a)


# AdaGrad (torch's: ε after the square root, lr_decay 0): s ← s + g²; θ ← θ − η·g/(√s + ε).
def _adagrad_scalars(group: dict[str, Any], state: dict[str, Any]) -> list[float]:
    clr = group["lr"] / (1 + (_step_of(state) - 1) * group["lr_decay"])
    return [clr, group["eps"]]


def _adagrad_update(
    params: list[Tensor], grads: list[Tensor], st: dict[str, list[Tensor]], sc: Tensor, flags: dict[str, Any]
) -> None:
    clr, eps = sc.unbind()
    for p, g, s in zip(params, grads, st["sum"], strict=True):
        s.add_(g * g)
        p.sub_(clr * g / (s.sqrt() + eps))


def _no_weight_decay(group: dict[str, Any]) -> str | None:
    return "weight_decay" if group["weight_decay"] else None


def _rmsprop_keys(group: dict[str, Any]) -> tuple[str, ...]:
    return (
        ("square_avg",)
        + (("momentum_buffer",) if group["momentum"] > 0 else ())
        + (("grad_avg",) if group["centered"] else ())
    )


FUNCTIONAL_UPDATES: dict[str, FunctionalUpdate] = {
    "sgd": FunctionalUpdate(
        state_keys=lambda g: ("momentum_buffer",) if g["momentum"] else (),
        scalars=_sgd_scalars,
        update=_sgd_update,
        flags=lambda g: {"momentum": bool(g["momentum"]), "nesterov": bool(g["nesterov"])},
        counts_steps=False,
        unsupported=lambda g: "dampening" if g["dampening"] else _no_weight_decay(g),
    ),
    "adam": FunctionalUpdate(
        state_keys=lambda g: ("exp_avg", "exp_avg_sq"),
        scalars=_adam_scalars,
        update=_adam_update,
        flags=lambda g: {"decoupled": bool(g["decoupled_weight_decay"] and g["weight_decay"])},
        unsupported=_adam_unsupported,
    ),
    "adamax": FunctionalUpdate(
        state_keys=lambda g: ("exp_avg", "exp_inf"),
        scalars=_adamax_scalars,
        update=_adamax_update,
        unsupported=_no_weight_decay,
    ),
    "nadam": FunctionalUpdate(
        state_keys=lambda g: ("exp_avg", "exp_avg_sq"),
        scalars=_nadam_scalars,
        update=_nadam_update,
        unsupported=_nadam_unsupported,
    ),
    "rmsprop": FunctionalUpdate(
        state_keys=_rmsprop_keys,
        scalars=_rmsprop_scalars,
        update=_rmsprop_update,
        flags=lambda g: {"momentum": g["momentum"] > 0, "centered": bool(g["centered"])},
        unsupported=_no_weight_decay,
    ),
    "adagrad": FunctionalUpdate(
        state_keys=lambda g: ("sum",),
        scalars=_adagrad_scalars,
        update=_adagrad_update,
        unsupported=_no_weight_decay,
    ),
}
FUNCTIONAL_UPDATES["adamw"] = FUNCTIONAL_UPDATES["adam"]


# On the CPU the optimizer's per-parameter counters (float32 scalar tensors) advance inside the compiled graph:
# two foreach calls over ~40 scalar tensors per step cost about a tenth of a compiled step on the host
# (benchmarks/NOTES.md). On a GPU they stay host-side (torch keeps them on the CPU, the graph is on the GPU).
# The graph multiplies the μ product by the last of Nadam's scalars, μ_t.
_COUNTERS: dict[str, tuple[str, ...]] = {"nadam": ("step", "mu_product")}


def _advance_in_graph(counters: dict[str, list[Tensor]], sc: Tensor) -> None:
    """:func:`_advance`'s bookkeeping as graph operations (same float32 arithmetic)."""
    for t in counters.get("mu_product", ()):
        t.mul_(sc[-1])
    for t in counters["step"]:
        t.add_(1.0)


def _advance(rule: FunctionalUpdate, name: str, group: dict[str, Any], states: list[dict[str, Any]]) -> None:
    """torch's host-side bookkeeping after an update: step counters, Nadam's μ product (float32 tensors)."""
    if not rule.counts_steps:
        return
    steps = [s["step"] for s in states]
    if name == "nadam":
        mu, _ = _nadam_mu(group, _step_of(states[0]))
        torch._foreach_mul_([s["mu_product"] for s in states], mu)
    torch._foreach_add_(steps, 1.0)


# --- clipping in the graph (Keras's semantics, torch.nn.utils's formulas) ----------------------------------


def _clip(grads: list[Tensor], spec: Any) -> list[Tensor]:
    """Clip as the optimizer's pre-hook would. Written out because ``torch.nn.utils.clip_grad_*_`` work on
    ``.grad`` attributes in place, and the graph has gradients as values; the formulas are theirs:
    scale = min(1, max_norm / (norm + 1e-6))."""
    if spec.clipvalue is not None:
        return [g.clamp(-spec.clipvalue, spec.clipvalue) for g in grads]
    if spec.clipnorm is not None:  # each tensor by its own norm
        return [g * torch.clamp(spec.clipnorm / (torch.linalg.vector_norm(g) + 1e-6), max=1.0) for g in grads]
    if spec.global_clipnorm is not None:
        total = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
        scale = torch.clamp(spec.global_clipnorm / (total + 1e-6), max=1.0)
        return [g * scale for g in grads]
    return grads


# --- Batch Normalization in the graph ----------------------------------------------------------------------
#
# BN's forward updates its running statistics in place, and dynamo cannot trace that mutation inside
# torch.func.grad. So in the compiled step BN layers are run by hand: the batch statistics are computed in the
# graph and handed out of the gradient transform, and the running statistics are updated after it, in the
# same graph, with torch's formulas (running ← (1 − m)·running + m·batch, the variance unbiased).


def _batch_norm_problem(model: nn.Module) -> str | None:
    """Why the compiled step cannot run ``model``'s BN layers, or None (also None when it has none)."""
    from trainwell.nn.layers import BatchNorm

    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return None
    if any(not p.requires_grad for m in bns for p in m.parameters(recurse=False)):
        # a frozen BN layer runs in inference mode (transfer/phases.py, as Keras does); the graph computes BN
        # in training mode
        return "frozen batch normalization layers (they run in inference mode)"
    if not isinstance(model, nn.Sequential) or any(m not in list(model.children()) for m in bns):
        return "batch normalization layers nested below the top-level Sequential"
    if any(type(m) is not BatchNorm or not m.track_running_stats or m.momentum is None for m in bns):
        return "batch normalization layers other than trainwell's (with running statistics and a momentum)"
    if any(not p.requires_grad for m in bns for p in m.parameters()):  # the graph runs BN in training mode
        return "frozen batch normalization layers (train.phases), which must run in inference mode"
    return None


def _batch_norm_train(bn: nn.Module, x: Tensor, params: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    """trainwell's BatchNorm in training mode over the last axis: ``y = γ·(x − μ_B)/√(σ²_B + ε) + β``
    (Ioffe & Szegedy 2015), with the batch mean and *unbiased* variance (σ²_B · n/(n − 1)) for the update."""
    dims = tuple(range(x.dim() - 1))
    mean = x.mean(dims)
    var = x.var(dims, unbiased=False)
    y = (x - mean) * torch.rsqrt(var + bn.eps)
    if bn.weight is not None:
        y = y * params.get("weight", bn.weight)
    if bn.bias is not None:
        y = y + params.get("bias", bn.bias)
    n = x.numel() // x.shape[-1]
    return y, mean.detach(), var.detach() * (n / max(n - 1, 1))


def _forward_with_batch_stats(
    seq: nn.Module, params: dict[str, Tensor], x: Tensor
) -> tuple[Tensor, list[tuple[Tensor, Tensor]]]:
    """``seq``'s forward with ``params`` substituted, BN layers by hand; and each BN layer's batch mean and
    unbiased variance, in order."""
    from torch.func import functional_call

    stats: list[tuple[Tensor, Tensor]] = []
    for name, child in seq.named_children():
        own = {k[len(name) + 1 :]: v for k, v in params.items() if k.startswith(name + ".")}
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            x, mean, var = _batch_norm_train(child, x, own)
            stats.append((mean, var))
        else:
            x = functional_call(child, own, (x,)) if own else child(x)
    return x, stats


# --- the compiled step --------------------------------------------------------------------------------------


def compiled_step_problem(model: nn.Module, optimizer: torch.optim.Optimizer) -> str | None:
    """Why :func:`make_compiled_step` cannot run this model and optimizer, or None when it can."""
    spec = built_from(optimizer)
    if spec is None:
        return "the optimizer was not built by trainwell.build_optimizer (its hooks are unknown)"
    rule = FUNCTIONAL_UPDATES.get(spec.name)
    if rule is None:
        return f"no compiled update for optimizer {spec.name!r}"
    if len(optimizer.param_groups) != 1:
        return "more than one parameter group"
    reason = rule.unsupported(optimizer.param_groups[0])
    if reason:
        return f"{spec.name} with {reason}"
    bn_problem = _batch_norm_problem(model)
    if bn_problem:
        return bn_problem
    params = {id(p) for p in optimizer.param_groups[0]["params"] if p.requires_grad}
    if not params:
        return "an optimizer with no trainable parameters"
    if params - {id(p) for p in model.parameters()}:
        return "an optimizer holding parameters that are not the model's"
    if any(id(t.weight) not in params for t in penalty_terms(model)):
        return "a regularized kernel that the optimizer does not train"
    return None


def make_compiled_step(
    model: nn.Module,
    logits_model: nn.Module,
    loss: Loss,
    optimizer: torch.optim.Optimizer,
    batch_size: int,
    precision: Precision = "float32",
    compile_options: dict[str, Any] | None = None,
    use_compiler: bool = True,
) -> StepFn:
    """The whole training step compiled into one graph (see the module docstring).

    Batches of ``batch_size`` samples run compiled; any other size, and any step before the optimizer has
    state, runs :func:`make_step`'s eager step. ``compile_options`` are inductor options (default: none;
    e.g. ``{"cpp_wrapper": True}``). ``use_compiler = False`` runs the same functional step without compiling it (to test
    and debug it in seconds). Raises :class:`~trainwell.errors.ConfigError` when
    :func:`compiled_step_problem` finds a reason it cannot run.
    """
    problem = compiled_step_problem(model, optimizer)
    if problem is not None:
        raise ConfigError(
            f"train.compile: the compiled step does not support {problem}; set train.compile = "
            '"auto" (which falls back to the eager step) or false'
        )
    from torch.func import functional_call, grad_and_value

    eager = make_step(model, logits_model, loss, optimizer, precision)
    spec = built_from(optimizer)
    rule = FUNCTIONAL_UPDATES[spec.name]
    group = optimizer.param_groups[0]
    # what torch.optim would update: parameters that get gradients (frozen ones are constants of the graph;
    # which parameters are frozen must not change while this step is in use)
    params: list[Tensor] = [p for p in group["params"] if p.requires_grad]
    names_by_id = {id(p): name for name, p in logits_model.named_parameters()}
    names = [names_by_id[id(p)] for p in params]
    values = [p.detach() for p in params]  # same storage: updating these updates the model
    index = {id(p): i for i, p in enumerate(params)}
    terms = [(index[id(t.weight)], t.l1, t.l2) for t in penalty_terms(model)]
    limits = [(index[id(w)], m) for w, m in constrained(model) if id(w) in index]
    device = _device_of(model)
    bns = [m for m in logits_model.children() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    running = [[m.running_mean, m.running_var, m.num_batches_tracked] for m in bns]
    momenta = [float(m.momentum) for m in bns]
    counter_keys = (
        (_COUNTERS.get(spec.name, ("step",)) if rule.counts_steps else ()) if device.type == "cpu" else ()
    )

    def whole_step(
        values: list[Tensor],
        state: dict[str, list[Tensor]],
        sc: Tensor,
        xb: Tensor,
        yb: Tensor,
        flags: dict[str, Any],
        running: list[list[Tensor]],
        counters: dict[str, list[Tensor]],
    ) -> tuple[Tensor, Tensor]:
        def loss_of(ps: list[Tensor]) -> tuple[Tensor, tuple[Tensor, list[tuple[Tensor, Tensor]]]]:
            by_name = dict(zip(names, ps, strict=True))
            with _autocast(device, precision):
                if running:
                    logits, stats = _forward_with_batch_stats(logits_model, by_name, xb)
                else:
                    logits, stats = functional_call(logits_model, by_name, (xb,)), []
            value = loss.fn(logits.float(), yb)
            for i, l1, l2 in terms:
                if l1:
                    value = value + l1 * ps[i].abs().sum()
                if l2:
                    value = value + l2 * ps[i].square().sum()
            return value, (logits, stats)

        grads, (value, (logits, stats)) = grad_and_value(loss_of, has_aux=True)(values)
        grads = _clip(grads, spec)
        with torch.no_grad():
            rule.update(values, grads, state, sc, flags)
            for i, max_norm in limits:
                values[i].copy_(torch.renorm(values[i], p=2, dim=0, maxnorm=max_norm))
            for (mean_run, var_run, count), (mean, var), m in zip(running, stats, momenta, strict=True):
                mean_run.lerp_(mean.float(), m)
                var_run.lerp_(var.float(), m)
                count.add_(1)
            if counters:
                _advance_in_graph(counters, sc)
        return value.detach(), logits.detach()

    # inductor's C++ wrapper is off: on this workload it saved at most ~2 % of a step's CPU time (within the
    # noise) but made a cold compile ~50 % longer (79 s vs 52 s, loaded) and a warm start 6.3 s vs 4.5 s
    # (benchmarks/NOTES.md, section 6)
    options = compile_options if compile_options is not None else {}
    # Dynamo keeps its cache, and counts recompiles against its limit (8), per code object. Every step made
    # here would share whole_step's, so a process that trains many models (an experiment's runs, a study's
    # sub-runs) would see each new model as a recompile of the last one and, with fullgraph, fail at the
    # ninth. A copy of the code object per step gives each step a cache of its own.
    own_step = types.FunctionType(
        whole_step.__code__.replace(),
        whole_step.__globals__,
        whole_step.__name__,
        None,
        whole_step.__closure__,
    )
    compiled = (
        torch.compile(own_step, fullgraph=True, dynamic=False, options=options)
        if use_compiler
        else whole_step
    )
    cache: dict[str, Any] = {"first": None, "compiled_for": None}

    def state_lists(keys: tuple[str, ...]) -> dict[str, list[Tensor]] | None:
        """The optimizer's state tensors by key (re-gathered when ``load_state_dict`` replaced them)."""
        first = optimizer.state.get(params[0])
        if first is None or any(k not in first or first[k] is None for k in keys):
            return None
        marker = first.get(keys[0]) if keys else None
        if cache["first"] is not first or cache["keys"] != keys or cache["marker"] is not marker:
            states = [optimizer.state.get(p) for p in params]
            if any(s is None or any(s.get(k) is None for k in keys) for s in states):
                return None
            cache.update(
                first=first,
                keys=keys,
                marker=marker,
                states=states,
                lists={k: [s[k] for s in states] for k in keys},
                counters={k: [s[k] for s in states] for k in counter_keys},
            )
        return cache["lists"]

    def step(xb: Tensor, yb: Tensor) -> tuple[Tensor, Tensor]:
        keys = rule.state_keys(group)
        lists = state_lists(keys) if keys or rule.counts_steps else {}
        if (
            len(xb) != batch_size
            or lists is None
            or any(not m.training for m in bns)  # BN in inference mode: the graph has it in training mode
            or (rule.counts_steps and "step" not in optimizer.state.get(params[0], {}))
        ):
            return eager(xb, yb)
        states = cache["states"] if keys or rule.counts_steps else []
        first = optimizer.state[params[0]] if rule.counts_steps else {}
        sc = torch.tensor(rule.scalars(group, first), dtype=values[0].dtype).to(device, non_blocking=True)
        for p in params:  # an earlier eager step's gradients would be stale: drop them, as set_to_none does
            p.grad = None
        counters = cache["counters"] if counter_keys else {}
        flags = rule.flags(group)
        # Once compiled, skip dynamo's guard evaluation: it checks ~200 input tensors and every module the
        # graph reads, which cost a fifth of a step (benchmarks/NOTES.md). The step's inputs keep their
        # shapes, dtypes and devices (full batches only; optimizer state re-gathered above), so the guards
        # could only fail on what is checked here: the optimizer's flags and the model's train/eval mode.
        # When those differ, the guards run and dynamo recompiles as usual. The cache consulted is this
        # step's own (its own code object, above), so no other model's graph can be picked by mistake.
        now = (flags, logits_model.training)
        stance = (
            torch.compiler.set_stance(skip_guard_eval_unsafe=True)
            if use_compiler and cache["compiled_for"] == now
            else contextlib.nullcontext()
        )
        with stance:
            value, logits = compiled(values, lists, sc, xb, yb, flags, running, counters)
        cache["compiled_for"] = now
        if not counter_keys:
            _advance(rule, spec.name, group, states)
        apply_decay(optimizer)
        return value, logits

    return step


def build_step(
    model: nn.Module,
    logits_model: nn.Module,
    loss: Loss,
    optimizer: torch.optim.Optimizer,
    *,
    compile: bool | Literal["auto"] = "auto",
    precision: Precision = "float32",
    batch_size: int,
    total_steps: int,
) -> tuple[StepFn, str]:
    """The step ``train.compile`` and ``train.precision`` ask for, and a line saying which it is and why.

    ``compile = "auto"`` compiles when the run has at least :data:`AUTO_COMPILE_MIN_STEPS` steps and the
    compiled step supports the model and optimizer; ``True`` compiles or raises; ``False`` stays eager.
    """
    if compile is False:
        return make_step(model, logits_model, loss, optimizer, precision), "eager (train.compile = false)"
    problem = compiled_step_problem(model, optimizer)
    if compile == "auto":
        if problem is not None:
            return make_step(model, logits_model, loss, optimizer, precision), f"eager (auto: {problem})"
        if total_steps < AUTO_COMPILE_MIN_STEPS:
            return (
                make_step(model, logits_model, loss, optimizer, precision),
                f"eager (auto: {total_steps:,} steps < {AUTO_COMPILE_MIN_STEPS:,}, too short to repay a compile)",
            )
    step = make_compiled_step(model, logits_model, loss, optimizer, batch_size, precision)
    why = "train.compile = true" if compile is True else f"auto: {total_steps:,} steps"
    return _with_fallback(
        step, model, logits_model, loss, optimizer, precision, strict=compile is True
    ), f"compiled ({why})"


def _with_fallback(
    step: StepFn,
    model: nn.Module,
    logits_model: nn.Module,
    loss: Loss,
    optimizer: torch.optim.Optimizer,
    precision: Precision,
    strict: bool,
) -> StepFn:
    """Compilation happens at the first compiled call (and again if a guard fails). If it fails, ``compile =
    true`` stops with the reason, and ``"auto"`` says so on stderr and goes on with the eager step: nothing
    has changed yet, a compile error comes before the graph runs."""
    from torch._dynamo.exc import FailOnRecompileLimitHit, TorchDynamoException
    from torch._inductor.exc import InductorError

    current: list[StepFn] = [step]

    def guarded(xb: Tensor, yb: Tensor) -> tuple[Tensor, Tensor]:
        try:
            return current[0](xb, yb)
        except (TorchDynamoException, InductorError, FailOnRecompileLimitHit) as e:
            if strict:
                raise TrainingError(f"train.compile: compiling the training step failed: {e}") from e
            print(
                f"trainwell: compiling the training step failed; training continues eagerly ({e})",
                file=sys.stderr,
            )
            current[0] = make_step(model, logits_model, loss, optimizer, precision)
            return current[0](xb, yb)

    return guarded
