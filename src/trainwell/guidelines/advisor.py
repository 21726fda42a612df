"""The advisor: where a config departs from the chapter's practical guidelines, and what the chapter says.

:func:`advise` runs every rule of :data:`RULES` over a validated :class:`~trainwell.config.Config` and returns
:class:`Finding` records: the rule, a severity, the key path, what departs and why it matters, the guideline
it comes from (:mod:`trainwell.guidelines.sources`) and the fix. Rules are pure functions of the config; the
numbers they compare against are named in :mod:`trainwell.guidelines.thresholds` and are keyword arguments.

Severities:

- ``warning``: a departure the chapter says hurts training or the model (vanishing gradients, lost
  self-normalization, no schedule, no early stopping, ...). The recipes' configs have none.
- ``info``: a note worth knowing that may well be the right choice (an adaptive optimizer that may
  generalize worse than NAG, a redundant bias, ...).

A guideline the advisor does not check, and why: *MC dropout with Batch Normalization in training mode*.
The chapter's MC dropout calls ``model(X, training=True)``, which also puts BN layers in training mode, and it
warns that this is wrong for models with BN. In trainwell no config can ask for it, so there is no rule:
MC dropout is a property of the dropout layer (``mc = true`` keeps *that* layer sampling in inference mode);
a ``batch_norm`` layer has no key that forces training mode (the config rejects one); evaluation runs the
model in inference mode, where BN uses its moving statistics; and ``trainwell predict --mc`` samples only the
dropout layers. ``tests/guidelines/test_advisor.py`` checks each of these facts, so the day one of them
changes, a test says this rule is needed. (It would fire only for code of the user's own that calls
``model.train()`` to sample, which no config describes.)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Literal

from trainwell.config import Config
from trainwell.guidelines import sources
from trainwell.guidelines.facts import initializer_family, is_dropout, model_facts, steps_per_epoch
from trainwell.guidelines.sources import cite
from trainwell.guidelines.thresholds import DEEP_NET_HIDDEN_LAYERS, HIGH_BN_MOMENTUM, HIGH_OPTIMIZER_MOMENTUM
from trainwell.nn.activations import RELU_FAMILY, SATURATING
from trainwell.nn.layers import BatchNormSpec, DenseSpec
from trainwell.nn.selfnorm import OPT_OUT, self_normalization_problems, uses_selu
from trainwell.train.optimizers import momentum_key
from trainwell.train.schedules import OneCycleSpec

Severity = Literal["warning", "info"]
SEVERITIES: tuple[Severity, ...] = ("warning", "info")  # most serious first

# Table 11-1's families: the initialization that keeps the variance of each activation's outputs steady.
HE_ACTIVATIONS = (*RELU_FAMILY, "elu", "swish", "silu", "gelu")  # "ReLU and its variants" (and ELU)
GLOROT_ACTIVATIONS = ("linear", *SATURATING, "softmax")  # "None, tanh, logistic, softmax"
ADAPTIVE_OPTIMIZERS = ("rmsprop", "adam", "adamax", "nadam", "adamw")  # AdaGrad has a rule of its own
VALIDATION_METRICS = ("val_loss", "val_accuracy")


@dataclass(frozen=True)
class Finding:
    """One departure from the guidelines."""

    rule: str  # the rule's name, e.g. "deep_net_without_batch_norm"
    severity: Severity
    where: str  # the config key path, e.g. "train.optimizer.momentum"
    message: str  # what departs from the guideline, and why that matters
    guideline: str  # the chapter's table or section it comes from
    fix: str  # what to change

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


RuleCheck = Callable[[Config], list[Finding]]


@dataclass(frozen=True)
class Rule:
    name: str
    check: RuleCheck
    summary: str  # one line: what the rule looks for


# --------------------------------------------------------------------------------------------------- data


def inputs_not_scaled(config: Config) -> list[Finding]:
    """Raw pixel values (``data.scaling = "none"``) reach the first layer.

    A SELU net is left to :func:`not_self_normalizing`, whose first condition is standardized inputs.
    """
    if config.data.scaling != "none" or uses_selu(config.model):
        return []
    return [
        Finding(
            "inputs_not_scaled",
            "warning",
            "data.scaling",
            "the inputs are not scaled: raw values in the hundreds saturate activations and make the first "
            "layer's gradients dominate; the chapter's guidelines close with: don't forget to normalize the "
            "input features",
            cite(sources.PRACTICAL_GUIDELINES, sources.DEFAULT_TABLE),
            'set data.scaling = "standardize" (or "unit" to divide pixels by 255)',
        )
    ]


# --------------------------------------------------------------------------------------------------- model


def not_self_normalizing(config: Config) -> list[Finding]:
    """A SELU net that breaks one of the conditions of self-normalization (one finding per broken condition,
    from :func:`trainwell.nn.selfnorm.self_normalization_problems`).

    ``model.check_self_normalization = false`` (the user knows and opted out) turns the warnings into infos.
    """
    problems = self_normalization_problems(config.model, config.data.scaling)
    opted_out = not config.model.check_self_normalization
    severity: Severity = "info" if opted_out else "warning"
    note = f" (you opted out of this check with {OPT_OUT})" if opted_out else ""
    return [
        Finding(
            "not_self_normalizing",
            severity,
            p.where,
            f"no longer self-normalizing: {p.reason}{note}",
            cite(sources.SELU_CONDITIONS, sources.SELF_NORMALIZING_TABLE),
            p.fix,
        )
        for p in problems
    ]


def _gradient_risk(activations: set[str]) -> str:
    if activations & set(SATURATING):
        return (
            "saturating activations (sigmoid, tanh) make the gradients vanish layer after layer in a deep net"
        )
    if activations & set(RELU_FAMILY):
        return (
            "He initialization with ReLU-family activations reduces the danger of vanishing or exploding "
            "gradients at the start of training but does not guarantee they won't come back during "
            "training (and ReLUs can die)"
        )
    return (
        "a good initialization reduces the danger of vanishing or exploding gradients at the start of "
        "training but does not guarantee they won't come back during training"
    )


def deep_net_without_batch_norm(config: Config, *, deep_from: int = DEEP_NET_HIDDEN_LAYERS) -> list[Finding]:
    """A deep net (at least ``deep_from`` hidden dense layers) with no Batch Normalization.

    A net whose hidden activations are all SELU is exempt: it normalizes itself (Table 11-4: no BN).
    """
    facts = model_facts(config.model)
    activations = facts.hidden_activations - {"selu"}
    if facts.depth < deep_from or facts.batch_norms or not activations:
        return []
    names = ", ".join(sorted(activations))
    return [
        Finding(
            "deep_net_without_batch_norm",
            "warning",
            "model.layers",
            f"a deep net ({facts.depth} hidden layers, {names}) without Batch Normalization: "
            f"{_gradient_risk(activations)}; the default configuration uses Batch Norm if the net is deep",
            cite(sources.DEFAULT_TABLE, sources.BATCH_NORM),
            'add { type = "batch_norm" } after each hidden dense layer (before its activation: make the dense '
            "layer linear with use_bias = false and add the activation as a layer after the BN)",
        )
    ]


def saturating_hidden_activation(config: Config) -> list[Finding]:
    """A hidden layer with a saturating activation (sigmoid, tanh)."""
    findings = {}
    for h in model_facts(config.model).hidden:
        if h.activation in SATURATING and h.activation_path not in findings:
            findings[h.activation_path] = Finding(
                "saturating_hidden_activation",
                "info",
                h.activation_path,
                f'"{h.activation}" saturates for large inputs, where its gradient is close to 0; the chapter '
                "ranks SELU > ELU > leaky ReLU (and its variants) > ReLU > tanh > logistic for hidden layers",
                cite(sources.ACTIVATIONS, sources.DEFAULT_TABLE),
                'use activation = "elu" with kernel_initializer = "he_normal"',
            )
    return list(findings.values())


def _wanted_family(activation: str) -> str | None:
    if activation in HE_ACTIVATIONS:
        return "he"
    if activation in GLOROT_ACTIVATIONS:
        return "glorot"
    return None  # SELU (self-normalization's rule) and anything Table 11-1 does not cover


def initializer_mismatch(config: Config, *, deep_from: int = DEEP_NET_HIDDEN_LAYERS) -> list[Finding]:
    """A hidden layer whose kernel initializer does not suit its activation (Table 11-1).

    He (variance 2/fan_in) for the ReLU family and ELU; Glorot (or LeCun: both variance 1/fan) for none,
    tanh, logistic and softmax. Initializers outside those families are not judged. The mismatch compounds
    with depth: a warning in a deep net (``deep_from`` hidden layers or more), an info in a shallow one.
    """
    facts = model_facts(config.model)
    severity: Severity = "warning" if facts.depth >= deep_from else "info"
    findings: dict[str, Finding] = {}
    for h in facts.hidden:
        wanted = _wanted_family(h.activation)
        init = h.dense.spec.kernel_initializer
        have = initializer_family(init)
        where = f"{h.dense.path}.kernel_initializer"
        if wanted is None or have == "other" or where in findings:
            continue
        if wanted == "he" and have != "he":
            findings[where] = Finding(
                "initializer_mismatch",
                severity,
                where,
                f'"{init.name}" (variance 1/fan) halves the variance of {h.activation} outputs at each layer: '
                "the signal fades on the way forward and the gradients on the way back",
                cite(sources.INIT_TABLE, sources.INITIALIZATION),
                'set kernel_initializer = "he_normal" (He initialization)',
            )
        elif wanted == "glorot" and have == "he":
            findings[where] = Finding(
                "initializer_mismatch",
                severity,
                where,
                f"He initialization (variance 2/fan_in) is made for ReLU-like units; with {h.activation} it "
                "doubles the variance at each layer and pushes the units into saturation",
                cite(sources.INIT_TABLE, sources.INITIALIZATION),
                'set kernel_initializer = "glorot_uniform" (Glorot initialization, Keras\'s default)',
            )
    return list(findings.values())


def alpha_dropout_without_selu(config: Config) -> list[Finding]:
    """Alpha dropout in a net that does not use SELU."""
    if uses_selu(config.model):
        return []
    paths = dict.fromkeys(
        leaf.path for leaf in model_facts(config.model).leaves if is_dropout(leaf, "alpha_dropout")
    )
    return [
        Finding(
            "alpha_dropout_without_selu",
            "info",
            path,
            "alpha dropout is made for SELU nets: it keeps SELU's mean 0 and variance 1 by dropping units to "
            "SELU's negative saturation value, which means nothing special to other activations",
            cite(sources.ALPHA_DROPOUT),
            'use { type = "dropout", rate = ... } here',
        )
        for path in paths
    ]


def bias_before_batch_norm(config: Config) -> list[Finding]:
    """A dense layer with a bias and no activation directly before a BN layer: the bias is redundant.

    BN subtracts the batch mean, which removes any constant the bias adds, and its β offset takes the bias's
    role. A dense layer *with* an activation keeps its bias: it acts before the non-linearity.
    """
    leaves = model_facts(config.model).leaves
    findings: dict[str, Finding] = {}
    for leaf, nxt in zip(leaves, leaves[1:], strict=False):
        spec = leaf.spec
        if (
            isinstance(spec, DenseSpec)
            and isinstance(nxt.spec, BatchNormSpec)
            and spec.use_bias
            and spec.activation.name == "linear"
        ):
            where = f"{leaf.path}.use_bias"
            findings.setdefault(
                where,
                Finding(
                    "bias_before_batch_norm",
                    "info",
                    where,
                    "this dense layer's bias goes straight into Batch Normalization, which subtracts the batch mean "
                    "(removing the bias) and adds its own offset β: the bias is a waste of parameters",
                    cite(sources.BATCH_NORM),
                    "set use_bias = false on this dense layer",
                ),
            )
    return list(findings.values())


# The chapter's BN momentum values (Batch Normalization: "typically close to 1; for example, 0.9, 0.99, or 0.999").
BN_MOMENTA = (0.999, 0.99, 0.9)


def _fitting_bn_momentum(steps: int) -> float:
    """The highest of the chapter's BN momenta whose averaging horizon 1/(1 − m) fits in ``steps``."""
    return next((m for m in BN_MOMENTA if 1.0 / (1.0 - m) <= steps), BN_MOMENTA[-1])


