"""The config: one TOML file describes data, model and training in the chapter's Keras vocabulary.

``load_config(path, overrides)`` reads the file, applies ``--set dotted.key=value`` overrides (values read as
TOML), validates everything with pydantic and returns a frozen :class:`Config`. Any problem is a
:class:`~trainwell.errors.ConfigError` whose message names the key path, the bad value and what is allowed.
"""

from __future__ import annotations

import copy
import difflib
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

import tomli_w
from pydantic import Field, StrictBool, ValidationError, model_validator

from trainwell.analysis.diagnostics.recorder import DiagnosticsSpec
from trainwell.analysis.pruning import PruningSpec
from trainwell.data.spec import DataSpec
from trainwell.errors import ConfigError
from trainwell.nn.build import output_activation
from trainwell.registry import unknown_name_message
from trainwell.spec import Spec
from trainwell.train.callbacks import EarlyStoppingSpec
from trainwell.train.losses import LOSSES
from trainwell.train.lr_finder import LRFinderSpec
from trainwell.train.optimizers import OptimizerSpec
from trainwell.train.schedules import ScheduleSpec, schedule_problem
from trainwell.transfer.phases import PhaseSpec, fill_epochs, transfer_problem
from trainwell.transfer.pretrain import PretrainSpec
from trainwell.transfer.reuse import TransferModelSpec


class TrainSpec(Spec):
    """The ``[train]`` table: loss, optimizer, batches, epochs, callbacks, where to run."""

    # mse: the reconstruction loss of autoencoder pretraining (trainwell.transfer.pretrain), not for classifiers
    loss: Literal["sparse_categorical_crossentropy", "binary_crossentropy", "mse"] = "sparse_categorical_crossentropy"
    optimizer: OptimizerSpec = Field(default_factory=lambda: {"name": "nadam"}, validate_default=True)
    batch_size: int = Field(default=32, ge=1)  # Keras's default
    epochs: int = Field(default=1, ge=1)  # Keras's default
    seed: int = 42
    early_stopping: EarlyStoppingSpec | None = None
    diagnostics: DiagnosticsSpec | None = None  # probes recorded during training (analysis/diagnostics)
    pruning: PruningSpec | None = None  # magnitude pruning during training (analysis/pruning.py)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int | None = Field(default=None, ge=1)
    eval_batch_size: int = Field(default=1024, ge=1)
    schedule: ScheduleSpec | None = None  # LR schedule (train/schedules.py)
    lr_finder: LRFinderSpec = Field(default_factory=LRFinderSpec)  # for learning_rate = "auto" and lr-find
    # The fast step (train/step.py): "auto" compiles the whole step when the run is long enough to repay it.
    compile: StrictBool | Literal["auto"] = "auto"
    precision: Literal["float32", "bf16"] = "float32"  # bf16: autocast the forward pass
    # Under DDP (trainwell/distributed.py): Batch Normalization over the global batch (torch's SyncBatchNorm,
    # GPUs only) rather than over each process's share of it.
    sync_batch_norm: StrictBool = False
    phases: list[PhaseSpec] | None = Field(default=None, min_length=1)  # trainwell.transfer.phases

    @model_validator(mode="before")
    @classmethod
    def _epochs_of_phases(cls, data: Any) -> Any:
        return fill_epochs(data)  # train.epochs = the sum of the phases' epochs


