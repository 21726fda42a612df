"""Data-parallel training on several processes: ``torch.distributed`` with DistributedDataParallel (DDP).

Every process (a *rank*) holds a full copy of the model and trains on its own share of every batch; after each
backward pass DDP averages the gradients over the processes (an all-reduce), so every copy takes the same
optimizer step and the copies stay identical. trainwell launches nothing by hand: ``trainwell train CONFIG
--nproc N`` hands the job to PyTorch's own launcher, ``torch.distributed.run`` (``torchrun``), which starts N
local processes, gives each its rank through the environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``, ``MASTER_PORT``), watches them and ends the whole job when one fails. Under an external
``torchrun ... -m trainwell train CONFIG`` (several hosts, a scheduler) each process finds that environment
and joins the job (:func:`launched_by_torchrun`, :func:`process_group`).

How the work is split (Goyal et al. 2017, "Accurate, Large Minibatch SGD", §2 — the *global* batch is what
the learning rate is tuned for):

- **Data**: every process draws the same permutation of the training set each epoch (same seed), cuts it into
  the same global batches of ``train.batch_size`` examples, and takes its contiguous share of each: process
  ``r`` of ``W`` takes examples ``⌊r·B/W⌋ … ⌊(r+1)·B/W⌋ − 1`` of a batch of ``B``. ``batch_size`` must be a
  multiple of ``W`` (else :class:`~trainwell.errors.ConfigError`), so every full batch splits evenly and the
  averaged gradient is exactly the gradient of the global batch's mean loss: a run on W processes follows the
  run on one process, up to float rounding. The epoch's last, partial batch splits as evenly as it can; when
  its shares differ in size (by one example) the gradient is the mean of the shares' means, which weighs each
  example by ``B/(W·n_r)`` instead of 1 — a difference confined to that one step. A last batch too small to
  give every process an example (two under Batch Normalization) is merged into the one before
  (:func:`trainwell.train.loop.steps_per_epoch`). To keep the per-process batch of a single-process run
  instead, multiply ``batch_size`` by W (and scale the learning rate, Goyal et al.'s linear rule).
- **Step**: the eager step of :mod:`trainwell.train.step` with the logits model wrapped in DDP. The whole-step
  compiled graph computes gradients functionally and never passes through DDP's gradient hooks, so it is not
  used under DDP (``run.json``'s ``step`` says which step ran).
- **Metrics**: each process sums its own examples' loss and hits; the sums (and the validation set, evaluated
  in shards) are all-reduced once per epoch, so every process sees the same history and callbacks such as
  early stopping take the same decision everywhere.
- **Batch Normalization**: by default each process normalizes with its own share's statistics (as with
  ``W`` separate batches of ``B/W``); ``train.sync_batch_norm = true`` converts the layers with
  ``torch.nn.SyncBatchNorm.convert_sync_batchnorm`` so the statistics are those of the global batch. torch's
  SyncBatchNorm runs only on GPUs (torch 2.13 raises for CPU tensors), so on the CPU it is a ConfigError.
- **Writing**: only rank 0 creates the run folder and writes config, history, checkpoints, TensorBoard events
  and metrics; the other ranks write nothing. Resume reads the run folder on every rank (on several hosts it
  must be on a shared file system), and the checkpoint's RNG states put every rank back in step.
- **Failures**: an exception on one rank is written to torchrun's per-process error file
  (``TORCHELASTIC_ERROR_FILE``), torchrun stops the other processes, and :func:`launch` raises one
  :class:`DistributedJobError` carrying that rank's message and exit code. A rank that waits on a dead peer
  errors out when the connection closes, and at the latest after :data:`PROCESS_GROUP_TIMEOUT`.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, NoReturn

import torch
import torch.distributed as dist
from torch import nn

from trainwell.errors import ConfigError, TrainingError

if TYPE_CHECKING:
    from trainwell.config import Config
    from trainwell.runs import RunResult
    from trainwell.train.losses import Loss
    from trainwell.train.step import StepFn

# What torchrun (and any launcher following its convention) puts into each process's environment.
TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")

# How long a collective may wait for a peer before it fails. Ranks wait on each other at every step's
# all-reduce; the longest legitimate wait is rank 0 writing a checkpoint or evaluating the test set after the
# last epoch (seconds to a minute on large models). A dead peer is normally noticed at once (its connections
# close) and torchrun stops the job; this bound ends a job whose peer hangs without dying (a stuck file
# system, a lost host) instead of waiting forever. torch's own default is 30 minutes for gloo.
PROCESS_GROUP_TIMEOUT = timedelta(minutes=10)


class DistributedJobError(TrainingError):
    """One process of a distributed job failed; the message is that process's, the exit code its exit code."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class Context:
    """This process's place in the job: its rank among ``world_size`` processes, its local rank on the host,
    the device it trains on and the backend its collectives use; ``stopped`` once training ended early (a
    signal), when the ranks may no longer be at the same collective."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str
    stopped: bool = False

    @property
    def is_rank_zero(self) -> bool:
        return self.rank == 0

    # --- the hooks the training loop calls (trainwell/train/loop.py) ---------------------------------------

    def shard(self, batch: torch.Tensor) -> torch.Tensor:
        """This process's contiguous share of a global batch: rows ``⌊r·n/W⌋ … ⌊(r+1)·n/W⌋ − 1``."""
        n = len(batch)
        return batch[n * self.rank // self.world_size : n * (self.rank + 1) // self.world_size]

    def make_step(self, state: Any, logits_model: nn.Module, loss: Loss) -> tuple[StepFn, str]:
        """The eager training step over ``logits_model`` wrapped in DDP, and its description for run.json.

        ``state`` is the loop's :class:`~trainwell.train.loop.TrainState` (model, optimizer, spec). A run resumed
        in the middle of an epoch restored rank 0's running sums on every rank; the other ranks start theirs
        from zero, so the all-reduce at the epoch's end counts rank 0's part once.
        """
        from torch.nn.parallel import DistributedDataParallel

        from trainwell.train.step import make_step

        spec = state.spec
        if state.epoch_step and not self.is_rank_zero:
            state.epoch_loss_sum.zero_()
            state.epoch_correct.zero_()
            state.epoch_seen = 0
        module = sync_batch_norm(logits_model) if getattr(spec, "sync_batch_norm", False) else logits_model
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        ddp = DistributedDataParallel(module, device_ids=device_ids)
        step = make_step(state.model, ddp, loss, state.optimizer, precision=spec.precision)
        return step, f"eager, DistributedDataParallel over {self.world_size} processes ({self.backend})"

    def reduce_epoch(self, state: Any) -> None:
        """Replace the epoch's running loss sum, hit count and example count by their sums over all ranks."""
        totals = torch.stack(
            [
                state.epoch_loss_sum.double(),
                state.epoch_correct.double(),
                torch.tensor(
                    float(state.epoch_seen), dtype=torch.float64, device=state.epoch_loss_sum.device
                ),
            ]
        ).to(self.device)
        dist.all_reduce(totals)
        state.epoch_loss_sum = totals[0].to(state.epoch_loss_sum.dtype)
        state.epoch_correct = totals[1].round().to(torch.int64)
        state.epoch_seen = int(totals[2].item())

    def evaluate(
        self, model: nn.Module, x: Any, y: Any, loss: str, batch_size: int, device: torch.device
    ) -> dict[str, float]:
        """:func:`~trainwell.train.loop.evaluate` on this rank's shard of ``(x, y)``, then the example-weighted
        mean over all ranks: ``Σ_r n_r·m_r / Σ_r n_r`` for the loss and the accuracy. (The kernel penalty,
        the same on every rank, is inside each ``m_r``, so it comes out once.)"""
        from trainwell.train.loop import evaluate

        x, y = self.shard(torch.as_tensor(x)), self.shard(torch.as_tensor(y))
        n = len(x)
        local = evaluate(model, x, y, loss, batch_size, device) if n else {"loss": 0.0, "accuracy": 0.0}
        totals = torch.tensor(
            [local["loss"] * n, local["accuracy"] * n, float(n)], dtype=torch.float64, device=self.device
        )
        dist.all_reduce(totals)
        total_n = totals[2].item()
        return {"loss": totals[0].item() / total_n, "accuracy": totals[1].item() / total_n}

    def broadcast_learning_rate(self, config: Config) -> Config:
        """``config`` with rank 0's learning rate: with ``learning_rate = "auto"`` each rank ran the LR finder,
        and a GPU's non-deterministic kernels could make the suggestions differ; one rate must rule them all."""
        lr = torch.tensor(
            [float(config.train.optimizer.learning_rate)], dtype=torch.float64, device=self.device
        )
        dist.broadcast(lr, src=0)
        if lr.item() == config.train.optimizer.learning_rate:
            return config
        from trainwell.config import config_to_dict, validate_config

        data = config_to_dict(config)
        data["train"]["optimizer"]["learning_rate"] = lr.item()
        return validate_config(data, source="the config with rank 0's learning rate")


def sync_batch_norm(model: nn.Sequential) -> nn.Sequential:
    """A new Sequential over ``model``'s layers with every BatchNorm converted by
    ``torch.nn.SyncBatchNorm.convert_sync_batchnorm`` (batch statistics over all processes of the job).

    trainwell's :class:`~trainwell.nn.layers.BatchNorm` is a ``BatchNorm1d`` that stores Keras's momentum and
    epsilon as torch's, so the conversion keeps them; the converted layers hold the very same parameters and
    moving-statistics tensors, and ``model`` itself keeps trainwell's layers (for evaluation, saving, folding).
    SyncBatchNorm normalizes axis 1: right for the flat ``(N, C)`` inputs BN sees after a flatten (the
    channels-last case is refused by :func:`check_config`).
    """
    return nn.SyncBatchNorm.convert_sync_batchnorm(nn.Sequential(OrderedDict(model.named_children())))


_current: Context | None = None


def current() -> Context | None:
    """The distributed context of this process, or None when it trains alone (the usual case)."""
    return _current


def is_rank_zero() -> bool:
    """Whether this process writes the run folder: rank 0 of a distributed job, or any single process."""
    return _current is None or _current.is_rank_zero


def world_size() -> int:
    """The number of processes training together: 1 outside a distributed job."""
    return 1 if _current is None else _current.world_size


def share_learning_rate(config: Config) -> Config:
    """``config`` with rank 0's learning rate on every rank (see :meth:`Context.broadcast_learning_rate`);
    ``config`` itself outside a distributed job."""
    return config if _current is None else _current.broadcast_learning_rate(config)


def launched_by_torchrun(environ: Any = None) -> bool:
    """Whether this process was started by torchrun (or a launcher with its environment variables)."""
    environ = os.environ if environ is None else environ
    return all(key in environ for key in TORCHRUN_ENV)


def _env_int(environ: Any, key: str) -> int:
    try:
        return int(environ[key])
    except (KeyError, ValueError):
        raise TrainingError(
            f"the environment variable {key} = {environ.get(key)!r} is not an integer; "
            "start distributed jobs with torchrun or `trainwell train --nproc N`"
        ) from None


@contextlib.contextmanager
def process_group(device: str = "auto", timeout: timedelta = PROCESS_GROUP_TIMEOUT) -> Iterator[Context]:
    """Join the job torchrun started: initialise the default process group from the environment (``env://``),
    with ``nccl`` on GPUs (one per local rank) and ``gloo`` on the CPU, and make it :func:`current` inside the
    ``with`` block. An exception leaving the block is recorded in torchrun's error file for this process, so
    the launcher reports its message; the process group is destroyed on the way out."""
    global _current
    environ = os.environ
    rank, world, local = (_env_int(environ, k) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        if local >= torch.cuda.device_count():
            raise ConfigError(
                f"local rank {local} has no GPU: this host has {torch.cuda.device_count()}; start at most one "
                'process per GPU (--nproc / torchrun --nproc-per-node), or train on the CPU (train.device = "cpu")'
            )
        torch.cuda.set_device(local)  # train.device = "cuda" then means this rank's GPU
        ctx = Context(rank, world, local, torch.device("cuda", local), "nccl")
    else:
        ctx = Context(rank, world, local, torch.device("cpu"), "gloo")
    dist.init_process_group(ctx.backend, timeout=timeout)
    _current = ctx
    try:
        yield ctx
        # Leave together: a process that tears its process group down while a peer still finishes (rank 0
        # evaluating and writing) has been seen to abort in gloo's threads at exit (SIGABRT, "terminate called
        # without an active exception"), which torchrun reports as a failed job. Not after a stop in the middle
        # of training: the others may then be inside a step's all-reduce, which a barrier must not meet.
        if not ctx.stopped:
            with contextlib.suppress(RuntimeError):  # a peer already gone: nothing to wait for
                dist.barrier()
    except Exception as e:
        # A peer's death is not this process's fault: say so in one line; the peer's error is the one reported.
        if _peer_failed(e):
            raise TrainingError(
                f"process {rank} of {world}: another process of the job ended, so this one "
                f"stopped ({str(e).splitlines()[0][:200]}); that process's message says why"
            ) from None
        _record_failure(e)
        raise
    finally:
        _current = None
        dist.destroy_process_group()


def leave(code: int) -> NoReturn:
    """End this rank's process with ``code`` once its process group is destroyed and its work is written,
    skipping the interpreter's finalization. There, gloo's worker threads can still hold work objects whose
    destruction aborts the process (SIGABRT, "terminate called without an active exception"; torch's own
    attempt to destroy process groups in an atexit handler, pytorch/pytorch#179291, was abandoned). It was seen
    twice here, each at the end of a resumed 2-process run, and torchrun then reports the whole job as failed.
    Everything trainwell writes is already on disk (atomic writes with fsync); only the streams need a flush."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


# What gloo and NCCL say when a collective finds its peer gone (gloo raises a plain RuntimeError in torch 2.13).
PEER_GONE = (
    "Connection closed by peer",
    "Connection reset by peer",
    "Broken pipe",
    "NCCL communicator was aborted",
)


def _peer_failed(error: Exception) -> bool:
    """Whether ``error`` is a collective that failed because another process of the job died."""
    return isinstance(error, RuntimeError) and any(text in str(error) for text in PEER_GONE)


def _record_failure(error: Exception) -> None:
    """Write ``error`` to torchrun's error file for this process (``TORCHELASTIC_ERROR_FILE``), which torchrun
    reads to report why the process failed."""
    from torch.distributed.elastic.multiprocessing.errors import ErrorHandler

    ErrorHandler().record_exception(error)


def check_config(config: Config, world_size: int, input_shape: Sequence[int] | None = None) -> None:
    """The rules a config must meet to train on ``world_size`` processes (a ConfigError otherwise)."""
    if world_size <= 1:  # one process: nothing to split, and SyncBatchNorm would be plain BN
        return
    if config.train.batch_size % world_size:
        lower = config.train.batch_size // world_size * world_size
        raise ConfigError(
            f"train.batch_size: {config.train.batch_size} does not split evenly across {world_size} processes "
            f"(each takes batch_size / {world_size} examples of every batch); use a multiple of {world_size}, "
            f"e.g. {max(lower, world_size)} or {lower + world_size}"
        )
    if config.train.sync_batch_norm:
        _check_sync_batch_norm(config, input_shape)
    if getattr(config, "pretrain", None) is not None:
        # pretraining runs its own fit on rank 0 alone, which would start collectives the other ranks never join
        raise ConfigError(
            f"pretrain: pretraining runs in one process; pretrain in a single-process run first, then train on "
            f"{world_size} processes from it with model.from"
        )


def _check_sync_batch_norm(config: Config, input_shape: Sequence[int] | None) -> None:
    from trainwell.nn.layers import BatchNormSpec, FlattenSpec, expand
    from trainwell.train.loop import resolve_device

    if resolve_device(config.train.device).type != "cuda":
        raise ConfigError(
            "train.sync_batch_norm: torch's SyncBatchNorm runs only on GPUs (torch "
            f"{torch.__version__.split('+')[0]} raises for CPU tensors); set train.sync_batch_norm = false on "
            "the CPU (each process then normalizes with its own share of the batch)"
        )
    if input_shape is None:
        return
    rank = len(input_shape)
    for index, layer in enumerate(expand(config.model.layers)):
        if isinstance(layer, FlattenSpec):
            rank = 1
        elif isinstance(layer, BatchNormSpec) and rank > 1:
            raise ConfigError(
                f"train.sync_batch_norm: BatchNorm layer {index} normalizes inputs of rank {rank + 1} over their "
                "last (channels-last) axis, but torch's SyncBatchNorm normalizes axis 1; put it after a "
                "flatten, or set train.sync_batch_norm = false"
            )


def check_launch(config: Config, nproc: int) -> None:
    """What can be refused before any process starts: the batch split, SyncBatchNorm, a GPU per process."""
    check_config(config, nproc)
    from trainwell.train.loop import resolve_device

    device = resolve_device(config.train.device)
    if device.type == "cuda" and nproc > torch.cuda.device_count():
        raise ConfigError(
            f"--nproc {nproc}: this host has {torch.cuda.device_count()} GPUs and each process needs its own; "
            f'use --nproc {torch.cuda.device_count()}, or train.device = "cpu"'
        )


def launch(nproc: int, args: Sequence[str], *, module: str | None = "trainwell") -> None:
    """Run ``python -m MODULE ARGS`` (or the script ``args[0]`` when ``module`` is None) in ``nproc`` local
    processes through ``torch.distributed.run``: a standalone rendezvous on a free localhost port, no restarts.

    Raises :class:`DistributedJobError` with the failed process's message and exit code when one fails (torchrun
    then stops the others).
    """
    from torch.distributed import run as torchrun
    from torch.distributed.elastic.multiprocessing import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    if nproc < 1:
        raise ConfigError(f"--nproc: {nproc} processes; give 1 or more")
    argv = ["--standalone", f"--nproc-per-node={nproc}", "--max-restarts=0"]
    argv += ["-m", module, *args] if module is not None else list(args)
    saved = dict(os.environ)  # torchrun sets OMP_NUM_THREADS in its own process for the children
    try:
        torchrun.run(torchrun.parse_args(argv))
    except ChildFailedError as e:
        rank, failure = _root_failure(e)
        raise DistributedJobError(
            f"process {rank} of {nproc} failed (exit code {failure.exitcode}): {_failure_message(failure)}",
            exit_code=failure.exitcode if failure.exitcode > 0 else 1,
        ) from None
    except SignalException as e:  # SIGINT/SIGTERM to the launcher: torchrun passed it on to every process
        raise DistributedJobError(
            f"stopped by {e.sigval.name}, and with it every process; rank 0's message above says where its "
            f"checkpoint is (continue with: trainwell train --resume RUN_DIR --nproc {nproc})",
            exit_code=128 + int(e.sigval),
        ) from None
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _root_failure(error: Any) -> tuple[int, Any]:
    """The failure to report: the earliest one that recorded an error (a trainwell error, an exception),
    rather than a process that only died because torchrun stopped it or its peer was gone."""
    recorded = [
        (not _is_trainwell_error(f), f.timestamp, rank, f)
        for rank, f in error.failures.items()
        if isinstance(f.message, dict)
    ]
    if recorded:
        *_, rank, failure = min(recorded, key=lambda t: t[:3])
        return rank, failure
    return error.get_first_failure()


def _split_message(failure: Any) -> tuple[str, str]:
    """``(type name, message)`` of a failure recorded as ``"TypeName: message"`` (ErrorHandler's format)."""
    message = failure.message
    if not isinstance(message, dict):
        return "", str(message)
    name, sep, rest = str(message.get("message", "<no message>")).partition(": ")
    return (name, rest) if sep and name.isidentifier() else ("", f"{name}{sep}{rest}")


def _is_trainwell_error(failure: Any) -> bool:
    from trainwell import errors, io

    name, _ = _split_message(failure)
    cls = (getattr(errors, name, None) or getattr(io, name, None)) if name else None  # io: WriteError
    return isinstance(cls, type) and issubclass(cls, errors.TrainwellError)


def _failure_message(failure: Any) -> str:
    """The failure's message: a trainwell error's own text (it speaks for itself), else ``Type: text``."""
    name, text = _split_message(failure)
    return text if _is_trainwell_error(failure) or not name else f"{name}: {text}"


def train_worker(
    config: Config,
    dataset: Any,
    ckpt: dict[str, Any] | None = None,
    extra_callbacks: Sequence[Any] | None = None,
) -> RunResult:
    """What a rank other than 0 does: train the same model as rank 0 (same seed, callbacks, checkpoint), in
    step with it, writing nothing. The callbacks that only record (diagnostics, TensorBoard, progress) are
    rank 0's alone; those that change training (schedules, early stopping, pruning, phases) and
    ``extra_callbacks`` (as given to :func:`~trainwell.runs.run_training`) run everywhere."""
    from pathlib import Path

    from trainwell.analysis.diagnostics.recorder import DiagnosticsRecorder
    from trainwell.nn.build import build_model
    from trainwell.runs import RunResult, config_callbacks
    from trainwell.train.loop import fit
    from trainwell.train.signals import GracefulStop
    from trainwell.train.terminate_on_nan import TerminateOnNaN

    torch.manual_seed(config.train.seed)
    model = build_model(config.model, dataset.input_shape)
    callbacks = [
        cb for cb in config_callbacks(config, model, None, dataset) if not isinstance(cb, DiagnosticsRecorder)
    ]
    callbacks += [*(extra_callbacks or []), TerminateOnNaN()]
    # SIGINT/SIGTERM (torchrun passes Ctrl-C on to every process) are only remembered here, never acted on:
    # rank 0 decides where the job stops, after the step it is in, and saves its checkpoint there; this rank
    # keeps stepping with it until rank 0 leaves, which ends this rank's next collective. Were every rank to
    # stop by itself, one could stop a step earlier than another and leave it waiting for a step that never
    # comes, or break rank 0's step before its checkpoint. A second signal still stops this process at once.
    stopper = GracefulStop()
    try:
        with stopper:
            state = fit(model, dataset, config.train, callbacks=callbacks, resume=ckpt)
    except RuntimeError as e:
        if stopper.received is None or not _peer_failed(e):
            raise
        _current.stopped = True
        return RunResult(run_dir=Path(), metrics={}, history=[], interrupted=True, signal=stopper.received)
    return RunResult(run_dir=Path(), metrics={}, history=state.history, interrupted=state.interrupted)
