"""Several processes for one run: ``mldd train ... --nproc N`` and what the workers need.

``mldd train ... --nproc N`` (N > 1) re-launches itself through ``torchrun``::

    python -m torch.distributed.run --nproc_per_node N --standalone \\
        -m mldd.train.cli <the same arguments without --nproc>

(the workers know they are workers from ``WORLD_SIZE``). Inside a worker:

* :func:`current_executor` gives the execution back-end for methods that have one: a
  :class:`~mldd.decomposition.distributed.DistributedExecutor` when ``WORLD_SIZE`` > 1, else a
  :class:`~mldd.decomposition.executors.SerialExecutor`. Method builders call it.
* Only the main process (rank 0, :func:`is_main_process`) writes the run directory, the metrics,
  checkpoints and plots, and prints; the others train the same replica silently.
* Threads: ``threads`` (config/``--threads``) is the total for the run; each worker uses
  ``torch.set_num_threads(max(1, threads // N))`` (:func:`worker_threads`), so that N processes
  do not oversubscribe the cores that one process would use. ``OMP_NUM_THREADS`` is set to the
  same number for the workers.
* The trainer's stop decisions must agree on every rank, or one rank leaves the loop while the
  others wait in a collective. Time budgets are measured per process, so :class:`RankAgreement`
  (the first callback of :func:`train_worker`) makes every rank adopt rank 0's training time and
  gradient-evaluation count after each step; the trainer's budget, logging and target checks then
  see the same numbers everywhere (the metric itself is the same on every rank because the
  replicas hold the same parameters).
* A failed or hung rank ends the run: the executor raises on the other ranks (within the
  timeout, ``MLDD_DIST_TIMEOUT``, default 300 s), that worker exits non-zero, and ``torchrun``
  stops the rest and exits non-zero.

Methods without an executor (every method registered before the Schwarz family) run unchanged
on every rank: N identical replicas, correct but no faster. A method declares that it uses
:func:`current_executor` with a true ``distributed`` attribute on its
:class:`~mldd.train.methods.MethodSpec`; :func:`train_worker` warns otherwise.

References:
    PyTorch documentation, ``torchrun`` (Elastic Launch) and ``torch.distributed``, version 2.x.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from mldd.decomposition.distributed import DistributedExecutor, shutdown
from mldd.decomposition.executors import Executor, SerialExecutor
from mldd.train.callbacks import Callback

if TYPE_CHECKING:
    from mldd.train.config import RunConfig
    from mldd.train.run import RunOutcome
    from mldd.train.trainer import Trainer

logger = logging.getLogger("mldd.train")

#: Seconds the launcher waits for ``torchrun`` to wind down after Ctrl-C before terminating it.
INTERRUPT_GRACE_S = 30.0


def world_size() -> int:
    """The number of processes of this run (``WORLD_SIZE``, 1 when not launched by torchrun)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        raise ValueError(
            f"environment variable WORLD_SIZE must be an integer, got "
            f"{os.environ['WORLD_SIZE']!r}"
        ) from None


def is_main_process() -> bool:
    """True on rank 0 (and in a single-process run): the process that writes and prints."""
    import torch.distributed as dist

    if dist.is_initialized():
        return dist.get_rank() == 0
    return os.environ.get("RANK", "0") == "0"


def current_executor(*, timeout_s: float | None = None) -> Executor:
    """The executor for this process: distributed when ``WORLD_SIZE`` > 1, else serial.

    A new :class:`DistributedExecutor` joins the existing process group (initialising it from
    ``torchrun``'s environment the first time) and has its own communication counters. In a
    distributed run every rank must call this at the same point (the first call may be a
    collective).

    Args:
        timeout_s: collective timeout (default ``$MLDD_DIST_TIMEOUT`` or 300 s).
    """
    if world_size() > 1:
        return DistributedExecutor(timeout_s=timeout_s)
    return SerialExecutor()


