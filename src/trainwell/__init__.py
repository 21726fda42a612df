"""trainwell: train deep neural networks well.

The public API, re-exported: every stage works alone from Python, and the CLI is a thin layer over it.
"""

from trainwell.analysis.diagnostics import diagnose
from trainwell.analysis.mc_dropout import MCResult, predict_mc
from trainwell.config import Config, load_config
from trainwell.data import Dataset, load_dataset
from trainwell.errors import CheckpointError, ConfigError, DataError, RunError, TrainingError, TrainwellError
from trainwell.experiments import load_experiment, run_experiment
from trainwell.guidelines import advise
from trainwell.nn.build import build_model, split_output
from trainwell.nn.summary import summarize_model
from trainwell.runs import config_callbacks, evaluate_run, resume_training, run_training
from trainwell.train.callbacks import Callback, EarlyStopping
from trainwell.train.loop import evaluate, fit
from trainwell.train.lr_finder import find_lr
from trainwell.train.optimizers import build_optimizer

__all__ = [
    "Callback",
    "CheckpointError",
    "Config",
    "ConfigError",
    "DataError",
    "Dataset",
    "EarlyStopping",
    "MCResult",
    "RunError",
    "TrainingError",
    "TrainwellError",
    "advise",
    "build_model",
    "build_optimizer",
    "config_callbacks",
    "diagnose",
    "evaluate",
    "evaluate_run",
    "find_lr",
    "fit",
    "load_config",
    "load_dataset",
    "load_experiment",
    "predict_mc",
    "resume_training",
    "run_experiment",
    "run_training",
    "split_output",
    "summarize_model",
]