def batch_norm_momentum_too_high(config: Config, *, high: float = HIGH_BN_MOMENTUM) -> list[Finding]:
    """A BN momentum ``m`` whose averaging horizon ``1/(1 − m)`` steps is longer than the training it averages.

    The moving statistics start at mean 0 and variance 1 and forget their past over about ``1/(1 − m)``
    steps. A warning when

    - the whole run (``epochs`` × steps per epoch) is shorter than that, at any momentum: the final model's
      statistics are still mostly their initial values, so inference normalizes with the wrong mean and
      variance;
    - ``m ≥ high`` and one epoch is shorter than that: every validation pass, which early stopping reads, uses
      statistics that still remember the untrained first steps. The chapter asks for more 9s only for large
      data sets and small mini-batches, i.e. long epochs.

    An info when ``m ≥ high`` and the dataset's size is unknown (an ``imagefolder`` or ``npz`` without
    ``limit_train``). A steps-per-epoch upper bound (from ``limit_train``) counts as known: the epoch is at
    most that long.
    """
    steps = steps_per_epoch(config)
    total = None if steps is None else steps * config.train.epochs
    findings: dict[str, Finding] = {}
    for leaf in model_facts(config.model).batch_norms:
        m = leaf.spec.momentum
        where = f"{leaf.path}.momentum"
        horizon = round(1.0 / (1.0 - m))
        if where in findings:
            continue
        if total is not None and total < horizon:
            severity: Severity = "warning"
            told = (
                f"the whole run has only {total:,} steps ({config.train.epochs} epoch(s) of {steps:,}), so the "
                "final model's statistics are still mostly their initial values (mean 0, variance 1) and "
                "inference normalizes with the wrong ones"
            )
        elif m < high or (steps is not None and steps >= horizon):
            continue
        elif steps is None:
            severity = "info"
            told = (
                "the dataset's size is not known from the config, so check that an epoch has at least "
                f"{horizon:,} steps"
            )
        else:
            severity = "warning"
            told = (
                f"an epoch has {steps:,} steps ({config.train.batch_size} per batch), so the statistics used "
                "for validation still remember their initial values and the untrained first steps"
            )
        fit = _fitting_bn_momentum(steps) if steps is not None else 0.99
        findings[where] = Finding(
            "batch_norm_momentum_too_high",
            severity,
            where,
            f"BN momentum {m} averages the moving statistics over about {horizon:,} steps; {told}. The chapter "
            "suggests 0.9, 0.99 or 0.999, with more 9s for larger data sets and smaller mini-batches",
            cite(sources.BATCH_NORM),
            f"set momentum = {fit} on this batch_norm layer (a horizon of {round(1 / (1 - fit)):,} steps), or "
            "train longer",
        )
    return list(findings.values())


