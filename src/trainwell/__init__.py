"""trainwell: train deep neural networks well.

The public API, re-exported: every stage works alone from Python, and the CLI is a thin layer over it.
"""

from trainwell.config import Config, load_config
from trainwell.data import Dataset, load_dataset
from trainwell.errors import CheckpointError, ConfigError, DataError, RunError, TrainingError, TrainwellError
from trainwell.nn.build import build_model, split_output
from trainwell.nn.summary import summarize_model
from trainwell.runs import evaluate_run, resume_training, run_training
from trainwell.train.callbacks import Callback, EarlyStopping
from trainwell.train.loop import evaluate, fit
from trainwell.train.optimizers import build_optimizer

__all__ = [
    "Callback",
    "CheckpointError",
    "Config",
    "ConfigError",
    "DataError",
    "Dataset",
    "EarlyStopping",
    "RunError",
    "TrainingError",
    "TrainwellError",
    "build_model",
    "build_optimizer",
    "evaluate",
    "evaluate_run",
    "fit",
    "load_config",
    "load_dataset",
    "resume_training",
    "run_training",
    "split_output",
    "summarize_model",
]
