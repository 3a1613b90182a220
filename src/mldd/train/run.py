"""One training run from a :class:`~mldd.train.config.RunConfig`, with its run directory.

A run directory holds ``config.yaml`` (resolved), ``metrics.csv``, ``model.pt`` (state_dict),
``summary.json``, ``checkpoint.pt`` (when ``checkpoint_every`` is set) and PNG plots.
"""

from __future__ import annotations

import json
import logging
import math
import platform
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

import mldd
from mldd.problems.base import Problem
from mldd.train.callbacks import Callback, CSVLogger, default_progress
from mldd.train.config import ConfigError, RunConfig, dump_yaml, problem_kwargs, validate
from mldd.train.methods import build_optimizer, get_method
from mldd.train.trainer import Trainer, TrainResult


@dataclass
class RunOutcome:
    """A finished run: the trainer's result, the summary written to disk, the directory."""

    result: TrainResult
    summary: dict[str, Any]
    out: Path


def versions() -> dict[str, str]:
    """Versions of what produced a result (for summaries and reports)."""
    return {
        "mldd": mldd.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def seed_everything(seed: int) -> None:
    """Seed torch, numpy and random."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def build_problem(cfg: RunConfig) -> Problem:
    """The configured problem (``mldd.problems.get`` with the options and dtype)."""
    from mldd.problems.registry import get

    try:
        return get(cfg.problem.name, **problem_kwargs(cfg))
    except TypeError as exc:
        raise ConfigError(f"problem {cfg.problem.name!r}: {exc}") from exc


def build_trainer(
    cfg: RunConfig,
    *,
    problem: Problem | None = None,
    callbacks: list[Callback] | None = None,
    out: Path | None = None,
) -> Trainer:
    """Set threads and seeds, build problem, model (seeded) and optimizer, and the trainer."""
    validate(cfg)
    if cfg.method.options.get("lr_grid"):
        raise ConfigError(
            "method option 'lr_grid' is for `mldd bench` (one run per learning rate); "
            "for one run set method.lr"
        )
    torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    problem = problem if problem is not None else build_problem(cfg)
    model = problem.build_model(cfg.seed)
    spec = get_method(cfg.method.name)
    opts = spec.resolve(cfg.method.options)
    context = {"budget_s": cfg.budget_s, "max_iters": cfg.max_iters, "model": model}
    optimizer = build_optimizer(
        cfg.method.name, model.parameters(), problem, cfg.method.options, context
    )
    trainer = Trainer(
        problem,
        model,
        optimizer,
        batch_size=opts.get("batch_size"),
        budget_s=cfg.budget_s,
        max_grad_evals=cfg.max_grad_evals,
        max_iters=cfg.max_iters,
        target=cfg.target,
        log_every=cfg.log_every,
        checkpoint_every=cfg.checkpoint_every,
        out=out,
        seed=cfg.seed,
        callbacks=callbacks or [],
    )
    trainer.run_info = {"problem": cfg.problem.name, "method": cfg.method.name}
    return trainer


_SKIP = object()


def _as_json(v: Any) -> Any:
    """``v`` with tuples as lists (the summary then equals its own JSON round trip, which
    ``--reuse`` compares), or ``_SKIP`` if it holds anything but numbers, strings and None."""
    if isinstance(v, list | tuple):
        items = [_as_json(e) for e in v]
        return _SKIP if any(e is _SKIP for e in items) else items
    return v if v is None or isinstance(v, bool | int | float | str) else _SKIP


def effective_options(optimizer: Any) -> dict[str, Any]:
    """The optimizer's class and the hyper-parameters it actually runs with (its first parameter
    group, defaults filled in; values that are not plain numbers, strings or lists of them, such
    as a model or a hierarchy, are left out). ``config.yaml`` lists only the options given."""
    groups = getattr(optimizer, "param_groups", None) or [{}]
    hyper = {k: j for k, v in groups[0].items()
             if k != "params" and (j := _as_json(v)) is not _SKIP}
    return {"class": type(optimizer).__name__, "hyper_parameters": hyper}


def summarize(cfg: RunConfig, problem: Problem, result: TrainResult,
              optimizer: Any = None) -> dict[str, Any]:
    """The ``summary.json`` content of a run (``optimizer``: adds :func:`effective_options`)."""

    def num(x: float | None) -> float | None:
        return None if x is None or not math.isfinite(x) else float(x)

    ms = 1000.0 * result.time_s / result.grad_evals if result.grad_evals else None
    return {
        "problem": cfg.problem.name,
        "method": cfg.method.name,
        "method_options": cfg.method.options,
        "metric": problem.metric_name,
        "higher_is_better": problem.higher_is_better,
        "final_metric": num(result.final_metric),
        "best_metric": num(result.best_metric),
        "final_loss": num(result.final_loss),
        "time_s": result.time_s,
        "wall_s": result.wall_s,
        "grad_evals": result.grad_evals,
        "ms_per_grad_eval": ms,
        "iterations": result.iterations,
        "stop_reason": result.stop_reason,
        "time_to_target": result.time_to_target,
        "target": cfg.target,
        "seed": cfg.seed,
        "dtype": str(problem.dtype).replace("torch.", ""),
        "threads": cfg.threads,
        "processes": 1,
        "versions": versions(),
        **({} if optimizer is None else {"optimizer": effective_options(optimizer)}),
    }


def run_probed(trainer: Trainer) -> tuple[TrainResult, list[float]]:
    """``trainer.run()`` between two :func:`~mldd.perf.probe.machine_probe` measurements.

    Returns the result and ``[probe at start, probe at end]`` in ms: the machine's speed around
    the run, outside its timed budget, so a report can tell drift between runs from method
    differences.
    """
    from mldd.perf.probe import machine_probe

    start = machine_probe()
    result = trainer.run()
    return result, [start, machine_probe()]


def train(
    cfg: RunConfig,
    *,
    progress: bool = True,
    plots: bool = True,
    resume: str | Path | None = None,
    label: str | None = None,
    problem: Problem | None = None,
) -> RunOutcome:
    """Run ``cfg`` and write its run directory ``cfg.out``.

    Args:
        cfg: the resolved config.
        progress: show a progress bar (terminal) or log lines.
        plots: write PNG plots.
        resume: a checkpoint to continue from.
        label: name shown by the progress display.
        problem: an already built problem to reuse (benchmarks build each problem once).

    Returns:
        The :class:`RunOutcome`.
    """
    out = Path(cfg.out)
    callbacks: list[Callback] = [CSVLogger(out / "metrics.csv")]
    if progress:
        callbacks.append(default_progress(label or f"{cfg.problem.name}/{cfg.method.name}"))
    # Everything that can fail on bad input happens before the run directory is written.
    trainer = build_trainer(cfg, problem=problem, callbacks=callbacks, out=out)
    if resume is not None:
        trainer.resume(resume)
    elif (out / "checkpoint.pt").exists():
        # A fresh run into an old run directory: that run's checkpoint would sit beside this
        # run's files as if it belonged to them.
        (out / "checkpoint.pt").unlink()
        logging.getLogger("mldd.train").info("removed the previous run's %s",
                                             out / "checkpoint.pt")
    out.mkdir(parents=True, exist_ok=True)
    dump_yaml(cfg, out / "config.yaml")
    result, probe = run_probed(trainer)
    torch.save(trainer.model.state_dict(), out / "model.pt")
    summary = summarize(cfg, trainer.problem, result, trainer.optimizer)
    summary["machine_probe_ms"] = probe
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    if plots:
        from mldd.train.plots import plot_run

        plot_run(out)
    return RunOutcome(result, summary, out)