def pruning_breaks_self_normalization(config: Config) -> list[Finding]:
    """Pruning during training (``train.pruning``) in a SELU net: zeroed weights break the variance 1/fan_in
    that self-normalization needs (l1 and l2 are :func:`not_self_normalizing`'s)."""
    if config.train.pruning is None or not uses_selu(config.model):
        return []
    return [
        Finding(
            "pruning_breaks_self_normalization",
            "warning",
            "train.pruning",
            "pruning sets most kernel weights to zero, so each unit's weights no longer have the variance "
            "1/fan_in that keeps a SELU net self-normalizing; the chapter builds sparse models on the default "
            "configuration instead",
            cite(sources.SPARSE_CASE, sources.SELU_CONDITIONS),
            "use the default configuration for a sparse model (trainwell new CONFIG --recipe sparse): ELU, He "
            "initialization, BN if deep",
        )
    ]


# ----------------------------------------------------------------------------------------------- training


def optimizer_momentum_too_high(config: Config, *, high: float = HIGH_OPTIMIZER_MOMENTUM) -> list[Finding]:
    """The momentum the optimizer steps with (SGD's or RMSprop's ``momentum``, the Adam family's ``beta_1``)
    at or above ``high``.

    Under a 1cycle schedule that cycles momentum, the optimizer's own value is overwritten at every step, and
    the highest momentum used is the schedule's ``max_momentum``: that is the one checked. Adam's ``beta_2``
    (default 0.999) is the decay of the squared gradients, not a momentum: not checked.
    """
    opt, schedule = config.train.optimizer, config.train.schedule
    kind = momentum_key(opt)  # the optimizer registry's metadata: "momentum", "betas" or None
    if kind is None:
        return []
    if isinstance(schedule, OneCycleSpec) and schedule.cycle_momentum:
        where, value = "train.schedule.max_momentum", schedule.max_momentum
        what = f"1cycle's max_momentum (the {opt.name} momentum at the start and end of the cycle)"
    else:
        key = "momentum" if kind == "momentum" else "beta_1"
        where, value = f"train.optimizer.{key}", getattr(opt, key)
        what = f"{opt.name}'s {key}"
    if value < high:
        return []
    return [
        Finding(
            "optimizer_momentum_too_high",
            "warning",
            where,
            f"{what} = {value}: momentum β makes the steps up to 1/(1 − β) = {round(1 / (1 - value)):,} times "
            "the gradient step (β = 0.9 gives 10 times), so the updates overshoot and oscillate for many steps",
            cite(sources.MOMENTUM),
            f"set {where.rsplit('.', 1)[1]} = "
            + ("0.95 (1cycle's usual peak)" if "schedule" in where else "0.9 (the chapter's typical value)"),
        )
    ]


