"""Low precision: the same model with 16-bit floats, or with int8 dense layers, for a smaller, faster model.

- ``float32``: the trained model as it is (the reference).
- ``bfloat16`` / ``float16``: every parameter and buffer cast to that type. Inputs are cast on the way in and
  the logits back to float32 before the output activation, as Keras's mixed-precision guide keeps the final
  softmax in float32 for numerical stability; the saved state dict has the same names as the float32 one.
- ``int8``: dynamic quantization of the dense layers' ``nn.Linear``: int8 weights (one scale per output
  unit), activations quantized per sample at run time (Jacob et al. 2018). Done with **torchao**'s
  ``quantize_(model, Int8DynamicActivationInt8WeightConfig())``: ``torch.ao.quantization.quantize_dynamic``
  is deprecated, with removal announced (``docs/keras-vs-torch.md``, G27), and torchao is the maintained
  replacement; torchao 0.18 runs on the CPU with torch 2.13 (checked: accuracy, save/load with
  ``weights_only=True``). In eager mode its int8 weights dispatch through a tensor subclass, which on this
  CPU made it about 5× *slower* than float32 at batch 1 and not clearly faster at batch 1024 (0.7–1.5× the
  float32 time across runs on a busy machine): it buys size (about 4× smaller), not speed. Under ``torch.compile`` the same model ran about 4× faster than float32 at batch 1024 (still
  slower at batch 1); the export table times the eager models, and a caller that deploys compiled can time
  ``torch.compile(to_precision(model, "int8"))`` with :func:`~trainwell.analysis.latency.latency_rows`.

Every transform returns a new module; the original is untouched.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any, Literal

import torch
from torch import nn

from trainwell.errors import ConfigError, TrainwellError

Precision = Literal["float32", "bfloat16", "float16", "int8"]
PRECISIONS: tuple[str, ...] = ("float32", "bfloat16", "float16", "int8")
FLOAT_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class CastTo(nn.Module):
    """Casts its input to ``dtype``: the boundary between float32 data and a lower-precision model."""

    def __init__(self, dtype: torch.dtype):
        super().__init__()
        self.dtype = dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(self.dtype)

    def extra_repr(self) -> str:
        return str(self.dtype).removeprefix("torch.")


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        from trainwell.registry import unknown_name_message

        raise ConfigError(unknown_name_message("precision", precision, list(PRECISIONS)))


@contextlib.contextmanager
def _quiet_loggers(*names: str) -> Iterator[None]:
    """Silence the warnings some libraries log on import (torchao logs one per CUDA-only extension it
    cannot load on a CPU build of torch), restoring the levels afterwards."""
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _torchao() -> tuple[Any, Any]:
    """torchao's ``quantize_`` and the int8 dynamic-quantization config, or an error saying how to get them."""
    try:
        with _quiet_loggers("torchao", "torch.utils._pytree"):
            from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_
    except ImportError as e:
        raise TrainwellError(
            f"int8 export needs the torchao package ({e}); install it with `pip install torchao` "
            "(0.18 or newer for torch 2.13)"
        ) from None
    # set_inductor_config=False: we do not compile, so torchao must not change torch._inductor's global config.
    return quantize_, Int8DynamicActivationInt8WeightConfig(set_inductor_config=False)


def to_precision(model: nn.Sequential, precision: str) -> nn.Sequential:
    """A copy of ``model`` (a model of :func:`~trainwell.nn.build.build_model`) in ``precision``, in inference
    mode; it takes float32 inputs and returns float32 outputs."""
    check_precision(precision)
    model = copy.deepcopy(model).eval()
    if precision == "float32":
        return model
    if precision == "int8":
        quantize_, config = _torchao()
        quantize_(model, config)
        return model
    dtype = FLOAT_DTYPES[precision]
    model.to(dtype)
    children = list(model.named_children())
    split = len(children) if not children[-1][0].startswith("output_") else len(children) - 1
    modules = OrderedDict(
        [
            ("cast_input", CastTo(dtype)),
            *children[:split],
            ("cast_output", CastTo(torch.float32)),
            *children[split:],
        ]
    )
    return nn.Sequential(modules).eval()


def load_precision_model(
    state: dict[str, torch.Tensor], skeleton: nn.Sequential, precision: str
) -> nn.Sequential:
    """The ``precision`` model whose state dict (as saved by an export) is ``state``; ``skeleton`` is a float32
    model of the same architecture (its weights are replaced)."""
    model = to_precision(skeleton, precision)
    model.load_state_dict(state, assign=True)
    return model.eval()
