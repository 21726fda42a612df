"""One PyTorch system of the peer benchmark, in the project's venv: ``trainwell`` or idiomatic ``pytorch``.

    python benchmarks/peers/torch_worker.py SYSTEM VARIANT DATA_DIR EPOCHS [--set KEY=VALUE ...]

``trainwell`` trains with ``trainwell.fit`` on its default path: the config is the exercise's
(``examples/cifar10_baseline.toml``, 100 epochs planned, so ``train.compile = "auto"`` chooses what a real run
of it gets) with the variant's layers, stopped after EPOCHS epochs. Its data order is its own (the seeded
generator), which the coordinator reproduced in ``order.npy`` for the other systems.

``pytorch`` is the loop a PyTorch user writes: ``nn.Sequential``, ``torch.optim.NAdam``, a ``DataLoader`` over a
``TensorDataset`` (its sampler yields ``order.npy``'s epoch order instead of drawing one), ``loss.item()`` each
step, a validation ``DataLoader`` at batch 1024 under ``torch.no_grad()``.

Each epoch (training + validation pass) is timed from the coordinator's "go" to its end; see ``protocol.py``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from protocol import send, wait_turn
from torch import nn
from variants import BATCH_SIZE, CLASSES, DEPTH, LEARNING_RATE, VARIANTS, WIDTH, Variant, trainwell_layers

CONFIG = Path(__file__).resolve().parents[2] / "examples" / "cifar10_baseline.toml"


def load(data_dir: Path) -> SimpleNamespace:
    arrays = {
        k: np.load(data_dir / f"{k}.npy") for k in ("x_train", "y_train", "x_valid", "y_valid", "order")
    }
    return SimpleNamespace(**arrays, input_shape=tuple(arrays["x_train"].shape[1:]))


def run_trainwell(v: Variant, data: SimpleNamespace, epochs: int, overrides: list[str]) -> None:
    from trainwell.config import read_toml, validate_config, with_overrides
    from trainwell.nn.build import build_model
    from trainwell.train.callbacks import Callback
    from trainwell.train.loop import fit

    raw = read_toml(CONFIG)
    raw["model"]["layers"] = trainwell_layers(v)
    raw["data"]["scaling"] = v.scaling
    config = validate_config(with_overrides(raw, overrides), "peers benchmark")
    turn = {"go": 0.0}

    class Turns(Callback):
        """Wait for the turn before each epoch; report its seconds; stop after ``epochs``."""

        def on_train_begin(self, trainer: Any) -> None:
            send(ready=True, step=trainer.extra["step"], threads=torch.get_num_threads())
            wait_turn()
            turn["go"], turn["cpu"] = time.perf_counter(), time.process_time()

        def on_epoch_end(self, trainer: Any, epoch: int, logs: dict[str, float]) -> None:
            send(
                epoch_s=time.perf_counter() - turn["go"],
                cpu_s=time.process_time() - turn["cpu"],
                val_accuracy=logs.get("val_accuracy"),
            )
            if epoch + 1 >= epochs:
                trainer.stop_training = True
            else:
                wait_turn()
                turn["go"], turn["cpu"] = time.perf_counter(), time.process_time()

    torch.manual_seed(config.train.seed)
    model = build_model(config.model, data.input_shape)
    fit(model, data, config.train, callbacks=[Turns()])


class EpochOrder(torch.utils.data.Sampler):
    """The coordinator's order for each epoch in turn (what ``shuffle=True`` would draw itself)."""

    def __init__(self, order: np.ndarray) -> None:
        self.order, self.epoch = order, 0

    def __iter__(self) -> Iterator[int]:
        self.epoch += 1
        return iter(self.order[self.epoch - 1].tolist())

    def __len__(self) -> int:
        return self.order.shape[1]


def run_pytorch(v: Variant, data: SimpleNamespace, epochs: int) -> None:
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(42)
    activation = {"elu": nn.ELU, "selu": nn.SELU}[v.activation]
    layers: list[nn.Module] = [nn.Flatten()]
    width = int(np.prod(data.input_shape))
    for _ in range(DEPTH):
        linear = nn.Linear(width, WIDTH, bias=not v.bn)
        # He: std √(2/fan_in); LeCun: std √(1/fan_in), i.e. Kaiming with the linear gain
        nn.init.kaiming_normal_(
            linear.weight, nonlinearity="relu" if v.initializer == "he_normal" else "linear"
        )
        if linear.bias is not None:
            nn.init.zeros_(linear.bias)
        layers += [linear, nn.BatchNorm1d(WIDTH), activation()] if v.bn else [linear, activation()]
        width = WIDTH
    layers.append(nn.Linear(width, CLASSES))
    model = nn.Sequential(*layers)
    optimizer = torch.optim.NAdam(model.parameters(), lr=LEARNING_RATE)
    loss_fn = nn.CrossEntropyLoss()
    train = TensorDataset(torch.as_tensor(data.x_train), torch.as_tensor(data.y_train))
    train_loader = DataLoader(train, batch_size=BATCH_SIZE, sampler=EpochOrder(data.order))
    valid_loader = DataLoader(
        TensorDataset(torch.as_tensor(data.x_valid), torch.as_tensor(data.y_valid)), 1024
    )
    send(
        ready=True, step="idiomatic eager loop, torch.optim.NAdam (foreach)", threads=torch.get_num_threads()
    )
    for _ in range(epochs):
        wait_turn()
        started, cpu = time.perf_counter(), time.process_time()
        model.train()
        running = 0.0
        for xb, yb in train_loader:
            optimizer.zero_grad()
            loss = loss_fn(model(xb), yb)
            loss.backward()
            optimizer.step()
            running += loss.item()
        model.eval()
        correct = 0
        with torch.no_grad():
            for xb, yb in valid_loader:
                correct += (model(xb).argmax(1) == yb).sum().item()
        send(
            epoch_s=time.perf_counter() - started,
            cpu_s=time.process_time() - cpu,
            val_accuracy=correct / len(data.y_valid),
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("system", choices=["trainwell", "pytorch"])
    parser.add_argument("variant", choices=sorted(VARIANTS))
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("epochs", type=int)
    parser.add_argument("--set", action="append", default=[], help="a trainwell config override")
    args = parser.parse_args()
    data = load(args.data_dir)
    if args.system == "trainwell":
        run_trainwell(VARIANTS[args.variant], data, args.epochs, args.set)
    else:
        run_pytorch(VARIANTS[args.variant], data, args.epochs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