def worker_threads(threads: int, nproc: int) -> int:
    """Torch threads per worker: ``max(1, threads // nproc)``."""
    if threads < 1 or nproc < 1:
        raise ValueError(f"threads and nproc must be >= 1, got threads={threads}, nproc={nproc}")
    return max(1, threads // nproc)


def strip_nproc(argv: Sequence[str]) -> list[str]:
    """``argv`` without its ``--nproc`` options (``--nproc N``, ``--nproc=N``, abbreviations).

    The workers must not see ``--nproc``: they would launch again, and ``torchrun``'s own
    parser rejects it as an ambiguous abbreviation of ``--nproc-per-node`` even after the
    script name.
    """
    out: list[str] = []
    skip_value = False
    for tok in argv:
        if skip_value:
            skip_value = False
            continue
        name = tok.split("=", 1)[0]
        if len(name) >= 4 and "--nproc".startswith(name):
            skip_value = "=" not in tok
            continue
        out.append(tok)
    return out


def torchrun_command(argv: Sequence[str], nproc: int) -> list[str]:
    """The command that runs ``mldd <argv>`` (minus ``--nproc``) on ``nproc`` processes."""
    if nproc < 2:
        raise ValueError(f"nproc must be >= 2 to launch workers, got {nproc}")
    return [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
        "--standalone", "-m", "mldd.train.cli", *strip_nproc(argv),
    ]


def relaunch(argv: Sequence[str], nproc: int, *, threads: int) -> int:
    """Run ``mldd <argv>`` on ``nproc`` processes through ``torchrun``; its exit code.

    Args:
        argv: the command-line arguments after the program name (``["train", ...]``).
        nproc: the number of processes (>= 2).
        threads: the run's total torch threads (split by :func:`worker_threads`).
    """
    cmd = torchrun_command(argv, nproc)
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = str(worker_threads(threads, nproc))
    proc = subprocess.Popen(cmd, env=env)
    # torchrun puts its workers in their own sessions and stops them when it gets SIGTERM or
    # SIGINT, so signals sent to this launcher are passed on rather than orphaning the workers.
    forward = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, lambda sig, _: proc.send_signal(sig)) if forward \
        else None
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.send_signal(signal.SIGINT)
        try:
            return proc.wait(timeout=INTERRUPT_GRACE_S)
        except subprocess.TimeoutExpired:
            proc.terminate()
            return proc.wait()
    finally:
        if forward:
            signal.signal(signal.SIGTERM, previous)


class RankAgreement(Callback):
    """Makes every rank see rank 0's ``time_s`` and ``grad_evals`` after each step.

    One all-reduce of two float64 numbers per iteration, through its own executor so that the
    method's communication counters stay the method's. Must be the first callback.

    Args:
        executor: the executor to communicate with (default: a new
            :class:`DistributedExecutor`).
    """

    def __init__(self, executor: DistributedExecutor | None = None) -> None:
        self.executor = executor if executor is not None else DistributedExecutor()

    def on_step(self, trainer: Trainer) -> None:
        """Replace this rank's clock and evaluation count by rank 0's."""
        mine = torch.tensor([trainer.time_s, float(trainer.grad_evals)], dtype=torch.float64)
        if self.executor.rank != 0:
            mine.zero_()
        agreed = self.executor.all_reduce_sum(mine)
        trainer.time_s = float(agreed[0])
        trainer.grad_evals = float(agreed[1])


def train_worker(
    cfg: RunConfig,
    *,
    progress: bool = True,
    plots: bool = True,
    resume: str | Path | None = None,
    label: str | None = None,
) -> RunOutcome:
    """:func:`mldd.train.run.train` inside a ``torchrun`` worker.

    Every rank builds the same problem, model and optimizer and runs the trainer; rank 0 alone
    writes ``cfg.out`` (config, metrics, checkpoints, model, summary, plots) and shows progress.
    The summary records ``processes`` and ``threads_per_process``; ``threads`` stays the total.

    Raises:
        ExecutorError: if a rank failed or hung (raised on every rank that is still alive).
    """
    from mldd.train.callbacks import CSVLogger, default_progress
    from mldd.train.config import dump_yaml
    from mldd.train.methods import get_method
    from mldd.train.run import RunOutcome, build_trainer, run_probed, summarize

    agreement = RankAgreement()
    ex = agreement.executor
    main = ex.rank == 0
    out = Path(cfg.out)
    callbacks: list[Callback] = [agreement]
    if main:
        if not getattr(get_method(cfg.method.name), "distributed", False):
            logger.warning(
                "method %r does not use the distributed executor: each of the %d processes "
                "runs the same full computation (no speed-up)", cfg.method.name, ex.world_size
            )
        out.mkdir(parents=True, exist_ok=True)
        dump_yaml(cfg, out / "config.yaml")
        callbacks.append(CSVLogger(out / "metrics.csv"))
        if progress:
            callbacks.append(default_progress(label or f"{cfg.problem.name}/{cfg.method.name}"))
    local = dataclasses.replace(cfg, threads=worker_threads(cfg.threads, ex.world_size))
    try:
        trainer = build_trainer(local, callbacks=callbacks, out=out if main else None)
        if resume is not None:
            trainer.resume(resume)
        result, probe = run_probed(trainer)
        # Every rank must have left the same loop before rank 0 reports success.
        ex.barrier()
    finally:
        shutdown()
    summary: dict[str, Any] = summarize(cfg, trainer.problem, result, trainer.optimizer)
    summary["processes"] = ex.world_size
    summary["threads_per_process"] = local.threads
    summary["machine_probe_ms"] = probe  # rank 0's, every rank probing at once
    if main:
        torch.save(trainer.model.state_dict(), out / "model.pt")
        (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
        if plots:
            from mldd.train.plots import plot_run

            plot_run(out)
    return RunOutcome(result, summary, out)