def adagrad(config: Config) -> list[Finding]:
    """AdaGrad on a neural net: its learning rate decays so fast that training stops too early."""
    if config.train.optimizer.name != "adagrad":
        return []
    return [
        Finding(
            "adagrad",
            "warning",
            "train.optimizer.name",
            "AdaGrad scales the learning rate down by all past squared gradients, so it often stops before "
            "reaching the optimum when training neural networks: the chapter says not to use it for deep nets",
            cite(sources.ADAGRAD, sources.DEFAULT_TABLE),
            'use { name = "nadam" } or momentum optimization { name = "sgd", momentum = 0.9, nesterov = true }',
        )
    ]


def adaptive_optimizer(config: Config) -> list[Finding]:
    """An adaptive optimizer (RMSProp, Adam, Adamax, Nadam, AdamW): fine, but it may generalize worse."""
    name = config.train.optimizer.name
    if name not in ADAPTIVE_OPTIMIZERS:
        return []
    return [
        Finding(
            "adaptive_optimizer",
            "info",
            "train.optimizer.name",
            f"{name} is an adaptive method: it usually converges fast to a good solution, but adaptive methods "
            "can lead to solutions that generalize poorly on some datasets (Wilson et al. 2017)",
            cite(sources.ADAPTIVE, sources.NESTEROV),
            "if the model generalizes poorly, try Nesterov Accelerated Gradient: "
            '{ name = "sgd", momentum = 0.9, nesterov = true }',
        )
    ]


