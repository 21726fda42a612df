"""The pieces of trainwell.distributed that need no second process: the split of a batch, the steps of an
epoch, the checks, the choice of the message to report, and the loop's DDP path in a job of one process."""

from __future__ import annotations

import socket
from pathlib import Path
from types import SimpleNamespace

import pytest
import tomli_w
import torch

from tests.conftest import blobs
from tests.distributed.conftest import blobs_npz, config_dict
from trainwell import distributed
from trainwell.config import TrainSpec, load_config
from trainwell.distributed import Context, _failure_message, _root_failure, check_config, launched_by_torchrun
from trainwell.errors import ConfigError
from trainwell.nn.build import build_model
from trainwell.nn.layers import BatchNorm
from trainwell.train.loop import fit, steps_per_epoch


def context(rank: int, world: int) -> Context:
    return Context(rank, world, rank, torch.device("cpu"), "gloo")


@pytest.mark.parametrize(
    ("n", "world", "sizes"),
    [(32, 2, [16, 16]), (12, 2, [6, 6]), (7, 3, [2, 2, 3]), (5, 4, [1, 1, 1, 2]), (1, 1, [1])],
)
def test_a_batch_splits_into_contiguous_shares_that_cover_it_once(
    n: int, world: int, sizes: list[int]
) -> None:
    batch = torch.arange(n)
    shares = [context(r, world).shard(batch) for r in range(world)]
    assert [len(s) for s in shares] == sizes  # ⌊(r+1)·n/W⌋ − ⌊r·n/W⌋, worked out by hand
    assert torch.equal(torch.cat(shares), batch)


@pytest.mark.parametrize(
    ("n", "world", "bn", "steps"),
    [
        (300, 2, False, 10),  # 9 × 32 + 12: 6 each
        (289, 2, False, 9),  # 9 × 32 + 1: one process would get nothing, so the 1 joins the batch before
        (289, 1, False, 10),  # alone, Keras's rule: a last batch of 1 is a batch
        (289, 1, True, 9),  # alone with BN: a batch of 1 has no variance (the single-process rule)
        (291, 2, True, 9),  # 9 × 32 + 3: under BN each of 2 processes needs 2
        (292, 2, True, 10),  # 9 × 32 + 4: 2 each
        (32, 4, False, 1),  # one full batch
    ],
)
def test_the_last_batch_gives_every_process_an_example_or_joins_the_one_before(
    n: int, world: int, bn: bool, steps: int
) -> None:
    layers = [torch.nn.Linear(3, 3)] + ([BatchNorm(3)] if bn else [])
    assert steps_per_epoch(n, 32, torch.nn.Sequential(*layers), world) == steps


def test_launched_by_torchrun_needs_every_variable() -> None:
    env = {
        "RANK": "0",
        "WORLD_SIZE": "2",
        "LOCAL_RANK": "0",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": "29500",
    }
    assert launched_by_torchrun(env)
    assert not launched_by_torchrun({k: v for k, v in env.items() if k != "MASTER_ADDR"})


