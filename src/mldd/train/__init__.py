"""Training: the one trainer, the method registry, configs, the benchmark harness, the CLI.

Modules:
    trainer: :class:`Trainer` (budgets, target, metrics rows, checkpoints) and :class:`TrainResult`.
    callbacks: metrics CSV, progress bar / log lines, history.
    methods: name → optimizer builder (``adam``, ``sgd``, ``torch-lbfgs``, ``adam-lbfgs``,
        ``lbfgs``, ``trust-region``); :func:`register_method` adds more.
    config: :class:`RunConfig`, YAML/TOML loading, ``--set`` overrides, validation.
    run: one run from a config, writing its run directory.
    suites, bench, report, plots: ``mldd bench`` and ``mldd plot``.
    cli: the ``mldd`` command.
"""

from mldd.train.callbacks import Callback, CSVLogger, History, LogLines, RichProgress
from mldd.train.config import ComponentConfig, ConfigError, RunConfig
from mldd.train.methods import (
    MethodError,
    MethodSpec,
    available_methods,
    build_optimizer,
    get_method,
    register_method,
)
from mldd.train.trainer import Trainer, TrainResult

__all__ = [
    "CSVLogger",
    "Callback",
    "ComponentConfig",
    "ConfigError",
    "History",
    "LogLines",
    "MethodError",
    "MethodSpec",
    "RichProgress",
    "RunConfig",
    "TrainResult",
    "Trainer",
    "available_methods",
    "build_optimizer",
    "get_method",
    "register_method",
]