def fixed_learning_rate(config: Config) -> list[Finding]:
    """A constant learning rate: no ``train.schedule`` and no Keras ``decay`` (itself a power schedule)."""
    if config.train.schedule is not None or config.train.optimizer.decay:
        return []
    return [
        Finding(
            "fixed_learning_rate",
            "warning",
            "train.schedule",
            "the learning rate stays constant: too high and training diverges or plateaus, too low and it takes "
            "forever; a schedule starts high and lowers it, converging faster to a better solution than the "
            "best constant rate, and the default configuration uses 1cycle",
            cite(sources.DEFAULT_TABLE, sources.SCHEDULES),
            'set train.schedule = { name = "one_cycle", max_lr = ... } with max_lr from `trainwell lr-find`, '
            'or { name = "performance", factor = 0.5, patience = 5 }',
        )
    ]


def no_early_stopping(config: Config) -> list[Finding]:
    """No early stopping."""
    if config.train.early_stopping is not None:
        return []
    need_valid = (
        " and a validation set (data.validation_size = 5000)" if config.data.validation_size == 0 else ""
    )
    return [
        Finding(
            "no_early_stopping",
            "warning",
            "train.early_stopping",
            f"no early stopping: training runs all {config.train.epochs} epochs, past the point where the "
            "validation error starts to rise; the default configuration regularizes with early stopping "
            "(plus ℓ2 if needed)",
            cite(sources.DEFAULT_TABLE, sources.SELF_NORMALIZING_TABLE),
            f'set train.early_stopping = {{ monitor = "val_loss", patience = 10, restore_best_weights = true }}'
            f"{need_valid}",
        )
    ]