class Config(Spec):
    """A whole config file."""

    name: str | None = None
    data: DataSpec
    model: TransferModelSpec  # ModelSpec with model.from / model.reuse (trainwell.transfer.reuse)
    train: TrainSpec = Field(default_factory=TrainSpec)
    pretrain: PretrainSpec | None = None  # unsupervised pretraining (trainwell.transfer.pretrain)

    @model_validator(mode="after")
    def _cross_checks(self) -> Config:
        wanted = LOSSES[self.train.loss].output
        have = output_activation(self.model)
        if have != wanted:
            raise ValueError(
                f"train.loss: {self.train.loss} needs a model whose last layer has activation "
                f"\"{wanted}\", but it ends with \"{have}\"; set activation = \"{wanted}\" on the last dense layer"
            )
        es = self.train.early_stopping
        if es is not None and es.monitor.startswith("val_") and self.data.validation_size == 0:
            raise ValueError(
                f"train.early_stopping.monitor: \"{es.monitor}\" needs a validation set, but "
                "data.validation_size is 0; set data.validation_size (e.g. 5000) or monitor \"loss\""
            )
        problem = schedule_problem(self.train, self.data.validation_size > 0)
        if problem is not None:
            raise ValueError(problem)
        if self.pretrain is not None and self.model.from_ is not None:
            raise ValueError("pretrain: the lower layers come either from model.from or from pretrain, not both; "
                             "remove one of them")
        problem = transfer_problem(self)  # model.reuse, pretrain.layers, train.phases
        if problem is not None:
            raise ValueError(problem)
        return self


def _walk_input(data: Any, loc: tuple) -> list[str]:
    """The key path of ``loc`` in the user's terms: list indices as ``[i]``, union tags dropped.

    pydantic puts the tag of a discriminated union into the location (``kernel_initializer.he_normal.scale``);
    the user never wrote that segment, so it is dropped by walking the input alongside the location.
    """
    parts: list[str] = []
    node = data
    for seg in loc:
        if isinstance(node, dict) and seg not in node:
            if seg in (node.get("name"), node.get("type")):
                continue  # a union tag
            if seg == "activation" and "type" in node:
                continue  # an activation layer written as { type = "elu", alpha = ... }: its keys are the layer's
        if isinstance(seg, int):
            parts.append(f"[{seg}]")
        else:
            parts.append(("." if parts else "") + str(seg))
        if isinstance(node, dict):
            node = node.get(seg)
        elif isinstance(node, list) and isinstance(seg, int) and seg < len(node):
            node = node[seg]
        else:
            node = None
        if isinstance(node, str) and seg != loc[-1]:
            node = {"name": node}  # the "he_normal" shorthand for { name = "he_normal" }
    return parts


def format_validation_error(error: ValidationError, prefix: str = "", data: Any = None) -> str:
    """One line per problem: ``key.path: what is wrong (got VALUE); what is allowed``."""
    lines = []
    for err in error.errors():
        parts = _walk_input(data, err["loc"]) if data is not None else [str(s) for s in err["loc"]]
        path = "".join(parts)
        path = f"{prefix}.{path}" if prefix and path else (prefix or path)
        kind = err["type"]
        if kind == "union_tag_invalid":
            tags = [t.strip().strip("'") for t in err["ctx"]["expected_tags"].split(",")]
            field = str(err["ctx"]["discriminator"]).strip("'")
            family = path.rsplit(".", 1)[-1].split("[")[0] or field
            msg = unknown_name_message(family, err["ctx"]["tag"], tags).replace(f"valid {family} names", f"valid {field}s")
        elif kind == "extra_forbidden":
            msg = f"unknown key {path.rsplit('.', 1)[-1]!r}"
        elif kind == "missing":
            msg = "required key is missing"
        else:
            msg = err["msg"]
            if msg.startswith("Value error, "):
                msg = msg[len("Value error, "):]
            if "input" in err and kind not in ("model_type",) and not isinstance(err["input"], dict | list):
                msg += f" (got {err['input']!r})"
        # A table's own check (a model validator) names the key it is about first: "validation_size: ...".
        key = re.match(r"([a-z_]\w*): (.*)", msg, re.DOTALL) if kind == "value_error" and path else None
        lines.append(f"{path}.{key[1]}: {key[2]}" if key else f"{path}: {msg}" if path else msg)
    return "\n".join(lines)


