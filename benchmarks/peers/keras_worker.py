"""Keras 3 in the peer benchmark, run by a peer venv's python (``envs.py``); the backend is KERAS_BACKEND.

    KERAS_BACKEND=jax python benchmarks/peers/keras_worker.py VARIANT DATA_DIR EPOCHS

The idiomatic Keras program: a ``Sequential`` model, ``compile(optimizer=Nadam(5e-5),
loss="sparse_categorical_crossentropy", metrics=["accuracy"])`` with the backend's defaults (on JAX the whole
train step is one XLA-compiled function), and ``fit`` with the validation data. To train on the same order
as the other systems, each epoch is one ``fit(..., epochs=1, shuffle=False)`` call on the arrays gathered in
``order.npy``'s order (Keras's own shuffle does the same gather); Keras keeps its compiled train function
between ``fit`` calls, so only the first epoch compiles.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
from protocol import send, wait_turn
from variants import BATCH_SIZE, CLASSES, DEPTH, LEARNING_RATE, VARIANTS, WIDTH


def main() -> int:
    variant, data_dir, epochs = VARIANTS[sys.argv[1]], Path(sys.argv[2]), int(sys.argv[3])
    import keras

    data = {k: np.load(data_dir / f"{k}.npy") for k in ("x_train", "y_train", "x_valid", "y_valid", "order")}
    keras.utils.set_random_seed(42)
    layers: list[keras.layers.Layer] = [keras.Input(data["x_train"].shape[1:]), keras.layers.Flatten()]
    for _ in range(DEPTH):
        if variant.bn:
            layers += [
                keras.layers.Dense(WIDTH, kernel_initializer=variant.initializer, use_bias=False),
                keras.layers.BatchNormalization(),
                keras.layers.Activation(variant.activation),
            ]
        else:
            layers.append(
                keras.layers.Dense(
                    WIDTH, activation=variant.activation, kernel_initializer=variant.initializer
                )
            )
    layers.append(keras.layers.Dense(CLASSES, activation="softmax"))
    model = keras.Sequential(layers)
    model.compile(
        optimizer=keras.optimizers.Nadam(learning_rate=LEARNING_RATE),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    backend = keras.backend.backend()
    version = {"jax": "jax", "tensorflow": "tensorflow"}[backend]
    send(
        ready=True,
        step=f"keras {keras.__version__} on {backend} {__import__(version).__version__}, model.fit defaults",
        threads=os.environ.get("TF_NUM_INTRAOP_THREADS", "default"),
    )
    for epoch in range(epochs):
        wait_turn()
        started, cpu = time.perf_counter(), time.process_time()
        order = data["order"][epoch]
        history = model.fit(
            data["x_train"][order],
            data["y_train"][order],
            batch_size=BATCH_SIZE,
            epochs=1,
            shuffle=False,
            validation_data=(data["x_valid"], data["y_valid"]),
            verbose=0,
        )
        send(
            epoch_s=time.perf_counter() - started,
            cpu_s=time.process_time() - cpu,
            val_accuracy=float(history.history["val_accuracy"][-1]),
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
