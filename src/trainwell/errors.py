"""Errors for people: each names the thing that is wrong and what would be right.

The CLI turns any :class:`TrainwellError` into one message on stderr and a non-zero exit code
(2 for bad input, see ``exit_code``), without a traceback unless ``--debug`` is given.
"""

from __future__ import annotations


class TrainwellError(Exception):
    """Base class of every error trainwell raises on purpose."""

    exit_code = 1


class ConfigError(TrainwellError):
    """A config (file, ``--set`` override or Python spec) is invalid."""

    exit_code = 2


class DataError(TrainwellError):
    """A dataset is missing, corrupt, unsafe or inconsistent."""

    exit_code = 2


class RunError(TrainwellError):
    """A run folder is missing, incomplete or not what a command expects."""

    exit_code = 2


class CheckpointError(TrainwellError):
    """A checkpoint or model file cannot be read safely or written."""

    exit_code = 1


class TrainingError(TrainwellError):
    """Training stopped on a fault it cannot recover from (e.g. a NaN loss)."""

    exit_code = 1