def _suggest_key(key: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(key, valid, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def parse_override(text: str) -> tuple[list[str | int], Any]:
    """``"train.epochs=3"`` → ``(["train", "epochs"], 3)``; the value is read as TOML (a number, a quoted
    string, an array, an inline table), or taken as a plain string when it is a bare word (``adam``)."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected dotted.key=value, e.g. --set train.epochs=3")
    key, raw = text.split("=", 1)
    key, raw = key.strip(), raw.strip()
    if not key:
        raise ConfigError(f"--set {text!r}: the key before '=' is empty")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        if raw and all(c.isalnum() or c in "_-./" for c in raw):
            value = raw
        else:
            raise ConfigError(
                f"--set {key}: cannot read {raw!r} as a TOML value; quote strings (--set 'name=\"x y\"'), "
                "write arrays as [1, 2] and tables as {{ key = 1 }}"
            ) from None
    path: list[str | int] = [int(p) if p.isdigit() else p for p in key.split(".")]
    return path, value


def apply_override(data: dict[str, Any], path: list[str | int], value: Any) -> None:
    """Set ``data[path] = value`` in place, creating tables on the way; list items are addressed by index."""
    node: Any = data
    for i, seg in enumerate(path[:-1]):
        where = ".".join(str(p) for p in path[: i + 1])
        if isinstance(node, list):
            if not isinstance(seg, int) or not 0 <= seg < len(node):
                raise ConfigError(f"--set {where}: no item {seg} in a list of {len(node)}")
            node = node[seg]
        elif isinstance(node, dict):
            if seg not in node:
                node[seg] = {}
            elif isinstance(node[seg], str) and i + 1 < len(path) - 0:
                node[seg] = {"name": node[seg]}  # extend the "he_normal" shorthand into a table
            node = node[seg]
        else:
            raise ConfigError(f"--set {where}: {where} is a value, not a table")
    last = path[-1]
    if isinstance(node, list):
        if not isinstance(last, int) or not 0 <= last < len(node):
            raise ConfigError(f"--set {'.'.join(map(str, path))}: no item {last} in a list of {len(node)}")
        node[last] = merge(node[last], value)
    elif isinstance(node, dict):
        node[last] = merge(node[last], value) if last in node else value
    else:
        raise ConfigError(f"--set {'.'.join(map(str, path))}: the parent is a value, not a table")


def merge(base: Any, override: Any) -> Any:
    """``override`` laid over ``base``: tables merge key by key (recursively), anything else is replaced.

    A table whose ``name`` or ``type`` changes is replaced whole (``{ name = "sgd" }`` over a Nadam table must
    not inherit Nadam's ``beta_1``); a string shorthand (``"he_normal"``) counts as ``{ name = ... }``.
    """
    if isinstance(base, str) and isinstance(override, dict):
        base = {"name": base}
    if not (isinstance(base, dict) and isinstance(override, dict)):
        return copy.deepcopy(override)
    for tag in ("name", "type"):
        if tag in override and tag in base and override[tag] != base[tag]:
            return copy.deepcopy(override)
    merged = copy.deepcopy(base)
    for key, value in override.items():
        merged[key] = merge(merged[key], value) if key in merged else copy.deepcopy(value)
    return merged


def read_toml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read the config file: {e}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None


def validate_config(data: dict[str, Any], source: str = "config") -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(f"{source} is invalid:\n" + _indent(format_validation_error(e, data=data))) from None


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read, override and validate the config file at ``path``."""
    data = read_toml(path)
    return validate_config(with_overrides(data, overrides), source=str(path))


def with_overrides(data: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """A deep copy of ``data`` with every ``dotted.key=value`` of ``overrides`` applied, in order."""
    data = copy.deepcopy(data)
    for text in overrides:
        apply_override(data, *parse_override(text))
    return data


def config_to_dict(config: Config) -> dict[str, Any]:
    """The resolved config (every default filled in) as plain TOML-able data."""
    return config.model_dump(mode="json", exclude_none=True)


def config_to_toml(config: Config) -> str:
    return tomli_w.dumps(config_to_dict(config))