def early_stopping_on_training_data(config: Config) -> list[Finding]:
    """Early stopping that watches a training metric: it stops on training progress, not on overfitting."""
    es = config.train.early_stopping
    if es is None or es.monitor in VALIDATION_METRICS:
        return []
    return [
        Finding(
            "early_stopping_on_training_data",
            "warning",
            "train.early_stopping.monitor",
            f'early stopping watches "{es.monitor}", a training metric, which keeps improving while the model '
            "overfits: early stopping regularizes only when it watches the validation error",
            cite(sources.DEFAULT_TABLE),
            'set monitor = "val_loss" (with data.validation_size > 0)',
        )
    ]


def early_stopping_without_restore(config: Config) -> list[Finding]:
    """Early stopping that keeps the last epoch's weights instead of the best epoch's."""
    es = config.train.early_stopping
    if es is None or es.restore_best_weights:
        return []
    return [
        Finding(
            "early_stopping_without_restore",
            "info",
            "train.early_stopping.restore_best_weights",
            f"the model keeps the weights of its last epoch, {es.patience} epochs past the best one on "
            f'"{es.monitor}"',
            cite(sources.DEFAULT_TABLE),
            "set restore_best_weights = true to roll back to the best epoch's weights",
        )
    ]


RULES: tuple[Rule, ...] = (
    Rule("inputs_not_scaled", inputs_not_scaled, "raw, unscaled inputs"),
    Rule(
        "not_self_normalizing",
        not_self_normalizing,
        "a SELU net that breaks a condition of self-normalization (inputs, LeCun init, BN, dropout, l1/l2, "
        "max-norm, other layers)",
    ),
    Rule(
        "deep_net_without_batch_norm",
        deep_net_without_batch_norm,
        f"a net of at least {DEEP_NET_HIDDEN_LAYERS} hidden layers (not all SELU) without Batch Normalization",
    ),
    Rule("saturating_hidden_activation", saturating_hidden_activation, "sigmoid or tanh in a hidden layer"),
    Rule(
        "initializer_mismatch",
        initializer_mismatch,
        "a kernel initializer that does not suit the layer's activation (Table 11-1)",
    ),
    Rule("alpha_dropout_without_selu", alpha_dropout_without_selu, "alpha dropout in a net without SELU"),
    Rule("bias_before_batch_norm", bias_before_batch_norm, "a dense layer's bias directly before BN"),
    Rule(
        "batch_norm_momentum_too_high",
        batch_norm_momentum_too_high,
        f"BN momentum whose averaging horizon outlasts the run (or, ≥ {HIGH_BN_MOMENTUM}, an epoch)",
    ),
    Rule(
        "pruning_breaks_self_normalization",
        pruning_breaks_self_normalization,
        "pruning during training in a SELU net",
    ),
    Rule(
        "optimizer_momentum_too_high",
        optimizer_momentum_too_high,
        f"optimizer momentum (or Adam's beta_1) ≥ {HIGH_OPTIMIZER_MOMENTUM}",
    ),
    Rule("adagrad", adagrad, "AdaGrad, which stops too early on neural nets"),
    Rule("adaptive_optimizer", adaptive_optimizer, "an adaptive optimizer: try NAG if it generalizes poorly"),
    Rule("fixed_learning_rate", fixed_learning_rate, "a constant learning rate: no schedule"),
    Rule("no_early_stopping", no_early_stopping, "no early stopping"),
    Rule(
        "early_stopping_on_training_data",
        early_stopping_on_training_data,
        "early stopping on a training metric",
    ),
    Rule(
        "early_stopping_without_restore",
        early_stopping_without_restore,
        "early stopping that keeps the last weights, not the best",
    ),
)


def advise(config: Config, rules: tuple[Rule, ...] = RULES) -> list[Finding]:
    """Every rule's findings for ``config``: warnings first, then in rule order."""
    findings = [f for rule in rules for f in rule.check(config)]
    return sorted(findings, key=lambda f: SEVERITIES.index(f.severity))


def count_by_severity(findings: list[Finding]) -> dict[str, int]:
    return {s: sum(f.severity == s for f in findings) for s in SEVERITIES}