def test_check_config_refuses_an_uneven_split_and_sync_batch_norm_on_the_cpu(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(tomli_w.dumps(config_dict(blobs_npz(tmp_path / "blobs.npz"))))
    check_config(load_config(path, ["train.batch_size=30"]), 3)  # 10 each: fine
    check_config(
        load_config(path, ["train.batch_size=31", "train.sync_batch_norm=true"]), 1
    )  # alone: no split
    with pytest.raises(
        ConfigError,
        match=r"train.batch_size: 30 does not split evenly across 4 processes .*"
        r"use a multiple of 4, e.g. 28 or 32",
    ):
        check_config(load_config(path, ["train.batch_size=30"]), 4)
    with pytest.raises(ConfigError, match="train.sync_batch_norm: torch's SyncBatchNorm runs only on GPUs"):
        check_config(load_config(path, ["train.sync_batch_norm=true"]), 2)
    with pytest.raises(ConfigError, match="train.sync_batch_norm"):
        load_config(path, ["train.sync_batch_norm=1"])  # a bool, not a number


def failure(message: object, timestamp: int = 0, exitcode: int = 1) -> SimpleNamespace:
    """What torchrun's ProcessFailure carries: the recorded error (a dict) or a made-up string, and when."""
    if isinstance(message, str) and ": " in message:
        message = {"message": message, "extraInfo": {"py_callstack": "...", "timestamp": str(timestamp)}}
    return SimpleNamespace(message=message, timestamp=timestamp, exitcode=exitcode)


def test_the_reported_failure_is_the_trainwell_error_not_a_peer_that_was_stopped() -> None:
    error = SimpleNamespace(
        failures={
            0: failure("RuntimeError: Connection closed by peer", timestamp=10),
            1: failure("ConfigError: data.path: no such file", timestamp=11, exitcode=2),
            2: failure("Signal 15 (SIGTERM) received by PID 7", timestamp=9, exitcode=-15),
        },
        get_first_failure=lambda: pytest.fail("a recorded failure exists"),
    )
    rank, chosen = _root_failure(error)
    assert rank == 1 and _failure_message(chosen) == "data.path: no such file"
    assert _failure_message(failure("ValueError: bad")) == "ValueError: bad"  # others keep their type
    assert (
        _failure_message(failure("Signal 9 (SIGKILL) received by PID 3"))
        == "Signal 9 (SIGKILL) received by PID 3"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_job_of_one_process_trains_exactly_as_no_job(monkeypatch: pytest.MonkeyPatch) -> None:
    """The loop's DDP path (sharding, DDP's gradient all-reduce, reduced metrics and validation) in this very
    process, as a job of one: with one process, every reduction is the identity, so the bits must match."""
    data = blobs(n=300, seed=1)
    spec = TrainSpec(
        optimizer={"name": "nadam", "learning_rate": 1e-2},
        epochs=2,
        batch_size=16,
        seed=5,
        device="cpu",
        compile=False,
    )

    def train() -> tuple[dict[str, torch.Tensor], list[dict[str, float]], str]:
        torch.manual_seed(0)
        model = build_model(
            {
                "layers": [
                    {"type": "flatten"},
                    {"type": "dense", "units": 8, "activation": "relu"},
                    {"type": "dense", "units": 3, "activation": "softmax"},
                ]
            },
            (4, 4, 3),
        )
        state = fit(model, data, spec)
        return model.state_dict(), state.history, state.extra["step"]

    alone, alone_history, _ = train()
    for key, value in {
        "RANK": "0",
        "WORLD_SIZE": "1",
        "LOCAL_RANK": "0",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(free_port()),
    }.items():
        monkeypatch.setenv(key, value)
    with distributed.process_group("cpu") as ctx:
        assert distributed.current() is ctx and distributed.is_rank_zero() and distributed.world_size() == 1
        joined, joined_history, step = train()
    assert distributed.current() is None
    assert step.startswith("eager, DistributedDataParallel over 1 processes")
    assert all(torch.equal(alone[k], joined[k]) for k in alone)
    for a, b in zip(alone_history, joined_history, strict=True):
        assert {k: v for k, v in a.items() if k != "seconds"} == {
            k: v for k, v in b.items() if k != "seconds"
        }


def test_trainwell_batch_norm_converts_to_sync_batch_norm_over_the_same_tensors() -> None:
    """convert_sync_batchnorm on trainwell's BatchNorm (Keras momentum 0.9, epsilon 1e-2, no β): the converted
    layer keeps torch's momentum 1 − 0.9 and the epsilon, shares γ and the moving statistics, and — outside a
    job of several processes, where SyncBatchNorm is plain batch norm — computes what trainwell's layer does,
    moving statistics included. The model itself keeps trainwell's layer."""
    from trainwell.distributed import sync_batch_norm

    torch.manual_seed(0)
    bn = BatchNorm(5, momentum=0.9, epsilon=1e-2, center=False)
    model = torch.nn.Sequential(torch.nn.Linear(3, 5), bn, torch.nn.ELU())
    converted = sync_batch_norm(model)
    sync = converted[1]
    assert isinstance(sync, torch.nn.SyncBatchNorm) and model[1] is bn
    assert sync.momentum == pytest.approx(0.1) and sync.eps == 1e-2 and sync.bias is None
    assert (
        sync.weight is bn.weight
        and sync.running_mean is bn.running_mean
        and sync.running_var is bn.running_var
    )
    x = torch.randn(8, 3)
    reference = torch.nn.Sequential(
        torch.nn.Linear(3, 5), BatchNorm(5, momentum=0.9, epsilon=1e-2, center=False), torch.nn.ELU()
    )
    reference.load_state_dict(model.state_dict())
    assert torch.allclose(converted(x), reference(x), atol=1e-6)
    assert torch.allclose(bn.running_mean, reference[1].running_mean)  # updated through the converted layer
    assert torch.allclose(bn.running_var, reference[1].running_var)
