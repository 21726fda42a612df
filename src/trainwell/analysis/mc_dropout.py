"""MC dropout: predictions averaged over many stochastic passes with dropout active (Gal & Ghahramani 2016).

The chapter's recipe is ``np.stack([model(X, training=True) for _ in range(100)]).mean(axis=0)``. Done that
way in PyTorch (``model.train()``) it has two faults this module avoids:

- **BN must stay in inference mode** (``../shared/reference/keras-vs-torch.md``, G24): ``training=True`` /
  ``model.train()`` also switches Batch Normalization to batch statistics and updates its moving averages.
  Here every layer runs in inference mode and only the dropout layers are sampled; the model is left exactly
  as it was (weights, buffers and every module's train/eval flag).
- **It is slow**: every pass recomputes the layers before the first dropout layer, whose output is the same
  every time. Here those layers run once, and the ``samples`` passes through the rest run as one large batch
  of ``samples × N`` rows (in chunks of at most ``max_rows`` rows, to bound memory).

Reproducibility: the mask of sample ``s`` at the ``l``-th dropout layer is drawn with ``torch.rand`` from its
own generator, seeded by :func:`mask_seed` ``(seed, s, l)``; so a result does not depend on chunking, and the
naive loop of ``samples`` separate passes with the same generators gives the same numbers.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from trainwell.errors import RunError

# At most this many rows (samples × examples) go through the layers after the first dropout at once: large
# enough that the matrix multiplies run at full speed, small enough that a 100-unit activation stays ~13 MB (measured: 32k rows beat 16k and 64k on model (e)).
DEFAULT_MAX_ROWS = 32_768
# The layers before the first dropout layer run once, on batches of this many examples.
PREFIX_BATCH = 4096
# λ·α of SELU (Klambauer et al. 2017): a dropped unit of alpha dropout is set to SELU's negative saturation
# value −λα, then an affine map restores mean 0 and variance 1. torch's F.alpha_dropout uses the same value.
SELU_LAMBDA_ALPHA = 1.0507009873554805 * 1.6732632423543772
# The sample counts at which :func:`mc_accuracy_curve` reports the accuracy of the running mean.
CURVE_SAMPLES = (1, 2, 3, 5, 10, 20, 30, 50, 100, 200, 500, 1000)


@dataclass
class MCResult:
    """What :func:`predict_mc` returns, as NumPy arrays (float32).

    ``mean``: the mean predicted probabilities ``(N, C)``; ``std``: their standard deviation over the
    samples (population std, ``ddof = 0``, as the chapter's ``y_probas.std(axis=0)``); ``entropy``: the
    predictive entropy of ``mean`` in nats, ``(N,)`` (None for a model without a softmax or sigmoid output);
    ``probas``: every sample's probabilities ``(samples, N, C)``, only when asked for (``keep_samples``).
    """

    mean: np.ndarray
    std: np.ndarray
    entropy: np.ndarray | None
    samples: int
    seed: int
    output: str  # "softmax", "sigmoid" or "linear"
    probas: np.ndarray | None = None

    @property
    def predictions(self) -> np.ndarray:
        """The predicted class of each example: argmax of ``mean`` (sigmoid: ``mean > 0.5``)."""
        return predicted_classes(self.mean, self.output)

    def accuracy(self, y: Any) -> float:
        """The accuracy of the mean prediction on labels ``y``."""
        return float(np.mean(self.predictions == np.asarray(y).reshape(-1)))


def mask_seed(seed: int, sample: int, layer: int) -> int:
    """The seed of the generator that draws sample ``sample``'s mask at the ``layer``-th dropout layer.

    ``np.random.SeedSequence`` mixes the three numbers, so nearby seeds give unrelated masks (``seed + sample``
    would make seed 0's sample 1 equal seed 1's sample 0).
    """
    return int(np.random.SeedSequence([seed, sample, layer]).generate_state(1, dtype=np.uint64)[0] >> 1)


def predicted_classes(probabilities: np.ndarray, output: str) -> np.ndarray:
    if output == "sigmoid" or probabilities.shape[-1] == 1:
        return (probabilities.reshape(-1) > 0.5).astype(np.int64)
    return probabilities.argmax(axis=-1)


def _leaves(module: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]]:
    """The modules of a (nested) ``nn.Sequential`` in the order they run, with their dotted names."""
    if isinstance(module, nn.Sequential):
        out: list[tuple[str, nn.Module]] = []
        for name, child in module.named_children():
            out.extend(_leaves(child, f"{prefix}.{name}" if prefix else name))
        return out
    return [(prefix or type(module).__name__, module)]


def _is_sampled_dropout(module: nn.Module) -> bool:
    # nn.Dropout and nn.AlphaDropout, with their MC subclasses; Dropout1d/2d/3d and FeatureAlphaDropout drop
    # whole channels and are separate classes, refused below.
    return isinstance(module, nn.Dropout | nn.AlphaDropout)


def _plan(model: nn.Module) -> tuple[list[nn.Module], list[nn.Module], str]:
    """``(prefix, rest, output)``: the layers before the first dropout layer, the layers from it on, and the
    kind of output activation. Raises ``ValueError`` for models whose dropout cannot be sampled here."""
    if not isinstance(model, nn.Sequential):
        raise ValueError(
            f"predict_mc needs an nn.Sequential model (as trainwell.build_model returns), got "
            f"{type(model).__name__}; it must see the layers in order to run those before the first dropout once"
        )
    leaves = _leaves(model)
    for name, module in leaves:
        if _is_sampled_dropout(module):
            continue
        if isinstance(module, nn.modules.dropout._DropoutNd):
            raise ValueError(
                f"predict_mc: layer {name} is {type(module).__name__}, which drops whole channels; "
                "only element-wise nn.Dropout and nn.AlphaDropout (and their MC versions) are sampled"
            )
        nested = [n for n, m in module.named_modules() if isinstance(m, nn.modules.dropout._DropoutNd)]
        if nested:
            raise ValueError(
                f"predict_mc: layer {name} ({type(module).__name__}) holds dropout inside "
                f"({name}.{nested[0]}); dropout layers must be direct layers of the Sequential model"
            )
    first = next((i for i, (_, m) in enumerate(leaves) if _is_sampled_dropout(m)), None)
    if first is None:
        raise ValueError(
            "predict_mc: the model has no dropout layer, so every pass would give the same "
            "prediction; MC dropout needs a model trained with dropout or alpha_dropout"
        )
    modules = [m for _, m in leaves]
    return modules[:first], modules[first:], output_kind(model)


def output_kind(model: nn.Module) -> str:
    """``"softmax"`` or ``"sigmoid"`` when the model's last layer is that activation (it returns
    probabilities, as trainwell's models do), else ``"linear"``."""
    last = _leaves(model)[-1][1]
    return (
        "softmax" if isinstance(last, nn.Softmax) else "sigmoid" if isinstance(last, nn.Sigmoid) else "linear"
    )


def sample_dropout(h: torch.Tensor, module: nn.Module, generators: Sequence[torch.Generator]) -> torch.Tensor:
    """Apply ``module``'s dropout to ``h`` of shape ``(samples, n, ...)``, sample ``s`` with ``generators[s]``.

    Dropout (Srivastava et al. 2014, inverted): ``x · m / (1 − p)`` with ``m ~ Bernoulli(1 − p)``.
    Alpha dropout (Klambauer et al. 2017): a dropped unit becomes α' = −λα, then ``a · x + b`` with
    ``a = ((1 − p)(1 + p α'²))^(−1/2)``, ``b = −a p α'``, which keeps mean 0 and variance 1.
    Both as torch's ``F.dropout`` / ``F.alpha_dropout`` compute them in training mode.
    """
    p = float(module.p)
    if p >= 1.0:
        return torch.zeros_like(h)  # torch's dropout with p = 1 zeroes everything, both kinds
    keep = 1.0 - p
    masks = torch.stack([torch.rand(h.shape[1:], generator=g) for g in generators]).to(h.device) < keep
    # Behind the first dropout layer, h is the prefix's output expanded to (samples, n, ...) without copying
    # (stride 0): scale that one copy, and let torch.where broadcast it, one pass over samples·n rows.
    base = h[:1] if h.stride(0) == 0 else h
    if isinstance(module, nn.AlphaDropout):
        a = ((1.0 - p) * (1.0 + p * SELU_LAMBDA_ALPHA**2)) ** -0.5
        b = a * p * SELU_LAMBDA_ALPHA
        return torch.where(masks, base * a + b, b - a * SELU_LAMBDA_ALPHA)
    return torch.where(masks, base / keep, 0.0)


def _run(modules: Sequence[nn.Module], h: torch.Tensor) -> torch.Tensor:
    for module in modules:
        h = module(h)
    return h


def _as_input(x: Any, device: torch.device) -> torch.Tensor:
    t = torch.as_tensor(x)
    if t.ndim == 0:
        raise ValueError("predict_mc: x must be a batch of examples (N, ...), got a scalar")
    return t.to(device=device, dtype=torch.float32)


def entropy(probabilities: torch.Tensor, output: str) -> torch.Tensor:
    """Predictive entropy in nats: ``−Σ p log p`` over classes (softmax), or the binary entropy (sigmoid)."""
    p = probabilities
    if output == "sigmoid":
        p = p.reshape(len(p), -1)[:, 0]
        return -(torch.special.xlogy(p, p) + torch.special.xlogy(1 - p, 1 - p))
    return -torch.special.xlogy(p, p).sum(dim=-1)


@torch.inference_mode()
def predict_mc(
    model: nn.Module,
    x: Any,
    samples: int = 100,
    *,
    seed: int | None = None,
    max_rows: int = DEFAULT_MAX_ROWS,
    keep_samples: bool = False,
) -> MCResult:
    """MC-dropout predictions of ``model`` on ``x``: ``samples`` stochastic passes, dropout active, BN not.

    Args:
        model: an ``nn.Sequential`` with at least one ``nn.Dropout`` / ``nn.AlphaDropout`` layer (with or
            without ``mc = true``: every dropout layer is sampled), as ``trainwell.build_model`` returns.
        x: inputs in the model's layout (Keras's ``(N, H, W, C)`` for images): a tensor or a NumPy array.
        samples: the number of stochastic passes (the chapter uses 100).
        seed: seeds the masks (see :func:`mask_seed`); None draws one from torch's global RNG, so
            ``torch.manual_seed`` makes the call reproducible.
        max_rows: at most this many rows (samples × examples) per batch through the sampled layers.
        keep_samples: also return every pass's probabilities (``samples × N × C`` floats).

    The model is not changed: every module's train/eval flag is restored, and in inference mode no weight or
    BN statistic moves. Runs on the device of the model's parameters.
    """
    if not isinstance(samples, int) or isinstance(samples, bool) or samples < 1:
        raise ValueError(f"predict_mc: samples must be an int >= 1, got {samples!r}")
    if max_rows < 1:
        raise ValueError(f"predict_mc: max_rows must be >= 1, got {max_rows!r}")
    prefix, rest, output = _plan(model)
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    x = _as_input(x, device)
    if seed is None:
        seed = int(torch.randint(0, 2**62, ()).item())
    n_dropout = sum(_is_sampled_dropout(m) for m in rest)
    generators = [
        [torch.Generator().manual_seed(mask_seed(seed, s, layer)) for s in range(samples)]
        for layer in range(n_dropout)
    ]
    chunk = max(1, max_rows // samples)
    means, stds, kept = [], [], []
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        shared = torch.cat([_run(prefix, x[i : i + PREFIX_BATCH]) for i in range(0, len(x), PREFIX_BATCH)])
        for start in range(0, len(x), chunk):
            h = shared[start : start + chunk]
            n = len(h)
            # (samples, n, ...) as one batch of samples·n rows; expand is a view, the first layer copies.
            h = h.unsqueeze(0).expand(samples, *h.shape)
            layer = 0
            for module in rest:
                if _is_sampled_dropout(module):
                    h = sample_dropout(h, module, generators[layer])
                    layer += 1
                else:
                    h = module(h.reshape(samples * n, *h.shape[2:]))
                    h = h.reshape(samples, n, *h.shape[1:])
            h = h.float()
            means.append(h.mean(dim=0))
            stds.append(h.std(dim=0, correction=0))
            if keep_samples:
                kept.append(h.cpu())
    finally:
        for module, training in flags:
            module.training = training
    mean = torch.cat(means)
    result_entropy = entropy(mean, output).cpu().numpy() if output != "linear" else None
    return MCResult(
        mean=mean.cpu().numpy(),
        std=torch.cat(stds).cpu().numpy(),
        entropy=result_entropy,
        samples=samples,
        seed=seed,
        output=output,
        probas=torch.cat(kept, dim=1).numpy() if keep_samples else None,
    )


@torch.inference_mode()
def predict(model: nn.Module, x: Any, batch_size: int = 4096) -> np.ndarray:
    """The ordinary, deterministic prediction: every layer in inference mode and every dropout layer skipped,
    including MC ones (``mc = true``), which stay active in ``model.eval()``; flags restored afterwards."""
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    x = _as_input(x, device)
    layers = [m for _, m in _leaves(model) if not isinstance(m, nn.modules.dropout._DropoutNd)]
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        return (
            torch.cat([_run(layers, x[i : i + batch_size]).float() for i in range(0, len(x), batch_size)])
            .cpu()
            .numpy()
        )
    finally:
        for module, training in flags:
            module.training = training


def log_loss(probabilities: np.ndarray, y: np.ndarray, output: str) -> float:
    """Mean negative log-likelihood of the labels (nats): the cross-entropy Keras reports, without penalties."""
    eps = np.finfo(np.float32).tiny  # log(0) would be −inf for a confidently wrong prediction
    y = np.asarray(y).reshape(-1)
    if output == "sigmoid" or probabilities.shape[-1] == 1:
        p1 = probabilities.reshape(-1).astype(np.float64)
        p = np.where(y == 1, p1, 1 - p1)
    else:
        p = probabilities[np.arange(len(y)), y].astype(np.float64)
    return float(-np.mean(np.log(np.maximum(p, eps))))


def mc_accuracy_curve(probas: np.ndarray, y: np.ndarray, output: str) -> list[tuple[int, float]]:
    """The accuracy of the mean of the first k samples, for k in :data:`CURVE_SAMPLES` (up to all of them)."""
    y = np.asarray(y).reshape(-1)
    running = np.cumsum(probas, axis=0, dtype=np.float64)
    ks = [k for k in CURVE_SAMPLES if k < len(probas)] + [len(probas)]
    return [(k, float(np.mean(predicted_classes(running[k - 1], output) == y))) for k in ks]


def compare_mc(
    model: nn.Module,
    x: Any,
    y: Any,
    samples: int = 100,
    *,
    seed: int | None = None,
    curve: bool = False,
    entropy_bins: int = 20,
) -> dict[str, Any]:
    """The ordinary prediction and the MC-dropout mean prediction of ``model`` on ``(x, y)``, side by side.

    Returns ``accuracy`` / ``mc_accuracy``, ``turned_right`` / ``turned_wrong`` (examples the MC prediction
    gets right where the ordinary one is wrong, and the reverse), ``log_loss`` / ``mc_log_loss``, ``mean_entropy`` /
    ``mc_mean_entropy`` (nats), ``mc_mean_std`` (the std of the predicted class's probability, averaged),
    ``mc_seconds``, and with ``curve`` the accuracy against the number of samples and a histogram of the MC
    entropy for correct and wrong predictions.
    """
    y = np.asarray(y).reshape(-1)
    if output_kind(model) == "linear":
        raise ValueError(
            "the model does not end with a softmax or sigmoid, so it gives no probabilities to "
            "compare; accuracy and entropy need a classifier"
        )
    plain = predict(model, x)
    started = time.perf_counter()
    mc = predict_mc(model, x, samples, seed=seed, keep_samples=curve)
    seconds = time.perf_counter() - started
    predicted = mc.predictions
    if mc.output == "sigmoid" or mc.mean.shape[-1] == 1:
        std_of_predicted = mc.std.reshape(-1)
    else:
        std_of_predicted = mc.std[np.arange(len(y)), predicted]
    plain_right = predicted_classes(plain, mc.output) == y
    mc_right = predicted == y
    out: dict[str, Any] = {
        "samples": samples,
        "seed": mc.seed,
        "examples": len(y),
        "accuracy": float(np.mean(plain_right)),
        "mc_accuracy": float(np.mean(mc_right)),
        # the paired view (for McNemar's test): examples MC dropout turned right, and turned wrong
        "turned_right": int(np.sum(mc_right & ~plain_right)),
        "turned_wrong": int(np.sum(~mc_right & plain_right)),
        "log_loss": log_loss(plain, y, mc.output),
        "mc_log_loss": log_loss(mc.mean, y, mc.output),
        "mean_entropy": float(entropy(torch.as_tensor(plain), mc.output).mean()),
        "mc_mean_entropy": float(mc.entropy.mean()) if mc.entropy is not None else None,
        "mc_mean_std": float(std_of_predicted.mean()),
        "mc_seconds": seconds,
    }
    if curve and mc.probas is not None:
        out["accuracy_by_samples"] = [
            {"samples": k, "accuracy": a} for k, a in mc_accuracy_curve(mc.probas, y, mc.output)
        ]
        if mc.entropy is not None:
            classes = mc.mean.shape[-1] if mc.output == "softmax" else 2
            edges = np.linspace(0.0, math.log(classes), entropy_bins + 1)
            out["entropy_histogram"] = {
                "edges": edges.tolist(),
                "correct": np.histogram(mc.entropy[mc_right], bins=edges)[0].tolist(),
                "wrong": np.histogram(mc.entropy[~mc_right], bins=edges)[0].tolist(),
            }
    return out


def predict_run(
    run_dir: str | Path, samples: int = 100, *, split: str = "test", seed: int | None = None
) -> dict[str, Any]:
    """``trainwell predict RUN --mc N``: the ordinary and the MC-dropout prediction of a finished run on one
    of its data splits (``"test"`` or ``"valid"``), side by side (see :func:`compare_mc`)."""
    from trainwell.data import load_dataset
    from trainwell.runs import load_run_config, load_run_model

    if split not in ("test", "valid"):
        raise RunError(f"--split: expected test or valid, got {split!r}")
    config = load_run_config(run_dir)
    dataset = load_dataset(config.data)
    model = load_run_model(run_dir, config, dataset.input_shape)
    x, y = (dataset.x_test, dataset.y_test) if split == "test" else (dataset.x_valid, dataset.y_valid)
    if len(x) == 0:
        raise RunError(
            f"{run_dir}: the run has no {split} split (data.validation_size is 0); use --split test"
        )
    if samples <= 0:
        output = output_kind(model)
        if output == "linear":
            raise RunError(
                f"{run_dir}: the model does not end with a softmax or sigmoid; nothing to classify"
            )
        plain = predict(model, x)
        return {
            "run": str(run_dir),
            "split": split,
            "examples": len(y),
            "accuracy": float(np.mean(predicted_classes(plain, output) == y)),
            "log_loss": log_loss(plain, y, output),
            "mean_entropy": float(entropy(torch.as_tensor(plain), output).mean()),
        }
    try:
        result = compare_mc(model, x, y, samples, seed=seed if seed is not None else config.train.seed)
    except ValueError as e:
        raise RunError(f"{run_dir}: {e}") from None
    return {"run": str(run_dir), "split": split, **result}
